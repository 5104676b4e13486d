"""Built-in roles, checked coarsely: each role grants action kinds on one database, on every
database (the *AnyDatabase roles) or on the cluster. Custom roles are not implemented.

Action kinds: read, write, userAdmin, dbAdmin (database scoped); clusterMonitor,
clusterManager (cluster scoped); internal (member-to-member commands, __system only).
"""

from __future__ import annotations

DB_ROLES = {  # valid in every database, grant on that database only
    "read": {"read"},
    "readWrite": {"read", "write"},
    "dbAdmin": {"dbAdmin"},
    "userAdmin": {"userAdmin"},
    "dbOwner": {"read", "write", "dbAdmin", "userAdmin"},
}
ANY_DB_ROLES = {  # valid in admin only, grant on every database
    "readAnyDatabase": {"read"},
    "readWriteAnyDatabase": {"read", "write"},
    "userAdminAnyDatabase": {"userAdmin"},
    "dbAdminAnyDatabase": {"dbAdmin"},
    "backup": {"read"},
    "restore": {"write", "userAdmin"},
}
CLUSTER_ROLES = {  # valid in admin only
    "clusterMonitor": {"clusterMonitor"},
    "clusterManager": {"clusterManager", "clusterMonitor"},
    "clusterAdmin": {"clusterManager", "clusterMonitor"},
    "hostManager": {"clusterMonitor"},
    "backup": {"clusterMonitor"},
}
ADMIN_ONLY = set(ANY_DB_ROLES) | set(CLUSTER_ROLES) | {"root", "__system"}
CLUSTER_ACTIONS = {"clusterMonitor", "clusterManager", "internal"}
# A database name no database has: allows(roles, action, ANY_DATABASE) is true only for roles
# that grant the action on every database (mongod's "any normal resource").
ANY_DATABASE = "\0any database"


def role_exists(role: str, db: str) -> bool:
    if role in DB_ROLES:
        return True
    return role in ADMIN_ONLY and db == "admin"


def allows(roles: list, action: str, db: str = None) -> bool:
    """True if any of ``roles`` ([{role, db}]) grants ``action`` (on ``db`` when db scoped)."""
    for item in roles:
        name, rdb = item["role"], item["db"]
        if name == "__system" and rdb == "admin":
            return True
        if action == "internal":
            continue
        if name == "root" and rdb == "admin":
            return True
        if rdb == "admin" and action in CLUSTER_ROLES.get(name, ()):
            return True
        if action in CLUSTER_ACTIONS:
            continue
        if rdb == "admin" and action in ANY_DB_ROLES.get(name, ()):
            return True
        if rdb == db and action in DB_ROLES.get(name, ()):
            return True
    return False


def readable_dbs(roles: list) -> set[str] | None:
    """Databases ``roles`` can read; None means every database."""
    dbs = set()
    for item in roles:
        if allows([item], "read", ANY_DATABASE):
            return None
        if item["role"] in DB_ROLES:
            dbs.add(item["db"])
    return dbs
