"""The data containers' shell entrypoints and healthchecks, exactly as Compose hands them to the
container (taken from `docker compose config`), run by the real /bin/sh with stand-in programs
on PATH (`docker-entrypoint.sh`, `redis-server`, `redis-cli`: fakes that record what they get;
the real servers are exercised by the sandbox). Checks how the secrets travel: from Compose's
secret files (/run/secrets) to stdin or a private file, never argv or an environment variable;
the keyfile's mode and owner."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from static_helpers import compose_json

RECORDER = """#!/bin/sh
# stand-in: records argv, environment and stdin
printf '%s\\n' "$@" > "$RECORD_DIR/$(basename "$0").argv"
env > "$RECORD_DIR/$(basename "$0").env"
cat > "$RECORD_DIR/$(basename "$0").stdin"
{extra}
"""


@pytest.fixture(scope="module")
def data_model(env_file: Path) -> dict:
    return compose_json(env_file, ["docker-compose.data.yml"])


def container_script(spec: dict) -> list[str]:
    """entrypoint + command as the container runs them (`$$` is Compose's escape for `$`)."""
    return [a.replace("$$", "$") for a in [*(spec.get("entrypoint") or []),
                                           *(spec.get("command") or [])]]


def fake(bindir: Path, name: str, extra: str = "") -> None:
    path = bindir / name
    path.write_text(RECORDER.format(extra=extra))
    path.chmod(0o755)


def run(argv: list[str], tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "RECORD_DIR": str(tmp_path)}
    return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          env={**base, **env}, stdin=subprocess.DEVNULL)


@pytest.fixture
def bindir(tmp_path: Path) -> Path:
    path = tmp_path / "bin"
    path.mkdir()
    return path


def with_secrets(argv: list[str], tmp_path: Path, **files: str) -> list[str]:
    """The script with /run/secrets (Compose's secret files) and /tmp pointed at folders of the
    test, the given secret files written there."""
    secrets = tmp_path / "run-secrets"
    secrets.mkdir(exist_ok=True)
    for name, value in files.items():
        (secrets / name).write_text(value)
    moved = {"/run/secrets/": f"{secrets}/", "/tmp/mongo-keyfile": str(tmp_path / "mongo-keyfile"),
             "/tmp/mongo-tls.pem": str(tmp_path / "mongo-tls.pem"),
             "/tmp/pg-tls.key": str(tmp_path / "pg-tls.key")}
    for old, new in moved.items():
        argv = [a.replace(old, new) for a in argv]
    return argv


TLS_FILES = {"data_tls_crt": "-----BEGIN CERTIFICATE-----\ncrt\n",
             "data_tls_key": "-----BEGIN PRIVATE KEY-----\nkey\n", "data_ca_crt": "ca\n"}


@pytest.mark.parametrize("service", ["mongo-primary", "mongo-secondary", "mongo-arbiter"])
def test_mongo_keyfile_from_the_secret_file(data_model: dict, tmp_path: Path, bindir: Path,
                                            service: str, env_values: dict[str, str]):
    spec = data_model["services"][service]
    key = env_values["MONGO_KEYFILE"]
    argv = with_secrets(container_script(spec), tmp_path, mongo_keyfile=key, **TLS_FILES)
    assert argv[:2] == ["/bin/sh", "-c"]
    fake(bindir, "docker-entrypoint.sh",
         extra='stat -c "%a %u" "$RECORD_DIR/mongo-keyfile" > "$RECORD_DIR/keyfile.stat"')
    proc = run(argv, tmp_path, {k: str(v) for k, v in (spec.get("environment") or {}).items()})
    assert proc.returncode == 0, proc.stderr
    keyfile = tmp_path / "mongo-keyfile"
    assert keyfile.read_text() == key
    mode, uid = (tmp_path / "keyfile.stat").read_text().split()
    assert mode == "400", "mongod refuses a keyfile readable by group or others"
    assert int(uid) == os.getuid(), "owned by the user mongod runs as"
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o400
    passed = (tmp_path / "docker-entrypoint.sh.argv").read_text().split("\n")
    assert passed[:2] == ["mongod", "--replSet"]
    assert "--keyFile" in passed and key not in "\n".join(passed)
    assert key not in (tmp_path / "docker-entrypoint.sh.env").read_text(), \
        "the key is in no environment variable"
    # TLS required, with one PEM (certificate, then key) that only mongod's user can read
    pem = tmp_path / "mongo-tls.pem"
    assert pem.read_text() == TLS_FILES["data_tls_crt"] + TLS_FILES["data_tls_key"]
    assert stat.S_IMODE(pem.stat().st_mode) == 0o400
    flags = dict(zip(passed, passed[1:], strict=False))
    assert flags["--tlsMode"] == "requireTLS"
    assert flags["--tlsCertificateKeyFile"] == str(pem)
    assert flags["--tlsCAFile"].endswith("/data_ca_crt")
    assert "--tlsAllowConnectionsWithoutCertificates" in passed


def test_mongo_without_keyfile_refuses_to_start(data_model: dict, tmp_path: Path,
                                                bindir: Path):
    spec = data_model["services"]["mongo-secondary"]
    fake(bindir, "docker-entrypoint.sh")
    proc = run(with_secrets(container_script(spec), tmp_path), tmp_path, {})
    assert proc.returncode == 1 and "mongo_keyfile is missing or empty" in proc.stderr
    assert not (tmp_path / "docker-entrypoint.sh.argv").exists()


def test_redis_password_reaches_redis_on_stdin(data_model: dict, tmp_path: Path,
                                               bindir: Path, env_values: dict[str, str]):
    spec = data_model["services"]["redis"]
    fake(bindir, "redis-server")
    password = env_values["REDIS_PASSWORD"]
    argv = with_secrets(container_script(spec), tmp_path, redis_password=password)
    proc = run(argv, tmp_path, {k: str(v) for k, v in spec["environment"].items()})
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "redis-server.argv").read_text() == "-\n", "config from stdin only"
    assert password not in (tmp_path / "redis-server.env").read_text()
    config = (tmp_path / "redis-server.stdin").read_text().splitlines()
    for line in ("appendonly yes", "appendfsync everysec", f"requirepass {password}",
                 "dir /data", "maxclients 1000",
                 # TLS only: no plain port; the data plane's certificate; no client certificates
                 "port 0", "tls-port 6379", "tls-cert-file /run/secrets/data_tls_crt",
                 "tls-key-file /run/secrets/data_tls_key",
                 "tls-ca-cert-file /run/secrets/data_ca_crt", "tls-auth-clients no",
                 # the health check's user: PING and nothing else, no password
                 "user jafar-health on nopass -@all +ping"):
        assert line.replace("/run/secrets/", f"{tmp_path}/run-secrets/") in config
    assert "port 6379" not in config


@pytest.mark.parametrize("password", ["", "has space", "quote\"d", "semi;colon", "new\nline"])
def test_redis_refuses_an_unsafe_password(data_model: dict, tmp_path: Path, bindir: Path,
                                          password: str):
    spec = data_model["services"]["redis"]
    fake(bindir, "redis-server")
    argv = with_secrets(container_script(spec), tmp_path, redis_password=password)
    proc = run(argv, tmp_path, {"REDIS_MAXCLIENTS": "1000"})
    assert proc.returncode == 1 and ("REDIS_PASSWORD" in proc.stderr
                                     or "redis_password is missing" in proc.stderr)
    assert not (tmp_path / "redis-server.argv").exists()


def test_redis_healthcheck_needs_no_secret(data_model: dict, tmp_path: Path, bindir: Path):
    """It logs in as jafar-health (PING only): no password in its environment, and it keeps
    working when a rotation left the container's copy of the password file stale."""
    spec = data_model["services"]["redis"]
    test = spec["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL" and "redis_password" not in test[1]
    fake(bindir, "redis-cli", extra='echo PONG')
    proc = run(["/bin/sh", "-c", test[1].replace("$$", "$")], tmp_path, {})
    assert proc.returncode == 0, proc.stderr
    argv = (tmp_path / "redis-cli.argv").read_text().split("\n")
    assert argv[argv.index("--user") + 1] == "jafar-health"
    assert "REDISCLI_AUTH=none" in (tmp_path / "redis-cli.env").read_text()


def test_postgres_healthcheck_needs_no_password(data_model: dict):
    test = data_model["services"]["postgres-ledger"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL" and "pg_isready" in test[1]
    assert "PASSWORD" not in test[1]
    assert json.dumps(data_model["services"]["postgres-ledger"]["environment"]) \
        .count("scram-sha-256") == 2


def test_postgres_requires_tls_with_a_private_copy_of_its_key(data_model: dict, tmp_path: Path,
                                                               bindir: Path):
    spec = data_model["services"]["postgres-ledger"]
    fake(bindir, "docker-entrypoint.sh")
    proc = run(with_secrets(container_script(spec), tmp_path, **TLS_FILES), tmp_path, {})
    assert proc.returncode == 0, proc.stderr
    key = tmp_path / "pg-tls.key"
    assert key.read_text() == TLS_FILES["data_tls_key"]
    assert stat.S_IMODE(key.stat().st_mode) == 0o600, "PostgreSQL refuses a key others can read"
    passed = (tmp_path / "docker-entrypoint.sh.argv").read_text().split("\n")
    settings = [passed[i + 1] for i, a in enumerate(passed) if a == "-c"]
    assert "ssl=on" in settings and f"ssl_key_file={key}" in settings
    assert "ssl_min_protocol_version=TLSv1.2" in settings
    assert "hba_file=/etc/postgresql/jafar/pg_hba.conf" in settings


def test_postgres_accepts_tcp_only_over_tls():
    from static_helpers import ROOT

    rules = [line.split() for line in (ROOT / "config/postgres/hba/pg_hba.conf").read_text()
             .splitlines() if line.strip() and not line.startswith("#")]
    assert [r[0] for r in rules if r[0] != "local"] == ["hostssl", "hostssl"]
    assert all(r[-1] == "scram-sha-256" for r in rules if r[0] == "hostssl")
    assert not any(r[0] in ("host", "hostnossl") for r in rules)
