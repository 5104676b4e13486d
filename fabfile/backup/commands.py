"""Command lines of backups and restores on the data host (pure builders: strings).

A backup is scripts/backup.sh (the same script an operator or a timer runs); a restore is a few
commands per store, each with the data stack's own compose invocation: the store's services
are removed with their volumes, brought up empty (with the host's current secrets), then
loaded. MongoDB's three members come back as a new replica set with its users
(scripts/init-replica.sh, as on a first deploy) before mongorestore loads the collections.
"""

from __future__ import annotations

import shlex

from fabfile.commands.compose import compose
from fabfile.config import Environment
from fabfile.services import BY_NAME, compose_project

BACKUP_DIR = "backups"  # under the deploy path, mode 0700
MANIFEST = "manifest.json"
# the file of each store in a set, and the service that holds the store
STORE_FILES = {"ledger": "ledger.pgdump", "redis": "redis.rdb", "mongo": "mongo.archive.gz"}
STORE_SERVICES = {"ledger": ("postgres-ledger",), "redis": ("redis",),
                  "mongo": ("mongo-primary", "mongo-secondary", "mongo-arbiter")}


def set_path(env: Environment, backup_id: str) -> str:
    return f"{env.deploy_path}/{BACKUP_DIR}/{backup_id}"


def keep(env: Environment) -> str:
    """backup_keep as the script's --keep (DAILY,WEEKLY,MONTHLY)."""
    return ",".join(map(str, env.backup_keep))


def take(env: Environment, backup_id: str, release: str, timeout: int,
         retain: bool = True) -> str:
    """`./scripts/backup.sh`: one set, named `backup_id`, then (with `retain`) the retention
    (backup_keep, then backup_max_size); its last line says it is complete."""
    retention = ["--keep", keep(env), "--max-bytes", str(env.backup_max_bytes)] if retain else []
    script = shlex.join(["./scripts/backup.sh", "--id", backup_id, "--project",
                         compose_project(env, "data"), "--timeout", str(timeout),
                         *retention, "--release", release])
    return f"cd {shlex.quote(env.deploy_path)} && {script}"


def verify(env: Environment, backup_id: str) -> str:
    """`./scripts/backup-verify.sh`: restore the set into scratch containers (no network,
    limited) and compare each table's and collection's rows and checksum with the manifest's;
    its last line says whether it passed."""
    script = shlex.join(["./scripts/backup-verify.sh", "--project", compose_project(env, "data"),
                         backup_id])
    return f"cd {shlex.quote(env.deploy_path)} && {script}"


def manifests(env: Environment) -> str:
    """Every complete set's manifest, one JSON document a line (nothing when there is none)."""
    return (f"cd {shlex.quote(env.deploy_path)} && for m in {BACKUP_DIR}/*/{MANIFEST}; do "
            '[ -f "$m" ] && cat "$m"; done; true')


def check_files(env: Environment, backup_id: str) -> str:
    """The set's files still have the SHA-256 they had when it was taken."""
    return (f"cd {shlex.quote(set_path(env, backup_id))} && "
            "sha256sum --quiet --strict -c SHA256SUMS 2>&1")


RESTORING = ".restoring"  # in backups/: while it is there, scripts/backup.sh refuses to run


def mark_restoring(env: Environment, backup_id: str) -> str:
    """From here until the restore succeeds no backup runs (it would save half-loaded stores,
    and its retention could then drop good sets)."""
    return (f"cd {shlex.quote(env.deploy_path)} && "
            f"echo {shlex.quote(backup_id)} > {BACKUP_DIR}/{RESTORING}")


def unmark_restoring(env: Environment) -> str:
    return f"cd {shlex.quote(env.deploy_path)} && rm -f {BACKUP_DIR}/{RESTORING}"


def remove_store(env: Environment, store: str) -> str:
    """Stop and remove the store's containers, then their volumes (gone already: fine)."""
    names = STORE_SERVICES[store]
    volumes = [f"{compose_project(env, 'data')}_{v}" for n in names for v in BY_NAME[n].volumes]
    return (f"{compose(env, 'data', 'rm', '--stop', '--force', *names)} && "
            f"docker volume rm --force {shlex.join(volumes)} >/dev/null")


def up_store(env: Environment, store: str, wait_timeout: int) -> str:
    """Create the store's services again, empty, and wait until they are healthy."""
    return compose(env, "data", "up", "--detach", "--wait", "--wait-timeout", str(wait_timeout),
                   "--no-deps", *STORE_SERVICES[store])


def load_ledger(env: Environment, backup_id: str) -> str:
    """pg_restore into the new ledger database, in one transaction (all or nothing), as the
    superuser over the container's local socket; owners and grants come from the dump. What
    the first start made (the owner's schema) is dropped and made again from the dump."""
    restore = ('exec pg_restore -U "$POSTGRES_USER" -d "$POSTGRES_DB" --exit-on-error '
               "--single-transaction --clean --if-exists")
    dump = shlex.quote(f"{set_path(env, backup_id)}/{STORE_FILES['ledger']}")
    return (f"{compose(env, 'data', 'exec', '-T', 'postgres-ledger', 'sh', '-c', restore)} "
            f"< {dump}")


# Inside a one-off container of the Redis image with the (stopped) redis container's volumes:
# the RDB is put in an empty /data, loaded by a private server (no TCP port, no password: only
# a socket in this container's /tmp), which then writes the AOF from it (appendonly yes, as the
# data stack runs) and shuts down. The next start of the store reads that AOF.
REDIS_LOAD = """set -eu
find /data -mindepth 1 -delete
cat > /data/dump.rdb
redis-server --port 0 --unixsocket /tmp/load.sock --dir /data --appendonly no --daemonize yes \
    --logfile /tmp/load.log
cli() { redis-cli -s /tmp/load.sock "$@"; }
i=0; until cli PING 2>/dev/null | grep -qx PONG; do
    i=$((i + 1))
    [ "$i" -lt 300 ] || { echo "the RDB did not load" >&2; tail -n 5 /tmp/load.log >&2; exit 1; }
    sleep 0.2; done
echo "keys $(cli DBSIZE)"
cli CONFIG SET appendonly yes >/dev/null
i=0; while :; do
    info=$(cli INFO persistence | tr -d '\\r')
    case "$info" in *aof_rewrite_in_progress:0*aof_rewrite_scheduled:0*) break ;; esac
    i=$((i + 1)); [ "$i" -lt 1500 ] || { echo "the AOF was not written" >&2; exit 1; }
    sleep 0.2; done
case "$info" in
    *aof_last_bgrewrite_status:ok*) ;;
    *) echo "writing the AOF failed" >&2; exit 1 ;;
esac
cli SHUTDOWN SAVE >/dev/null 2>&1 || true
i=0; while [ -S /tmp/load.sock ]; do i=$((i + 1)); [ "$i" -lt 300 ] || exit 1; sleep 0.2; done
ls /data/appendonlydir >/dev/null"""


def load_redis(env: Environment, backup_id: str) -> str:
    """Stop the (new, empty) redis container, write its volume from the set's RDB in a one-off
    container of the same image (no network, no capability), and start it again."""
    ps = compose(env, "data", "ps", "--all", "--quiet", "redis")
    rdb = shlex.quote(f"{set_path(env, backup_id)}/{STORE_FILES['redis']}")
    one_off = shlex.join(["docker", "run", "--rm", "-i", "--network", "none", "--user", "redis",
                          "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true",
                          "--entrypoint", "sh"])
    return (f'cid=$({ps}) && [ -n "$cid" ] && '
            f'image=$(docker inspect --format "{{{{.Config.Image}}}}" "$cid") && '
            f'docker stop --time 60 "$cid" >/dev/null && '
            f'{one_off} --volumes-from "$cid" "$image" -c {shlex.quote(REDIS_LOAD)} < {rdb} && '
            f'docker start "$cid" >/dev/null')


# Inside mongo-primary (it has the real mongorestore and the data CA): the first line of stdin
# is root's password (mongorestore reads one line there when stdin is not a terminal), the rest
# the archive. $1 is the replica set seed list, so the writes go to whichever member is the
# primary. Only MONGO_APP_DB's collections are restored (the users are init-replica.sh's, with
# today's passwords); --drop makes a second run give the same end state; every write waits for
# a majority of the members.
MONGO_LOAD = ('exec mongorestore --host "$1" --ssl --sslCAFile /run/secrets/data_ca_crt '
              '--username "$MONGO_ROOT_USERNAME" --authenticationDatabase admin '
              '--archive --gzip --drop --nsInclude "$MONGO_APP_DB.*" '
              "--writeConcern '{w: \"majority\"}' --stopOnError")


def load_mongo(env: Environment, backup_id: str) -> str:
    """mongorestore of the set's archive into the replica set, as root (a restore is an
    operator's deliberate act; the backup user cannot write)."""
    deploy = shlex.quote(env.deploy_path)
    archive = shlex.quote(f"{set_path(env, backup_id)}/{STORE_FILES['mongo']}")
    restore = compose(env, "data", "exec", "-T", "mongo-primary", "sh", "-c", MONGO_LOAD,
                      "mongorestore")
    return (f"cd {deploy} && seeds=\"rs0/$(sed -n 's/^MONGO_HOSTS=//p' .env.ec2 | tail -n 1)\" "
            f'&& {{ printf "%s\\n" "$(cat secrets/mongo_root_password)"; cat {archive}; }} '
            f'| {{ {restore} "$seeds"; }}')


# --- offsite copies (backup_s3): age on the data host, so only ciphertext ever leaves it ------

def encrypt(env: Environment, backup_id: str, name: str, recipient: str) -> str:
    """One file of a set, age-encrypted to the recipient (a public key), on stdout."""
    return (f"cd {shlex.quote(set_path(env, backup_id))} && "
            f"exec age --encrypt --recipient {shlex.quote(recipient)} {shlex.quote(name)}")


def fetching(env: Environment, backup_id: str) -> str:
    """Where a set arriving from S3 waits, hidden from listings, until it is whole."""
    return f"{env.deploy_path}/{BACKUP_DIR}/.{backup_id}.fetch"


def receive(env: Environment, backup_id: str, name: str, first: bool) -> str:
    """Write stdin (one file's ciphertext) into the set's fetch folder (`first`: empty it)."""
    folder = shlex.quote(fetching(env, backup_id))
    start = f"rm -rf {folder} && mkdir -m 0700 {folder} && " if first else ""
    return f"umask 077 && {start}cat > {folder}/{shlex.quote(name + '.age')}"


# The manifest is this set's (its id) and names each file with its SHA-256: files of another
# set (encrypted to the same recipient, put in S3 under this id) are refused.
MANIFEST_CHECK = (
    "import hashlib, json, sys\n"
    "m = json.load(open('manifest.json'))\n"
    "assert m['id'] == sys.argv[1], 'the manifest is of set ' + str(m['id'])[:64]\n"
    "for name, f in m['files'].items():\n"
    "    with open(name, 'rb') as data:\n"
    "        assert hashlib.file_digest(data, 'sha256').hexdigest() == f['sha256'], name\n")


def unpack(env: Environment, backup_id: str, names: list[str]) -> str:
    """Decrypt each file with the identity on stdin (it never reaches a file or argv), check
    the set's SHA-256 sums, then make it a set like the others; a failure leaves nothing."""
    folder = shlex.quote(fetching(env, backup_id))
    final = shlex.quote(set_path(env, backup_id))
    return (f"set -e; umask 077; trap 'rm -rf {folder}' EXIT; "
            "key=$(grep -m 1 '^AGE-SECRET-KEY-1'); "
            f"cd {folder}; for f in {shlex.join(names)}; do "
            'printf "%s\\n" "$key" | age --decrypt --identity - --output "$f" "$f.age"; '
            'rm "$f.age"; done; '
            "sha256sum --quiet --strict -c SHA256SUMS; "
            f"python3 -c {shlex.quote(MANIFEST_CHECK)} {shlex.quote(backup_id)}; "
            "chmod 0600 -- *; cd ..; "
            f"test ! -e {final}; mv {folder} {final}; trap - EXIT; "
            f"echo {shlex.quote('fetched ' + backup_id)}")
