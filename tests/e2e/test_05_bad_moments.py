"""Bad moments on the shared sandbox: a host that freezes (docker pause) before or during a
command, and a registry that is down when an image is needed. Each must fail in seconds with a
line that says what happened; each is undone (unpaused, registry back, lock cleared).
"""

from __future__ import annotations

import subprocess
import time

from tests.e2e.sandbox_helpers import HOST, inner, on_host
from tests.e2e.test_03_day2 import LOCK, inv, start, wait_for_lock

REGISTRY = "jafar-sandbox-registry"


def docker(*args: str) -> None:
    subprocess.run(["docker", *args], check=True, capture_output=True, timeout=120)


def test_a_frozen_host_before_the_connection_fails_in_seconds(deployed):
    docker("pause", HOST)
    try:
        began = time.monotonic()
        r = inv("health", timeout=120)
        took = time.monotonic() - began
    finally:
        docker("unpause", HOST)
    assert r.returncode == 1 and took < 25, (took, r.stderr)
    assert "its SSH server did not answer within 10s (timed out after" in r.stderr


def test_a_host_freezing_during_a_stream_is_noticed_by_keepalives(deployed):
    run = start("logs", "gateway", "--follow", "--tail", "1")
    time.sleep(4)
    docker("pause", HOST)
    began = time.monotonic()
    try:
        out, err = run.communicate(timeout=120)
        took = time.monotonic() - began
    finally:
        docker("unpause", HOST)
    assert run.returncode == 1, err
    assert "the host stopped answering (no reply for" in err
    assert took < 45, took


def test_a_deploy_whose_host_freezes_fails_and_says_so(deployed):
    run = start("deploy", "--only", "data.up,core.up")
    wait_for_lock()
    docker("pause", HOST)
    began = time.monotonic()
    try:
        out, err = run.communicate(timeout=180)
        took = time.monotonic() - began
    finally:
        docker("unpause", HOST)
    assert run.returncode == 1, out + err
    assert "the host stopped answering" in out + err, out + err
    assert took < 60, took
    # the frozen host kept the lock; once it is back, the lock is named and cleared
    cleared = inv("lock.release", "--yes")
    assert cleared.returncode == 0, cleared.stdout + cleared.stderr
    assert on_host("test", "!", "-d", LOCK, check=False).returncode == 0
    assert inv("health").returncode == 0


def test_the_closing_line_names_the_cause(deployed):
    prometheus = inner("ps", "--quiet", "--filter", "label=com.docker.compose.service=prometheus")
    image = inner("inspect", "--format", "{{.Config.Image}}", prometheus.strip()).strip()
    docker("stop", REGISTRY)
    try:
        inner("rm", "--force", prometheus.strip())
        inner("rmi", image)
        r = inv("core.up", timeout=600)
    finally:
        docker("start", REGISTRY)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: core.up failed on jafar-sandbox-1: ")
    assert "registry" in last.split("(exit")[0].lower(), last  # the cause, not the command
    assert len(last) < 500
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the registry answers again
        if subprocess.run(["curl", "-fs", "http://127.0.0.1:5000/v2/"],
                          capture_output=True).returncode == 0:
            break
        time.sleep(1)
    fixed = inv("core.up", timeout=600)
    assert fixed.returncode == 0, fixed.stdout[-2000:] + fixed.stderr
    assert "jafar-core-prometheus-1" in fixed.stdout
