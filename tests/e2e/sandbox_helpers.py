"""Helpers for the end-to-end tests on the sandbox."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT

HOST = "jafar-sandbox-1"


def on_host(*argv: str, timeout: int = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command on the test host as root, through the local engine (not over SSH)."""
    return subprocess.run(["docker", "exec", HOST, *argv], capture_output=True, text=True,
                          timeout=timeout, check=check)


def inner(*argv: str, timeout: int = 60) -> str:
    """Run a docker command on the test host's own daemon."""
    return on_host("docker", *argv, timeout=timeout).stdout


def host_ip() -> str:
    return subprocess.run(["docker", "inspect", "--format",
                           "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", HOST],
                          capture_output=True, text=True, timeout=30, check=True).stdout.strip()


def wait_for_process(*words: str, timeout: float = 60) -> None:
    """Until a process whose command line holds every word runs (on this machine or inside the
    sandbox's containers, whose processes it sees): read from /proc, so the wait costs no
    `docker exec` and is not slowed by a busy engine."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                args = cmdline.read_bytes().split(b"\0")
            except OSError:
                continue
            if all(w.encode() in args for w in words):
                return
        time.sleep(0.05)
    raise AssertionError(f"no process with {' '.join(words)} within {timeout:.0f}s")


def sandbox_config(folder: Path, **settings: Any) -> dict[str, str]:
    """config/environments.yml with the sandbox environment changed (a block such as `host`
    merged into the shipped one, other settings replaced), written in FOLDER; returns the
    environment variables that make `inv` read it."""
    doc = yaml.safe_load((ROOT / "config" / "environments.yml").read_text())
    sandbox = doc["environments"]["sandbox"]
    for key, value in settings.items():
        shipped = sandbox.get(key)
        sandbox[key] = {**shipped, **value} if isinstance(shipped, dict) else value
    path = folder / "environments.yml"
    path.write_text(yaml.safe_dump(doc))
    return {"JAFAR_ENVIRONMENTS": str(path)}
