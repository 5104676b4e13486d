#!/usr/bin/env bash
# Take one backup set of the data host's stores into backups/<ID>/ of the deploy path.
#
# Run on the data host, from the deploy path (`inv backup` runs exactly this; so can a timer):
#     ./scripts/backup.sh [--id ID] [--project NAME] [--timeout SECONDS] [--keep D,W,M]
#                         [--max-bytes N] [--release TAG] [--verify-every DAYS]
#
#   --id ID            the set's name (default: the UTC time, e.g. 20261203T154500Z)
#   --project NAME     compose project of the data stack (default: jafar-data)
#   --timeout SECONDS  how long Redis' BGSAVE may take (default: 600)
#   --keep D,W,M       then keep only the newest set of each of the last D days, W weeks and
#                      M months (scripts/backup_retention.py; default: remove nothing)
#   --max-bytes N      with --keep: then remove the oldest sets until all fit in N bytes (the
#                      newest is always kept)
#   --release TAG      the release running, recorded in the manifest (default: the tag of
#                      state/release.json when this host runs the core stack, else unknown)
#   --verify-every DAYS  then, when the last verify that passed is DAYS days old or more,
#                      prove this set restores (scripts/backup-verify.sh); a failed verify
#                      makes this script fail (the set stays)
#
# What a set holds (mode 0600 files in a 0700 folder):
#   ledger.pgdump  pg_dump -Fc of the ledger database (run inside postgres-ledger, over its
#                  local socket: no password is handled);
#   redis.rdb      the RDB file written by a BGSAVE this script waited for (the AOF stays on:
#                  checked, and recorded);
#   mongo.archive.gz  `mongodump --archive --gzip` of MONGO_APP_DB, read from the secondary
#                  (mongo-secondary, read preference secondaryPreferred: the primary keeps
#                  serving) as MONGO_BACKUP_USER, whose `backup` role can write nothing; the
#                  users are not in it (scripts/init-mongo.js makes them);
#   manifest.json  id, start and end times, the host, the release, the tools' versions, and
#                  each file's size and SHA-256; SHA256SUMS the same for `sha256sum -c`.
# When it may (inv backup.schedule makes it so), it writes jafar_backup_last_* metrics for
# node_exporter (JAFAR_BACKUP_TEXTFILE, default /var/lib/prometheus/node-exporter/
# jafar_backup.prom); the BackupTooOld alert reads them.
# The stand-in MongoDB of the sandbox has no oplog, so a dump is not a point in time across
# collections (no --oplog): each collection is read once, as mongodump does without it.
#
# The set is written to backups/.ID.partial and renamed when complete, so a set that is listed
# is whole. It refuses to start when the file system of backups/ has less free space than
# twice the newest set (a full disk would stop the databases beside it). One backup at a time on a host (flock on backups/.lock): a second one exits 1.
# No secret is on a command line, in the environment of a container, or in the output: the
# Redis password goes from secrets/redis_password to redis-cli on stdin, MongoDB's backup
# password from secrets/mongo_backup_password to mongodump on stdin (it reads one line there).
# Exit status: 0 done (the last line is `backup ID complete`), 1 failed (one line on stderr,
# nothing left behind but the set's .partial folder, removed), 2 bad arguments.
set -euo pipefail

# shellcheck source=scripts/backup-lib.sh
. "$(dirname "$0")/backup-lib.sh"
files=(ledger.pgdump redis.rdb)  # the set's files but the manifest (mongo.archive.gz added)
readonly TEXTFILE="${JAFAR_BACKUP_TEXTFILE:-/var/lib/prometheus/node-exporter/jafar_backup.prom}"

id="$(date -u +%Y%m%dT%H%M%SZ)"
project="jafar-data"
timeout_s=600
release="unknown"
keep=""
max_bytes=0
verify_every=0

die() {
    echo "backup: error: $*" >&2
    exit 1
}

usage_error() {
    echo "backup: $* (usage: ./scripts/backup.sh [--id ID] [--project NAME] [--timeout SECONDS] [--keep D,W,M] [--max-bytes N] [--release TAG] [--verify-every DAYS])" >&2
    exit 2
}

while [ "$#" -gt 0 ]; do
    case "$1" in
        --id | --project | --timeout | --release | --keep | --max-bytes | --verify-every)
            [ "$#" -ge 2 ] || usage_error "$1 needs a value"
            case "$1" in
                --id) id="$2" ;;
                --project) project="$2" ;;
                --timeout) timeout_s="$2" ;;
                --release) release="$2" ;;
                --keep) keep="$2" ;;
                --max-bytes) max_bytes="$2" ;;
                --verify-every) verify_every="$2" ;;
            esac
            shift 2
            ;;
        -h | --help)
            sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
            exit 0
            ;;
        *)
            usage_error "unknown argument: $1"
            ;;
    esac
done

[[ "$id" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$ ]] \
    || usage_error "--id may hold letters, digits, . _ and - (at most 64, not starting with . _ -)"
[[ "$project" =~ ^[a-z0-9][a-z0-9_-]*$ ]] \
    || usage_error "--project must be a compose project name (lowercase letters, digits, - and _)"
[[ "$timeout_s" =~ ^[1-9][0-9]{0,4}$ ]] \
    || usage_error "--timeout must be a whole number of seconds between 1 and 99999"
[[ -z "$keep" || "$keep" =~ ^[0-9]{1,4},[0-9]{1,4},[0-9]{1,4}$ ]] \
    || usage_error "--keep must be DAILY,WEEKLY,MONTHLY counts, e.g. 7,4,12"
[[ "$max_bytes" =~ ^[0-9]{1,16}$ ]] \
    || usage_error "--max-bytes must be a number of bytes"
[[ "$verify_every" =~ ^[0-9]{1,3}$ ]] \
    || usage_error "--verify-every must be a number of days (0: never)"
[[ "$release" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$ ]] \
    || usage_error "--release must be an image tag (letters, digits, . _ -)"

[ -f "$COMPOSE_FILE" ] \
    || die "$COMPOSE_FILE not found: run this from the deploy path (e.g. cd /opt/jafar)"
[ -f "$ENV_FILE" ] || die "$ENV_FILE not found in $(pwd): run env.sync first"
for secret in redis_password mongo_backup_password; do
    [ -r "$SECRETS_DIR/$secret" ] \
        || die "$SECRETS_DIR/$secret cannot be read in $(pwd) (run env.sync)"
done

backup_user="$(env_value MONGO_BACKUP_USER)"
app_db="$(env_value MONGO_APP_DB)"
if [ -z "$backup_user" ] || [ -z "$app_db" ]; then
    die "MONGO_BACKUP_USER and MONGO_APP_DB must be set in $ENV_FILE (run env.sync)"
fi

compose=(docker compose -p "$project" --env-file "$ENV_FILE" -f "$COMPOSE_FILE")

# the release this host runs, when it runs the core stack too (state/release.json)
if [ "$release" = unknown ] && [ -f state/release.json ]; then
    release="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["tag"])' \
        state/release.json 2>/dev/null || echo unknown)"
fi

umask 077
mkdir -p "$DIR"
chmod 0700 "$DIR"
exec 9>"$DIR/.lock"
flock -n 9 || die "another backup is running on this host (it holds $DIR/.lock); wait for it"
[ ! -e "$DIR/.restoring" ] \
    || die "a restore of set $(head -c 64 "$DIR/.restoring") is under way or failed: backups wait until a restore succeeds (inv restore)"
[ ! -e "$DIR/$id" ] || die "a backup named $id already exists in $DIR"
# room for this set: twice the newest one (sets only grow with the data)
newest="$(find "$DIR" -mindepth 2 -maxdepth 2 -name manifest.json -printf '%h\n' | sort | tail -n 1)"
if [ -n "$newest" ]; then
    need=$((2 * $(du -sb "$newest" | cut -f1)))
    free=$(df -B1 --output=avail "$DIR" | tail -n 1 | tr -d ' ')
    [ "$free" -ge "$need" ] \
        || die "only $free bytes free for $DIR, and the newest set ($(basename "$newest")) needs about $((need / 2)): free space or lower backup_keep/backup_max_size"
fi
work="$DIR/.$id.partial"
rm -rf "$work"
mkdir "$work"
trap 'rm -rf "$work"' EXIT
started="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

for service in postgres-ledger redis mongo-secondary; do
    [ -n "$("${compose[@]}" ps --status running --quiet "$service" 2>/dev/null)" ] \
        || die "$service is not running in compose project $project (run data.up first)"
done

# --- PostgreSQL: the ledger database, custom format (pg_restore reads it), and its rows -----
# One psql session: a repeatable-read transaction exports its snapshot, pg_dump (run by psql's
# \!) reads exactly that snapshot, then scripts/ledger-digest.sql counts and checksums each
# table in the same snapshot, so the manifest describes the rows of the dump (backup-verify.sh
# compares a restore of it with them). psql 15 does not report \!'s exit status: a marker does.
# shellcheck disable=SC2016  # expanded by psql and by the container's shell
{
    printf '%s\n' 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;' \
        'SELECT pg_export_snapshot() AS jafar_snapshot \gset' \
        '\setenv JAFAR_SNAPSHOT :jafar_snapshot' \
        '\! pg_dump -U "$POSTGRES_USER" -Fc --snapshot="$JAFAR_SNAPSHOT" "$POSTGRES_DB" || echo PG_DUMP_FAILED >&2' \
        '\o /dev/stderr'
    cat scripts/ledger-digest.sql
    echo 'COMMIT;'
} | "${compose[@]}" exec -T postgres-ledger sh -c \
        'exec psql -X -q -At -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB"' \
    >"$work/ledger.pgdump" 2>"$work/.ledger.log" \
    || die "pg_dump of the ledger failed: $(grep -v $'^TABLE\t' "$work/.ledger.log" | tail -n 1)"
if grep -q '^PG_DUMP_FAILED$' "$work/.ledger.log"; then
    die "pg_dump of the ledger failed: $(grep -v -e '^PG_DUMP_FAILED$' -e $'^TABLE\t' "$work/.ledger.log" | tail -n 1)"
fi
pg_version="$("${compose[@]}" exec -T postgres-ledger pg_dump --version)"

# --- Redis: BGSAVE, waited for, then its RDB file -------------------------------------------
# redis-cli inside the container, the password on its stdin (REDISCLI_AUTH in its own
# environment only), over TLS as every client.
redis_cli() {
    "${compose[@]}" exec -T redis sh -c 'IFS= read -r REDISCLI_AUTH; export REDISCLI_AUTH
        exec redis-cli --no-auth-warning --tls --cacert /run/secrets/data_ca_crt -h 127.0.0.1 -p 6379 "$@"' \
        redis-cli "$@" <"$SECRETS_DIR/redis_password"
}
info_field() {  # NAME: the value of NAME in `INFO persistence`
    redis_cli INFO persistence | tr -d '\r' | sed -n "s/^$1://p"
}
aof="$(redis_cli CONFIG GET appendonly | tr -d '\r' | sed -n 2p)"
[ "$aof" = "yes" ] || die "Redis runs with appendonly '$aof', not yes: the data stack's AOF is off; redeploy the data stack (inv data.up)"
before="$(redis_cli LASTSAVE | tr -d '\r')"
[[ "$before" =~ ^[0-9]+$ ]] || die "Redis did not answer LASTSAVE (is the password in $SECRETS_DIR current?)"
# a save in the same second would not move LASTSAVE: start in the next one
while [ "$(date +%s)" -le "$before" ]; do sleep 0.2; done
reply="$(redis_cli BGSAVE SCHEDULE | tr -d '\r')"
case "$reply" in
    "Background saving started" | "Background saving scheduled") ;;
    *) die "Redis refused BGSAVE: $reply" ;;
esac
deadline=$((SECONDS + timeout_s))
until [ "$(redis_cli LASTSAVE | tr -d '\r')" -gt "$before" ] \
        && [ "$(info_field rdb_bgsave_in_progress)" = 0 ]; do
    [ "$SECONDS" -lt "$deadline" ] || die "Redis' BGSAVE did not finish within ${timeout_s}s"
    sleep 0.5
done
[ "$(info_field rdb_last_bgsave_status)" = ok ] || die "Redis' BGSAVE failed (see its log: inv logs redis)"
"${compose[@]}" exec -T redis cat /data/dump.rdb >"$work/redis.rdb" || die "reading Redis' dump.rdb failed"
redis_keys="$(redis_cli DBSIZE | tr -d '\r')"
# the keys the file itself holds (redis-check-rdb, in a scratch container of the same image):
# what backup-verify.sh compares with; DBSIZE may count writes made after the save
rdb_keys="$(rdb_keys "$work/redis.rdb" "$(service_image redis)")" \
    || die "redis-check-rdb refused the RDB Redis wrote: $rdb_keys"
redis_version="$("${compose[@]}" exec -T redis redis-server --version)"

# --- MongoDB: mongodump of the application database, from the secondary ---------------------
# An image without mongodump fails the backup, unless the image itself says why it has none
# (/usr/local/share/mongo-tools/ABSENT: the sandbox's, built without the tools' source); then
# the set leaves MongoDB out and its manifest says so.
# shellcheck disable=SC2016  # run by the container's shell
absent="$("${compose[@]}" exec -T mongo-secondary sh -c 'command -v mongodump >/dev/null && exit
    head -c 300 /usr/local/share/mongo-tools/ABSENT 2>/dev/null || echo missing')"
mongo_version="" mongo_skipped="" mongo_digest="{}"
case "$absent" in
    "")
        # (the Database Tools spell TLS --ssl/--sslCAFile)
        "${compose[@]}" exec -T mongo-secondary mongodump --host localhost --port 27018 --ssl \
            --sslCAFile /run/secrets/data_ca_crt --username "$backup_user" \
            --authenticationDatabase "$app_db" --readPreference secondaryPreferred \
            --db "$app_db" --archive --gzip <"$SECRETS_DIR/mongo_backup_password" \
            >"$work/mongo.archive.gz" 2>"$work/.mongodump.log" \
            || die "mongodump of $app_db failed: $(grep -v -e 'Enter password' -e "try 'mongodump --help'" "$work/.mongodump.log" | tail -n 1)"
        # (sed, not head: head closes the pipe while docker exec still writes, its exit 255 and
        # pipefail then stopped this script without a word)
        mongo_version="$("${compose[@]}" exec -T mongo-secondary mongodump --version | sed -n 1p)"
        mongo_digest="$(python3 scripts/backup_digest.py mongo "$work/mongo.archive.gz" "$app_db")" \
            || die "the archive mongodump wrote cannot be read back: $mongo_digest"
        files+=(mongo.archive.gz)
        ;;
    missing)
        die "mongodump is not in the mongo-secondary image (MONGO_IMAGE); the official mongo image has it"
        ;;
    *)
        mongo_skipped="${absent%%$'\n'*}"
        echo "backup: MongoDB left out: $mongo_skipped" >&2
        : >"$work/.mongodump.log"
        ;;
esac

# --- the manifest ---------------------------------------------------------------------------
(cd "$work" && sha256sum "${files[@]}" >SHA256SUMS)
ID="$id" STARTED="$started" RELEASE="$release" PG_VERSION="$pg_version" \
    REDIS_VERSION="$redis_version" REDIS_KEYS="$redis_keys" RDB_KEYS="$rdb_keys" \
    MONGO_VERSION="$mongo_version" MONGO_DB="$app_db" MONGO_USER="$backup_user" \
    MONGO_DIGEST="$mongo_digest" \
    MONGO_SKIPPED="$mongo_skipped" HOST="$(hostname)" python3 - "$work" "${files[@]}" <<'PY'
import hashlib, json, os, re, sys, time
work, names = sys.argv[1], sys.argv[2:]
e = os.environ
# mongodump's log: "done dumping `DB.COLLECTION` (N documents)" per collection
with open(os.path.join(work, ".mongodump.log")) as f:
    dumped = {m[1]: int(m[2]) for m in re.finditer(
        r"done dumping `" + re.escape(e["MONGO_DB"]) + r"\.([^`]+)` \((\d+) documents?\)",
        f.read())}
os.remove(os.path.join(work, ".mongodump.log"))
digest = json.loads(e["MONGO_DIGEST"])
if not e["MONGO_SKIPPED"] and {k: v["documents"] for k, v in digest.items()} != dumped:
    sys.exit("backup: error: the archive does not hold the documents mongodump said it dumped")
# the ledger's tables, counted and checksummed in the snapshot pg_dump read
with open(os.path.join(work, ".ledger.log")) as f:
    tables = {name: {"rows": int(rows), "checksum": checksum} for name, rows, checksum in (
        line.rstrip("\n").split("\t")[1:] for line in f if line.startswith("TABLE\t"))}
os.remove(os.path.join(work, ".ledger.log"))
def entry(name):
    with open(os.path.join(work, name), "rb") as f:
        data = f.read()
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
manifest = {
    "id": e["ID"], "started": e["STARTED"],
    "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "host": e["HOST"], "release": e["RELEASE"],
    "files": {name: entry(name) for name in names},
    "stores": {
        "ledger": {"file": "ledger.pgdump", "tool": e["PG_VERSION"].strip(),
                   "tables": tables},
        "redis": {"file": "redis.rdb", "tool": e["REDIS_VERSION"].strip(),
                  "keys": int(e["REDIS_KEYS"].strip() or 0), "rdb_keys": int(e["RDB_KEYS"]),
                  "aof": "on"},
        "mongo": {"skipped": e["MONGO_SKIPPED"]} if e["MONGO_SKIPPED"] else {
            "file": "mongo.archive.gz", "tool": e["MONGO_VERSION"].strip(),
            "database": e["MONGO_DB"], "user": e["MONGO_USER"], "collections": dumped,
            "documents": sum(dumped.values()), "checksums": {
                name: d["checksum"] for name, d in digest.items()}},
    },
}
with open(os.path.join(work, "manifest.json"), "w") as f:
    json.dump(manifest, f, sort_keys=True)
    f.write("\n")
PY
chmod 0600 "$work"/*
mv "$work" "$DIR/$id"
trap - EXIT

if [ -n "$keep" ]; then
    python3 scripts/backup_retention.py --keep "$keep" --max-bytes "$max_bytes" "$DIR" \
        || die "set $id is complete, but applying --keep $keep failed"
fi

# The proof, when one is due: backup-verify.sh writes backups/.verified when it passes and
# backups/.verify-failed when it does not (both read below, for the metrics).
verified=ok
if [ "$verify_every" -gt 0 ]; then
    last="$(stat -c %Y "$DIR/.verified" 2>/dev/null || echo 0)"
    # an hour's slack: the timer's random delay must not push a weekly proof to the 8th day
    if [ $(($(date +%s) - last + 3600)) -ge $((verify_every * 86400)) ]; then
        JAFAR_BACKUP_LOCK_HELD=1 ./scripts/backup-verify.sh --project "$project" "$id" \
            || verified=failed
    fi
fi

# For node_exporter's textfile collector, where `inv backup.schedule` made this file ours
# (the folder is root's): rewritten in place, one write.
if [ -w "$TEXTFILE" ]; then
    metrics="$(
        echo "# HELP jafar_backup_last_success_timestamp_seconds When the last complete backup set was taken."
        echo "# TYPE jafar_backup_last_success_timestamp_seconds gauge"
        echo "jafar_backup_last_success_timestamp_seconds $(date +%s)"
        echo "# HELP jafar_backup_last_duration_seconds How long the last complete backup took."
        echo "# TYPE jafar_backup_last_duration_seconds gauge"
        echo "jafar_backup_last_duration_seconds $SECONDS"
        echo "# HELP jafar_backup_last_bytes The size of each file of the last complete backup set."
        echo "# TYPE jafar_backup_last_bytes gauge"
        for f in "${files[@]}"; do
            echo "jafar_backup_last_bytes{file=\"$f\"} $(stat -c %s "$DIR/$id/$f")"
        done
        echo "# HELP jafar_backup_last_verified_timestamp_seconds When a backup set last restored to what it recorded (scripts/backup-verify.sh)."
        echo "# TYPE jafar_backup_last_verified_timestamp_seconds gauge"
        echo "jafar_backup_last_verified_timestamp_seconds $(stat -c %Y "$DIR/.verified" 2>/dev/null || echo 0)"
        echo "# HELP jafar_backup_verify_failed 1 when the last verify of a backup set found a difference or failed."
        echo "# TYPE jafar_backup_verify_failed gauge"
        echo "jafar_backup_verify_failed $([ -e "$DIR/.verify-failed" ] && echo 1 || echo 0)"
    )"
    printf '%s\n' "$metrics" >"$TEXTFILE"
fi
[ "$verified" = ok ] || die "set $id is complete, but it does not restore to what it recorded (the table above)"
echo "backup $id complete"
