"""The firewall rules step (fabfile/commands/host.py: ufw_rules), run by the real /bin/sh with
a stand-in `ufw` on PATH that keeps its rules in a file and can be told to fail on one rule:
SSH stays allowed at every moment, also when a rule fails half way."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fabfile.commands.host import script, ufw_rules

SSH = "allow from 10.0.0.0/24 to any port 22 proto tcp"
FAKE_UFW = r"""#!/bin/sh
# stand-in for ufw (test only): rules in $UFW_RULES, one per line; a snapshot of them after
# every change in $UFW_HISTORY; fails on the rule in $UFW_FAIL
rules="$UFW_RULES"
case "$1" in
  show) echo "Added user rules (see 'ufw status' for running firewall):"
        sed 's/^/ufw /' "$rules"; exit 0 ;;
  --force)
    shift
    case "$1" in
      delete) shift; grep -vxF -- "$*" "$rules" > "$rules.new" || true; mv "$rules.new" "$rules" ;;
      disable) echo disabled > "$UFW_STATE" ;;
    esac ;;
  *) [ "$*" = "${UFW_FAIL:-}" ] && { echo "ERROR: bad rule" >&2; exit 1; }
     grep -qxF -- "$*" "$rules" || echo "$*" >> "$rules" ;;
esac
{ echo ---; cat "$rules"; } >> "$UFW_HISTORY"
"""


@pytest.fixture
def ufw(tmp_path: Path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "ufw").write_text(FAKE_UFW)
    (bindir / "ufw").chmod(0o755)
    rules = tmp_path / "rules"

    def run(have: list[str], wanted: list[str], fail: str = "") -> subprocess.CompletedProcess:
        rules.write_text("".join(f"{r}\n" for r in have))
        env = {"PATH": f"{bindir}:/usr/bin:/bin", "UFW_RULES": str(rules),
               "UFW_HISTORY": str(tmp_path / "history"), "UFW_STATE": str(tmp_path / "state"),
               "UFW_FAIL": fail}
        (tmp_path / "history").write_text("")
        return subprocess.run(["/bin/sh", "-c", script(ufw_rules(wanted))], env=env,
                              capture_output=True, text=True, timeout=30)

    def snapshots() -> list[list[str]]:
        text = (tmp_path / "history").read_text()
        return [[line for line in part.splitlines() if line]
                for part in text.split("---\n")[1:]]

    run.rules = lambda: rules.read_text().splitlines()
    run.snapshots = snapshots
    run.disabled = lambda: (tmp_path / "state").exists()
    return run


def test_rules_become_exactly_the_wanted_ones_and_ssh_is_never_missing(ufw):
    old = ["allow 22/tcp", "allow 8080/tcp"]
    r = ufw(old, [SSH, "allow 80,443/tcp"])
    assert r.returncode == 0, r.stderr
    assert "CHANGED ufw rules" in r.stdout
    assert sorted(ufw.rules()) == sorted([SSH, "allow 80,443/tcp"])
    # at every moment some SSH rule allowed the operator in
    assert all(any("22" in rule for rule in snap) for snap in ufw.snapshots())


def test_the_same_rules_in_another_order_are_nothing_to_do(ufw):
    r = ufw(["allow 80,443/tcp", SSH], [SSH, "allow 80,443/tcp"])
    assert r.returncode == 0 and "CHANGED" not in r.stdout
    assert ufw.snapshots() == []


def test_a_failing_rule_leaves_ssh_allowed(ufw):
    bad = "allow from 10.0.0.0/16 to any port 5432 proto tcp"
    r = ufw(["allow 8080/tcp"], [SSH, bad, "allow 80,443/tcp"], fail=bad)
    assert r.returncode != 0
    assert SSH in ufw.rules() and not ufw.disabled()


def test_when_even_ssh_cannot_be_allowed_ufw_is_disabled(ufw):
    r = ufw(["allow 8080/tcp"], [SSH, "allow 80,443/tcp"], fail=SSH)
    assert r.returncode != 0
    assert ufw.disabled()
