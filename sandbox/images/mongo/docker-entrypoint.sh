#!/usr/bin/env bash
# Entrypoint of the jafar mongod stand-in image (NOT MongoDB), shaped like the official mongo
# image's docker-entrypoint.sh so a compose file written for mongo:7.0 works unchanged:
#   - a first argument that is an option gets `mongod` put in front;
#   - started as root: fixes ownership of /data/db and /data/configdb, then re-runs itself as
#     `mongodb` (uid 999) with gosu;
#   - first start (no users in the data directory yet) with MONGO_INITDB_ROOT_USERNAME and
#     MONGO_INITDB_ROOT_PASSWORD (or their *_FILE variants): starts a temporary mongod on
#     127.0.0.1 without --replSet/--keyFile/--auth, creates that user with role root on admin
#     using the real mongosh, runs /docker-entrypoint-initdb.d/*.sh and *.js, stops it.
#     Its TLS options are the caller's with --tlsMode forced to allowTLS (as the official image
#     does): the certificate is checked before anything is initialised, and mongosh talks to
#     it in plain over 127.0.0.1 inside the container, which nothing outside can reach;
#   - then adds --auth (when a root user was asked for) and execs mongod.
# Secrets stay out of every command line: mongosh reads them from its environment.
set -Eeuo pipefail

if [[ "${1:-}" == -* ]]; then
    set -- mongod "$@"
fi

# file_env VAR: VAR from the environment or from the file named by VAR_FILE.
file_env() {
    local var="$1" file_var="${1}_FILE"
    if [[ -n "${!var:-}" && -n "${!file_var:-}" ]]; then
        echo >&2 "error: both ${var} and ${file_var} are set (but are exclusive)"
        exit 1
    fi
    if [[ -n "${!file_var:-}" ]]; then
        export "${var}=$(<"${!file_var}")"
    fi
    unset "${file_var}"
}

if [[ "${1:-}" == mongod && "$(id -u)" == 0 ]]; then
    find /data/db /data/configdb \! -user mongodb -exec chown mongodb:mongodb '{}' +
    exec gosu mongodb "${BASH_SOURCE[0]}" "$@"
fi

if [[ "${1:-}" == mongod ]]; then
    file_env MONGO_INITDB_ROOT_USERNAME
    file_env MONGO_INITDB_ROOT_PASSWORD
    root_user="${MONGO_INITDB_ROOT_USERNAME:-}"
    root_pass="${MONGO_INITDB_ROOT_PASSWORD:-}"
    if [[ -n "${root_user}" && -z "${root_pass}" ]] || [[ -z "${root_user}" && -n "${root_pass}" ]]; then
        echo >&2 "error: missing MONGO_INITDB_ROOT_USERNAME or MONGO_INITDB_ROOT_PASSWORD:"
        echo >&2 "       both must be specified for a user to be created"
        exit 1
    fi

    dbpath=/data/db
    args=("$@")
    for ((i = 1; i < ${#args[@]}; i++)); do
        case "${args[i]}" in
            --dbpath) dbpath="${args[i + 1]:-}" ;;
            --dbpath=*) dbpath="${args[i]#--dbpath=}" ;;
        esac
    done

    init_scripts=()
    shopt -s nullglob
    for f in /docker-entrypoint-initdb.d/*; do init_scripts+=("${f}"); done
    shopt -u nullglob

    # How many users the data directory already holds (0 when it has no state yet).
    users=$(PYTHONPATH=/opt/mongod-standin python3 - "${dbpath}" <<'PY'
import os, sys
from mongod_standin import store, wire
path = os.path.join(sys.argv[1], store.STATE_FILE)
if not os.path.exists(path):
    print(0)
else:
    with open(path, "rb") as f:
        print(len(wire.decode(f.read()).get("users", [])))
PY
)
    if [[ "${users}" == 0 ]] && [[ -n "${root_user}" || ${#init_scripts[@]} -gt 0 ]]; then
        # The temporary mongod: the caller's options minus network, replica set and auth, and
        # with --tlsMode allowTLS when a certificate is given (plain and TLS both served).
        tmp_args=(mongod)
        skip_next=0
        have_pem=0
        for ((i = 1; i < ${#args[@]}; i++)); do
            if ((skip_next)); then skip_next=0; continue; fi
            case "${args[i]}" in
                --tlsCertificateKeyFile | --tlsCertificateKeyFile=*) have_pem=1 ;;
            esac
            case "${args[i]}" in
                --replSet | --keyFile | --bind_ip | --port | --tlsMode) skip_next=1 ;;
                --replSet=* | --keyFile=* | --bind_ip=* | --port=* | --tlsMode=*) ;;
                --bind_ip_all | --auth) ;;
                *) tmp_args+=("${args[i]}") ;;
            esac
        done
        tmp_args+=(--bind_ip 127.0.0.1 --port 27017)
        if ((have_pem)); then tmp_args+=(--tlsMode allowTLS); fi
        "${tmp_args[@]}" &
        tmp_pid=$!
        for ((try = 0; try < 60; try++)); do
            if (exec 3<>/dev/tcp/127.0.0.1/27017) 2>/dev/null; then break; fi
            if ! kill -0 "${tmp_pid}" 2>/dev/null; then
                echo >&2 "error: the temporary mongod stand-in exited during initialisation"
                exit 1
            fi
            sleep 0.5
        done
        export HOME="${HOME:-/tmp}"
        [[ -w "${HOME}" ]] || export HOME=/tmp
        mongosh_cmd=(mongosh --quiet --norc "mongodb://127.0.0.1:27017/")
        if [[ -n "${root_user}" ]]; then
            MONGO_INITDB_ROOT_USERNAME="${root_user}" MONGO_INITDB_ROOT_PASSWORD="${root_pass}" \
                "${mongosh_cmd[@]}" --eval '
                db.getSiblingDB("admin").createUser({
                    user: process.env.MONGO_INITDB_ROOT_USERNAME,
                    pwd: process.env.MONGO_INITDB_ROOT_PASSWORD,
                    roles: [{role: "root", db: "admin"}]
                }); print("created root user " + process.env.MONGO_INITDB_ROOT_USERNAME)'
        fi
        export MONGO_INITDB_DATABASE="${MONGO_INITDB_DATABASE:-test}"
        for f in "${init_scripts[@]}"; do
            case "${f}" in
                *.sh) echo "$0: running ${f}"; # shellcheck disable=SC1090
                      . "${f}" ;;
                *.js) echo "$0: running ${f}"
                      mongosh --quiet --norc "mongodb://127.0.0.1:27017/${MONGO_INITDB_DATABASE}" \
                          --file "${f}"; echo ;;
                *) echo "$0: ignoring ${f}" ;;
            esac
        done
        kill -TERM "${tmp_pid}"
        wait "${tmp_pid}" || true
        echo "mongod stand-in init process complete; ready for start up."
    fi
    if [[ -n "${root_user}" ]]; then
        have_auth=0
        for a in "$@"; do [[ "${a}" == --auth ]] && have_auth=1; done
        ((have_auth)) || set -- "$@" --auth
    fi
    unset MONGO_INITDB_ROOT_USERNAME MONGO_INITDB_ROOT_PASSWORD root_user root_pass
fi

exec "$@"
