"""config/hardening/jafar-audit-append, run for real by sh on a copy whose trail is a temp file:
it appends only records that chain to the last line, one line each."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HELPER = ROOT / "config" / "hardening" / "jafar-audit-append"
ZERO = "0" * 64


@pytest.fixture
def helper(tmp_path):
    log = tmp_path / "audit.log"
    script = tmp_path / "append"
    script.write_text(HELPER.read_text().replace("/var/log/jafar/audit.log", str(log)))

    def run(data: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", str(script)], input=data, capture_output=True, text=True,
                              timeout=30)
    return run, log


def record(prev: str, n: int) -> str:
    return f'{{"prev":"{prev}","seq":{n}}}\tc2lnbmF0dXJl'


def test_refuses_without_a_trail(helper):
    run, _ = helper
    r = run(record(ZERO, 1) + "\n")
    assert r.returncode == 4 and "run inv host.prepare" in r.stderr


def test_appends_only_records_that_chain(helper):
    run, log = helper
    log.write_text("")
    assert run(record(ZERO, 1) + "\n").returncode == 0
    first = log.read_text()
    prev = hashlib.sha256(first.encode()).hexdigest()
    stale = run(record(ZERO, 2) + "\n")
    assert stale.returncode == 3 and "does not chain" in stale.stderr
    assert run(record(prev, 2) + "\n").returncode == 0
    assert log.read_text().splitlines() == [record(ZERO, 1), record(prev, 2)]


@pytest.mark.parametrize("data", ["", "\n", "x\r\n"])
def test_refuses_malformed_records(helper, data):
    run, log = helper
    log.write_text("")
    assert run(data).returncode == 2
    assert log.read_text() == ""


def test_refuses_records_over_64_kib(helper):
    run, log = helper
    log.write_text("")
    big = record(ZERO, 1) + "x" * 70000
    assert run(big + "\n").returncode == 2 and log.read_text() == ""


def test_refuses_a_second_line(helper):
    run, log = helper
    log.write_text("")
    r = run(record(ZERO, 1) + "\n" + "injected second line\n")
    assert r.returncode == 2 and log.read_text() == ""
