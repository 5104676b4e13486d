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


def env_yaml(hosts_block: str, extra: str = "", name: str = "test") -> str:
    """An environments.yml with one environment `name`."""
    return textwrap.dedent(f"""\
        environments:
          {name}:
            registry: 127.0.0.1:5000/jafar
            tag: t1
        """) + textwrap.indent(textwrap.dedent(extra), "    ") + "    hosts:\n" + \
        textwrap.indent(textwrap.dedent(hosts_block), "      ")


@pytest.fixture
def environments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write an environments.yml and point the suite at it (JAFAR_ENVIRONMENTS)."""
    def write(text: str) -> Path:
        path = tmp_path / "environments.yml"
        path.write_text(text)
        monkeypatch.setenv("JAFAR_ENVIRONMENTS", str(path))
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


def run_inv(*args: str, env: dict[str, str] | None = None, timeout: int = 120,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `inv ARGS` from the project root, as an operator would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout,
                          input=stdin if stdin is not None else "")


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
