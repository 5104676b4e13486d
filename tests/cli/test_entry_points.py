"""`inv` and `fab` both load the suite's tasks from a checkout."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

TASKS = ("deploy", "health", "env.sync", "files.sync", "data.up", "replica.init", "core.up",
         "env.check", "host.trust", "sandbox.up", "sandbox.reset")


@pytest.mark.parametrize("program", ["invoke", "fabric"])
def test_lists_every_task(program):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", program, "--list"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    listed = {line.split()[0] for line in r.stdout.splitlines()[2:] if line.startswith("  ")}
    assert set(TASKS) <= listed
