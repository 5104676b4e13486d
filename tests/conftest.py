"""Shared test helpers: temporary environments files, a connection counter, running `inv`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# a protected environment's settings: it must page someone and have a dead-man's switch
PROTECTED = ("protected: true\nalerting: {webhooks: ['https://oncall.example/am'], "
             "watchdog: 'https://deadman.example/ping'}\n")


def env_yaml(hosts_block: str, extra: str = "", name: str = "test") -> str:
    """An environments.yml with one environment `name`."""
    return textwrap.dedent(f"""\
        environments:
          {name}:
            registry: 127.0.0.1:5000/jafar
            tag: t1
            gateway: {{server_names: [jafar.test]}}
        """) + textwrap.indent(textwrap.dedent(extra), "    ") + "    hosts:\n" + \
        textwrap.indent(textwrap.dedent(hosts_block), "      ")


@pytest.fixture
def environments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write an environments.yml and point the suite at it (JAFAR_ENVIRONMENTS); the local
    audit copy goes to the test's own folder (JAFAR_AUDIT_DIR)."""
    def write(text: str) -> Path:
        path = tmp_path / "environments.yml"
        path.write_text(text)
        monkeypatch.setenv("JAFAR_ENVIRONMENTS", str(path))
        monkeypatch.setenv("JAFAR_AUDIT_DIR", str(tmp_path / "audit"))
        return path
    return write


class Listener:
    """A TCP port on loopback that counts connections: proof that nothing was contacted."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def listener():
    lst = Listener()
    yield lst
    lst.close()


_HOME: list[Path] = []


def clean_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without the operator's Invoke/Fabric settings, with an empty
    temporary HOME (no ~/.invoke.yaml): a default environment cannot leak into a test."""
    if not _HOME:
        import tempfile

        _HOME.append(Path(tempfile.mkdtemp(prefix="jafar-test-home-")))
    kept = {k: v for k, v in os.environ.items()
            if not k.startswith(("INVOKE_", "FABRIC_")) and k != "HOME"}
    return {**kept, "HOME": str(_HOME[0]), **(extra or {})}


def command(program: str = "inv") -> list[str]:
    """The suite's own `inv` or `fab` command, as installed beside this Python."""
    return [str(Path(sys.executable).with_name(program))]


def run_inv(*args: str, env: dict[str, str] | None = None, timeout: int = 120,
            stdin: str | None = None, program: str = "inv",
            cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run `inv ARGS` (or `fab ARGS`) from the project root, as an operator would."""
    return subprocess.run([*command(program), *args], cwd=cwd, env=clean_environment(env),
                          capture_output=True, text=True, timeout=timeout,
                          input=stdin if stdin is not None else "")


def complete_env(canary: str = "canary-b81f0c2e9a7d4d15") -> str:
    """An env file with every key of .env.ec2.example: `canary` (with a number) as every
    credential, values the servers accept elsewhere. No test output may ever show a canary."""
    from fabfile import envfile

    good = {"MONGO_HOSTS": "a:1,b:2", "MONGO_REPLICA_SET": "rs0", "REDIS_PORT": "6379",
            "POSTGRES_PORT": "5432", "REDIS_HOST": "redis", "POSTGRES_HOST": "pg",
            "MONGO_KEYFILE": "Y2FuYXJ5a2V5ZmlsZQ=="}
    lines = []
    for i, key in enumerate(envfile.example_keys()):
        if key in good:
            value = good[key]
        elif envfile.CREDENTIAL_KEY.search(key):
            value = f"{canary}-{i}"
        else:
            value = f"x_{key.lower()}"
        lines.append(f"{key}={value}\n")
    return "".join(lines)


_SHIPPED: dict[str, object] = {}


def shipped(name: str):
    """An environment of the shipped config/environments.yml, without the sandbox's overlay
    (so unit tests do not depend on whether `inv sandbox.up` ran on this machine)."""
    import tempfile

    from fabfile.config import load_environment

    if "path" not in _SHIPPED:
        text = (ROOT / "config" / "environments.yml").read_text()
        kept = [line for line in text.splitlines() if not line.strip().startswith("overlay:")]
        tmp = Path(tempfile.mkdtemp()) / "environments.yml"
        tmp.write_text("\n".join(kept) + "\n")
        _SHIPPED["path"] = tmp
    return load_environment(name, _SHIPPED["path"])  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def moto_endpoint():
    """One moto server (the AWS stand-in) for the whole test session."""
    from tests.support import moto_server

    with moto_server.running() as endpoint:
        yield endpoint


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch):
    """moto emptied for this test, boto3's credentials in this process's environment."""
    from fabfile import envsource
    from fabfile.aws import client
    from tests.support import moto_server

    moto_server.reset(moto_endpoint)
    client._sessions.clear()  # credentials are read again
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in moto_server.CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    envsource.forget()
    yield moto_endpoint
    envsource.forget()
    client._sessions.clear()
