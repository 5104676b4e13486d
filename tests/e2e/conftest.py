"""One deployed sandbox for every end-to-end test of a CI run (a full deploy costs minutes).

The tests run in file order (test_01_..., test_02_..., ...): the first one to ask for
`deployed` resets the sandbox on this machine (its volumes and generated secrets are discarded)
and deploys to it from scratch; the others use that deploy and leave the sandbox as they found
it (counts, routes, locks).

While developing, JAFAR_E2E_REUSE=1 skips the reset and deploys onto the sandbox that is
already there (a no-change deploy when it is current); CI never sets it.
"""

from __future__ import annotations

import os
import subprocess
import threading

import pytest

from tests.conftest import run_inv
from tests.e2e.sandbox_helpers import HOST


def sample_processes(stop: threading.Event, seen: list[str]) -> None:
    """`ps` of the test host every 0.2 s (bounded by the deploy's own duration): a secret must
    never be on a command line, where every user of the host can read it."""
    while not stop.wait(0.2):
        proc = subprocess.run(["docker", "exec", HOST, "ps", "-eo", "args"],
                              capture_output=True, text=True, timeout=30, check=False)
        if proc.returncode == 0:
            seen.append(proc.stdout)


@pytest.fixture(scope="session")
def deployed():
    reuse = os.environ.get("JAFAR_E2E_REUSE") == "1"
    reset = run_inv("sandbox.up" if reuse else "sandbox.reset", timeout=1800)
    assert reset.returncode == 0, reset.stdout[-3000:] + reset.stderr[-3000:]
    stop = threading.Event()
    seen: list[str] = []
    sampler = threading.Thread(target=sample_processes, args=(stop, seen), daemon=True)
    sampler.start()
    try:
        first = run_inv("deploy", "--host", "sandbox", timeout=1500)
    finally:
        stop.set()
        sampler.join(timeout=30)
    assert first.returncode == 0, first.stdout[-5000:] + first.stderr[-3000:]
    first.ps_snapshots = seen  # type: ignore[attr-defined]  # every process list seen
    return first
