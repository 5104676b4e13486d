"""The mongo sandbox image (the mongod stand-in, NOT MongoDB, with the real mongosh 1.10.6)
run as the data stack runs the official image: three members on one Docker network, a 0400
keyfile, MONGO_INITDB_ROOT_USERNAME/PASSWORD. Needs a Docker Engine (skipped when none answers,
like the other image tests); the image is built (or found cached) with sandbox.build.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from standin_support import issue_pem, make_ca  # noqa: E402

from sandbox import build  # noqa: E402
from tests.support.lowcpu import low_priority  # noqa: E402

LABEL = f"org.jafar.sandbox.test=standin-{uuid.uuid4().hex[:8]}"
KEY = "c3RhbmRpbi1pbWFnZS10ZXN0LWtleS0wMTIzNDU2Nzg5"
ROOT_ENV = {"MONGO_INITDB_ROOT_USERNAME": "root", "MONGO_INITDB_ROOT_PASSWORD": "image-test-pw"}
PORTS = {"mongo-primary": 27017, "mongo-secondary": 27018, "mongo-arbiter": 27019}
TLS_CA, TLS_PEM = "/etc/mongo/ca.pem", "/etc/mongo/member.pem"


def docker(*args: str, check: bool = True, timeout: float = 120,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["docker", *low_priority(args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})},
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} exited {proc.returncode}: "
                             f"{proc.stderr[-2000:]}")
    return proc


def _engine_answers() -> bool:
    try:
        return docker("info", check=False, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    if not _engine_answers():
        pytest.skip("no Docker Engine answers: run `sudo sandbox/setup-engine.sh` first")
    results = build.build_images(only=["mongo"])
    ref = next(r.ref for r in results if r.name == "mongo")
    try:
        yield ref
    finally:
        ids = docker("ps", "-aq", "--filter", f"label={LABEL}", check=False).stdout.split()
        if ids:
            docker("rm", "-f", "-v", *ids, check=False)
        nets = docker("network", "ls", "-q", "--filter", f"label={LABEL}", check=False)
        for net in nets.stdout.split():
            docker("network", "rm", net, check=False)


def _keyfile(tmp: Path, mode: int) -> Path:
    path = tmp / f"key-{mode:o}"
    path.write_text(KEY + "\n")
    os.chown(path, 999, 999)
    os.chmod(path, mode)
    return path


def _wait_listening(name: str, port: int, timeout: float = 240) -> None:
    # generous: bin/test runs this niced beside the drills; a member that is up returns at once
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = docker("logs", name, check=False).stdout
        # the entrypoint's first-start server listens too: done once it has exec'd mongod
        if f'"Waiting for connections", "attr": {{"port": {port}' in logs and "docker-entrypoint" \
                not in docker("exec", name, "cat", "/proc/1/cmdline", check=False).stdout:
            return
        running = docker("inspect", "-f", "{{.State.Running}}", name, check=False).stdout
        if running.strip() != "true":
            break
        time.sleep(0.5)
    raise AssertionError(f"{name} did not listen on {port}: {docker('logs', name).stdout[-3000:]}"
                         f"{docker('logs', name).stderr[-3000:]}")


def _mongosh(name: str, port: int, script: str, auth: bool = True, tls: bool = False) -> object:
    """mongosh inside the container; credentials come from the environment, never argv. With
    tls, mongosh connects with --tls and the CA file mounted at TLS_CA."""
    login = ("db.getSiblingDB('admin').auth(process.env.MONGO_INITDB_ROOT_USERNAME, "
             "process.env.MONGO_INITDB_ROOT_PASSWORD); ") if auth else ""
    tls_args = ["--tls", "--tlsCAFile", TLS_CA] if tls else []
    for _ in range(3):  # mongosh gives up selecting a server after 2 s: again on a busy machine
        try:
            proc = docker("exec", "-e", "MONGO_INITDB_ROOT_USERNAME", "-e",
                          "MONGO_INITDB_ROOT_PASSWORD", name, "mongosh", "--quiet", "--norc",
                          *tls_args, "--port", str(port), "--eval", login + script,
                          env=ROOT_ENV, timeout=90, check=False)
        except subprocess.TimeoutExpired:
            # seen once in CI on a loaded machine: an AssertionError lets _wait_states try
            # again, and the member's own log says what it was doing
            tail = docker("logs", "--tail", "30", name, check=False).stdout
            raise AssertionError(f"mongosh in {name} took over 90 s; its log ends:\n{tail}") \
                from None
        if "MongoServerSelectionError" not in proc.stdout + proc.stderr:  # nothing ran: safe
            break
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert proc.returncode == 0 and lines, f"mongosh in {name}: {proc.stdout} {proc.stderr}"
    return json.loads(lines[-1])


STATES = "print(JSON.stringify(rs.status().members.map(m => m.stateStr)))"


def _wait_states(name: str, port: int, expected: list[str], auth: bool = True,
                 tls: bool = False, timeout: float = 240) -> None:
    """Until the member reports ``expected``: right after rs.initiate a member may still be
    syncing (and, on a busy machine, not have the root user yet); bounded in time."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = _mongosh(name, port, STATES, auth=auth, tls=tls)
        except AssertionError as exc:
            last = str(exc)[-500:]
        if last == expected or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert last == expected, f"{name}: {last}"


def test_standin_image_replica_set_like_the_official_image(image: str, tmp_path: Path) -> None:
    net = f"standin-net-{uuid.uuid4().hex[:8]}"
    docker("network", "create", f"--label={LABEL}", net)
    key = _keyfile(tmp_path, 0o400)
    names = {}
    for service, port in PORTS.items():
        names[service] = f"{service}-{uuid.uuid4().hex[:6]}"
        docker("run", "-d", f"--name={names[service]}", f"--label={LABEL}", f"--network={net}",
               f"--network-alias={service}", "-e", "MONGO_INITDB_ROOT_USERNAME",
               "-e", "MONGO_INITDB_ROOT_PASSWORD", "-v", f"{key}:/etc/mongo/keyfile:ro", image,
               "mongod", "--replSet", "rs0", "--port", str(port), "--bind_ip_all",
               "--keyFile", "/etc/mongo/keyfile", env=ROOT_ENV)
    for service, port in PORTS.items():
        _wait_listening(names[service], port)
    primary = names["mongo-primary"]
    # mongod runs as mongodb (999), not root; the password is not on any command line
    status = docker("exec", primary, "cat", "/proc/1/status").stdout
    assert "\nUid:\t999\t" in status
    cmdline = docker("exec", primary, "cat", "/proc/1/cmdline").stdout
    assert "image-test-pw" not in cmdline and "--auth" in cmdline
    members = [{"_id": i, "host": f"{s}:{p}"} for i, (s, p) in enumerate(PORTS.items())]
    members[2]["arbiterOnly"] = True
    cfg = json.dumps({"_id": "rs0", "members": members})
    assert _mongosh(primary, 27017, f"print(rs.initiate({cfg}).ok)") == 1
    expected = ["PRIMARY", "SECONDARY", "ARBITER"]
    for service, port in PORTS.items():
        arbiter = service == "mongo-arbiter"  # no user data: localhost exception only
        _wait_states(names[service], port, expected, auth=not arbiter)
    # unauthenticated: refused (users exist now)
    proc = docker("exec", primary, "mongosh", "--quiet", "--norc", "--eval", "rs.status()",
                  check=False)
    assert proc.returncode != 0 and "requires authentication" in proc.stdout + proc.stderr
    # restart keeps state; the root user is not created twice
    docker("restart", primary)
    _wait_listening(primary, 27017)
    _wait_states(primary, 27017, expected)
    assert docker("logs", primary).stdout.count("init process complete") == 1


def test_standin_image_refuses_open_keyfile(image: str, tmp_path: Path) -> None:
    key = _keyfile(tmp_path, 0o644)
    proc = docker("run", "--rm", f"--label={LABEL}", "-v", f"{key}:/etc/mongo/keyfile:ro", image,
                  "mongod", "--replSet", "rs0", "--keyFile", "/etc/mongo/keyfile", check=False,
                  timeout=60)
    assert proc.returncode != 0
    assert "permissions on /etc/mongo/keyfile are too open" in proc.stderr


def test_standin_image_tls_replica_set(image: str, tmp_path: Path) -> None:
    """requireTLS as the data stack will run it: the first-start initialisation still creates
    the root user (its temporary mongod runs with --tlsMode allowTLS and the caller's
    certificate); mongosh needs --tls; the members reach each other over TLS by their network
    aliases, which the certificate names (checked: no --tlsAllowInvalidHostnames)."""
    services = {"mongo-tls-a": 27017, "mongo-tls-b": 27018}
    ca = make_ca(tmp_path)
    pem = issue_pem(ca, tmp_path / "member.pem", [*services, "localhost", "127.0.0.1"])
    os.chown(pem, 999, 999)
    os.chmod(pem, 0o400)
    key = _keyfile(tmp_path, 0o400)
    net = f"standin-tls-net-{uuid.uuid4().hex[:8]}"
    docker("network", "create", f"--label={LABEL}", net)
    names = {}
    for service, port in services.items():
        names[service] = f"{service}-{uuid.uuid4().hex[:6]}"
        docker("run", "-d", f"--name={names[service]}", f"--label={LABEL}", f"--network={net}",
               f"--network-alias={service}", "-e", "MONGO_INITDB_ROOT_USERNAME",
               "-e", "MONGO_INITDB_ROOT_PASSWORD", "-v", f"{key}:/etc/mongo/keyfile:ro",
               "-v", f"{pem}:{TLS_PEM}:ro", "-v", f"{ca[2]}:{TLS_CA}:ro", image,
               "mongod", "--replSet", "rs0", "--port", str(port), "--bind_ip_all",
               "--keyFile", "/etc/mongo/keyfile", "--tlsMode", "requireTLS",
               "--tlsCertificateKeyFile", TLS_PEM, "--tlsCAFile", TLS_CA,
               "--tlsAllowConnectionsWithoutCertificates", env=ROOT_ENV)
    for service, port in services.items():
        _wait_listening(names[service], port)
    a, b = names["mongo-tls-a"], names["mongo-tls-b"]
    cfg = json.dumps({"_id": "rs0", "members": [
        {"_id": i, "host": f"{s}:{p}"} for i, (s, p) in enumerate(services.items())]})
    assert _mongosh(a, 27017, f"print(rs.initiate({cfg}).ok)", tls=True) == 1
    # the root user reached b: the snapshot sync went over TLS
    _wait_states(b, 27018, ["PRIMARY", "SECONDARY"], tls=True)
    plain = docker("exec", a, "mongosh", "--quiet", "--norc",
                   "mongodb://127.0.0.1:27017/?serverSelectionTimeoutMS=2000", "--eval", "1",
                   check=False)
    assert plain.returncode != 0 and "MongoServerSelectionError" in plain.stdout + plain.stderr
    logs = docker("logs", a).stdout
    modes = [json.loads(line)["attr"]["tlsMode"] for line in logs.splitlines()
             if '"mongod stand-in starting"' in line]
    assert modes == ["allowTLS", "requireTLS"]  # the temporary mongod, then the real one
    assert "init process complete" in logs and "Ingress TLS handshake complete" in logs
