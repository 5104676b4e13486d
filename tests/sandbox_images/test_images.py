"""The sandbox images, built by sandbox.build and run for real on the machine's engine."""

from __future__ import annotations

import base64
import hashlib
import hmac
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
from tests.support.load import Load

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


# --- USER and HEALTHCHECK of every image (CIS Docker Benchmark 4.1, 4.6) ----------------------

# The user each image runs as ("": root). Root only where it must be: nginx (the master binds
# 80/443, reads the TLS key only root may read, and starts unprivileged workers), host (systemd
# as PID 1) and base (only the parent of the others, never run: no health check either).
IMAGE_USERS = {
    "base": "",
    "nginx": "",
    "host": "",
    "redis": "redis",
    "postgres": "postgres",
    "prometheus": "nobody",
    "alertmanager": "nobody",
    "alert-receiver": "nobody",
    "registry": "docker-registry",
    "jafar-service": "node",
    "mongo": "mongodb",
    "s3": "moto",
}
# Short health intervals so that the tests do not wait for the images' own (10-30 s).
FAST_HEALTH = ("--health-interval=1s",)


def _health(container: str) -> str:
    fmt = "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}"
    return docker("inspect", f"--format={fmt}", container).stdout.strip()


def _health_log(container: str) -> str:
    fmt = "{{range .State.Health.Log}}{{.ExitCode}}: {{.Output}}\n{{end}}"
    return docker("inspect", f"--format={fmt}", container).stdout


def _wait_health(container: str, status: str = "healthy", timeout: float = 60) -> None:
    last = {"status": ""}

    def reached() -> bool:
        last["status"] = _health(container)
        return last["status"] == status

    try:
        wait_for(f"{container} {status}", reached, timeout=timeout)
    except AssertionError:
        raise AssertionError(
            f"{container}: {last['status']!r}, not {status!r}; checks:\n{_health_log(container)}"
        ) from None


def test_every_image_declares_its_user_and_health_check(images: dict[str, str]) -> None:
    assert set(IMAGE_USERS) == {build.BASE, *build.image_names()}
    for name, user in IMAGE_USERS.items():
        fmt = "{{json .Config}}"
        config = json.loads(docker("image", "inspect", f"--format={fmt}", images[name]).stdout)
        assert (config.get("User") or "") == user, name
        check = config.get("Healthcheck") or {}
        if name == build.BASE:
            assert not check
            continue
        assert check.get("Test", [""])[0] in {"CMD", "CMD-SHELL"} and len(check["Test"]) > 1, name
        assert check["Interval"] > 0 and check["Timeout"] > 0 and check["Retries"] > 0, name
        # the hosts' Docker (Debian's 20.10) has no start interval; compose sets none either
        assert not check.get("StartInterval"), name


@pytest.mark.parametrize("name", ["nginx", "redis", "prometheus", "registry", "mongo",
                                  "alertmanager", "alert-receiver"])
def test_image_turns_healthy_as_it_starts_by_default(run: Callable[..., str], name: str) -> None:
    c = run(name, "--network=none", *FAST_HEALTH, name=f"health-{name}")
    _wait_health(c)
    uid = docker("exec", c, "sh", "-c", "awk '/^Uid:/ {print $2}' /proc/1/status").stdout
    assert (uid.strip() == "0") == (IMAGE_USERS[name] == "")


def test_mongo_root_start_still_steps_down(run: Callable[..., str]) -> None:
    """The image runs as mongodb; `--user root` gets the official image's start (chown, gosu)."""
    c = run("mongo", "--network=none", "--user=root", *FAST_HEALTH, name="mongo-root")
    _wait_health(c)
    assert docker("exec", c, "stat", "-c", "%U", "/proc/1").stdout.strip() == "mongodb"


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
        *FAST_HEALTH,
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
    # the image's health check holds with a mounted config too (any HTTP answer on :80)
    _wait_health(c, timeout=30)


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
        *HARDENED, "--user=redis", *FAST_HEALTH,
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
    # the image's health check needs no password: NOAUTH is an answer
    _wait_health(c, timeout=30)
    assert redis_secret["REDIS_PASSWORD"] not in _health_log(c)


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
        "--shm-size=256m", *FAST_HEALTH,
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
    # as the data stack runs it: the image's health check holds, with no password
    _wait_health(c, timeout=60)
    assert pw not in _health_log(c)
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
    for user in ("--user=root", "--user=postgres"):
        refused = docker(
            "run", "--rm", f"--label={LABEL}", "--network=none", user, images["postgres"],
            check=False,
        )  # fmt: skip
        assert refused.returncode != 0
        assert "superuser password is not specified" in refused.stderr
    # the image runs as postgres; `--user root` gets the official image's root start
    c = run(
        "postgres",
        "--network=none",
        "--user=root",
        "--env=POSTGRES_PASSWORD",
        *FAST_HEALTH,
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
    _wait_health(c)


def test_postgres_turns_healthy_as_its_image_user(run: Callable[..., str]) -> None:
    secret = {"POSTGRES_PASSWORD": f"pw-{uuid.uuid4().hex}"}
    c = run(
        "postgres", "--network=none", "--env=POSTGRES_PASSWORD", *FAST_HEALTH,
        name="postgres-image-user", env=secret,
    )  # fmt: skip
    _wait_health(c, timeout=90)
    assert docker("exec", c, "id", "-un").stdout.strip() == "postgres"
    assert docker("exec", c, "stat", "-c", "%U", "/proc/1").stdout.strip() == "postgres"
    assert secret["POSTGRES_PASSWORD"] not in _health_log(c) + _logs(c)


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


# --- alertmanager and the alert receiver (standing in for the on-call endpoints) ------------


def http_post(url: str, body: bytes, timeout: float = 3) -> tuple[int, str]:
    assert url.startswith("http://127.0.0.1:"), url
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_alert_receiver_keeps_alertmanager_payloads_only(run: Callable[..., str]) -> None:
    c = run("alert-receiver", "--publish=127.0.0.1::9095", "--read-only", name="receiver")
    base = f"http://127.0.0.1:{published_port(c, '9095/tcp')}"
    wait_for("receiver /health", lambda: http_get(f"{base}/health")[0] == 200)
    good = {"version": "4", "status": "firing", "receiver": "page",
            "alerts": [{"labels": {"alertname": "Drill"}, "status": "firing"}]}
    assert http_post(f"{base}/page", json.dumps(good).encode()) == (200, '{"kept": 1}')
    for bad, why in ((b"not json", "not JSON"), (b'{"version": "3"}', 'version is not'),
                     (json.dumps({**good, "alerts": []}).encode(), "non-empty list")):
        code, body = http_post(f"{base}/page", bad)
        assert code == 400 and why in body, body
    assert http_post(f"{base}/Page!", b"{}")[0] == 404
    code, body = http_get(f"{base}/received/page")
    kept = json.loads(body)
    assert code == 200 and [k["alerts"][0]["labels"]["alertname"] for k in kept] == ["Drill"]
    assert kept[0]["received_at"] > 0
    assert json.loads(http_get(f"{base}/received/watchdog")[1]) == []


def test_alertmanager_delivers_to_the_receiver(run: Callable[..., str], tmp_dir: Path) -> None:
    """The real Alertmanager (Debian's) routes a posted alert to a webhook: the receiver
    stand-in gets it in Alertmanager's format."""
    receiver = run("alert-receiver", "--publish=127.0.0.1::9095", name="am-receiver")
    base = f"http://127.0.0.1:{published_port(receiver, '9095/tcp')}"
    config = tmp_dir / "alertmanager.yml"
    config.write_text("route: {receiver: page, group_wait: 0s}\nreceivers:\n  - name: page\n"
                      "    webhook_configs: [{url: 'http://127.0.0.1:9095/page'}]\n")
    config.chmod(0o644)
    am = run("alertmanager", f"--network=container:{receiver}", "--read-only",
             f"--volume={tmp_dir}:/etc/alertmanager:ro", "--tmpfs=/alertmanager:uid=65534",
             name="alertmanager")
    wait_for("alertmanager ready", lambda: docker(
        "exec", am, "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:9093/-/ready",
        check=False).returncode == 0)
    alert = json.dumps([{"labels": {"alertname": "ImageDrill", "severity": "critical"}}])
    docker("exec", am, "wget", "-q", "-O", "-", "--header=Content-Type: application/json",
           f"--post-data={alert}", "http://127.0.0.1:9093/api/v2/alerts")
    wait_for("the alert at the receiver", lambda: "ImageDrill" in http_get(
        f"{base}/received/page")[1], timeout=30)
    kept = json.loads(http_get(f"{base}/received/page")[1])
    assert kept[0]["version"] == "4" and kept[0]["receiver"] == "page"
    assert docker("exec", am, "id", "-un").stdout.strip() == "nobody"


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
#
# The tests reach a stand-in from inside a container (its own python3, `docker exec`): a path
# is asked of the container itself (127.0.0.1:3000), a full http:// URL reaches another
# container of the test's internal network. Only the load test goes through a port published
# on 127.0.0.1. Nothing here leaves loopback or the test's own containers.

SERVICE_SECRETS = {
    "MONGO_APP_PASSWORD": f"mongo-{uuid.uuid4().hex}",
    "REDIS_PASSWORD": f"redis-{uuid.uuid4().hex}",
    "LEDGER_DB_PASSWORD": f"ledger-{uuid.uuid4().hex}",
}
CLIENT = (
    "import json, sys, urllib.request, urllib.error\n"
    "url, method, body, headers = sys.argv[1:5]\n"
    "if not url.startswith('http://'):\n"
    "    url = 'http://127.0.0.1:3000' + url\n"
    "req = urllib.request.Request(url, data=body.encode() if body else None, method=method,\n"
    "                             headers=json.loads(headers))\n"
    "try:\n"
    "    r = urllib.request.urlopen(req, timeout=30)\n"
    "    print(r.status); print(r.read().decode())\n"
    "except urllib.error.HTTPError as e:\n"
    "    print(e.code); print(e.read().decode())\n"
    "except OSError as e:\n"
    "    print(0); print(type(e).__name__)\n"
)


def _request(
    container: str,
    method: str,
    path: str,
    body: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, str]:
    """One HTTP request made inside ``container``; (status, body text), status 0 on no answer."""
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    out = docker(
        "exec", container, "python3", "-c", CLIENT, path, method, body or "", json.dumps(hdrs),
        timeout=60,
    ).stdout  # fmt: skip
    status, _, text = out.partition("\n")
    return int(status), text


def _call(
    container: str,
    method: str,
    path: str,
    doc: object = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, object]:
    """Like _request, with a JSON body (``doc``, if not None) and a JSON answer."""
    body = None if doc is None else json.dumps(doc)
    status, text = _request(container, method, path, body, headers)
    return status, json.loads(text)


def _service_get(container: str, path: str) -> tuple[int, str]:
    return _request(container, "GET", path)


def _start_service(
    run: Callable[..., str],
    service: str,
    network: str,
    extra: dict[str, str],
    secrets: dict,
    suffix: str = "",
    args: tuple[str, ...] = (),
) -> str:
    env_args = [f"--env={k}={v}" for k, v in extra.items()]
    c = run(
        "jafar-service",
        f"--network={network}",
        f"--env=SERVICE_NAME={service}",
        *env_args,
        *[f"--env={k}" for k in secrets],
        *args,
        name=f"svc-{service}-{suffix or network[-4:]}",
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


def _logs(container: str) -> str:
    out = docker("logs", container)
    return out.stdout + out.stderr


def _container_ip(container: str) -> str:
    fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
    return docker("inspect", f"--format={fmt}", container).stdout.strip()


def _assert_no_secret(containers: list[str], secrets: dict[str, str], *texts: str) -> None:
    for value in secrets.values():
        for c in containers:
            assert value not in _logs(c)
        for text in texts:
            assert value not in text


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
    # no image health check: its own GET /health every 10 s would add to the count below
    auth = _start_service(run, "auth-service", "none", nowhere, SERVICE_SECRETS,
                          args=("--no-healthcheck",))
    start = time.monotonic()
    status, body = _service_get(auth, "/health")
    assert time.monotonic() - start < 20  # answered, not hung on a dependency's timeouts
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
    # a write while the store is down: 503, never a 201, and the process keeps serving
    answer = _call(ledger, "POST", "/ledger/records?token=not-logged", {"amount_cents": 5})
    assert answer == (503, {"error": "store unavailable"})
    assert _call(ledger, "GET", "/ledger/records/count") == (503, {"error": "store unavailable"})

    auth_logs = docker("logs", auth).stdout
    assert "health: mongo failed (ServerSelectionTimeoutError)" in auth_logs
    assert "health: redis failed (ConnectionError)" in auth_logs
    ledger_logs = docker("logs", ledger).stdout
    assert "health: postgres failed (OperationalError)" in ledger_logs
    assert '"POST /ledger/records" failed (OperationalError)' in ledger_logs
    assert re.search(r'"POST /ledger/records" 503 \d+\.\dms', ledger_logs), ledger_logs
    assert "not-logged" not in ledger_logs
    _assert_no_secret([auth, ledger], SERVICE_SECRETS, body)


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
        {
            "status": "ok",
            "service": "ledger-service",
            "version": "dev",  # the image's default JAFAR_VERSION
            "checks": {"postgres": "ok"},
        },
    )
    assert 'jafar_dependency_up{dependency="postgres"} 1' in _service_get(ledger, "/metrics")[1]


def test_service_standin_rejects_unknown_service_and_bad_settings(images: dict[str, str]) -> None:
    def start(*env: str) -> subprocess.CompletedProcess[str]:
        return docker(
            "run", "--rm", f"--label={LABEL}", "--network=none",
            *[f"--env={e}" for e in env], images["jafar-service"], check=False,
        )  # fmt: skip

    proc = start("SERVICE_NAME=bogus")
    assert proc.returncode == 2
    assert "SERVICE_NAME must be one of" in proc.stderr
    proc = start("SERVICE_NAME=api-service", "JAFAR_STANDIN_MODE=sluggish")
    assert proc.returncode == 2
    assert "JAFAR_STANDIN_MODE must be normal, broken, errors or slow:<seconds>" in proc.stderr
    proc = start("SERVICE_NAME=api-service", "DB_POOL_SIZE=0")
    assert proc.returncode == 2
    assert "DB_POOL_SIZE must be a positive integer" in proc.stderr


def test_service_standin_modes_and_version(
    run: Callable[..., str],
    internal_network: str,
    redis_container: str,
    redis_secret: dict[str, str],
) -> None:
    # broken: starts and serves, but /health never says ok
    broken = _start_service(
        run, "risk-service", "none",
        {"JAFAR_STANDIN_MODE": "broken", "JAFAR_VERSION": "1.4.2-rc1"}, {}, suffix="broken",
    )  # fmt: skip
    status, body = _service_get(broken, "/health")
    assert (status, json.loads(body)) == (
        503,
        {
            "status": "fail",
            "service": "risk-service",
            "version": "1.4.2-rc1",
            "checks": {"self": "fail"},
        },
    )
    status, metrics = _service_get(broken, "/metrics")
    assert status == 200
    assert 'jafar_service_info{service="risk-service",standin="true",version="1.4.2-rc1"} 1' in (
        metrics
    )
    assert "mode broken" in _logs(broken)

    # slow:3: 503 "starting" for 3 s after the start, then the real checks (Redis is up)
    started = time.monotonic()
    slow = _start_service(
        run, "notification-service", internal_network,
        {"REDIS_HOST": "redis", "REDIS_PORT": "6379", "JAFAR_STANDIN_MODE": "slow:3"},
        redis_secret, suffix="slow",
    )  # fmt: skip
    status, body = _service_get(slow, "/health")
    if time.monotonic() - started < 3:
        assert status == 503
        assert json.loads(body)["checks"] == {"self": "starting"}
    wait_for("slow stand-in healthy", lambda: _service_get(slow, "/health")[0] == 200, timeout=15)
    assert time.monotonic() - started >= 3
    status, body = _service_get(slow, "/health")
    assert (status, json.loads(body)["checks"], json.loads(body)["version"]) == (
        200,
        {"redis": "ok"},
        "dev",
    )

    # errors: healthy, yet every request under its prefix answers 500
    errors = _start_service(
        run, "notification-service", internal_network,
        {"REDIS_HOST": "redis", "REDIS_PORT": "6379", "JAFAR_STANDIN_MODE": "errors"},
        redis_secret, suffix="errors",
    )  # fmt: skip
    wait_for("errors stand-in healthy", lambda: _service_get(errors, "/health")[0] == 200,
             timeout=15)
    status, body = _service_get(errors, "/notifications/records/count")
    assert status == 500 and json.loads(body) == {"error": "stand-in in errors mode"}


def test_service_standin_health_check_follows_its_health(
    run: Callable[..., str],
    internal_network: str,
    redis_container: str,
    redis_secret: dict[str, str],
) -> None:
    """The image's own health check (GET /health) as docker runs it, no compose override."""
    svc = _start_service(
        run, "notification-service", internal_network,
        {"REDIS_HOST": "redis", "REDIS_PORT": "6379"}, redis_secret, suffix="health",
        args=FAST_HEALTH,
    )  # fmt: skip
    _wait_health(svc, timeout=30)
    assert docker("exec", svc, "id", "-un").stdout.strip() == "node"
    # broken: /health answers 503, the container turns unhealthy (no start period to wait out)
    broken = _start_service(
        run, "risk-service", "none", {"JAFAR_STANDIN_MODE": "broken"}, {}, suffix="health-broken",
        args=(*FAST_HEALTH, "--health-retries=2", "--health-start-period=1s"),
    )  # fmt: skip
    _wait_health(broken, "unhealthy", timeout=30)
    assert "503" in _health_log(broken)
    _assert_no_secret([svc], redis_secret, _health_log(svc))


def _redis_cli(redis_container: str, secret: dict[str, str], *args: str) -> str:
    auth = {"REDISCLI_AUTH": secret["REDIS_PASSWORD"]}
    return docker(
        "exec", "--env=REDISCLI_AUTH", redis_container, "redis-cli", *args, env=auth
    ).stdout.strip()  # fmt: skip


def test_service_standin_records_in_redis(
    run: Callable[..., str],
    internal_network: str,
    redis_container: str,
    redis_secret: dict[str, str],
) -> None:
    svc = _start_service(
        run, "notification-service", internal_network,
        {"REDIS_HOST": "redis", "REDIS_PORT": "6379", "DB_POOL_SIZE": "3"},
        redis_secret, suffix="records",
    )  # fmt: skip
    status, before = _call(svc, "GET", "/notifications/records/count")
    assert status == 200
    marker = f"body-{uuid.uuid4().hex}"
    ids = []
    for doc in ({"seq": 1, "note": marker}, None, [1, 2, 3]):
        status, answer = _call(svc, "POST", "/notifications/records?token=qs-secret", doc)
        assert status == 201, answer
        assert re.fullmatch(r"[0-9a-f]{32}", answer["id"]), answer
        ids.append(answer["id"])
    assert _call(svc, "GET", "/notifications/records/count") == (
        200,
        {"count": before["count"] + 3},
    )
    assert _call(svc, "POST", "/notifications/records/missing", {"ids": [*ids, "nope"]}) == (
        200,
        {"missing": ["nope"]},
    )
    # in Redis itself
    for rid in ids:
        member = _redis_cli(redis_container, redis_secret, "SISMEMBER", "notification:records", rid)
        assert member == "1"

    # the body limit is 64 KiB: exactly that is accepted, one byte more is a 413
    at_limit = json.dumps("x" * (64 * 1024 - 2))
    assert len(at_limit) == 64 * 1024
    assert _request(svc, "POST", "/notifications/records", at_limit)[0] == 201
    status, text = _request(svc, "POST", "/notifications/records", at_limit + " ")
    assert (status, json.loads(text)) == (413, {"error": "body larger than 65536 bytes"})
    # bad requests
    assert _request(svc, "POST", "/notifications/records", "{nope")[0] == 400
    assert _call(svc, "POST", "/notifications/records/missing", {"ids": "x"})[0] == 400
    too_many = {"ids": [str(i) for i in range(5001)]}
    assert _call(svc, "POST", "/notifications/records/missing", too_many) == (
        400,
        {"error": "at most 5000 ids per request"},
    )
    bad_delay = {"X-Standin-Delay": "11"}
    assert _call(svc, "GET", "/notifications/records/count", headers=bad_delay)[0] == 400
    # unknown paths, other services' prefixes, wrong methods
    assert _call(svc, "GET", "/notifications/other") == (404, {"error": "not found"})
    assert _call(svc, "POST", "/api/records", {})[0] == 404
    assert _call(svc, "GET", "/notifications/records")[0] == 405
    assert _call(svc, "POST", "/notifications/records/count", {})[0] == 405
    assert _call(svc, "DELETE", "/notifications/records")[0] == 405

    # one line per request (method, path without query, status, duration), no body, no secret
    logs = _logs(svc)
    assert "pool size 3" in logs
    assert len(re.findall(r'"POST /notifications/records" 201 \d+\.\dms', logs)) == 4, logs
    assert '"POST /notifications/records" 413' in logs
    assert marker not in logs
    assert "qs-secret" not in logs
    _assert_no_secret([svc], redis_secret)


# Waits until the stand-in's listening socket refuses connections (at most ~3 s); prints
# "refused", or what happened instead.
REFUSED_PROBE = (
    "import socket, sys, time\n"
    "for _ in range(60):\n"
    "    s = socket.socket()\n"
    "    s.settimeout(2)\n"
    "    try:\n"
    "        s.connect((sys.argv[1], 3000))\n"
    "        result = 'connected'\n"
    "    except ConnectionRefusedError:\n"
    "        print('refused'); break\n"
    "    except OSError as e:\n"
    "        result = type(e).__name__\n"
    "    finally:\n"
    "        s.close()\n"
    "    time.sleep(0.05)\n"
    "else:\n"
    "    print(result)\n"
)


def test_service_standin_sigterm_drains_requests_in_flight(
    run: Callable[..., str],
    internal_network: str,
    redis_container: str,
    redis_secret: dict[str, str],
) -> None:
    # 8 s in flight: on the loaded CI machine SIGTERM and the refusal probe took over 3 s
    svc = _start_service(
        run, "notification-service", internal_network,
        {"REDIS_HOST": "redis", "REDIS_PORT": "6379"}, redis_secret, suffix="drain",
    )  # fmt: skip
    # the client runs in a container of its own: it must outlive the stand-in's container
    client = run(
        "jafar-service", f"--network={internal_network}", "--entrypoint=python3",
        name="drain-client", cmd=("-c", "import time; time.sleep(600)"),
    )  # fmt: skip
    ip = _container_ip(svc)
    delayed = subprocess.Popen(
        ["docker", "exec", client, "python3", "-c", CLIENT,
         f"http://{ip}:3000/notifications/records", "POST", '{"drain": true}',
         json.dumps({"Content-Type": "application/json", "X-Standin-Delay": "8"})],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # in flight: the delayed request and this /metrics request itself
        wait_for(
            "the delayed request in flight",
            lambda: "http_requests_in_flight 2" in _service_get(svc, "/metrics")[1],
            timeout=10,
            interval=0.1,
        )
        docker("kill", "--signal=TERM", svc)
        probe = docker("exec", client, "python3", "-c", REFUSED_PROBE, ip, timeout=30).stdout
        assert probe.strip() == "refused"
        assert delayed.poll() is None, "the delayed request ended before the probe"
        out, err = delayed.communicate(timeout=30)
    finally:
        if delayed.poll() is None:
            delayed.kill()
    status, _, text = out.partition("\n")
    assert status == "201", out + err
    rid = json.loads(text)["id"]
    exit_code = docker("wait", svc, timeout=40).stdout.strip()
    assert exit_code == "0"
    logs = _logs(svc)
    assert "SIGTERM: refusing new connections" in logs
    # the drain itself is proven above (refused while the request was in flight, then its 201
    # and exit 0); the count is read when the serving loop has stopped, which on a loaded
    # machine can be after that request finished (the CI run that saw 0)
    assert re.search(r"draining [01] in-flight requests", logs), logs
    assert re.search(r'"POST /notifications/records" 201 8\d{3}\.\dms', logs), logs
    assert logs.rstrip().endswith("stopped")
    assert _redis_cli(redis_container, redis_secret, "SISMEMBER", "notification:records", rid) == (
        "1"
    )


def test_service_standin_under_bounded_load_loses_nothing(
    run: Callable[..., str],
    internal_network: str,
    redis_container: str,
    redis_secret: dict[str, str],
) -> None:
    """tests.support.load against a stand-in published on loopback: every request answered
    in time, every acknowledged record in Redis."""
    # a port can only be published from a network with a way out; Redis is on the internal one
    net = f"jst-{SESSION}-loadnet"
    docker("network", "create", f"--label={LABEL}", net)
    svc = _start_service(
        run, "notification-service", net, {"REDIS_HOST": "redis", "REDIS_PORT": "6379"},
        redis_secret, suffix="load", args=("--publish=127.0.0.1::3000",),
    )  # fmt: skip
    docker("network", "connect", internal_network, svc)
    port = published_port(svc, "3000/tcp")
    load = Load(f"http://127.0.0.1:{port}", None, prefixes=("/notifications/",), rate=10,
                max_requests=30, max_seconds=10, slow_after=2)  # fmt: skip
    load.start()
    assert load.wait(timeout=60)
    report = load.report()
    assert (report.sent, report.failed) == (30, 0), report.summary()
    assert report.by_status == {"201": 15, "200": 15}
    assert load.missing("/notifications/") == []
    # one connection per request: each one logged by the stand-in as its own request (the
    # line is written after the answer is sent: on a loaded machine the last one may come
    # after the client's next requests, so it is waited for, bounded)
    wait_for("15 logged POSTs", lambda: len(re.findall(
        r'"POST /notifications/records" 201', _logs(svc))) == 15, timeout=10)


LEDGER_USER = "ledger_svc"


def _psql_superuser(container: str, sql: str, password: str) -> str:
    proc = docker(
        "exec", "--env=PGPASSWORD", container,
        "psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "ledger", "-tAX",
        "-v", "ON_ERROR_STOP=1", "-c", sql,
        env={"PGPASSWORD": password},
    )  # fmt: skip
    return proc.stdout.strip()


def test_service_standin_ledger_records_in_postgres(
    images: dict[str, str],
    run: Callable[..., str],
    internal_network: str,
    tmp_dir: Path,
) -> None:
    """The ledger stand-in against PostgreSQL set up as the data stack does it: the real
    config/postgres/initdb/01-ledger-role.sh (own schema, no CREATE on public)."""
    secrets = {
        "POSTGRES_PASSWORD": f"pg-{uuid.uuid4().hex}",
        "LEDGER_DB_PASSWORD": f"ledger-{uuid.uuid4().hex}",
    }
    initdb = tmp_dir / "initdb"
    initdb.mkdir(mode=0o755)
    role_script = Path(__file__).resolve().parents[2] / "config/postgres/initdb/01-ledger-role.sh"
    (initdb / role_script.name).write_text(role_script.read_text())
    (initdb / role_script.name).chmod(0o644)
    # PostgreSQL comes up 5 s late (as on a data host that is still starting): its name
    # resolves, its port refuses until then
    pg = run(
        "postgres", f"--network={internal_network}", "--network-alias=ledger-db",
        *HARDENED, "--user=postgres", "--tmpfs=/var/run/postgresql:mode=1777,size=1m",
        "--shm-size=256m",
        "--env=POSTGRES_USER=postgres", "--env=POSTGRES_PASSWORD", "--env=POSTGRES_DB=ledger",
        "--env=POSTGRES_INITDB_ARGS=--auth-host=scram-sha-256",
        "--env=LEDGER_DB_NAME=ledger", f"--env=LEDGER_DB_USER={LEDGER_USER}",
        "--env=LEDGER_DB_PASSWORD",
        f"--volume={initdb}:/docker-entrypoint-initdb.d:ro",
        "--entrypoint=sh",
        name="ledger-pg", env=secrets,
        cmd=("-c", "sleep 5; exec docker-entrypoint.sh postgres"),
    )  # fmt: skip
    svc = _start_service(
        run, "ledger-service", internal_network,
        {"POSTGRES_HOST": "ledger-db", "LEDGER_DB_NAME": "ledger", "LEDGER_DB_USER": LEDGER_USER,
         "DB_POOL_SIZE": "3"},
        {"LEDGER_DB_PASSWORD": secrets["LEDGER_DB_PASSWORD"]}, suffix="records",
    )  # fmt: skip
    assert _call(svc, "POST", "/ledger/records", {}) == (503, {"error": "store unavailable"})

    wait_for(
        "postgres ready with the ledger role",
        lambda: docker(
            "exec", pg, "pg_isready", "-h", "127.0.0.1", "-U", "postgres", "-d", "ledger",
            check=False,
        ).returncode == 0,
        timeout=90,
    )  # fmt: skip
    # the same process now connects: its pool and its table are made on this first write
    ids = []
    for doc in (None, {"amount_cents": 250}, {"amount_cents": 99_999}):
        status, answer = _call(svc, "POST", "/ledger/records", doc)
        assert status == 201, answer
        ids.append(answer["id"])
    assert _call(svc, "GET", "/ledger/records/count") == (200, {"count": 3, "balanced": True})
    assert _call(svc, "POST", "/ledger/records/missing", {"ids": ["nope", *ids]}) == (
        200,
        {"missing": ["nope"]},
    )
    status, answer = _call(svc, "POST", "/ledger/records", {"amount_cents": -5})
    assert (status, answer) == (400, {"error": "amount_cents must be an integer from 1 to 10^12"})

    pw = secrets["POSTGRES_PASSWORD"]
    # the table is in the role's own schema, and each transaction is a balanced pair
    schema = (
        "SELECT table_schema FROM information_schema.tables WHERE table_name = 'ledger_entries'"
    )
    assert _psql_superuser(pg, schema, pw) == LEDGER_USER
    rows = _psql_superuser(
        pg,
        "SELECT txn_id, count(*), sum(amount_cents), string_agg(direction, ',' ORDER BY direction),"
        " max(amount_cents) FROM ledger_svc.ledger_entries GROUP BY txn_id ORDER BY 5",
        pw,
    )
    assert [line.split("|") for line in rows.splitlines()] == [
        [ids[0], "2", "0", "credit,debit", "100"],
        [ids[1], "2", "0", "credit,debit", "250"],
        [ids[2], "2", "0", "credit,debit", "99999"],
    ]
    # a half-written transaction (inserted behind the service's back) shows as unbalanced
    _psql_superuser(
        pg,
        "INSERT INTO ledger_svc.ledger_entries (txn_id, account, direction, amount_cents) "
        "VALUES ('half', 'x', 'debit', 1)",
        pw,
    )
    assert _call(svc, "GET", "/ledger/records/count") == (200, {"count": 4, "balanced": False})
    logs = _logs(svc)
    assert "pool size 3" in logs
    _assert_no_secret([svc, pg], secrets)


# A replica set of two members (so that w: "majority" needs the secondary) with an app user, as
# scripts/init-replica.sh would do it (but with Python: pymongo from the stand-in image);
# credentials come from the environment only. Safe to run again.
MONGO_SETUP = """\
import os, time, pymongo
from pymongo.errors import OperationFailure
c = pymongo.MongoClient("mongo-primary", 27017, directConnection=True,
                        username=os.environ["ROOT_USER"], password=os.environ["ROOT_PASSWORD"],
                        authSource="admin", serverSelectionTimeoutMS=5000)
members = [{"_id": 0, "host": "mongo-primary:27017"}, {"_id": 1, "host": "mongo-secondary:27017"}]
try:
    c.admin.command({"replSetInitiate": {"_id": "rs0", "members": members}})
except OperationFailure as exc:
    if exc.code != 23:  # AlreadyInitialized: a retry of this script
        raise
for _ in range(60):
    if c.admin.command("isMaster").get("ismaster"):
        break
    time.sleep(0.5)
else:
    raise SystemExit("no primary")
try:
    c["jafar"].command("createUser", "jafar_app", pwd=os.environ["MONGO_APP_PASSWORD"],
                       roles=[{"role": "readWrite", "db": "jafar"}])
except OperationFailure as exc:
    if exc.code != 51003:  # the user exists: a retry of this script
        raise
print("ready")
"""

# Prints a document of jafar.<collection> as a member holds it (directly, secondaries too).
MONGO_READ = """\
import json, os, sys, pymongo
c = pymongo.MongoClient(sys.argv[1], 27017, directConnection=True,
                        readPreference="secondaryPreferred",
                        username="jafar_app", password=os.environ["MONGO_APP_PASSWORD"],
                        authSource="jafar", serverSelectionTimeoutMS=5000)
doc = c["jafar"][sys.argv[2]].find_one({"_id": sys.argv[3]})
print(json.dumps(doc, default=lambda v: type(v).__name__))
"""


@pytest.fixture(scope="module")
def mongo_replica_set(
    images: dict[str, str], internal_network: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """rs0 of the sandbox's mongo image (a stand-in too): mongo-primary and mongo-secondary."""
    if "mongo" not in images:
        pytest.skip("no sandbox mongo image (sandbox/images/mongo) yet")
    secrets = {
        "MONGO_INITDB_ROOT_PASSWORD": f"root-{uuid.uuid4().hex}",
        "MONGO_APP_PASSWORD": f"app-{uuid.uuid4().hex}",
    }
    # a replica set with auth needs a key file (members authenticate to each other with it)
    keydir = tmp_path_factory.mktemp("mongokey")
    keydir.chmod(0o755)
    keyfile = keydir / "mongo.key"
    keyfile.write_text(base64.b64encode(os.urandom(96)).decode() + "\n")
    os.chown(keyfile, 999, 999)
    keyfile.chmod(0o400)
    mongod = ("mongod", "--replSet", "rs0", "--port", "27017", "--bind_ip_all",
              "--keyFile", "/etc/mongo/keyfile")  # fmt: skip
    names = {}
    for member, root in (("primary", True), ("secondary", False)):
        name = f"jst-{SESSION}-mongo-{member}"
        root_env = ["--env=MONGO_INITDB_ROOT_USERNAME=root", "--env=MONGO_INITDB_ROOT_PASSWORD"]
        docker(
            "run", "--detach", f"--name={name}", f"--label={LABEL}",
            f"--network={internal_network}", f"--network-alias=mongo-{member}",
            *(root_env if root else []),
            f"--volume={keyfile}:/etc/mongo/keyfile:ro",
            images["mongo"], *mongod,
            env=secrets,
        )  # fmt: skip
        names[member] = name
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
    return {**names, "app_password": secrets["MONGO_APP_PASSWORD"]}


def _mongo_env() -> dict[str, str]:
    return {
        "MONGO_HOSTS": "mongo-primary:27017,mongo-secondary:27017",
        "MONGO_REPLICA_SET": "rs0",
        "MONGO_APP_DB": "jafar",
        "MONGO_APP_USER": "jafar_app",
    }


def test_service_standin_healthy_against_mongo_replica_set(
    run: Callable[..., str],
    internal_network: str,
    mongo_replica_set: dict[str, str],
    redis_container: str,
    redis_secret: dict[str, str],
) -> None:
    """auth-service stand-in against the sandbox mongo image (a stand-in too) and redis."""
    svc = _start_service(
        run, "auth-service", internal_network,
        {**_mongo_env(), "REDIS_HOST": "redis", "REDIS_PORT": "6379"},
        {"MONGO_APP_PASSWORD": mongo_replica_set["app_password"],
         "REDIS_PASSWORD": redis_secret["REDIS_PASSWORD"]},
    )  # fmt: skip
    status, body = _service_get(svc, "/health")
    assert (status, json.loads(body)["checks"]) == (200, {"mongo": "ok", "redis": "ok"}), body
    metrics = _service_get(svc, "/metrics")[1]
    assert "jafar_mongo_primary_up 1" in metrics
    assert 'jafar_dependency_up{dependency="mongo"} 1' in metrics


def _mongo_connections_from(member: str, ip: str) -> int:
    """How many connections the mongod stand-in ``member`` accepted from ``ip`` (its log)."""
    count = 0
    for line in _logs(member).splitlines():
        if '"Connection accepted"' in line:
            remote = json.loads(line).get("attr", {}).get("remote", "")
            count += remote.startswith(f"{ip}:")
    return count


def pause(container: str, tries: int = 5) -> None:
    """docker pause, again when the cgroup freezer gives up (a process of the container in
    uninterruptible I/O on a loaded machine: "unable to freeze"), at most `tries` times."""
    for attempt in range(tries):
        proc = docker("pause", container, check=False)
        if proc.returncode == 0:
            return
        if "unable to freeze" not in proc.stderr or attempt == tries - 1:
            raise AssertionError(f"docker pause {container} exited {proc.returncode}: "
                                 f"{proc.stderr[-2000:]}")
        time.sleep(1)


def test_service_standin_records_in_mongo(
    images: dict[str, str],
    run: Callable[..., str],
    internal_network: str,
    mongo_replica_set: dict[str, str],
) -> None:
    app_secret = {"MONGO_APP_PASSWORD": mongo_replica_set["app_password"]}
    svc = _start_service(
        run, "wallet-service", internal_network, {**_mongo_env(), "DB_POOL_SIZE": "4"},
        app_secret, suffix="records",
    )  # fmt: skip
    ids = []
    for seq in range(3):
        status, answer = _call(svc, "POST", "/wallet/records", {"seq": seq})
        assert status == 201, answer
        ids.append(answer["id"])
    # ONE long-lived, pooled client: ten more writes open no new connection to the primary
    ip = _container_ip(svc)
    before = _mongo_connections_from(mongo_replica_set["primary"], ip)
    assert before >= 1
    for seq in range(3, 13):
        status, answer = _call(svc, "POST", "/wallet/records", {"seq": seq})
        assert status == 201, answer
        ids.append(answer["id"])
    assert _mongo_connections_from(mongo_replica_set["primary"], ip) - before <= 1
    assert _call(svc, "GET", "/wallet/records/count") == (200, {"count": 13})
    assert _call(svc, "POST", "/wallet/records/missing", {"ids": [ids[0], "nope", ids[-1]]}) == (
        200,
        {"missing": ["nope"]},
    )

    # as stored, in wallet_records, on the secondary too (w: "majority" waited for it)
    def read(member: str) -> dict:
        out = docker(
            "run", "--rm", f"--label={LABEL}", f"--network={internal_network}",
            "--env=MONGO_APP_PASSWORD", images["jafar-service"],
            "python3", "-c", MONGO_READ, member, "wallet_records", ids[5],
            env=app_secret, timeout=60,
        ).stdout  # fmt: skip
        return json.loads(out)

    expected = {"_id": ids[5], "service": "wallet-service", "at": "datetime", "body": {"seq": 5}}
    assert read("mongo-primary") == expected
    assert read("mongo-secondary") == expected
    # a body MongoDB cannot store is the client's error
    unstorable = (400, {"error": "the body cannot be stored as a document"})
    assert _call(svc, "POST", "/wallet/records", {"$where": "1"}) == unstorable
    assert _call(svc, "POST", "/wallet/records", {"n": 2**70}) == unstorable

    # no majority (the secondary does not answer): the write is refused, never a 201
    pause(mongo_replica_set["secondary"])
    try:
        status, answer = _call(svc, "POST", "/wallet/records", {"seq": 99})
    finally:
        docker("unpause", mongo_replica_set["secondary"])
    assert (status, answer) == (503, {"error": "write not acknowledged by a majority"})
    assert re.search(r'"POST /wallet/records" failed \((WriteConcernError|WTimeoutError)\)',
                     _logs(svc))  # fmt: skip
    assert "pool size 4" in _logs(svc)
    _assert_no_secret([svc], app_secret)


# --- the JWT key set (auth-service signs with the first key, every key verifies) --------------

# canary-looking keys: any of them in a log line or an answer is a leak the tests catch
JWT_K1 = f"jwt-key-one-canary-{uuid.uuid4().hex}"
JWT_K2 = f"jwt-key-two-canary-{uuid.uuid4().hex}"
JWT_SECRET_PATH = "/run/secrets/auth_jwt_secret"


def _kid(key: str) -> str:
    """The contract's key id: the first 16 hex characters of sha256(key)."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_json(doc: dict) -> str:
    return _b64url(json.dumps(doc, separators=(",", ":")).encode())


def _unb64url_json(segment: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def _hs256(signing_input: str, key: str) -> str:
    return _b64url(hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest())


def _jws(header: dict, claims: dict, key: str) -> str:
    """A token made here, independently of the stand-in: a standard HS256 JWT."""
    signing_input = f"{_b64url_json(header)}.{_b64url_json(claims)}"
    return f"{signing_input}.{_hs256(signing_input, key)}"


def _start_with_keys(
    run: Callable[..., str], tmp_dir: Path, service: str, key_set: str, suffix: str,
    extra: dict[str, str] | None = None,
) -> str:
    """A stand-in with the key set in a file, mounted as Compose mounts the secret."""
    path = tmp_dir / f"jwt-{suffix}"
    path.write_text(key_set + "\n")
    path.chmod(0o644)
    return _start_service(
        run, service, "none", {"AUTH_JWT_SECRET_FILE": JWT_SECRET_PATH, **(extra or {})}, {},
        suffix=suffix, args=(f"--volume={path}:{JWT_SECRET_PATH}:ro",),
    )  # fmt: skip


def _me(container: str, path: str, token: str | None) -> tuple[int, object]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return _call(container, "GET", path, headers=headers)


def test_service_standin_jwt_key_set_signs_with_the_first_key_and_verifies_with_every_one(
    run: Callable[..., str], tmp_dir: Path,
) -> None:
    """A rotation as the suite does it: the token auth-service issued with K1 is still good on
    api-service once the set is "K2,K1", refused once K1 left it; the new set signs with K2."""
    # auth with K2,K1 and a 1 s lifetime: the token it issues first, so it expires meanwhile
    auth21 = _start_with_keys(run, tmp_dir, "auth-service", f" {JWT_K2} ,, {JWT_K1} ,",
                              "jwt-auth21", {"AUTH_TOKEN_TTL": "1"})
    status, short = _call(auth21, "POST", "/auth/token", {"sub": "bob"})
    issued_short = time.monotonic()
    assert status == 200, short
    assert (short["kid"], short["expires_in"]) == (_kid(JWT_K2), 1)

    auth1 = _start_with_keys(run, tmp_dir, "auth-service", JWT_K1, "jwt-auth1")
    status, issued = _call(auth1, "POST", "/auth/token", {"sub": "alice@example.test"})
    assert status == 200, issued
    assert set(issued) == {"token", "kid", "expires_in"}
    assert (issued["kid"], issued["expires_in"]) == (_kid(JWT_K1), 900)
    token = issued["token"]
    # a standard HS256 JWT: checked here with K1, not with the stand-in's own code
    head, claims, sig = token.split(".")
    assert "=" not in token
    assert _unb64url_json(head) == {"alg": "HS256", "typ": "JWT", "kid": _kid(JWT_K1)}
    doc = _unb64url_json(claims)
    assert set(doc) == {"sub", "iat", "exp"} and doc["sub"] == "alice@example.test"
    assert doc["exp"] - doc["iat"] == 900 and abs(doc["iat"] - time.time()) < 60
    assert hmac.compare_digest(sig, _hs256(f"{head}.{claims}", JWT_K1))
    me = (200, {"sub": "alice@example.test", "kid": _kid(JWT_K1)})
    assert _me(auth1, "/auth/me", token) == me

    api21 = _start_with_keys(run, tmp_dir, "api-service", f"{JWT_K2},{JWT_K1}", "jwt-api21")
    api2 = _start_with_keys(run, tmp_dir, "api-service", JWT_K2, "jwt-api2")
    # the previous key still verifies; the one that left the set does not
    assert _me(api21, "/api/me", token) == me
    assert _me(api2, "/api/me", token) == (401, {"error": "unknown key"})
    # a token signed here with K2 (the new signing key) is good wherever K2 is in the set
    now = int(time.time())
    by_k2 = _jws({"alg": "HS256", "typ": "JWT", "kid": _kid(JWT_K2)},
                 {"sub": "carol", "iat": now, "exp": now + 600}, JWT_K2)
    assert _me(api2, "/api/me", by_k2) == (200, {"sub": "carol", "kid": _kid(JWT_K2)})
    assert _me(api21, "/api/me", by_k2) == (200, {"sub": "carol", "kid": _kid(JWT_K2)})
    assert _me(auth1, "/auth/me", by_k2) == (401, {"error": "unknown key"})

    # refused: tampered claims, alg none (with and without a signature), other algorithms,
    # the right kid with another key, no token, no bearer, garbage
    forged = _b64url_json({**doc, "sub": "mallory"})
    assert _me(api21, "/api/me", f"{head}.{forged}.{sig}") == (401, {"error": "bad signature"})
    flipped = sig[:-2] + ("BB" if sig.endswith("AA") else "AA")
    assert _me(api21, "/api/me", f"{head}.{claims}.{flipped}") == (
        401, {"error": "bad signature"},
    )  # fmt: skip
    wrong_key = _jws({"alg": "HS256", "typ": "JWT", "kid": _kid(JWT_K1)}, doc, JWT_K2)
    assert _me(api21, "/api/me", wrong_key) == (401, {"error": "bad signature"})
    for alg in ("none", "HS512"):
        other = _b64url_json({"alg": alg, "typ": "JWT", "kid": _kid(JWT_K1)})
        for tail in ("", sig):
            assert _me(api21, "/api/me", f"{other}.{forged}.{tail}") == (
                401, {"error": "malformed token"},
            ), alg  # fmt: skip
    malformed = (401, {"error": "malformed token"})
    for bad in ("abc", f"{head}.{claims}", f"{head}.{claims}.{sig}.x", f"{head}.!!.{sig}",
                f"{_b64url(b'[1]')}.{claims}.{sig}"):
        assert _me(api21, "/api/me", bad) == malformed, bad
    assert _me(api21, "/api/me", None) == (401, {"error": "missing token"})
    basic = {"Authorization": "Basic " + base64.b64encode(b"a:b").decode()}
    assert _call(api21, "GET", "/api/me", headers=basic) == (401, {"error": "missing token"})

    # expired: the 1 s token, at least 2 s after it was issued
    time.sleep(max(0.0, 2.2 - (time.monotonic() - issued_short)))
    assert _me(api21, "/api/me", short["token"]) == (401, {"error": "expired"})
    assert _me(auth21, "/auth/me", short["token"]) == (401, {"error": "expired"})
    assert _unb64url_json(short["token"].split(".")[0])["kid"] == _kid(JWT_K2)
    stale = _jws({"alg": "HS256", "typ": "JWT", "kid": _kid(JWT_K2)},
                 {"sub": "carol", "iat": now - 100, "exp": now - 10}, JWT_K2)
    assert _me(api2, "/api/me", stale) == (401, {"error": "expired"})

    # bad bodies, methods, routes: only auth-service issues, api-service only verifies
    rule = {"error": 'the body must be {"sub": "<1 to 64 printable ASCII characters>"}'}
    for body in ({}, {"sub": ""}, {"sub": "x" * 65}, {"sub": "tab\there"}, {"sub": "\u00e9"},
                 ["alice"]):
        assert _call(auth1, "POST", "/auth/token", body) == (400, rule), body
    assert _request(auth1, "POST", "/auth/token", "{not json")[0] == 400
    assert _call(auth1, "GET", "/auth/token")[0] == 405
    assert _call(auth1, "POST", "/auth/me", {})[0] == 405
    assert _call(api21, "POST", "/api/token", {"sub": "x"}) == (404, {"error": "not found"})

    # no key, no token in any log line, answer or `docker inspect`; the kids are named
    containers = [auth21, auth1, api21, api2]
    _assert_no_secret(containers, {"K1": JWT_K1, "K2": JWT_K2, "token": token,
                                   "short": short["token"], "by_k2": by_k2})
    pieces = [claims, sig, *short["token"].split(".")[1:]]
    for c in containers:
        logs, inspect = _logs(c), docker("inspect", c).stdout
        assert JWT_K1 not in inspect and JWT_K2 not in inspect
        for part in pieces:  # not even a piece of a token's claims or signature
            assert part[:12] not in logs and part[-12:] not in logs, c
    assert f"JWT key set: 2 key(s), kids {_kid(JWT_K2)}, {_kid(JWT_K1)}" in _logs(api21)
    assert f"signing with {_kid(JWT_K1)}, tokens live 900s" in _logs(auth1)
    assert re.search(r'"GET /api/me" 401 \d+\.\dms', _logs(api21))


def test_service_standin_jwt_routes_without_a_key_set_and_in_errors_mode(
    run: Callable[..., str], tmp_dir: Path,
) -> None:
    """No key set: the routes exist but answer 503; errors mode: 500 like every prefixed
    route."""
    bare = _start_service(run, "auth-service", "none", {}, {}, suffix="jwt-bare")
    no_keys = (503, {"error": "no JWT key set"})
    assert _call(bare, "POST", "/auth/token", {"sub": "alice"}) == no_keys
    assert _me(bare, "/auth/me", "a.b.c") == no_keys
    assert "no JWT key set" in _logs(bare)
    errors = _start_with_keys(run, tmp_dir, "api-service", JWT_K1, "jwt-errors",
                              {"JAFAR_STANDIN_MODE": "errors"})
    assert _me(errors, "/api/me", "a.b.c") == (500, {"error": "stand-in in errors mode"})
    _assert_no_secret([bare, errors], {"K1": JWT_K1})


def test_service_standin_jwt_refuses_a_bad_token_ttl(images: dict[str, str]) -> None:
    for ttl in ("0", "86401", "15m"):
        proc = docker(
            "run", "--rm", f"--label={LABEL}", "--network=none", "--env=SERVICE_NAME=auth-service",
            f"--env=AUTH_TOKEN_TTL={ttl}", images["jafar-service"], check=False,
        )  # fmt: skip
        assert proc.returncode == 2, ttl
        assert proc.stderr.strip() == (
            "jafar-service stand-in: AUTH_TOKEN_TTL must be an integer from 1 to 86400 (seconds)"
        ), ttl
        assert proc.stdout == "", ttl


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
    docker(*args[:-1], "--health-interval=2s", args[-1])

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
    # the image's health check: booted and sshd active
    _wait_health(name, timeout=30)

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
