"""The sandbox images, built by sandbox.build and run for real on the machine's engine."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from sandbox_images_support import LABEL, SESSION, docker, published_port, wait_for

from sandbox import build, hostflags

EXPECTED = {"base", "nginx", "redis", "postgres", "prometheus", "registry", "jafar-service", "host"}


def http_get(url: str, timeout: float = 3) -> tuple[int, str]:
    """GET a loopback URL; (status, body). Only 127.0.0.1 is ever asked."""
    assert url.startswith("http://127.0.0.1:"), url
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError):
        return 0, ""


# --- build -----------------------------------------------------------------------------------


def test_build_all_second_call_is_cached_and_fast(
    images: dict[str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    assert EXPECTED <= set(images)
    for name, ref in images.items():
        assert re.fullmatch(rf"jafar-sandbox/{re.escape(name)}:[0-9a-f]{{16}}", ref), ref
        latest = docker("image", "inspect", "--format={{.Id}}", f"jafar-sandbox/{name}:latest")
        exact = docker("image", "inspect", "--format={{.Id}}", ref)
        assert latest.stdout == exact.stdout
    capfd.readouterr()
    start = time.monotonic()
    again = build.build_all()
    elapsed = time.monotonic() - start
    err = capfd.readouterr().err
    assert again == images
    for name in images:
        assert re.search(rf"sandbox\.build: {re.escape(name)}: cached ", err), err
    assert " built " not in err
    assert elapsed < 60, f"cached build_all took {elapsed:.1f}s"


def test_context_hash_follows_content(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM x\n")
    first = build.context_hash(tmp_path, "jafar-sandbox/base:1")
    assert first == build.context_hash(tmp_path, "jafar-sandbox/base:1")
    assert first != build.context_hash(tmp_path, "jafar-sandbox/base:2")
    (tmp_path / "vendor").mkdir()
    (tmp_path / "vendor" / "pkg.js").write_text("x")
    assert build.context_hash(tmp_path, "jafar-sandbox/base:1") != first


def _pem_set(text: str) -> set[str]:
    return build._pem_blocks(text)


def test_base_ca_bundle_is_debians_not_this_machines(images: dict[str, str]) -> None:
    script = (
        "cat /etc/ssl/certs/ca-certificates.crt; echo '#SPLIT#';"
        " cat /usr/share/ca-certificates/*/*.crt"
    )
    out = docker(
        "run", "--rm", "--network=none", f"--label={LABEL}", images["base"], "sh", "-c", script
    ).stdout
    bundle_text, _, shipped_text = out.partition("#SPLIT#")
    bundle, shipped = _pem_set(bundle_text), _pem_set(shipped_text)
    assert bundle and bundle <= shipped
    machine_file = Path(os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"))
    if machine_file.is_file():
        machine_only = _pem_set(machine_file.read_text()) - shipped
        assert not (machine_only & bundle), "a certificate only this machine trusts is baked in"


# --- nginx -----------------------------------------------------------------------------------

NGINX_CONF = """\
worker_processes 1;
pid /tmp/nginx.pid;
events { worker_connections 64; }
http {
    client_body_temp_path /tmp/client_temp;
    proxy_temp_path /tmp/proxy_temp;
    fastcgi_temp_path /tmp/fastcgi_temp;
    uwsgi_temp_path /tmp/uwsgi_temp;
    scgi_temp_path /tmp/scgi_temp;
    server {
        listen 80;
        location = /health { return 200 "ok\\n"; }
    }
}
"""


def test_nginx_read_only_root(run: Callable[..., str], tmp_dir: Path) -> None:
    conf = tmp_dir / "nginx.conf"
    conf.write_text(NGINX_CONF)
    conf.chmod(0o644)
    c = run(
        "nginx",
        "--read-only",
        "--tmpfs=/tmp",
        f"--volume={conf}:/etc/nginx/nginx.conf:ro",
        "--publish=127.0.0.1::80",
        name="nginx",
    )
    port = published_port(c, "80/tcp")
    wait_for("nginx /health", lambda: http_get(f"http://127.0.0.1:{port}/health")[0] == 200)
    assert http_get(f"http://127.0.0.1:{port}/health") == (200, "ok\n")
    # busybox wget for healthchecks, inside the container
    out = docker("exec", c, "wget", "-qO-", "http://127.0.0.1/health").stdout
    assert out == "ok\n"
    assert docker("exec", c, "curl", "-fsS", "http://127.0.0.1/health").stdout == "ok\n"
    # access log goes to the container's stdout
    wait_for("access log line", lambda: "GET /health" in docker("logs", c).stdout, timeout=10)
    assert docker("inspect", "--format={{.Config.Cmd}}", c).stdout.strip() == (
        "[nginx -g daemon off;]"
    )


# As our compose file runs the data services: read-only root, tmpfs /tmp, no capabilities.
HARDENED = (
    "--read-only",
    "--tmpfs=/tmp:mode=1777,size=16m",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges:true",
)


# --- redis -----------------------------------------------------------------------------------

# As a compose `command:` for the official image would do it: the password reaches
# redis-server as config on stdin (`redis-server -`), never on a command line.
REDIS_CMD = 'printf "requirepass %s\\n" "$REDIS_PASSWORD" | exec redis-server - --appendonly yes'


@pytest.fixture(scope="module")
def redis_secret() -> dict[str, str]:
    return {"REDIS_PASSWORD": f"pw-{uuid.uuid4().hex}"}


@pytest.fixture(scope="module")
def redis_container(
    images: dict[str, str], internal_network: str, redis_secret: dict[str, str]
) -> str:
    name = f"jst-{SESSION}-redis"
    docker(
        "run", "--detach", f"--name={name}", f"--label={LABEL}",
        f"--network={internal_network}", "--network-alias=redis",
        *HARDENED, "--user=redis",
        "--env=REDIS_PASSWORD",
        images["redis"], "sh", "-c", REDIS_CMD,
        env=redis_secret,
    )  # fmt: skip
    auth = {"REDISCLI_AUTH": redis_secret["REDIS_PASSWORD"]}

    def pong() -> bool:
        r = docker("exec", "--env=REDISCLI_AUTH", name, "redis-cli", "ping", check=False, env=auth)
        return r.stdout.strip() == "PONG"

    wait_for("redis PONG with AUTH", pong, timeout=30)
    return name


def test_redis_password_and_non_root(redis_container: str, redis_secret: dict[str, str]) -> None:
    c = redis_container
    noauth = docker("exec", c, "redis-cli", "ping", check=False)
    assert "NOAUTH" in noauth.stdout + noauth.stderr
    wrong = docker(
        "exec", "--env=REDISCLI_AUTH", c, "redis-cli", "ping", check=False,
        env={"REDISCLI_AUTH": "wrong"},
    )  # fmt: skip
    assert "PONG" not in wrong.stdout
    auth = {"REDISCLI_AUTH": redis_secret["REDIS_PASSWORD"]}
    aof = docker(
        "exec", "--env=REDISCLI_AUTH", c, "redis-cli", "config", "get", "appendonly", env=auth
    ).stdout
    assert aof.split() == ["appendonly", "yes"]
    assert docker("exec", c, "id", "-u").stdout.strip() == "999"
    assert docker("exec", c, "pwd").stdout.strip() == "/data"
    ps = docker("exec", c, "sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '").stdout
    assert redis_secret["REDIS_PASSWORD"] not in ps
    assert "redis-server" in ps


def test_redis_official_style_arguments(run: Callable[..., str]) -> None:
    # `command: ["--port", "6380"]` works as with the official image
    c = run("redis", "--network=none", name="redis-args", cmd=("--port", "6380"))

    def pong() -> bool:
        r = docker("exec", c, "redis-cli", "-p", "6380", "ping", check=False)
        return r.stdout.strip() == "PONG"

    wait_for("redis on 6380", pong, timeout=30)


# --- postgres --------------------------------------------------------------------------------

INIT_SH = """\
#!/bin/bash
# sourced by the entry point (not executable): records each run
set -e
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE TABLE IF NOT EXISTS init_runs (at timestamptz NOT NULL DEFAULT now());
INSERT INTO init_runs DEFAULT VALUES;
SQL
"""
INIT_SQL = "CREATE TABLE init_sql_ran (id int);\n"


@pytest.fixture(scope="module")
def pg_secret() -> dict[str, str]:
    return {"POSTGRES_PASSWORD": f"pw-{uuid.uuid4().hex}"}


@pytest.fixture(scope="module")
def postgres_container(
    images: dict[str, str],
    internal_network: str,
    pg_secret: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    initdb = tmp_path_factory.mktemp("initdb")
    initdb.chmod(0o755)
    (initdb / "01-record.sh").write_text(INIT_SH)
    (initdb / "02-table.sql").write_text(INIT_SQL)
    for f in initdb.iterdir():
        f.chmod(0o644)
    name = f"jst-{SESSION}-postgres"
    vol = f"jst-{SESSION}-pgdata"
    docker("volume", "create", f"--label={LABEL}", vol)
    docker(
        "run", "--detach", f"--name={name}", f"--label={LABEL}",
        f"--network={internal_network}", "--network-alias=postgres-ledger",
        *HARDENED, "--user=postgres", "--tmpfs=/var/run/postgresql:mode=1777,size=1m",
        "--shm-size=256m",
        "--env=POSTGRES_USER=ledger", "--env=POSTGRES_PASSWORD", "--env=POSTGRES_DB=ledger",
        "--env=POSTGRES_INITDB_ARGS=--auth-host=scram-sha-256",
        f"--volume={vol}:/var/lib/postgresql/data",
        f"--volume={initdb}:/docker-entrypoint-initdb.d:ro",
        images["postgres"],
        env=pg_secret,
    )  # fmt: skip
    _wait_pg_ready(name)
    return name


def _wait_pg_ready(name: str) -> None:
    wait_for(
        "postgres ready on TCP",
        lambda: docker(
            "exec", name, "pg_isready", "-h", "127.0.0.1", "-U", "ledger", "-d", "ledger",
            check=False,
        ).returncode == 0,
        timeout=90,
    )  # fmt: skip


def _psql(name: str, sql: str, password: str) -> subprocess.CompletedProcess[str]:
    # TCP to 127.0.0.1 inside the container: the scram-sha-256 host rule applies
    return docker(
        "exec", "--env=PGPASSWORD", name,
        "psql", "-h", "127.0.0.1", "-U", "ledger", "-d", "ledger", "-tAX", "-v", "ON_ERROR_STOP=1",
        "-c", sql,
        check=False, env={"PGPASSWORD": password},
    )  # fmt: skip


def test_postgres_official_interface(postgres_container: str, pg_secret: dict[str, str]) -> None:
    c = postgres_container
    pw = pg_secret["POSTGRES_PASSWORD"]
    ok = _psql(c, "SELECT count(*) FROM init_runs", pw)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "1"
    assert _psql(c, "SELECT count(*) FROM init_sql_ran", pw).stdout.strip() == "0"
    scram = _psql(c, "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid "
                     "WHERE rolname = 'ledger'", pw)  # fmt: skip
    assert scram.stdout.strip() == "t"
    bad = _psql(c, "SELECT 1", "wrong")
    assert bad.returncode != 0
    assert "password authentication failed" in bad.stderr
    # runs as postgres, in the foreground; password on no command line
    assert docker("exec", c, "stat", "-c", "%U", "/proc/1").stdout.strip() == "postgres"
    assert "postgres" in docker("exec", c, "cat", "/proc/1/cmdline").stdout
    ps = docker("exec", c, "sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '").stdout
    assert pw not in ps
    assert pw not in docker("logs", c).stdout + docker("logs", c).stderr
    # the init scripts ran once: not again after a restart
    docker("restart", c, timeout=120)
    _wait_pg_ready(c)
    assert _psql(c, "SELECT count(*) FROM init_runs", pw).stdout.strip() == "1"
    logs = docker("logs", c)
    assert "skipping initialization" in logs.stdout + logs.stderr


def test_postgres_root_start_steps_down_and_needs_a_password(
    images: dict[str, str], run: Callable[..., str]
) -> None:
    refused = docker(
        "run", "--rm", f"--label={LABEL}", "--network=none", images["postgres"], check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "superuser password is not specified" in refused.stderr
    c = run(
        "postgres",
        "--network=none",
        "--env=POSTGRES_PASSWORD",
        name="postgres-root",
        env={"POSTGRES_PASSWORD": f"pw-{uuid.uuid4().hex}"},
    )
    wait_for(
        "postgres ready",
        lambda: docker(
            "exec", c, "pg_isready", "-h", "127.0.0.1", "-U", "postgres", check=False
        ).returncode == 0,
        timeout=90,
    )  # fmt: skip
    assert docker("exec", c, "stat", "-c", "%U", "/proc/1").stdout.strip() == "postgres"
    hba = docker("exec", c, "tail", "-n", "1", "/var/lib/postgresql/data/pg_hba.conf").stdout
    assert hba.split() == ["host", "all", "all", "all", "scram-sha-256"]


# --- prometheus ------------------------------------------------------------------------------


def test_prometheus(images: dict[str, str], run: Callable[..., str]) -> None:
    out = docker(
        "run", "--rm", f"--label={LABEL}", "--network=none", "--entrypoint=promtool",
        images["prometheus"], "--version",
    )  # fmt: skip
    assert "promtool, version" in out.stdout + out.stderr
    c = run("prometheus", "--network=none", name="prometheus")
    wait_for(
        "prometheus ready",
        lambda: docker(
            "exec", c, "wget", "-qO-", "http://127.0.0.1:9090/-/ready", check=False
        ).returncode == 0,
        timeout=60,
    )  # fmt: skip
    assert docker("exec", c, "id", "-un").stdout.strip() == "nobody"


# --- registry (standing in for ECR) ----------------------------------------------------------


def test_registry_push_and_pull(run: Callable[..., str], tmp_dir: Path) -> None:
    c = run("registry", "--publish=127.0.0.1::5000", name="registry")
    port = published_port(c, "5000/tcp")
    wait_for("registry /v2/", lambda: http_get(f"http://127.0.0.1:{port}/v2/")[0] == 200)
    # a tiny image of one file, pushed from the outer engine through the loopback port
    payload = tmp_dir / "payload"
    payload.mkdir()
    (payload / "hello.txt").write_text(f"hello {SESSION}\n")
    tar = subprocess.run(
        ["tar", "-C", str(payload), "-c", "."], capture_output=True, check=True, timeout=30
    ).stdout
    ref = f"127.0.0.1:{port}/jafar/sandbox-test:{SESSION}"
    proc = subprocess.run(
        ["docker", "import", "-", ref], input=tar, capture_output=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    try:
        image_id = docker("image", "inspect", "--format={{.Id}}", ref).stdout.strip()
        docker("push", ref, timeout=120)
        docker("rmi", ref)
        docker("pull", ref, timeout=120)
        assert docker("image", "inspect", "--format={{.Id}}", ref).stdout.strip() == image_id
        status, body = http_get(f"http://127.0.0.1:{port}/v2/jafar/sandbox-test/tags/list")
        assert status == 200 and SESSION in body
    finally:
        docker("rmi", "-f", ref, check=False)


# --- jafar-service stand-in ------------------------------------------------------------------

SERVICE_SECRETS = {
    "MONGO_APP_PASSWORD": f"mongo-{uuid.uuid4().hex}",
    "REDIS_PASSWORD": f"redis-{uuid.uuid4().hex}",
    "LEDGER_DB_PASSWORD": f"ledger-{uuid.uuid4().hex}",
}
FETCH = (
    "import sys, urllib.request, urllib.error\n"
    "try:\n"
    "    r = urllib.request.urlopen('http://127.0.0.1:3000' + sys.argv[1], timeout=10)\n"
    "    print(r.status); print(r.read().decode())\n"
    "except urllib.error.HTTPError as e:\n"
    "    print(e.code); print(e.read().decode())\n"
)


def _service_get(container: str, path: str) -> tuple[int, str]:
    out = docker("exec", container, "python3", "-c", FETCH, path, timeout=30).stdout
    status, _, body = out.partition("\n")
    return int(status), body


def _start_service(
    run: Callable[..., str], service: str, network: str, extra: dict[str, str], secrets: dict
) -> str:
    env_args = [f"--env={k}={v}" for k, v in extra.items()]
    c = run(
        "jafar-service",
        f"--network={network}",
        f"--env=SERVICE_NAME={service}",
        *env_args,
        *[f"--env={k}" for k in secrets],
        name=f"svc-{service}-{network[-4:]}",
        env=secrets,
    )
    wait_for(
        f"{service} stand-in listening",
        lambda: docker(
            "exec", c, "wget", "-qO-", "http://127.0.0.1:3000/metrics", check=False
        ).returncode == 0,
        timeout=30,
    )  # fmt: skip
    return c


def test_service_standin_reports_unreachable_dependencies(run: Callable[..., str]) -> None:
    # nothing to reach: no network at all, every dependency on the container's own loopback
    nowhere = {
        "MONGO_HOSTS": "127.0.0.1:27017,127.0.0.1:27018",
        "MONGO_REPLICA_SET": "rs0",
        "MONGO_APP_DB": "jafar",
        "MONGO_APP_USER": "jafar_app",
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": "6379",
        "POSTGRES_HOST": "127.0.0.1",
        "LEDGER_DB_NAME": "ledger",
        "LEDGER_DB_USER": "ledger",
    }
    auth = _start_service(run, "auth-service", "none", nowhere, SERVICE_SECRETS)
    start = time.monotonic()
    status, body = _service_get(auth, "/health")
    assert time.monotonic() - start < 8
    assert status == 503
    doc = json.loads(body)
    assert doc["status"] != "ok"
    assert doc["checks"] == {"mongo": "fail", "redis": "fail"}

    status, metrics = _service_get(auth, "/metrics")
    assert status == 200
    assert 'http_requests_total{status="503"} 1' in metrics
    assert 'jafar_dependency_up{dependency="mongo"} 0' in metrics
    assert 'jafar_dependency_up{dependency="redis"} 0' in metrics
    assert "jafar_mongo_primary_up 0" in metrics
    assert _service_get(auth, "/nope")[0] == 404

    ledger = _start_service(run, "ledger-service", "none", nowhere, SERVICE_SECRETS)
    status, body = _service_get(ledger, "/health")
    assert status == 503
    assert json.loads(body)["checks"] == {"postgres": "fail"}

    auth_logs = docker("logs", auth).stdout
    assert "health: mongo failed (ServerSelectionTimeoutError)" in auth_logs
    assert "health: redis failed (ConnectionError)" in auth_logs
    assert "health: postgres failed (OperationalError)" in docker("logs", ledger).stdout
    for c in (auth, ledger):
        logs = docker("logs", c)
        text = logs.stdout + logs.stderr
        for value in SERVICE_SECRETS.values():
            assert value not in text
            assert value not in body


def test_service_standin_healthy_against_real_redis_and_postgres(
    run: Callable[..., str],
    internal_network: str,
    redis_container: str,
    redis_secret: dict[str, str],
    postgres_container: str,
    pg_secret: dict[str, str],
) -> None:
    notif = _start_service(
        run, "notification-service", internal_network,
        {"REDIS_HOST": "redis", "REDIS_PORT": "6379"}, redis_secret,
    )  # fmt: skip
    status, body = _service_get(notif, "/health")
    assert (status, json.loads(body)["checks"]) == (200, {"redis": "ok"})
    ledger = _start_service(
        run, "ledger-service", internal_network,
        {"POSTGRES_HOST": "postgres-ledger", "LEDGER_DB_NAME": "ledger",
         "LEDGER_DB_USER": "ledger"},
        {"LEDGER_DB_PASSWORD": pg_secret["POSTGRES_PASSWORD"]},
    )  # fmt: skip
    status, body = _service_get(ledger, "/health")
    assert (status, json.loads(body)) == (
        200,
        {"status": "ok", "service": "ledger-service", "checks": {"postgres": "ok"}},
    )
    assert 'jafar_dependency_up{dependency="postgres"} 1' in _service_get(ledger, "/metrics")[1]


def test_service_standin_rejects_unknown_service(images: dict[str, str]) -> None:
    proc = docker(
        "run", "--rm", f"--label={LABEL}", "--network=none", "--env=SERVICE_NAME=bogus",
        images["jafar-service"], check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "SERVICE_NAME must be one of" in proc.stderr


# --- host (a fresh EC2 instance) -------------------------------------------------------------


def test_host_image_bakes_no_identity(images: dict[str, str]) -> None:
    out = docker(
        "run", "--rm", f"--label={LABEL}", "--network=none", "--entrypoint=sh", images["host"],
        "-c", "ls /etc/ssh/ssh_host_* 2>/dev/null | wc -l; wc -c </etc/machine-id;"
        " ls -A /home/admin/.ssh 2>/dev/null | wc -l",
    ).stdout.split()  # fmt: skip
    assert out == ["0", "0", "0"]


def test_host_boots_fresh_with_admin_ssh_and_sudo(
    images: dict[str, str],
    labelled_volume: Callable[[str], str],
    tmp_dir: Path,
) -> None:
    net = f"jst-{SESSION}-hostnet"
    docker("network", "create", f"--label={LABEL}", net)

    key = tmp_dir / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sandbox-test", "-f", str(key)],
        check=True,
        timeout=30,
    )
    seed = tmp_dir / "seed"
    seed.mkdir(mode=0o755)
    (seed / "authorized_keys").write_text((tmp_dir / "id_ed25519.pub").read_text())
    for f in seed.iterdir():
        f.chmod(0o644)
    name = f"jst-{SESSION}-host"
    args = hostflags.host_run_args(
        seed_dir=seed,
        docker_volume=labelled_volume("host-docker"),
        name=name,
        hostname="sandbox-host-1",
        network=net,
        ssh_publish="127.0.0.1::22",
        labels={"org.jafar.sandbox.test": SESSION},
        image=images["host"],
    )
    docker(*args)

    state = {"last": ""}

    def booted() -> bool:
        r = docker("exec", name, "systemctl", "is-system-running", check=False, timeout=30)
        state["last"] = r.stdout.strip()
        return state["last"] in {"running", "degraded"}

    try:
        wait_for("systemd to finish booting", booted, timeout=180, interval=2)
    except AssertionError:
        failed = docker("exec", name, "systemctl", "--failed", "--no-pager", check=False)
        raise AssertionError(f"state {state['last']!r}; failed units:\n{failed.stdout}") from None
    for unit in ("ssh", "sandbox-ssh-hostkeys", "sandbox-authorized-keys"):
        r = docker("exec", name, "systemctl", "is-active", unit, check=False)
        assert r.stdout.strip() == "active", unit

    hostkey = docker("exec", name, "cat", "/etc/ssh/ssh_host_ed25519_key.pub").stdout.split()
    port = published_port(name, "22/tcp")
    known_hosts = tmp_dir / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {hostkey[0]} {hostkey[1]}\n")
    ssh = [
        "ssh", "-F", "/dev/null", "-i", str(key), "-p", str(port),
        "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
        "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10",
        "admin@127.0.0.1",
    ]  # fmt: skip
    # a fresh instance: admin with passwordless sudo, Debian 12, and no Docker yet
    remote = ("set -e; id -un; sudo -n id -un; cat /etc/debian_version; "
              "command -v docker || echo no-docker")
    proc = subprocess.run([*ssh, remote], capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0:2] == ["admin", "root"]
    assert proc.stdout.splitlines()[2].startswith("12.")
    assert proc.stdout.splitlines()[3] == "no-docker"

    # strict host key checking really is strict: another key for that address is refused
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_dir / "other")],
        check=True,
        timeout=30,
    )
    fake = (tmp_dir / "other.pub").read_text().split()
    known_hosts.write_text(f"[127.0.0.1]:{port} {fake[0]} {fake[1]}\n")
    proc = subprocess.run([*ssh, "true"], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0
    assert "HOST IDENTIFICATION HAS CHANGED" in proc.stderr


# Set up a one-member replica set with an app user, as scripts/init-replica.sh would (but with
# Python: pymongo from the stand-in image); credentials come from the environment only.
MONGO_SETUP = """\
import os, time, pymongo
c = pymongo.MongoClient("mongo-primary", 27017, directConnection=True,
                        username=os.environ["ROOT_USER"], password=os.environ["ROOT_PASSWORD"],
                        authSource="admin", serverSelectionTimeoutMS=5000)
c.admin.command({"replSetInitiate": {"_id": "rs0",
                                     "members": [{"_id": 0, "host": "mongo-primary:27017"}]}})
for _ in range(60):
    if c.admin.command("isMaster").get("ismaster"):
        break
    time.sleep(0.5)
else:
    raise SystemExit("no primary")
c["jafar"].command("createUser", "jafar_app", pwd=os.environ["MONGO_APP_PASSWORD"],
                   roles=[{"role": "readWrite", "db": "jafar"}])
print("ready")
"""


def test_service_standin_healthy_against_mongo_replica_set(
    images: dict[str, str],
    run: Callable[..., str],
    tmp_dir: Path,
    internal_network: str,
    redis_container: str,
    redis_secret: dict[str, str],
) -> None:
    """auth-service stand-in against the sandbox mongo image (a stand-in too) and redis."""
    if "mongo" not in images:
        pytest.skip("no sandbox mongo image (sandbox/images/mongo) yet")
    secrets = {
        "MONGO_INITDB_ROOT_PASSWORD": f"root-{uuid.uuid4().hex}",
        "MONGO_APP_PASSWORD": f"app-{uuid.uuid4().hex}",
    }
    # a replica set with auth needs a key file (members authenticate to each other with it)
    keyfile = tmp_dir / "mongo.key"
    keyfile.write_text(base64.b64encode(os.urandom(96)).decode() + "\n")
    os.chown(keyfile, 999, 999)
    keyfile.chmod(0o400)
    run(
        "mongo", f"--network={internal_network}", "--network-alias=mongo-primary",
        "--env=MONGO_INITDB_ROOT_USERNAME=root", "--env=MONGO_INITDB_ROOT_PASSWORD",
        f"--volume={keyfile}:/etc/mongo/keyfile:ro",
        name="mongo-primary", env=secrets,
        cmd=("mongod", "--replSet", "rs0", "--port", "27017", "--bind_ip_all",
             "--keyFile", "/etc/mongo/keyfile"),
    )  # fmt: skip
    setup_env = {"ROOT_USER": "root", "ROOT_PASSWORD": secrets["MONGO_INITDB_ROOT_PASSWORD"],
                 "MONGO_APP_PASSWORD": secrets["MONGO_APP_PASSWORD"]}  # fmt: skip
    last = {"out": ""}

    def initiated() -> bool:
        proc = docker(
            "run", "--rm", f"--label={LABEL}", f"--network={internal_network}",
            "--env=ROOT_USER", "--env=ROOT_PASSWORD", "--env=MONGO_APP_PASSWORD",
            images["jafar-service"], "python3", "-c", MONGO_SETUP,
            check=False, env=setup_env, timeout=90,
        )  # fmt: skip
        last["out"] = proc.stdout + proc.stderr[-500:]
        return proc.stdout.strip() == "ready"

    try:
        wait_for("replica set initiated", initiated, timeout=60, interval=3)
    except AssertionError:
        raise AssertionError(last["out"]) from None
    svc = _start_service(
        run, "auth-service", internal_network,
        {"MONGO_HOSTS": "mongo-primary:27017", "MONGO_REPLICA_SET": "rs0",
         "MONGO_APP_DB": "jafar", "MONGO_APP_USER": "jafar_app",
         "REDIS_HOST": "redis", "REDIS_PORT": "6379"},
        {"MONGO_APP_PASSWORD": secrets["MONGO_APP_PASSWORD"],
         "REDIS_PASSWORD": redis_secret["REDIS_PASSWORD"]},
    )  # fmt: skip
    status, body = _service_get(svc, "/health")
    assert (status, json.loads(body)["checks"]) == (200, {"mongo": "ok", "redis": "ok"}), body
    metrics = _service_get(svc, "/metrics")[1]
    assert "jafar_mongo_primary_up 1" in metrics
    assert 'jafar_dependency_up{dependency="mongo"} 1' in metrics
