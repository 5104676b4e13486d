"""The data containers' shell entrypoints and healthchecks, exactly as Compose hands them to the
container (taken from `docker compose config`), run by the real /bin/sh with stand-in programs
on PATH (`docker-entrypoint.sh`, `redis-server`, `redis-cli`: fakes that record what they get;
the real servers are exercised by the sandbox). Checks how the secrets travel: environment and
stdin, never argv; the keyfile's mode and owner."""

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


@pytest.mark.parametrize("service", ["mongo-primary", "mongo-secondary", "mongo-arbiter"])
def test_mongo_keyfile_from_environment(data_model: dict, tmp_path: Path, bindir: Path,
                                        service: str, env_values: dict[str, str]):
    spec = data_model["services"][service]
    argv = [a.replace("/tmp/mongo-keyfile", str(tmp_path / "mongo-keyfile"))
            for a in container_script(spec)]
    assert argv[:2] == ["/bin/sh", "-c"]
    fake(bindir, "docker-entrypoint.sh",
         extra='stat -c "%a %u" "$RECORD_DIR/mongo-keyfile" > "$RECORD_DIR/keyfile.stat"')
    key = env_values["MONGO_KEYFILE"]
    proc = run(argv, tmp_path, {k: str(v) for k, v in spec["environment"].items()})
    assert proc.returncode == 0, proc.stderr
    keyfile = tmp_path / "mongo-keyfile"
    assert keyfile.read_text() == key + "\n"
    mode, uid = (tmp_path / "keyfile.stat").read_text().split()
    assert mode == "400", "mongod refuses a keyfile readable by group or others"
    assert int(uid) == os.getuid(), "owned by the user mongod runs as"
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o400
    passed = (tmp_path / "docker-entrypoint.sh.argv").read_text().split("\n")
    assert passed[:2] == ["mongod", "--replSet"]
    assert "--keyFile" in passed and key not in "\n".join(passed)
    assert "MONGO_KEYFILE=" not in (tmp_path / "docker-entrypoint.sh.env").read_text(), \
        "the key is removed from mongod's environment"


def test_mongo_without_keyfile_refuses_to_start(data_model: dict, tmp_path: Path,
                                                bindir: Path):
    spec = data_model["services"]["mongo-secondary"]
    fake(bindir, "docker-entrypoint.sh")
    env = {k: str(v) for k, v in spec["environment"].items() if k != "MONGO_KEYFILE"}
    proc = run(container_script(spec), tmp_path, env)
    assert proc.returncode == 1 and "MONGO_KEYFILE" in proc.stderr
    assert not (tmp_path / "docker-entrypoint.sh.argv").exists()


def test_redis_password_reaches_redis_on_stdin(data_model: dict, tmp_path: Path,
                                               bindir: Path, env_values: dict[str, str]):
    spec = data_model["services"]["redis"]
    fake(bindir, "redis-server")
    password = env_values["REDIS_PASSWORD"]
    proc = run(container_script(spec), tmp_path, {k: str(v) for k, v in
                                                  spec["environment"].items()})
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "redis-server.argv").read_text() == "-\n", "config from stdin only"
    config = (tmp_path / "redis-server.stdin").read_text().splitlines()
    for line in ("appendonly yes", "appendfsync everysec", f"requirepass {password}",
                 "dir /data", "port 6379"):
        assert line in config


@pytest.mark.parametrize("password", ["", "has space", "quote\"d", "semi;colon", "new\nline"])
def test_redis_refuses_an_unsafe_password(data_model: dict, tmp_path: Path, bindir: Path,
                                          password: str):
    spec = data_model["services"]["redis"]
    fake(bindir, "redis-server")
    proc = run(container_script(spec), tmp_path, {"REDIS_PASSWORD": password})
    assert proc.returncode == 1 and "REDIS_PASSWORD" in proc.stderr
    assert not (tmp_path / "redis-server.argv").exists()


def test_redis_healthcheck_authenticates_through_the_environment(
        data_model: dict, tmp_path: Path, bindir: Path, env_values: dict[str, str]):
    spec = data_model["services"]["redis"]
    test = spec["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    password = env_values["REDIS_PASSWORD"]
    fake(bindir, "redis-cli",
         extra='[ "$REDISCLI_AUTH" = "$EXPECTED" ] && echo PONG || echo "NOAUTH"')
    env = {"REDIS_PASSWORD": password, "EXPECTED": password}
    ok = run(["/bin/sh", "-c", test[1].replace("$$", "$")], tmp_path, env)
    assert ok.returncode == 0, ok.stderr
    assert password not in (tmp_path / "redis-cli.argv").read_text()
    wrong = run(["/bin/sh", "-c", test[1].replace("$$", "$")], tmp_path,
                {**env, "EXPECTED": "other"})
    assert wrong.returncode != 0


def test_postgres_healthcheck_needs_no_password(data_model: dict):
    test = data_model["services"]["postgres-ledger"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL" and "pg_isready" in test[1]
    assert "PASSWORD" not in test[1]
    assert json.dumps(data_model["services"]["postgres-ledger"]["environment"]) \
        .count("scram-sha-256") == 2
