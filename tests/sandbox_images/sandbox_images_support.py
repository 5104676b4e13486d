"""Helpers of the sandbox image tests (imported by conftest.py and the tests)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from tests.support.lowcpu import low_priority

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `sandbox` is a top-level package of the repository
    sys.path.insert(0, str(ROOT))

LABEL_KEY = "org.jafar.sandbox.test"
SESSION = uuid.uuid4().hex[:10]
PATIENCE = 4  # see wait_for
LABEL = f"{LABEL_KEY}={SESSION}"


def docker(
    *args: str,
    check: bool = True,
    timeout: float = 120,
    env: dict[str, str] | None = None,
    input: str | None = None,  # noqa: A002
) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI; secrets go through ``env`` (``-e NAME`` without a value)."""
    proc = subprocess.run(
        ["docker", *low_priority(args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, **(env or {})),
        input=input,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args[:3])} ... exited {proc.returncode}: {proc.stderr[-2000:]}"
        )
    return proc


def wait_for(
    what: str, probe: Callable[[], bool], *, timeout: float = 60, interval: float = 0.5
) -> None:
    """Poll ``probe`` until it is true; bounded in time and in count. The bound is PATIENCE
    times ``timeout``: bin/test runs these tests niced beside the drills on a busy machine, and
    waiting longer for something that does become ready costs nothing."""
    timeout *= PATIENCE
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 1):
        try:
            if probe():
                return
        except subprocess.TimeoutExpired:
            pass  # a probe's own command timed out: not ready yet
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def published_port(container: str, port: str) -> int:
    out = docker("port", container, port).stdout.strip().splitlines()
    for line in out:
        host, _, p = line.rpartition(":")
        if host == "127.0.0.1":
            return int(p)
    raise AssertionError(f"{container} {port} is not published on 127.0.0.1: {out}")
