"""Point-in-time recovery of the ledger: real PostgreSQL 15 and real pgBackRest (2.45, Debian's)
archiving WAL and a full backup, encrypted, to the S3 stand-in (moto) over verified TLS, then
a restore to "now" after the data directory is lost and one to a point in time.

Everything runs on a private ``--internal`` network of this test's own: the s3 stand-in
under the network alias S3_ALIAS with a certificate from a throwaway CA, a postgres-ledger
like the data stack runs it (read-only root, /tmp tmpfs, no capabilities, user postgres), and
a writer that commits one timestamped row every WRITE_INTERVAL seconds and prints each commit
it got back (its log outlives the database). Names start with ``pitrcheck-<session>``.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sandbox_images_support import LABEL, SESSION, docker, wait_for

PREFIX = f"pitrcheck-{SESSION}"
S3_ALIAS = "s3.pitrcheck.internal"
PG_ALIAS = "ledger-db.pitrcheck.internal"
BUCKET = "pitrcheck-ledger"
REGION = "eu-west-1"  # the project's region (config/environments.yml)
STANZA = "ledger"
PG_ADMIN = "jafar_pg_admin"  # POSTGRES_USER in .env.ec2.example: pgBackRest's pg1-user
ARCHIVE_TIMEOUT = 30  # seconds: PostgreSQL switches WAL (and so archives) at least this often
WRITE_INTERVAL = 0.2
WRITER_MAX_ROWS = 1500  # bounds the writer (about 6 minutes at WRITE_INTERVAL)
RPO_GOAL = 60.0  # seconds of committed rows a restore to "now" may lose
# Container paths: the CA and the passphrase the same way the data stack would give them.
CONF_PATH = "/etc/pgbackrest/pgbackrest.conf"
CA_PATH = "/etc/pgbackrest/ca.crt"
PGDATA = "/var/lib/postgresql/data"
# Like compose/docker-compose.data.yml's postgres-ledger (x-data-service and its tmpfs).
PG_HARDENED = (
    "--read-only",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges:true",
    "--user=postgres",
    "--tmpfs=/tmp:mode=1777,size=64m",
    "--tmpfs=/var/run/postgresql:mode=1777,size=1m",
    "--shm-size=256m",
)
PG_COMMAND = (
    "postgres",
    "-c", "archive_mode=on",
    "-c", f"archive_command=pgbackrest --stanza={STANZA} archive-push %p",
    "-c", f"archive_timeout={ARCHIVE_TIMEOUT}",
    # the test reads each row's commit time (pg_xact_commit_timestamp) to know what a restore
    # to a time must bring back; pgBackRest needs none of it
    "-c", "track_commit_timestamp=on",
)  # fmt: skip

PGBACKREST_CONF = f"""\
[global]
repo1-type=s3
repo1-s3-endpoint={S3_ALIAS}
repo1-s3-bucket={BUCKET}
repo1-s3-region={REGION}
repo1-s3-uri-style=path
repo1-s3-key=pitrcheck-access-key
repo1-s3-key-secret=pitrcheck-secret-key
repo1-storage-ca-file={CA_PATH}
repo1-storage-verify-tls=y
repo1-cipher-type=aes-256-cbc
repo1-path=/ledger
repo1-retention-full=2
repo1-bundle=y
start-fast=y
lock-path=/tmp/pgbackrest
log-path=/tmp/pgbackrest/log
log-level-console=info
log-level-file=off

[{STANZA}]
pg1-path={PGDATA}
pg1-user={PG_ADMIN}
"""

# Run inside the s3 container (its venv has boto3), against the stand-in by its name, with the
# CA: the same TLS check pgBackRest makes. Prints one JSON document.
S3_CLIENT = """\
import json, sys
import boto3
s3 = boto3.client("s3", endpoint_url="https://{alias}", region_name="{region}",
                  aws_access_key_id="pitrcheck", aws_secret_access_key="pitrcheck",
                  verify="/run/ca/ca.crt")
{body}
"""

WRITER = r"""
set -u
for n in $(seq 1 "$MAX_ROWS"); do
    if out="$(psql -h "$PG_HOST" -U "$PG_USER" -d ledger -tAX -v ON_ERROR_STOP=1 -c \
            "INSERT INTO ticks (n) VALUES ($n) RETURNING n, extract(epoch FROM at)" 2>&1)"; then
        echo "ack ${out}"
    else
        echo "fail ${n} ${out//$'\n'/ }"
    fi
    sleep "$INTERVAL"
done
"""


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_tls(root: Path) -> tuple[Path, Path]:
    """A throwaway CA and a server certificate for S3_ALIAS only; (tls dir, ca dir)."""
    work, tls, ca = root / "work", root / "tls", root / "ca"
    for d in (work, tls, ca):
        d.mkdir()
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=pitrcheck throwaway CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=work)  # fmt: skip
    _openssl("req", *ec, "-keyout", "tls.key", "-out", "tls.csr", "-subj", f"/CN={S3_ALIAS}",
             cwd=work)  # fmt: skip
    (work / "ext.cnf").write_text(
        f"subjectAltName=DNS:{S3_ALIAS}\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    _openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-out", "tls.crt", "-extfile", "ext.cnf",
             cwd=work)  # fmt: skip
    for src, dst in (("tls.crt", tls), ("tls.key", tls), ("ca.crt", ca)):
        (dst / src).write_bytes((work / src).read_bytes())
        # a throwaway key: readable by the containers' own users (moto 999, postgres 999)
        (dst / src).chmod(0o644)
    for d in (root, tls, ca):
        d.chmod(0o755)
    return tls, ca


@dataclass
class Env:
    network: str
    s3: str
    tls: Path
    ca: Path
    conf: Path
    secret: dict[str, str]
    containers: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)


def _remove(env: Env) -> None:
    for c in reversed(env.containers):
        docker("rm", "-f", "-v", c, check=False, timeout=180)
    for v in env.volumes:
        docker("volume", "rm", "-f", v, check=False)


def s3_client(env: Env, body: str) -> dict:
    script = S3_CLIENT.format(alias=S3_ALIAS, region=REGION, body=textwrap.dedent(body))
    out = docker("exec", "-i", env.s3, "/opt/moto/bin/python", "-", input=script, timeout=120)
    return json.loads(out.stdout)


def _health(container: str) -> str:
    fmt = "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}"
    return docker("inspect", f"--format={fmt}", container).stdout.strip()


@pytest.fixture(scope="module")
def env(images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("pitr")
    tls, ca = make_tls(root)
    conf = root / "pgbackrest.conf"
    conf.write_text(PGBACKREST_CONF)
    conf.chmod(0o644)
    network = f"{PREFIX}-net"
    docker("network", "create", "--internal", f"--label={LABEL}", network)
    e = Env(network=network, s3=f"{PREFIX}-s3", tls=tls, ca=ca, conf=conf,
            secret={"PGBACKREST_REPO1_CIPHER_PASS": f"cipher-{uuid.uuid4().hex}",
                    "POSTGRES_PASSWORD": f"pw-{uuid.uuid4().hex}"})  # fmt: skip
    try:
        e.containers.append(e.s3)
        docker(
            "run", "--detach", f"--name={e.s3}", f"--label={LABEL}",
            f"--network={network}", f"--network-alias={S3_ALIAS}",
            "--read-only", "--tmpfs=/tmp:mode=1777,size=512m", "--cap-drop=ALL",
            "--security-opt=no-new-privileges:true", "--health-interval=1s",
            f"--volume={tls}:/run/tls:ro", f"--volume={ca}:/run/ca:ro",
            images["s3"],
        )  # fmt: skip
        wait_for("the s3 stand-in healthy", lambda: _health(e.s3) == "healthy", timeout=60)
        made = s3_client(e, f"""\
            s3.create_bucket(Bucket="{BUCKET}",
                             CreateBucketConfiguration={{"LocationConstraint": "{REGION}"}})
            print(json.dumps([b["Name"] for b in s3.list_buckets()["Buckets"]]))
            """)  # fmt: skip
        assert made == [BUCKET]
        yield e
    finally:
        _remove(e)
        docker("network", "rm", network, check=False)


# --- the s3 stand-in itself ------------------------------------------------------------------


def test_s3_standin_serves_s3_over_verified_tls_only(images: dict[str, str], env: Env) -> None:
    # no certificate, no server (never plain HTTP)
    bare = docker(
        "run", "--rm", f"--name={PREFIX}-s3-notls", f"--label={LABEL}", "--network=none",
        "--read-only", "--tmpfs=/tmp", images["s3"], check=False,
    )  # fmt: skip
    assert bare.returncode != 0
    assert "/run/tls/tls.crt is missing or not readable" in bare.stderr
    # a non-root server on :443 (no capability: Docker lets a container bind low ports)
    assert docker("exec", env.s3, "id", "-u").stdout.strip() == "999"
    probe = docker("exec", "-i", env.s3, "/opt/moto/bin/python", "-", input=textwrap.dedent(f"""\
        import http.client, json, ssl
        res = {{}}
        try:  # plain HTTP on the TLS port: no HTTP answer
            c = http.client.HTTPConnection("127.0.0.1", 443, timeout=5)
            c.request("GET", "/")
            res["plain"] = c.getresponse().status
        except (OSError, http.client.HTTPException) as exc:
            res["plain"] = type(exc).__name__
        ctx = ssl.create_default_context(cafile="/run/ca/ca.crt")
        try:  # the certificate names {S3_ALIAS} only
            http.client.HTTPSConnection("127.0.0.1", 443, timeout=5, context=ctx).connect()
            res["by_ip"] = "verified"
        except ssl.SSLCertVerificationError as exc:
            res["by_ip"] = exc.verify_message
        auth = ("AWS4-HMAC-SHA256 Credential=k/20240101/{REGION}/s3/aws4_request, "
                "SignedHeaders=host, Signature=" + "0" * 64)
        for method in ("GET", "PATCH"):  # a missing bucket; a method S3 does not have
            c = http.client.HTTPSConnection("{S3_ALIAS}", 443, timeout=5, context=ctx)
            c.request(method, "/pitrcheck-missing", headers={{"Authorization": auth}})
            r = c.getresponse()
            res[method] = [r.status, r.read().decode(errors="replace")[:300]]
        print(json.dumps(res))
        """), timeout=60).stdout  # fmt: skip
    res = json.loads(probe)
    assert res["plain"] != 200 and not isinstance(res["plain"], int), res
    assert "IP address mismatch" in res["by_ip"], res
    assert res["GET"][0] == 404 and "NoSuchBucket" in res["GET"][1], res
    assert res["PATCH"][0] >= 500, res  # not implemented: an error, never a success
    assert _health(env.s3) == "healthy"


# --- pgBackRest: archive, backup, restore ----------------------------------------------------


def _pg_run(env: Env, image: str, name: str, volume: str, *extra: str, cmd: tuple[str, ...],
            detach: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    if detach:
        env.containers.append(name)
    return docker(
        "run", "--detach" if detach else "--rm", f"--name={name}", f"--label={LABEL}",
        f"--network={env.network}", *PG_HARDENED, *extra,
        "--env=PGBACKREST_REPO1_CIPHER_PASS",
        f"--volume={volume}:{PGDATA}",
        f"--volume={env.conf}:{CONF_PATH}:ro",
        f"--volume={env.ca / 'ca.crt'}:{CA_PATH}:ro",
        image, *cmd,
        env=env.secret, timeout=timeout,
    )  # fmt: skip


def _volume(env: Env, name: str) -> str:
    vol = f"{PREFIX}-{name}"
    docker("volume", "create", f"--label={LABEL}", vol)
    env.volumes.append(vol)
    return vol


def psql(container: str, sql: str) -> str:
    """SQL over the container's own socket (the hba's local rule), as the admin role."""
    return docker(
        "exec", container, "psql", "-U", PG_ADMIN, "-d", "ledger", "-tAX",
        "-v", "ON_ERROR_STOP=1", "-c", sql,
    ).stdout.strip()  # fmt: skip


def pgbackrest(container: str, *args: str, timeout: float = 300) -> str:
    out = docker("exec", container, "pgbackrest", f"--stanza={STANZA}", *args, timeout=timeout)
    return out.stdout + out.stderr


def _running(container: str) -> bool:
    return docker("inspect", "--format={{.State.Running}}", container).stdout.strip() == "true"


def wait_primary(container: str, what: str, timeout: float = 120) -> None:
    """Until the server answers as a primary (recovery over); fails at once if it exited.
    First over TCP: on a first start the entry point's init server listens on the socket
    only, answers there as a primary, then stops for the real one (a query then fails)."""

    def ready() -> bool:
        if not _running(container):
            logs = docker("logs", container, check=False)
            raise AssertionError(f"{container} exited:\n{(logs.stdout + logs.stderr)[-3000:]}")
        tcp = docker("exec", container, "pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432",
                     check=False, timeout=20)
        if tcp.returncode != 0:
            return False
        probe = docker(
            "exec", container, "psql", "-U", PG_ADMIN, "-d", "ledger", "-tAX",
            "-c", "SELECT pg_is_in_recovery()", check=False, timeout=20,
        )  # fmt: skip
        return probe.returncode == 0 and probe.stdout.strip() == "f"

    wait_for(what, ready, timeout=timeout)


def acked_rows(writer: str) -> dict[int, float]:
    """The rows the writer got a commit for: n -> its `at` (epoch seconds, database clock)."""
    rows: dict[int, float] = {}
    for line in docker("logs", writer).stdout.splitlines():
        if line.startswith("ack "):
            n, at = line[4:].split("|")
            rows[int(n)] = float(at)
    return rows


def restored_rows(container: str) -> dict[int, float]:
    out = psql(container, "SELECT n, extract(epoch FROM at) FROM ticks ORDER BY n")
    return {int(n): float(at) for n, at in (line.split("|") for line in out.splitlines())}


def test_pgbackrest_archive_backup_and_point_in_time_restore_over_tls(
    images: dict[str, str], env: Env
) -> None:
    timings: dict[str, float] = {}
    pg, pg_image = f"{PREFIX}-pg", images["postgres"]
    data = _volume(env, "pgdata")
    _pg_run(
        env, pg_image, pg, data, f"--network-alias={PG_ALIAS}",
        f"--env=POSTGRES_USER={PG_ADMIN}", "--env=POSTGRES_PASSWORD", "--env=POSTGRES_DB=ledger",
        "--env=POSTGRES_INITDB_ARGS=--auth-host=scram-sha-256", cmd=PG_COMMAND,
    )  # fmt: skip
    wait_primary(pg, "the ledger database up")
    psql(pg, "CREATE TABLE ticks (n int PRIMARY KEY, at timestamptz NOT NULL "
             "DEFAULT clock_timestamp())")  # fmt: skip
    # ~30 MB of poorly compressible rows: WAL segments and relation files over pgBackRest's
    # 5 MiB upload chunk, so that S3 multipart uploads are exercised too
    psql(pg, "CREATE TABLE pad AS SELECT g AS id, md5(g::text) || md5(random()::text) "
             "|| md5(random()::text) AS v FROM generate_series(1, 250000) g")  # fmt: skip

    start = time.monotonic()
    pgbackrest(pg, "stanza-create")
    timings["stanza_create_s"] = time.monotonic() - start
    start = time.monotonic()
    check = pgbackrest(pg, "check")
    timings["check_s"] = time.monotonic() - start
    assert "successfully archived" in check, check
    start = time.monotonic()
    backup = pgbackrest(pg, "--type=full", "backup", timeout=600)
    timings["full_backup_s"] = time.monotonic() - start
    assert "full backup size" in backup and "completed successfully" in backup, backup

    # TLS is verified: with Debian's CA bundle instead of the sandbox CA, nothing is read
    # (repo-ls fails on a repository error; info would report it and exit 0)
    wrong_ca = docker(
        "exec", pg, "pgbackrest", f"--stanza={STANZA}",
        "--repo1-storage-ca-file=/etc/ssl/certs/ca-certificates.crt", "--io-timeout=10",
        "repo-ls", check=False, timeout=120,
    )  # fmt: skip
    assert wrong_ca.returncode != 0
    assert "unable to get local issuer certificate" in wrong_ca.stdout + wrong_ca.stderr, (
        wrong_ca.stdout + wrong_ca.stderr
    )

    writer = f"{PREFIX}-writer"
    env.containers.append(writer)
    docker(
        "run", "--detach", f"--name={writer}", f"--label={LABEL}", f"--network={env.network}",
        "--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges:true",
        "--user=postgres", "--env=PGPASSWORD",
        f"--env=PG_HOST={PG_ALIAS}", f"--env=PG_USER={PG_ADMIN}", "--env=PGCONNECT_TIMEOUT=3",
        f"--env=MAX_ROWS={WRITER_MAX_ROWS}", f"--env=INTERVAL={WRITE_INTERVAL}",
        pg_image, "bash", "-c", WRITER,
        env={"PGPASSWORD": env.secret["POSTGRES_PASSWORD"]},
    )  # fmt: skip
    wait_for("20 rows committed", lambda: len(acked_rows(writer)) >= 20, timeout=60)

    # the point in time to restore to, on the database's clock
    target = psql(pg, "SELECT clock_timestamp()")
    target_epoch = float(psql(pg, f"SELECT extract(epoch FROM '{target}'::timestamptz)"))
    wait_for(
        "rows committed after the target",
        lambda: max(acked_rows(writer).values()) > target_epoch + 2,
        timeout=30,
    )
    # WAL beyond the target reaches the archive within archive_timeout (+ the push)
    after = psql(pg, "SELECT pg_walfile_name(pg_current_wal_lsn())")
    start = time.monotonic()
    wait_for(
        f"WAL {after} archived",
        lambda: psql(pg, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") >= after,
        timeout=ARCHIVE_TIMEOUT * 2 + 30,
    )
    timings["wal_archived_after_s"] = time.monotonic() - start
    # what a restore to the target must bring back: every row whose commit came at or before it
    committed = {
        int(n): float(ts)
        for n, ts in (
            line.split("|")
            for line in psql(
                pg, "SELECT n, extract(epoch FROM pg_xact_commit_timestamp(xmin)) FROM ticks"
            ).splitlines()
        )
    }
    expected_at_target = {n for n, ts in committed.items() if ts <= target_epoch}
    assert len(expected_at_target) >= 20 and len(committed) > len(expected_at_target)

    ps = docker("exec", pg, "sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '").stdout
    assert env.secret["PGBACKREST_REPO1_CIPHER_PASS"] not in ps

    # the disaster, at the worst moment: just before the next forced WAL switch (a switch
    # every ARCHIVE_TIMEOUT s at this write rate), when nearly ARCHIVE_TIMEOUT seconds of
    # commits are only in the server's own pg_wal; then the server dies and its disk is gone
    last = psql(pg, "SELECT extract(epoch FROM last_archived_time) FROM pg_stat_archiver")
    time.sleep(max(0.0, min(ARCHIVE_TIMEOUT, float(last) + ARCHIVE_TIMEOUT - 3 - time.time())))
    docker("kill", pg)
    killed_at = time.time()
    time.sleep(1)
    docker("stop", "--time=2", writer, timeout=60)
    acked = acked_rows(writer)
    pg_logs = docker("logs", pg)
    assert env.secret["PGBACKREST_REPO1_CIPHER_PASS"] not in pg_logs.stdout + pg_logs.stderr
    docker("rm", "-f", "-v", pg)
    docker("volume", "rm", data)

    # 1. restore to "now": the newest backup plus every archived WAL segment
    latest, latest_vol = f"{PREFIX}-pg-latest", _volume(env, "pgdata-latest")
    start = time.monotonic()
    restore = _pg_run(env, pg_image, f"{PREFIX}-restore-latest", latest_vol, detach=False,
                      cmd=("pgbackrest", f"--stanza={STANZA}", "restore"), timeout=600)
    timings["restore_latest_cmd_s"] = time.monotonic() - start
    assert "restore command end: completed successfully" in restore.stdout + restore.stderr
    _pg_run(env, pg_image, latest, latest_vol, cmd=PG_COMMAND)
    wait_primary(latest, "the restore to now recovered and promoted", timeout=300)
    timings["restore_latest_total_s"] = time.monotonic() - start
    back = restored_rows(latest)
    top = max(back)
    # nothing invented, and nothing missing up to the last row recovered
    assert set(back) == set(range(1, top + 1)), sorted(set(range(1, top + 1)) - set(back))
    assert set(back) - set(acked) <= {max(acked) + 1}  # at most the commit whose ack died
    assert expected_at_target <= set(back)
    lost = sorted(set(acked) - set(back))
    timings["rpo_lost_rows"] = len(lost)
    timings["rpo_lost_s"] = max(acked.values()) - back[top]
    timings["rpo_last_restored_before_kill_s"] = killed_at - back[top]
    assert timings["rpo_lost_s"] < RPO_GOAL, timings

    docker("stop", "--time=60", latest, timeout=120)
    docker("rm", "-f", "-v", latest)

    # 2. restore to the point in time (the restore to now promoted a timeline 2 that forks
    # after the target: recovery to the target follows timeline 1 up to it)
    pitr, pitr_vol = f"{PREFIX}-pg-pitr", _volume(env, "pgdata-pitr")
    start = time.monotonic()
    restore = _pg_run(
        env, pg_image, f"{PREFIX}-restore-pitr", pitr_vol, detach=False,
        cmd=("pgbackrest", f"--stanza={STANZA}", "--type=time", f"--target={target}",
             "--target-action=promote", "restore"), timeout=600,
    )  # fmt: skip
    timings["restore_pitr_cmd_s"] = time.monotonic() - start
    assert "restore command end: completed successfully" in restore.stdout + restore.stderr
    _pg_run(env, pg_image, pitr, pitr_vol, cmd=PG_COMMAND)
    wait_primary(pitr, "the restore to the target time recovered and promoted", timeout=300)
    timings["restore_pitr_total_s"] = time.monotonic() - start
    at_target = restored_rows(pitr)
    assert set(at_target) == expected_at_target, (
        sorted(set(at_target) ^ expected_at_target), target,
    )  # fmt: skip
    logs = docker("logs", pitr)
    assert "recovery stopping before commit of transaction" in logs.stdout + logs.stderr

    info = json.loads(pgbackrest(pitr, "--output=json", "--log-level-console=off", "info"))
    stanza = info[0]
    assert stanza["status"]["code"] == 0, stanza["status"]
    fulls = [b for b in stanza["backup"] if b["type"] == "full"]
    assert len(fulls) == 1 and fulls[0]["error"] is False
    archive = stanza["archive"][0]
    assert archive["min"] <= fulls[0]["archive"]["start"] <= archive["max"]

    # the repository holds only ciphertext; large objects went up in parts
    objects = s3_client(env, f"""\
        out = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="{BUCKET}"):
            for o in page.get("Contents", []):
                head = s3.get_object(Bucket="{BUCKET}", Key=o["Key"], Range="bytes=0-7")
                out.append([o["Key"], o["Size"], o["ETag"], head["Body"].read().hex()])
        print(json.dumps(out))
        """)  # fmt: skip
    salted = b"Salted__".hex()  # OpenSSL's header of an aes-256-cbc (pgBackRest) file
    assert objects and all(head == salted for _, size, _, head in objects if size >= 8), [
        o for o in objects if o[3] != salted
    ]
    assert any(key.endswith("backup.info") for key, *_ in objects)
    multipart = [key for key, _, etag, _ in objects if "-" in etag.strip('"')]
    assert multipart, "no object was uploaded in parts"

    timings["objects"] = len(objects)
    timings["multipart_objects"] = len(multipart)
    print(
        "\npitr timings:",
        json.dumps({k: round(v, 2) for k, v in timings.items()}, sort_keys=True),
        "\npgbackrest info:",
        json.dumps({"archive": archive, "backup": fulls[0]}, sort_keys=True),
    )
