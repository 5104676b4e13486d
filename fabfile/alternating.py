"""Alternating users: how a rotation changes a database password without a failed request.

A server holds one password per user, so a rotation moves the services from one user to its
twin and back: NAME and NAME_clone (AWS's own "alternating users" rotation strategy). The twin
gets the new password while the old user still works; the services roll onto the twin; only
then is the old user's password revoked. The env file's user key (LEDGER_DB_USER...) names the
user the services log in as now.

The PostgreSQL container must not change with the login user (Compose would recreate it): its
first-start script is given LEDGER_DB_ROLE, the role that owns the ledger's schema, which is
LEDGER_DB_USER without `_clone`. env.sync writes it into the data host's .env.ec2.
"""

from __future__ import annotations

SUFFIX = "_clone"
MAX_BASE = 63 - len(SUFFIX)  # PostgreSQL's name limit, and ours (envfile.NAME)
# the password key -> the user key it belongs to
USERS = {"LEDGER_DB_PASSWORD": "LEDGER_DB_USER", "MONGO_APP_PASSWORD": "MONGO_APP_USER",
         "MONGO_LEDGER_PASSWORD": "MONGO_LEDGER_USER", "MONGO_BACKUP_PASSWORD": "MONGO_BACKUP_USER"}
DERIVED = ("LEDGER_DB_ROLE",)  # keys env.sync adds to a host's .env.ec2


def base(user: str) -> str:
    return user.removesuffix(SUFFIX)


def twin(user: str) -> str:
    """The other user of the pair."""
    return base(user) if user.endswith(SUFFIX) else user + SUFFIX


def derived(values: dict[str, str]) -> dict[str, str]:
    """The keys made from the values, for the hosts' .env.ec2."""
    return {"LEDGER_DB_ROLE": base(values["LEDGER_DB_USER"])} if "LEDGER_DB_USER" in values \
        else {}
