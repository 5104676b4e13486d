#!/usr/bin/env bash
# Prove that one backup set restores: restore it into scratch containers and compare what they
# hold with what its manifest recorded when the set was taken.
#
# Run on the data host, from the deploy path (`inv backup.verify` runs exactly this; so does
# scripts/backup.sh --verify-every, the timer's weekly proof):
#     ./scripts/backup-verify.sh [--project NAME] ID
#
#   ID                 the set (backups/ID); `latest` is the one completed last
#   --project NAME     compose project of the data stack, whose images the scratch containers
#                      run (default: jafar-data)
#
# What it checks, one line each (STORE, WHAT, RECORDED, RESTORED, RESULT):
#   files   every file has the SHA-256 of the set's SHA256SUMS;
# (scripts/backup_digest.py verdict prints the table and decides.)
#   ledger  pg_restore of ledger.pgdump into a scratch PostgreSQL, then per table its rows and
#           checksum (scripts/ledger-digest.sql) against those taken in the dump's snapshot;
#   redis   redis-check-rdb of redis.rdb, and the keys it reads against the manifest's;
#   mongo   mongorestore of mongo.archive.gz into a scratch mongod, then a mongodump of that,
#           per collection its documents and checksum (scripts/backup_digest.py) against the
#           manifest's (a set without MongoDB says so).
# The scratch containers run the images the stores run now, with no network at all (so no
# published port and nothing can reach them), CPU and memory limited, no secret (they trust
# their own socket: only `docker exec` gets in), and are removed with their volumes afterwards.
# It takes the host's backup flock (a backup's retention would otherwise remove the set under
# it), unless its caller holds it (JAFAR_BACKUP_LOCK_HELD=1: backup.sh).
# A pass writes backups/.verified (its time is the metric's) and removes backups/.verify-failed,
# which a failure writes: backup.sh reports both (jafar_backup_last_verified_timestamp_seconds,
# jafar_backup_verify_failed) to node_exporter.
# Exit status: 0 every check passed (the last line is `verify ID passed`), 1 a difference or a
# failure (the last line says which), 2 bad arguments.
set -euo pipefail

# shellcheck source=scripts/backup-lib.sh
. "$(dirname "$0")/backup-lib.sh"

project="jafar-data"
id=""
READY_WAIT=120  # seconds a scratch store may take to accept connections

die() {
    echo "verify: error: $*" >&2
    exit 1
}

usage_error() {
    echo "verify: $* (usage: ./scripts/backup-verify.sh [--project NAME] ID)" >&2
    exit 2
}

while [ "$#" -gt 0 ]; do
    case "$1" in
        --project)
            [ "$#" -ge 2 ] || usage_error "$1 needs a value"
            project="$2"
            shift 2
            ;;
        -h | --help)
            sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
            exit 0
            ;;
        -*) usage_error "unknown argument: $1" ;;
        *)
            [ -z "$id" ] || usage_error "one set at a time (got $id and $1)"
            id="$1"
            shift
            ;;
    esac
done
[ -n "$id" ] || usage_error "name the set to verify (or latest)"
[[ "$id" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$ ]] \
    || usage_error "the set's id may hold letters, digits, . _ and - (at most 64)"
[[ "$project" =~ ^[a-z0-9][a-z0-9_-]*$ ]] \
    || usage_error "--project must be a compose project name (lowercase letters, digits, - and _)"

[ -f "$COMPOSE_FILE" ] \
    || die "$COMPOSE_FILE not found: run this from the deploy path (e.g. cd /opt/jafar)"
[ -f "$ENV_FILE" ] || die "$ENV_FILE not found in $(pwd): run env.sync first"
compose=(docker compose -p "$project" --env-file "$ENV_FILE" -f "$COMPOSE_FILE")

umask 077
if [ "${JAFAR_BACKUP_LOCK_HELD:-}" != 1 ]; then
    exec 9>"$DIR/.lock"
    flock -n 9 || die "a backup is running on this host (it holds $DIR/.lock); verify after it"
fi
if [ "$id" = latest ]; then
    id="$(find "$DIR" -mindepth 2 -maxdepth 2 -name manifest.json -printf '%T@ %h\n' \
        | sort -n | tail -n 1 | sed 's|^[^ ]* .*/||')"
    [ -n "$id" ] || die "there is no backup set in $DIR yet (inv backup takes one)"
fi
set_dir="$DIR/$id"
[ -f "$set_dir/manifest.json" ] || die "no backup set $id in $DIR (inv backup.list shows them)"

work="$DIR/.verify-$id"
scratch=("jafar-verify-$id-ledger" "jafar-verify-$id-mongo")
cleanup() {
    docker rm --force --volumes "${scratch[@]}" >/dev/null 2>&1 || true
    rm -rf "$work"
}
cleanup
mkdir "$work"
trap cleanup EXIT
result() {  # passed|failed: for backup.sh's metrics (the time of the last pass, a failure)
    if [ "$1" = passed ]; then
        echo "$id" >"$DIR/.verified"
        rm -f "$DIR/.verify-failed"
    else
        echo "$id" >"$DIR/.verify-failed"
    fi
}

wait_until() {  # SECONDS COMMAND...: until COMMAND succeeds (1 when SECONDS pass first)
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 1
    done
}

# --- files ----------------------------------------------------------------------------------
sums="ok"
(cd "$set_dir" && sha256sum --quiet --strict -c SHA256SUMS) >"$work/sums" 2>&1 \
    || sums="$(grep -c FAILED "$work/sums" || true) file(s) changed: $(sed -n 's/: FAILED.*//p' "$work/sums" | paste -sd ' ')"

# --- ledger: pg_restore into a scratch PostgreSQL, then its rows --------------------------
: >"$work/ledger"
ledger="ok"
if image="$(service_image postgres-ledger)"; then
    # (ready on TCP inside its own namespace: the image's first-start server has the socket only)
    if ! docker run -d --name "${scratch[0]}" "${SCRATCH[@]}" -e POSTGRES_HOST_AUTH_METHOD=trust \
            -e POSTGRES_DB=verify "$image" >"$work/ledger.log" 2>&1; then
        ledger="the scratch PostgreSQL did not start: $(last_said "$work/ledger.log")"
    elif ! wait_until "$READY_WAIT" docker exec "${scratch[0]}" \
            pg_isready -q -h 127.0.0.1 -U postgres; then
        ledger="the scratch PostgreSQL did not accept connections within ${READY_WAIT}s"
    elif ! docker exec -i "${scratch[0]}" pg_restore -U postgres -d verify --no-owner \
            --no-privileges --exit-on-error <"$set_dir/ledger.pgdump" >"$work/ledger.log" 2>&1; then
        ledger="pg_restore failed: $(last_said "$work/ledger.log")"
    elif ! docker exec -i "${scratch[0]}" psql -X -q -At -v ON_ERROR_STOP=1 -U postgres \
            -d verify <scripts/ledger-digest.sql >"$work/ledger" 2>"$work/ledger.log"; then
        ledger="reading the restored tables failed: $(last_said "$work/ledger.log")"
    fi
    docker rm --force --volumes "${scratch[0]}" >/dev/null 2>&1 || true
else
    ledger="postgres-ledger is not running in compose project $project: its image is the scratch one"
fi

# --- redis: the RDB file, read whole by redis-check-rdb ------------------------------------
redis_keys=""
if image="$(service_image redis)"; then
    redis_keys="$(rdb_keys "$set_dir/redis.rdb" "$image")" || redis_keys="FAILED $redis_keys"
else
    redis_keys="FAILED redis is not running in compose project $project: its image is the scratch one"
fi

# --- mongo: mongorestore into a scratch mongod, then a mongodump of that ------------------
echo '{}' >"$work/mongo"
mongo="ok"
app_db="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["stores"].get("mongo", {}).get("database", ""))' "$set_dir/manifest.json")"
if [ -z "$app_db" ]; then
    mongo="skipped"
elif ! image="$(service_image mongo-secondary)"; then
    mongo="mongo-secondary is not running in compose project $project: its image is the scratch one"
else
    # shellcheck disable=SC2016  # mongosh's script
    if ! docker run -d --name "${scratch[1]}" "${SCRATCH[@]}" "$image" \
            mongod --bind_ip 127.0.0.1 --port 27017 >"$work/mongo.log" 2>&1; then
        mongo="the scratch mongod did not start: $(last_said "$work/mongo.log")"
    elif ! wait_until "$READY_WAIT" docker exec -e HOME=/tmp "${scratch[1]}" mongosh \
            --quiet --norc --eval 'if (db.runCommand({ping: 1}).ok !== 1) quit(1)'; then
        mongo="the scratch mongod did not answer within ${READY_WAIT}s"
    elif ! docker exec -i "${scratch[1]}" mongorestore --host 127.0.0.1 --archive --gzip \
            --nsInclude "$app_db.*" --stopOnError <"$set_dir/mongo.archive.gz" \
            >"$work/mongo.log" 2>&1; then
        mongo="mongorestore failed: $(last_said "$work/mongo.log")"
    elif ! docker exec "${scratch[1]}" mongodump --host 127.0.0.1 --db "$app_db" --archive \
            --gzip 2>"$work/mongo.log" \
            | python3 scripts/backup_digest.py mongo - "$app_db" >"$work/mongo" 2>>"$work/mongo.log"; then
        mongo="reading the restored collections failed: $(last_said "$work/mongo.log")"
    fi
    docker rm --force --volumes "${scratch[1]}" >/dev/null 2>&1 || true
fi

# --- the table, and the verdict --------------------------------------------------------------
if python3 scripts/backup_digest.py verdict "$set_dir/manifest.json" "$sums" "$ledger" \
        "$work/ledger" "$redis_keys" "$mongo" "$work/mongo"; then
    result passed
    echo "verify $id passed"
else
    result failed
    exit 1
fi
