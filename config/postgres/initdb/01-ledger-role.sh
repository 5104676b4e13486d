#!/usr/bin/env bash
# PostgreSQL first-start init (the official image runs /docker-entrypoint-initdb.d/* once, on an
# empty data directory, as the database superuser over the local socket).
#
# Creates the ledger service's role LEDGER_DB_USER (and its rotation twin LEDGER_DB_USER_clone,
# which acts as it) with its password (the file
# LEDGER_DB_PASSWORD_FILE names, a Compose secret; LEDGER_DB_PASSWORD by hand), or resets them when
# the role exists (safe to re-run), and grants it only what the ledger needs on LEDGER_DB_NAME
# (created by the image from POSTGRES_DB):
#   - LOGIN, and nothing else: no superuser, no CREATEDB, no CREATEROLE, no replication, no
#     BYPASSRLS, a connection limit;
#   - CONNECT on LEDGER_DB_NAME (PUBLIC loses CONNECT and TEMPORARY there, and on `postgres`);
#   - its own schema, named after the role and owned by it, first on its search_path: the
#     ledger's tables live there and the service runs its own migrations in it;
#   - nothing in `public` (PUBLIC's CREATE on it is revoked) and no other database.
#
# No secret on a command line: psql reads the SQL on stdin and takes the values from the
# environment with \getenv (psql 15+); the password is sent once, in CREATE/ALTER ROLE, with
# statement logging turned off for this session so it cannot reach the server log. It is stored
# as a SCRAM-SHA-256 verifier (password_encryption defaults to scram-sha-256).
#
# Runs in a subshell so that `set -euo pipefail` does not leak into the image's entrypoint when
# the entrypoint sources this file (it sources *.sh files that are not executable).

ledger_role_main() (
    set -euo pipefail

    : "${POSTGRES_USER:?POSTGRES_USER is not set}"
    : "${LEDGER_DB_NAME:?LEDGER_DB_NAME is not set (.env.ec2)}"
    : "${LEDGER_DB_USER:?LEDGER_DB_USER is not set (.env.ec2)}"
    # The password comes from the secret file LEDGER_DB_PASSWORD_FILE names (Compose secrets),
    # into this subshell's environment only (psql reads it with \getenv; never on argv).
    if [ -n "${LEDGER_DB_PASSWORD_FILE:-}" ]; then
        LEDGER_DB_PASSWORD="$(cat "$LEDGER_DB_PASSWORD_FILE")"
        export LEDGER_DB_PASSWORD
    fi
    : "${LEDGER_DB_PASSWORD:?LEDGER_DB_PASSWORD_FILE (or LEDGER_DB_PASSWORD) is not set}"
    if [ "$LEDGER_DB_USER" = "$POSTGRES_USER" ]; then
        echo "01-ledger-role: LEDGER_DB_USER must not be the superuser POSTGRES_USER" >&2
        exit 1
    fi
    if [ "$LEDGER_DB_USER" = "postgres" ]; then
        echo "01-ledger-role: LEDGER_DB_USER must not be 'postgres'" >&2
        exit 1
    fi

    psql --no-psqlrc --no-password --set ON_ERROR_STOP=1 --quiet \
        --username "$POSTGRES_USER" --dbname "$LEDGER_DB_NAME" <<'SQL'
\getenv ledger_db LEDGER_DB_NAME
\getenv ledger_user LEDGER_DB_USER
\getenv ledger_password LEDGER_DB_PASSWORD
-- Keep the password out of the server log, whatever the logging settings.
SET log_statement = 'none';
SET log_min_error_statement = 'panic';
SET log_min_duration_statement = -1;
SET password_encryption = 'scram-sha-256';

SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'ledger_user') AS ledger_role_exists
\gset
\if :ledger_role_exists
ALTER ROLE :"ledger_user" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT
    NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 100 PASSWORD :'ledger_password';
\echo role :ledger_user updated
\else
CREATE ROLE :"ledger_user" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT
    NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 100 PASSWORD :'ledger_password';
\echo role :ledger_user created
\endif

-- Its alternating twin NAME_clone (fabfile/alternating.py), which a rotation moves the service
-- to and back: a data host rebuilt after a rotation starts with the twin as the login user, so
-- it gets the same password and acts as the owner (a member, `SET role`, the owner's schema
-- first). The next rotation leaves one of the two with a password.
\set ledger_twin :ledger_user '_clone'
SELECT length(:'ledger_twin') <= 63 AS twin_fits,
       EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'ledger_twin') AS twin_exists
\gset
\if :twin_fits
\if :twin_exists
\else
CREATE ROLE :"ledger_twin";
\endif
ALTER ROLE :"ledger_twin" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT
    NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 100 PASSWORD :'ledger_password';
GRANT :"ledger_user" TO :"ledger_twin";
\echo role :ledger_twin (the rotation twin) acts as :ledger_user
\endif
\unset ledger_password

-- The database: only the ledger role (and the superuser) may connect. The maintenance
-- database `postgres` is closed to PUBLIC too (the ledger role has no business there).
REVOKE ALL ON DATABASE :"ledger_db" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"ledger_db" TO :"ledger_user";
REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC;

-- No objects in `public` for anyone (PostgreSQL 15's default; made explicit).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- The ledger's own schema, first on its search_path ("$user" is the default's first entry).
SET client_min_messages = 'warning';
CREATE SCHEMA IF NOT EXISTS :"ledger_user" AUTHORIZATION :"ledger_user";
ALTER ROLE :"ledger_user" IN DATABASE :"ledger_db" SET search_path = :"ledger_user";
\if :twin_fits
GRANT CONNECT ON DATABASE :"ledger_db" TO :"ledger_twin";
ALTER ROLE :"ledger_twin" IN DATABASE :"ledger_db" SET role = :'ledger_user';
ALTER ROLE :"ledger_twin" IN DATABASE :"ledger_db" SET search_path = :"ledger_user";
\endif
\echo ledger role :ledger_user granted CONNECT on :ledger_db and its schema :ledger_user
SQL
)

ledger_role_main "$@"
