#!/usr/bin/env bash
# Entry point of the sandbox postgres image: the official postgres image's interface,
# re-implemented for Debian's postgresql-15 (see the Dockerfile). Passwords never go on a
# command line: initdb reads a pwfile (a pipe), psql gets PGPASSWORD from its environment.
set -Eeuo pipefail

log() { printf '%s [entrypoint] %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" "$*"; }
die() { log "error: $*" >&2; exit 1; }

# file_env VAR [DEFAULT]: VAR from $VAR or from the file $VAR_FILE (not both).
file_env() {
    local var="$1" file_var="${1}_FILE" def="${2:-}" val
    if [[ -n ${!var:-} && -n ${!file_var:-} ]]; then
        die "both ${var} and ${file_var} are set (they are exclusive)"
    fi
    val="${def}"
    if [[ -n ${!var:-} ]]; then
        val="${!var}"
    elif [[ -n ${!file_var:-} ]]; then
        val="$(<"${!file_var}")"
    fi
    export "${var}=${val}"
    unset "${file_var}"
}

# `docker run postgres -c shared_buffers=256MB`: run postgres with those options.
if [[ ${1:-} == -* ]]; then
    set -- postgres "$@"
fi

if [[ ${1:-} != postgres ]]; then
    exec "$@"
fi

: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA

if [[ $(id -u) == 0 ]]; then
    # as root: make the directories ours, then run this script again as postgres
    mkdir -p "${PGDATA}" /var/run/postgresql
    chown postgres:postgres "${PGDATA}"
    chmod 0700 "${PGDATA}"
    chown postgres:postgres /var/run/postgresql
    chmod 3777 /var/run/postgresql
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

file_env POSTGRES_PASSWORD
file_env POSTGRES_USER postgres
file_env POSTGRES_DB "${POSTGRES_USER}"
file_env POSTGRES_INITDB_ARGS
: "${POSTGRES_HOST_AUTH_METHOD:=}"

if [[ ! -s ${PGDATA}/PG_VERSION ]]; then
    if [[ -z ${POSTGRES_PASSWORD} && ${POSTGRES_HOST_AUTH_METHOD} != trust ]]; then
        die "database is uninitialized and superuser password is not specified.
       Set POSTGRES_PASSWORD (or POSTGRES_HOST_AUTH_METHOD=trust, never in production)."
    fi
    log "initializing database in ${PGDATA}"
    initdb_args=()
    if [[ -n ${POSTGRES_INITDB_ARGS} ]]; then
        # split like the official image does (word splitting of the variable)
        read -r -a initdb_args <<<"${POSTGRES_INITDB_ARGS}"
    fi
    # the password reaches initdb through a pipe named on its command line, not the value
    initdb --username="${POSTGRES_USER}" \
        --pwfile=<(printf '%s\n' "${POSTGRES_PASSWORD}") "${initdb_args[@]}"

    # remote connections: the auth method defaults to the password encryption in use
    if [[ -z ${POSTGRES_HOST_AUTH_METHOD} ]]; then
        POSTGRES_HOST_AUTH_METHOD="$(postgres -C password_encryption "${@:2}")"
    fi
    {
        printf '\n'
        if [[ ${POSTGRES_HOST_AUTH_METHOD} == trust ]]; then
            printf '# warning: trust is enabled for all connections\n'
        fi
        printf 'host all all all %s\n' "${POSTGRES_HOST_AUTH_METHOD}"
    } >>"${PGDATA}/pg_hba.conf"

    # a temporary server on the Unix socket only, for the database and the init scripts
    pg_ctl -D "${PGDATA}" -o "-c listen_addresses='' -p 5432" -w start >/dev/null

    export PGPASSWORD="${POSTGRES_PASSWORD}"
    psql_cmd=(psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER}" --no-password --no-psqlrc)
    if [[ ${POSTGRES_DB} != postgres ]]; then
        log "creating database ${POSTGRES_DB}"
        "${psql_cmd[@]}" --dbname postgres --set db="${POSTGRES_DB}" <<<'CREATE DATABASE :"db" ;'
    fi
    psql_cmd+=(--dbname "${POSTGRES_DB}")

    shopt -s nullglob
    for f in /docker-entrypoint-initdb.d/*; do
        case "${f}" in
            *.sh)
                if [[ -x ${f} ]]; then
                    log "running ${f}"
                    "${f}"
                else
                    log "sourcing ${f}"
                    # shellcheck disable=SC1090
                    . "${f}"
                fi
                ;;
            *.sql)
                log "running ${f}"
                "${psql_cmd[@]}" -f "${f}"
                ;;
            *.sql.gz)
                log "running ${f}"
                gzip -dc "${f}" | "${psql_cmd[@]}"
                ;;
            *) log "ignoring ${f}" ;;
        esac
    done
    shopt -u nullglob
    unset PGPASSWORD

    pg_ctl -D "${PGDATA}" -m fast -w stop >/dev/null
    log "init process complete; ready for start up"
else
    log "database directory ${PGDATA} already holds a database; skipping initialization"
fi

unset POSTGRES_PASSWORD
exec "$@"
