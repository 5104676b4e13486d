"""Commands that change or test a data store's credentials (inv secrets.rotate).

Each builder returns the command; its `*_input` twin returns the bytes to send on the command's
stdin. Every secret travels there, never on a command line, and where the server allows it
only in a derived form: Redis gets the SHA-256 of a password (`#<hash>` in ACL SETUSER),
PostgreSQL a SCRAM-SHA-256 verifier (so not even its statement log could show the password).
MongoDB's createUser needs the password itself: it reaches mongosh through
scripts/mongosh-handoff.sh, as a file of the container's tmpfs, removed afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shlex

from fabfile.commands.compose import compose
from fabfile.config import Environment

REDIS_TLS = ["--no-auth-warning", "--tls", "--cacert", "/run/secrets/data_ca_crt",
             "-h", "127.0.0.1", "-p", "6379"]
SCRAM_ITERATIONS = 4096  # PostgreSQL's default (scram_iterations)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --- Redis: several passwords per user; the default user is the services' ----------------------

def redis(env: Environment) -> str:
    """redis-cli in the redis container, logged in with the password on stdin's first line
    (REDISCLI_AUTH: its own environment, never argv), the commands on the rest of stdin."""
    script = ("IFS= read -r REDISCLI_AUTH; export REDISCLI_AUTH; exec redis-cli "
              + shlex.join(REDIS_TLS))
    return compose(env, "data", "exec", "-T", "redis", "sh", "-c", script, "redis-rotate")


def redis_add_input(current: str, new: str) -> bytes:
    """Add `new` beside the passwords the default user has (by its hash)."""
    return f"{current}\nACL SETUSER default #{sha256(new)}\n".encode()


def redis_keep_only_input(keep: str) -> bytes:
    """Every password of the default user removed but `keep` (logged in with it), in one
    command: no moment without a valid password."""
    return f"{keep}\nACL SETUSER default resetpass #{sha256(keep)}\n".encode()


def redis_try(env: Environment) -> str:
    """redis-cli without a login: AUTH on stdin answers OK or WRONGPASS."""
    return compose(env, "data", "exec", "-T", "redis", "redis-cli", *REDIS_TLS)


def redis_try_input(password: str) -> bytes:
    return f"AUTH {password}\n".encode()


# --- PostgreSQL: the superuser over the container's socket (hba: local trust) -----------------

def psql(env: Environment) -> str:
    """psql as the superuser over the socket, SQL on stdin, stopping at the first error."""
    script = ('exec psql --no-psqlrc --no-password --quiet --tuples-only --set ON_ERROR_STOP=1 '
              '--username "$POSTGRES_USER" --dbname "$POSTGRES_DB"')
    return compose(env, "data", "exec", "-T", "postgres-ledger", "sh", "-c", script,
                   "pg-rotate")


def scram_verifier(password: str, salt: bytes | None = None,
                   iterations: int = SCRAM_ITERATIONS) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier of a password (RFC 5802 / 7677), as its own
    `password_encryption = scram-sha-256` stores it. The password is ASCII (generated), so
    SASLprep leaves it as it is."""
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored = hashlib.sha256(client_key).digest()
    server = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = base64.b64encode
    return (f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}"
            f"${b64(stored).decode()}:{b64(server).decode()}")


QUIET = ("SET log_statement = 'none';\nSET log_min_error_statement = 'panic';\n"
         "SET log_min_duration_statement = -1;\n")


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def login_role_sql(login: str, owner: str, database: str, verifier: str) -> str:
    """The ledger's login role `login` with the password `verifier`: the owner itself, or its
    twin, which acts as the owner (member, `SET role`) with the owner's schema first."""
    lines = [QUIET,
             f"SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {literal(login)}) "
             "AS missing \\gset\n",
             f"\\if :missing\nCREATE ROLE {ident(login)};\n\\endif\n",
             f"ALTER ROLE {ident(login)} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
             f"NOINHERIT NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 100 PASSWORD "
             f"{literal(verifier)};\n",
             f"GRANT CONNECT ON DATABASE {ident(database)} TO {ident(login)};\n"]
    if login != owner:
        lines += [f"GRANT {ident(owner)} TO {ident(login)};\n",
                  f"ALTER ROLE {ident(login)} IN DATABASE {ident(database)} SET role = "
                  f"{literal(owner)};\n",
                  f"ALTER ROLE {ident(login)} IN DATABASE {ident(database)} SET search_path = "
                  f"{ident(owner)};\n"]
    return "".join(lines)


def password_sql(role: str, verifier: str) -> str:
    return f"{QUIET}ALTER ROLE {ident(role)} PASSWORD {literal(verifier)};\n"


def disable_login_sql(role: str) -> str:
    """No password any more (scram-sha-256 then refuses every login) and no session left;
    nothing to do for a role that does not exist."""
    return (f"{QUIET}SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {literal(role)}) "
            "AS present \\gset\n"
            f"\\if :present\nALTER ROLE {ident(role)} PASSWORD NULL;\n"
            f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = "
            f"{literal(role)};\n\\endif\n")


def pg_try(env: Environment, user: str) -> str:
    """A TLS login as `user` over TCP with the password on stdin (PGPASSWORD: psql's own
    environment); `select 1` answers 1 only if the password is accepted."""
    script = ('IFS= read -r PGPASSWORD; export PGPASSWORD; exec psql --no-psqlrc --tuples-only '
              '"host=127.0.0.1 port=5432 sslmode=require dbname=$POSTGRES_DB user=$1" '
              '--command "select 1"')
    return compose(env, "data", "exec", "-T", "postgres-ledger", "sh", "-c", script,
                   "pg-try", user)


# --- MongoDB: scripts/mongo-user.js and mongo-member.js through scripts/mongosh-handoff.sh ----

def mongosh(env: Environment, variables: dict[str, str]) -> str:
    """mongosh in mongo-primary, the JavaScript (and the handed files) on stdin; `variables`
    (names, never secrets) in its environment."""
    options = [a for k, v in variables.items() for a in ("-e", f"{k}={v}")]
    return (compose(env, "data", "exec", "-T", *options, "-e", "HOME=/tmp", "mongo-primary",
                    "sh", "-c") + ' "$(cat scripts/mongosh-handoff.sh)" mongosh')


def mongo_user(env: Environment, op: str, user: str, database: str,
               roles: list[dict[str, str]] | None = None) -> str:
    """scripts/mongo-user.js's environment: one change to one user."""
    variables = {"JAFAR_OP": op, "JAFAR_USER": user, "JAFAR_DB": database}
    if roles is not None:
        variables["JAFAR_ROLES"] = json.dumps(roles, separators=(",", ":"))
    return mongosh(env, variables)


def mongo_user_input(files: dict[str, bytes], script: str) -> bytes:
    """The handoff's header (each file's name and base64), `--`, then the JavaScript."""
    header = "".join(f"{name} {base64.b64encode(data).decode()}\n"
                     for name, data in sorted(files.items()))
    return (header + "--\n" + script).encode()


# --- Grafana: its admin password lives in its database once it has started ---------------------

def grafana_admin_password(env: Environment) -> str:
    return compose(env, "core", "exec", "-T", "grafana", "grafana", "cli", "admin",
                   "reset-admin-password", "--password-from-stdin")
