"""Helpers for the mongod stand-in tests: stand-in processes on loopback, the real mongosh.

The stand-in is NOT MongoDB (no MongoDB server can be installed on these machines); these tests
drive it with the real MongoDB Shell (mongosh, from npm) and pymongo.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
IMAGE_DIR = ROOT / "sandbox" / "images" / "mongo"
MONGOD = IMAGE_DIR / "mongod"
VENDORED_MONGOSH = IMAGE_DIR / "vendor" / "node_modules" / "mongosh" / "bin" / "mongosh.js"
START_TIMEOUT = 10.0
MONGOSH_TIMEOUT = 60


def free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Standin:
    """One stand-in mongod process on 127.0.0.1."""

    def __init__(self, port: int, dbpath: Path, args: list[str], log_path: Path) -> None:
        self.port = port
        self.dbpath = dbpath
        self.args = args
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Standin:
        self.dbpath.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [sys.executable, str(MONGOD), "--port", str(self.port), "--bind_ip", "127.0.0.1",
             "--dbpath", str(self.dbpath), *self.args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"stand-in on {self.port} exited with {self.proc.returncode}: "
                                     f"{self.log_path.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError(f"stand-in on {self.port} did not listen within {START_TIMEOUT}s")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None


def run_mongod(args: list[str], timeout: float = 10) -> subprocess.CompletedProcess[str]:
    """Run the stand-in expecting it to refuse to start."""
    return subprocess.run([sys.executable, str(MONGOD), *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def find_mongosh() -> str:
    found = os.environ.get("MONGOSH") or shutil.which("mongosh")
    if not found:
        pytest.fail("mongosh (the real MongoDB Shell) is not installed: these stand-in tests need "
                    "it on PATH (or MONGOSH=/path). Install it with: npm install -g mongosh@2.12.0",
                    pytrace=False)
    return found


def run_mongosh(shell: list[str], port: int, script: str, env: dict[str, str] | None = None,
                check: bool = True) -> object:
    """Run `script` in mongosh against 127.0.0.1:port; the script prints one EJSON line last.

    Credentials are passed in the environment (never on the command line); a script logs in
    with db.auth(process.env.U, process.env.P) when it needs to.
    """
    home = os.environ.get("STANDIN_MONGOSH_HOME", "/tmp/standin-mongosh-home")
    os.makedirs(home, exist_ok=True)
    full_env = {**os.environ, "HOME": home, **(env or {})}
    proc = subprocess.run(
        [*shell, "--quiet", "--norc", f"mongodb://127.0.0.1:{port}/?directConnection=true",
         "--eval", script],
        capture_output=True, text=True, timeout=MONGOSH_TIMEOUT, env=full_env,
        stdin=subprocess.DEVNULL)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if check and (proc.returncode != 0 or not lines):
        raise AssertionError(f"mongosh failed ({proc.returncode}):\nstdout: {proc.stdout}\n"
                             f"stderr: {proc.stderr}")
    if not lines:
        return {"_rc": proc.returncode, "_stderr": proc.stderr}
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"_rc": proc.returncode, "_stdout": proc.stdout, "_stderr": proc.stderr}
