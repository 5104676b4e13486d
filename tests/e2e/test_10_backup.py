"""Backups proven by a restore, on the shared sandbox: known data is written (ledger rows,
Redis keys, MongoDB documents with a unique index), `inv backup` takes a set, the stores are
destroyed (every container and volume of the ledger, Redis and the three MongoDB members
removed), `inv restore` brings every row, key and document back (counts and checksums, the
index too), and the jafar services are healthy again. A set whose file was changed after the
backup is refused before anything stops; a restore with its safety backup leaves a set of what
was there before."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time

import pytest

from tests.conftest import run_inv
from tests.e2e.sandbox_helpers import HOST, inner, on_host, sandbox_config

ROWS = 500
KEYS = 300
DOCS = 250


def container(service: str) -> str:
    return inner("ps", "--quiet", "--filter", f"label=com.docker.compose.service={service}"
                 ).split()[0]


def psql(sql: str) -> str:
    """As the superuser over the container's socket, into the ledger database."""
    proc = subprocess.run(
        ["docker", "exec", "-i", HOST, "docker", "exec", "-i", container("postgres-ledger"),
         "sh", "-c", 'exec psql -X -q -At -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" '
         '-d "$POSTGRES_DB"'],
        input=sql, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def redis(commands: str) -> str:
    """redis-cli in the redis container, the password first on stdin (AUTH), never argv."""
    password = on_host("cat", "/opt/jafar/secrets/redis_password").stdout.strip()
    proc = subprocess.run(
        ["docker", "exec", "-i", HOST, "docker", "exec", "-i", container("redis"), "redis-cli",
         "--no-auth-warning", "--tls", "--cacert", "/run/secrets/data_ca_crt", "-h",
         "127.0.0.1", "-p", "6379"], input=f"AUTH {password}\n{commands}", capture_output=True,
        text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def mongo(script: str, user: str = "", secret: str = "mongo_root_password") -> str:
    """mongosh in mongo-primary, logged in as `user` of jafar (default: root, of admin) with
    the password of secrets/`secret` on stdin; `app` is the jafar database. Its last line."""
    password = on_host("cat", f"/opt/jafar/secrets/{secret}").stdout.strip()
    login = ("const pw = require('fs').readFileSync('/dev/stdin', 'utf8').trim();"
             + (f"db.getSiblingDB('jafar').auth('{user}', pw);" if user else
                "db.getSiblingDB('admin').auth(process.env.MONGO_ROOT_USERNAME, pw);")
             + "const app = db.getSiblingDB('jafar');")
    proc = subprocess.run(
        ["docker", "exec", "-i", HOST, "docker", "exec", "-i", "-e", "HOME=/tmp",
         container("mongo-primary"), "mongosh", "--quiet", "--norc", "--tls", "--tlsCAFile",
         "/run/secrets/data_ca_crt", "--host", "localhost", "--eval", login + script],
        input=password, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


def tools_absent() -> str:
    """Why the sandbox's mongo image has no mongodump (built without ../shared/vendor), or ''."""
    return inner("exec", container("mongo-secondary"), "sh", "-c",
                 "cat /usr/local/share/mongo-tools/ABSENT 2>/dev/null || true").strip()


def mongo_digest() -> str:
    """e2e_backup's documents (a SHA-256 of them, in _id order) and its indexes' names."""
    return mongo("const docs = app.e2e_backup.find().toArray()"
                 ".sort((a, b) => a._id - b._id);"
                 "const sum = require('crypto').createHash('sha256')"
                 ".update(EJSON.stringify(docs)).digest('hex');"
                 "const names = app.e2e_backup.getIndexes().map((i) => i.name).sort();"
                 "print(docs.length + ' ' + sum + ' ' + names.join(','));")


def ledger_digest() -> dict[str, str]:
    """Per user table: the row count and an MD5 of every row, in a fixed order."""
    tables = psql("SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM "
                  "information_schema.tables WHERE table_type = 'BASE TABLE' AND table_schema "
                  "NOT IN ('pg_catalog', 'information_schema') ORDER BY 1").split()
    return {t: psql(f"SELECT count(*) || ' ' || coalesce(md5(string_agg(r::text, ',' ORDER BY "
                    f"r::text)), '-') FROM {t} r") for t in tables}


def redis_digest() -> tuple[int, str]:
    """The known keys: how many, and a SHA-256 of their names and values."""
    names = [f"e2e:backup:{i}" for i in range(KEYS)]
    values = redis("".join(f"GET {n}\n" for n in names)).splitlines()[1:]  # after AUTH's OK
    present = sum(1 for v in values if v)
    return present, hashlib.sha256("\n".join(f"{n}={v}" for n, v in zip(names, values,
                                                                          strict=True)).encode()
                                   ).hexdigest()


def running() -> str:
    """The tag the sandbox runs, as its core host records it."""
    return json.loads(on_host("cat", "/opt/jafar/state/release.json").stdout)["tag"]


def inv(*args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return run_inv(*args, "--host", "sandbox", timeout=timeout)


def sets() -> list[dict]:
    listed = inv("backup.list", "--json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    return json.loads(listed.stdout)


@pytest.fixture(scope="module")
def taken(deployed):
    """Known data, then one backup of it: (its id, the ledger's digest, Redis' digest)."""
    psql("CREATE TABLE IF NOT EXISTS e2e_backup (id int PRIMARY KEY, cents bigint, note text);"
         "TRUNCATE e2e_backup;"
         f"INSERT INTO e2e_backup SELECT i, i * 7, 'row ' || i FROM generate_series(1, {ROWS}) i;")
    redis("".join(f"SET e2e:backup:{i} value-{i * 13}\n" for i in range(KEYS)))
    mongo("app.e2e_backup.drop();"
          "app.e2e_backup.createIndex({ref: 1}, {unique: true, name: 'ref_unique'});"
          f"app.e2e_backup.insertMany(Array.from({{length: {DOCS}}}, (_, i) => "
          "({_id: i, ref: 'ref-' + i, cents: NumberLong(i * 11), owner: {name: 'o' + i}})),"
          "{writeConcern: {w: 'majority'}}); print('ok');")
    ledger, keys, docs = ledger_digest(), redis_digest(), mongo_digest()
    assert ledger["public.e2e_backup"].startswith(f"{ROWS} ") and keys[0] == KEYS
    assert docs.startswith(f"{DOCS} ") and docs.endswith(" _id_,ref_unique"), docs
    before = {s["id"] for s in sets()}
    done = inv("backup")
    assert done.returncode == 0, done.stdout + done.stderr
    new = [s for s in sets() if s["id"] not in before]
    assert len(new) == 1, new
    assert f"backup {new[0]['id']}: " in done.stdout
    assert "audit record" not in done.stdout, done.stdout  # appended and signed, or why not
    return new[0], ledger, keys, docs


def test_a_backup_is_a_complete_set_with_a_manifest(taken):
    chosen, *_ = taken
    listed = inv("backup.list").stdout.splitlines()
    assert listed[0].split() == ["ID", "FINISHED", "RELEASE", "SIZE", "STORES"]
    assert any(line.startswith(f"{chosen['id']}  ") for line in listed[1:])
    files = {"ledger.pgdump", "redis.rdb"} | (set() if tools_absent() else {"mongo.archive.gz"})
    assert set(chosen["files"]) == files
    assert all(len(f["sha256"]) == 64 and f["bytes"] > 0 for f in chosen["files"].values())
    assert chosen["stores"]["redis"]["aof"] == "on"
    assert chosen["release"] == running()  # read from the core host by the task
    assert chosen["stores"]["redis"]["keys"] >= KEYS
    folder = f"/opt/jafar/backups/{chosen['id']}"
    modes = on_host("stat", "-c", "%a %U %n", "/opt/jafar/backups", folder,
                    f"{folder}/ledger.pgdump").stdout.split("\n")
    assert [m.split()[0] for m in modes if m] == ["700", "700", "600"]
    # the SHA-256s the manifest holds are the files' own
    sums = on_host("sh", "-c", f"cd {folder} && sha256sum {' '.join(sorted(files))}").stdout
    for line in sums.splitlines():
        digest, name = line.split()
        assert chosen["files"][name]["sha256"] == digest
    audit = inv("audit.show", "--since", "1h").stdout
    assert "backup" in audit, audit[-2000:]


def test_mongodb_is_dumped_from_the_secondary_by_the_backup_user(taken):
    chosen, *_ = taken
    absent = tools_absent()
    if absent:  # said, never faked
        assert chosen["stores"]["mongo"] == {"skipped": absent}
        pytest.skip(f"the sandbox's mongo image has no mongodump: {absent}")
    dumped = chosen["stores"]["mongo"]
    assert dumped["collections"]["e2e_backup"] == DOCS
    assert dumped["tool"] == "mongodump version: 100.18.0"
    # the user .env.ec2 names now (after test_08's rotation, the twin with the new password);
    # read on the host: the suite's own output masks user names too
    user = on_host("sed", "-n", "s/^MONGO_BACKUP_USER=//p", "/opt/jafar/.env.ec2").stdout.strip()
    recorded = json.loads(on_host("cat", f"/opt/jafar/backups/{chosen['id']}/manifest.json").stdout)
    assert dumped["user"] == "********"
    assert recorded["stores"]["mongo"]["user"] == user and user.startswith("jafar_backup")
    # its role reads and cannot write: the backup user may not insert
    assert mongo("try { app.e2e_backup.insertOne({_id: -1}); print('written'); }"
                 "catch (e) { print('refused ' + e.codeName); }", user=user,
                 secret="mongo_backup_password") == "refused Unauthorized"


def test_a_set_changed_after_the_backup_is_refused_before_anything_stops(taken):
    chosen, *_ = taken
    bad = f"{chosen['id']}-tampered"
    src, dst = f"/opt/jafar/backups/{chosen['id']}", f"/opt/jafar/backups/{bad}"
    on_host("sh", "-c", f"cp -a {src} {dst} && sed -i 's/\"id\": \"[^\"]*\"/\"id\": \"{bad}\"/' "
            f"{dst}/manifest.json && printf X | dd of={dst}/redis.rdb bs=1 seek=20 conv=notrunc "
            "2>/dev/null")
    try:
        running = container("ledger-service")
        refused = inv("restore", "--from", bad, "--yes")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert (f"backup {bad}: redis.rdb changed since the backup (the SHA-256 is not the "
                "manifest's); nothing was stopped") in refused.stderr
        assert container("ledger-service") == running
        assert inner("inspect", "-f", "{{.State.Running}}", running).strip() == "true"
    finally:
        on_host("rm", "-rf", dst)


def scratch_left() -> str:
    """Scratch containers of a verify (or an RDB check) still there: there should be none."""
    return inner("ps", "-a", "--quiet", "--filter", "label=jafar.backup-scratch=1").strip()


def copy_set(src_id: str, new_id: str) -> str:
    """A copy of a set under a new id (its manifest says the new id): the folder."""
    src, dst = f"/opt/jafar/backups/{src_id}", f"/opt/jafar/backups/{new_id}"
    on_host("sh", "-c", f"cp -a {src} {dst} && sed -i 's/\"id\": \"[^\"]*\"/\"id\": "
            f"\"{new_id}\"/' {dst}/manifest.json")
    return dst


def test_backup_verify_restores_the_set_into_scratch_containers_and_finds_it_whole(taken):
    chosen, ledger, keys, docs = taken
    volumes = set(inner("volume", "ls", "--quiet").split())
    done = inv("backup.verify", "--from", chosen["id"])
    assert done.returncode == 0, done.stdout + done.stderr
    table = [line.split() for line in done.stdout.splitlines()]
    assert table[0] == ["STORE", "WHAT", "RECORDED", "RESTORED", "RESULT"]
    assert ["files", "SHA-256", "SHA256SUMS", "same", "ok"] in table
    recorded = chosen["stores"]["ledger"]["tables"]["public.e2e_backup"]
    assert recorded["rows"] == ROWS
    assert ["ledger", "public.e2e_backup", "rows", str(ROWS), str(ROWS), "ok"] in table
    assert ["ledger", "public.e2e_backup", "checksum", recorded["checksum"][:16],
            recorded["checksum"][:16], "ok"] in table
    rdb = chosen["stores"]["redis"]["rdb_keys"]  # the known keys, and the services' own
    assert rdb >= KEYS
    assert ["redis", "keys", "(redis-check-rdb)", str(rdb), str(rdb), "ok"] in table
    if not tools_absent():
        assert ["mongo", "e2e_backup", "documents", str(DOCS), str(DOCS), "ok"] in table
        checksum = chosen["stores"]["mongo"]["checksums"]["e2e_backup"][:16]
        assert ["mongo", "e2e_backup", "checksum", checksum, checksum, "ok"] in table
    assert f"verified: backup {chosen['id']} restores to what it recorded" in done.stdout
    # the scratch containers are gone with their volumes; the stores were not touched
    assert not scratch_left()
    assert set(inner("volume", "ls", "--quiet").split()) == volumes
    assert (ledger_digest(), redis_digest()) == (ledger, keys)


def test_backup_verify_fails_on_a_corrupted_archive_and_on_a_set_that_restores_otherwise(taken):
    chosen, ledger, *_ = taken
    corrupt = f"{chosen['id']}-corrupt"
    dst = copy_set(chosen["id"], corrupt)
    on_host("sh", "-c", f"printf X | dd of={dst}/ledger.pgdump bs=1 seek=300 conv=notrunc "
            "2>/dev/null")
    other = f"{chosen['id']}-other"
    try:
        failed = inv("backup.verify", "--from", corrupt)
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "FAILED: 1 file(s) changed: ledger.pgdump" in failed.stdout
        assert f"error: backup {corrupt}: " in failed.stderr and "check(s) differ or failed" \
            in failed.stderr
        # a set whose files are whole (SHA256SUMS made anew) but whose dump holds other rows
        # than the manifest recorded: a row deleted, then dumped
        dst = copy_set(chosen["id"], other)
        psql("DELETE FROM e2e_backup WHERE id = 1;")
        on_host("sh", "-c", f"docker exec {container('postgres-ledger')} sh -c 'exec pg_dump "
                f"-U \"$POSTGRES_USER\" -Fc \"$POSTGRES_DB\"' > {dst}/ledger.pgdump && cd {dst} && "
                "sha256sum ledger.pgdump redis.rdb $(ls mongo.archive.gz 2>/dev/null) > SHA256SUMS")
        differs = inv("backup.verify", "--from", other)
        assert differs.returncode == 1, differs.stdout + differs.stderr
        table = [line.split() for line in differs.stdout.splitlines()]
        assert ["files", "SHA-256", "SHA256SUMS", "same", "ok"] in table
        assert ["ledger", "public.e2e_backup", "rows", str(ROWS), str(ROWS - 1), "DIFFERENT"] \
            in table
        assert not scratch_left()
        # a verify that passes changes nothing and leaves no audit record; one that fails does
        audit = [ln.split() for ln in inv("audit.show", "--since", "1h").stdout.splitlines()]
        assert sum(1 for ln in audit if ln[4:6] == ["backup.verify", "failed"]) >= 2, audit
    finally:
        psql("INSERT INTO e2e_backup SELECT i, i * 7, 'row ' || i FROM generate_series(1, 1) i "
             "ON CONFLICT DO NOTHING;")
        on_host("rm", "-rf", f"/opt/jafar/backups/{corrupt}", f"/opt/jafar/backups/{other}",
                "/opt/jafar/backups/.verify-failed")
    assert ledger_digest() == ledger


def test_destroyed_stores_are_restored_row_for_row_key_for_key_document_for_document(taken):
    chosen, ledger, keys, docs = taken
    only = ["--only", "ledger,redis"] if tools_absent() else []  # (asked of mongo-secondary)
    # the disaster: the stores' containers and volumes gone
    for service, volume in (("postgres-ledger", "postgres-ledger-data"),
                            ("redis", "redis-data")):
        inner("rm", "--force", container(service))
        inner("volume", "rm", f"jafar-data_{volume}")
    for member in ("mongo-primary", "mongo-secondary", "mongo-arbiter"):
        inner("rm", "--force", container(member))
        inner("volume", "rm", f"jafar-data_{member}-data", f"jafar-data_{member}-config")
    unknown = inv("restore", "--from", "20000101T000000Z", "--yes")
    assert unknown.returncode == 2 and "no such backup on the data host" in unknown.stderr
    restored = inv("restore", "--from", chosen["id"], *only, "--skip-safety-backup", "--yes",
                   timeout=1200)
    assert restored.returncode == 0, restored.stdout[-4000:] + restored.stderr[-3000:]
    assert "ledger: emptied and loaded from ledger.pgdump" in restored.stdout
    assert ledger_digest() == ledger
    assert redis_digest() == keys
    if not only:
        assert "mongo: emptied and loaded from mongo.archive.gz" in restored.stdout
        assert mongo_digest() == docs
    health = inv("health")
    assert health.returncode == 0, health.stdout + health.stderr


def test_a_restore_first_backs_up_what_is_there(taken):
    chosen, _, keys, _ = taken
    redis("SET e2e:backup:0 changed-after-the-backup\n")
    assert redis_digest() != keys
    restored = inv("restore", "--from", chosen["id"], "--only", "redis", "--yes", timeout=1200)
    assert restored.returncode == 0, restored.stdout[-4000:] + restored.stderr[-3000:]
    assert redis_digest() == keys
    safety = [s for s in sets() if s["id"].endswith("-before-restore")]
    assert safety, "no safety backup listed"
    # only Redis' writers were stopped
    assert ("stopped api-service, auth-service, transaction-service, notification-service, "
            "risk-service (they write to redis)") in restored.stdout


def test_no_backup_runs_while_a_restore_is_unfinished(taken):
    """What a restore leaves until it succeeds: a backup then would save half-loaded stores."""
    on_host("sh", "-c", "echo 20261203T000000Z > /opt/jafar/backups/.restoring")
    try:
        refused = inv("backup")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert ("a restore of set 20261203T000000Z is under way or failed: backups wait until "
                "a restore succeeds") in refused.stderr
    finally:
        on_host("rm", "-f", "/opt/jafar/backups/.restoring")


def test_no_backup_starts_without_room_for_twice_the_newest_set(taken):
    """A full disk would stop the databases beside the backups: a set that seems 1 TiB (a
    sparse file) is the newest, so a backup needs 2 TiB free and refuses to start."""
    big = "/opt/jafar/backups/20991231T000000Z"
    on_host("sh", "-c", f"mkdir {big} && echo '{{}}' > {big}/manifest.json && "
            f"truncate -s 1T {big}/ledger.pgdump")
    try:
        refused = inv("backup")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "bytes free for backups, and the newest set (20991231T000000Z) needs about " \
               "1099511" in refused.stderr, refused.stderr  # 1 TiB and the folder's own bytes
        assert not on_host("sh", "-c", "ls -d /opt/jafar/backups/.*.partial 2>/dev/null",
                           check=False).stdout.strip()
    finally:
        on_host("rm", "-rf", big)


def test_the_timer_is_installed_once_and_its_backup_runs_by_hand_and_is_reported(taken):
    first = inv("backup.schedule")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "jafar-backup.timer: daily at 02:30 UTC" in first.stdout
    again = inv("backup.schedule")
    assert again.returncode == 0 and "nothing to do: jafar-backup.timer" in again.stdout, \
        again.stdout + again.stderr
    timers = on_host("systemctl", "list-timers", "--all", "jafar-backup.timer").stdout
    assert "jafar-backup.timer" in timers and "jafar-backup.service" in timers
    before = {s["id"] for s in sets()}
    # a verify is due (the last pass is forgotten: the test above verified a set)
    on_host("rm", "-f", "/opt/jafar/backups/.verified")
    # what the timer starts, by hand: the same script, as the deploy user, without the suite
    on_host("systemctl", "start", "jafar-backup.service", timeout=600)
    after = sets()
    new = [s for s in after if s["id"] not in before]
    assert len(new) == 1 and new[0]["release"] == running(), new  # read by the script
    # backup_keep (7 days, 4 weeks, 12 months): of today's sets only the newest stays
    assert [s["id"] for s in after if s["id"][:8] == new[0]["id"][:8]] == [new[0]["id"]]
    bridge = on_host("sh", "-c", "ip -4 -o addr show dev docker0 | awk '{split($4,a,\"/\"); "
                     "print a[1]}'").stdout.strip()
    metrics = on_host("curl", "-fsS", "--max-time", "10", f"http://{bridge}:9100/metrics").stdout
    stamp = [ln for ln in metrics.splitlines()
             if ln.startswith("jafar_backup_last_success_timestamp_seconds ")]
    assert stamp, "node_exporter does not report the backup"
    assert abs(float(stamp[0].split()[1]) - time.time()) < 600
    assert 'jafar_backup_last_bytes{file="ledger.pgdump"}' in metrics
    # so the timer's run verified its set, and says so through node_exporter
    verified = [ln for ln in metrics.splitlines()
                if ln.startswith("jafar_backup_last_verified_timestamp_seconds ")]
    assert verified and abs(float(verified[0].split()[1]) - time.time()) < 600, verified
    assert "jafar_backup_verify_failed 0" in metrics
    journal = on_host("journalctl", "-u", "jafar-backup.service", "-n", "40", "--no-pager").stdout
    assert f"verify {new[0]['id']} passed" in journal


def test_offsite_copies_leave_the_host_encrypted_and_a_lost_set_comes_back_from_s3(
        taken, tmp_path, moto_endpoint):
    """backup_s3 on moto (the AWS stand-in, on loopback): backup.upload sends the host's sets
    age-encrypted into a locked, SSE-KMS bucket, a second run has nothing to do; the host then
    loses the set, restore says where it is, backup.fetch brings it back byte for byte."""
    from tests.aws.test_offsite import age_keys, bank_bucket
    from tests.support import moto_server

    chosen = sets()[-1]  # the newest (the timer's retention above kept only it of today)
    moto_server.reset(moto_endpoint)
    identity, recipient = age_keys(tmp_path)
    key_line = next(ln for ln in identity.splitlines() if ln.startswith("AGE-SECRET-KEY-1"))
    kms = moto_server.client(moto_endpoint, "kms")
    kms.create_alias(AliasName="alias/jafar-backups",
                     TargetKeyId=kms.create_key()["KeyMetadata"]["KeyId"])
    bank_bucket(moto_endpoint, "jafar-sandbox-backups")
    moto_server.client(moto_endpoint, "secretsmanager").create_secret(
        Name="jafar/sandbox/backup-age", SecretString=identity)
    env = {**moto_server.environment(), **sandbox_config(
        tmp_path, aws={"region": "eu-west-1", "endpoint_url": moto_endpoint},
        backup_s3={"bucket": "jafar-sandbox-backups", "prefix": "sandbox",
                   "kms_key": "alias/jafar-backups", "age_recipient": recipient,
                   "age_identity": "jafar/sandbox/backup-age"})}

    def offsite(*args: str) -> subprocess.CompletedProcess[str]:
        done = run_inv(*args, "--host", "sandbox", env=env, timeout=900)
        assert key_line not in done.stdout + done.stderr
        return done

    sent = offsite("backup.upload")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "sent to s3://jafar-sandbox-backups/sandbox/" in sent.stdout
    assert chosen["id"] in sent.stdout
    s3c = moto_server.client(moto_endpoint, "s3")
    folder = f"/opt/jafar/backups/{chosen['id']}"
    manifest = on_host("cat", f"{folder}/manifest.json").stdout.encode()
    for item in s3c.list_objects_v2(Bucket="jafar-sandbox-backups",
                                    Prefix=f"sandbox/{chosen['id']}/")["Contents"]:
        body = s3c.get_object(Bucket="jafar-sandbox-backups", Key=item["Key"])["Body"].read()
        assert body.startswith(b"age-encryption.org/v1\n"), item["Key"]
        assert manifest[:40] not in body and b"PGDMP" not in body
    again = offsite("backup.upload")
    assert again.returncode == 0 and "offsite: nothing to send" in again.stdout, again.stdout
    listed = json.loads(offsite("backup.list", "--json").stdout)
    row = next(r for r in listed if r["id"] == chosen["id"])
    assert row["s3"]["complete"] and row["s3"]["locked_until"] > time.strftime("%Y-%m-%d")

    sums = on_host("sh", "-c", f"cd {folder} && sha256sum * && stat -c '%a %n' *").stdout
    on_host("rm", "-rf", folder)
    lost = json.loads(offsite("backup.list", "--json").stdout)
    assert {"id": chosen["id"], "on_host": False} == {
        k: v for r in lost if r["id"] == chosen["id"] for k, v in r.items() if k != "s3"}
    assert f"only in S3: {chosen['id']}" in offsite("backup.list").stdout
    refused = offsite("restore", "--from", chosen["id"], "--yes")
    assert refused.returncode == 2 and "that set is in S3, not on the data host: bring it back " \
        f"first with inv backup.fetch --host sandbox --from {chosen['id']}" in refused.stderr
    fetched = offsite("backup.fetch", "--from", chosen["id"])
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert f"backup {chosen['id']} fetched from S3" in fetched.stdout
    assert on_host("sh", "-c", f"cd {folder} && sha256sum * && stat -c '%a %n' *").stdout == sums
    assert "nothing to do: backup" in offsite("backup.fetch", "--from", chosen["id"]).stdout
    audit = inv("audit.show", "--since", "1h").stdout
    assert "backup.upload" in audit and "backup.fetch" in audit, audit[-2000:]


def test_backup_keep_removes_the_sets_it_does_not_keep(taken, tmp_path):
    """Last in this file: it removes the sets the tests above made. backup_keep {daily: 2}:
    the newest set of the last two days that have one."""
    newest = sets()[-1]["id"]  # the timer's run above kept only that one of today
    src = f"/opt/jafar/backups/{newest}"
    for old in ("20200101T000000Z", "20200102T000000Z"):
        on_host("sh", "-c", f"cp -a {src} /opt/jafar/backups/{old} && sed -i "
                f"'s/\"id\": \"[^\"]*\"/\"id\": \"{old}\"/' /opt/jafar/backups/{old}/manifest.json")
    before = [s["id"] for s in sets()]
    extra = sandbox_config(tmp_path, backup_keep={"daily": 2, "weekly": 0, "monthly": 0})
    done = run_inv("backup", "--host", "sandbox", env=extra, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    after = [s["id"] for s in sets()]
    assert after[0] == "20200102T000000Z" and len(after) == 2, after
    removed = sorted(set(before) - set(after))
    assert f"retention removed {', '.join(removed)}" in done.stdout
    assert removed == ["20200101T000000Z", newest]  # today's newest is the new one now
    # backup_max_size: the oldest go first until the sets fit (an 8 MiB one made to be too big)
    on_host("sh", "-c", f"cp -a /opt/jafar/backups/{after[0]} /opt/jafar/backups/20200103T000000Z"
            " && sed -i 's/\"id\": \"[^\"]*\"/\"id\": \"20200103T000000Z\"/' "
            "/opt/jafar/backups/20200103T000000Z/manifest.json && head -c 8388608 /dev/urandom "
            "> /opt/jafar/backups/20200103T000000Z/filler")
    (tmp_path / "small").mkdir()
    small = sandbox_config(tmp_path / "small", backup_max_size="4MiB")
    done = run_inv("backup", "--host", "sandbox", env=small, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    left = [s["id"] for s in sets()]
    assert "20200102T000000Z" not in left and "20200103T000000Z" not in left, left
    assert "retention removed 20200102T000000Z, 20200103T000000Z" in done.stdout, done.stdout
