"""Built-in roles, checked coarsely: each role grants action kinds on one database, on every
database (the *AnyDatabase roles) or on the cluster. Custom roles are not implemented.

Action kinds, database scoped: read (find, count, aggregate), write (insert), userAdmin, dbAdmin,
and mongod's own listCollections, listIndexes, createCollection, createIndex, dropCollection
(the collection commands mongodump and mongorestore send); cluster scoped: clusterMonitor,
clusterManager, getParameter, killAnyCursor; internal (member-to-member commands, __system only).

The backup and restore roles grant what mongod 7.0's role_graph_builtin_roles.cpp grants them, as
far as the stand-in's commands go: backup may find, count, list databases, collections and
indexes and run getParameter (no writes, no replica set status); restore may insert, create and
drop collections, create indexes, list collections, manage users and run getParameter (it may
not read documents: mongod's restore role has no find on ordinary collections).
"""

from __future__ import annotations

_READ = {"read", "listCollections", "listIndexes"}
_READ_WRITE = _READ | {"write", "createCollection", "createIndex", "dropCollection"}
_DB_ADMIN = {"dbAdmin", "listCollections", "listIndexes", "createCollection", "createIndex",
             "dropCollection"}
DB_ROLES = {  # valid in every database, grant on that database only
    "read": _READ,
    "readWrite": _READ_WRITE,
    "dbAdmin": _DB_ADMIN,
    "userAdmin": {"userAdmin"},
    "dbOwner": _READ_WRITE | _DB_ADMIN | {"userAdmin"},
}
ANY_DB_ROLES = {  # valid in admin only, grant on every database
    "readAnyDatabase": _READ,
    "readWriteAnyDatabase": _READ_WRITE,
    "userAdminAnyDatabase": {"userAdmin"},
    "dbAdminAnyDatabase": _DB_ADMIN,
    "backup": _READ,
    "restore": {"write", "createCollection", "createIndex", "dropCollection", "listCollections",
                "userAdmin"},
}
CLUSTER_ROLES = {  # valid in admin only
    "clusterMonitor": {"clusterMonitor", "getParameter"},
    "clusterManager": {"clusterManager", "clusterMonitor", "getParameter"},
    "clusterAdmin": {"clusterManager", "clusterMonitor", "getParameter", "killAnyCursor"},
    "hostManager": {"clusterMonitor", "getParameter", "killAnyCursor"},
    "backup": {"getParameter"},
    "restore": {"getParameter"},
}
ADMIN_ONLY = set(ANY_DB_ROLES) | set(CLUSTER_ROLES) | {"root", "__system"}
CLUSTER_ACTIONS = {"clusterMonitor", "clusterManager", "getParameter", "killAnyCursor", "internal"}
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
