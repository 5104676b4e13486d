"""shellcheck on every shell script a host runs: scripts/, config/postgres/initdb/ and the
hardening helpers in config/hardening/."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from static_helpers import ROOT, require_tool

DIRECTORIES = [ROOT / "scripts", ROOT / "config" / "postgres" / "initdb"]
# POSIX sh helpers host.harden installs with their mode (shellcheck only: they are not bash)
HOST_HELPERS = [ROOT / "config" / "hardening"]


def shell_scripts(directories: list[Path] = DIRECTORIES) -> list[Path]:
    found = []
    for directory in directories:
        for path in sorted(directory.iterdir()):
            if not path.is_file():
                continue
            first = path.read_text().split("\n", 1)[0]
            if path.suffix == ".sh" or (first.startswith("#!") and "sh" in first):
                found.append(path)
    return found


def test_there_are_scripts_to_check():
    names = {p.name for p in shell_scripts()}
    assert {"init-replica.sh", "01-ledger-role.sh"} <= names
    helpers = {p.name for p in shell_scripts(HOST_HELPERS)}
    assert {"jafar-aide-check", "jafar-node-exporter", "jafar-audit-append"} <= helpers


@pytest.mark.parametrize("script", shell_scripts(DIRECTORIES + HOST_HELPERS),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_shellcheck_clean(script: Path):
    require_tool("shellcheck")
    proc = subprocess.run(["shellcheck", "--severity=style", "--external-sources", str(script)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("script", shell_scripts(), ids=lambda p: str(p.relative_to(ROOT)))
def test_scripts_are_strict_and_executable(script: Path):
    text = script.read_text()
    if script.name.endswith("-lib.sh"):  # sourced by scripts that are strict: not run itself
        assert "# shellcheck shell=bash\n" in text and not text.startswith("#!")
        assert not os.access(script, os.X_OK), f"chmod -x {script.relative_to(ROOT)}"
        return
    if text.startswith("#!/bin/sh\n"):  # POSIX sh, for containers (no pipefail there)
        assert "\nset -eu\n" in text
    else:
        assert text.startswith("#!/usr/bin/env bash\n") or text.startswith("#!/bin/bash\n")
        assert "set -euo pipefail" in text
    assert os.access(script, os.X_OK), f"chmod +x {script.relative_to(ROOT)}"


def test_shellcheck_can_fail(tmp_path: Path):
    require_tool("shellcheck")
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/usr/bin/env bash\nrm -rf $1/*\n")
    assert subprocess.run(["shellcheck", str(bad)], capture_output=True,
                          timeout=120).returncode != 0


# A reader that stops early (grep -q at its first match, head after its lines) makes the writer
# die of SIGPIPE, and under pipefail the pipeline fails with 141 now and then: the backup that
# stopped one time in four and the CI run whose image build failed. Read the output whole.
EARLY_EXIT = re.compile(r"\|\s*(grep\s+(-\w*q\w*|--quiet)\b|head\b)")
PIPEFAIL_SCRIPTS = sorted(
    p for p in [*ROOT.glob("**/*.sh"), *(ROOT / "bin").iterdir(), ROOT / ".ci" / "run"]
    if ".venv" not in p.parts and "node_modules" not in p.parts and "vendor" not in p.parts
    and "set -euo pipefail" in p.read_text()
)


def early_exit_pipes(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()
            if not line.lstrip().startswith("#") and EARLY_EXIT.search(line)]


def test_early_exit_pipes_are_found():
    assert early_exit_pipes('x="$(cmd | head -n 1)"\nif cmd | grep -q y; then\n# | head\n') == [
        'x="$(cmd | head -n 1)"', "if cmd | grep -q y; then"]
    assert early_exit_pipes("cmd | grep -x y\nsays=\"$(cmd)\"\n") == []


@pytest.mark.parametrize("script", PIPEFAIL_SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_early_exit_reader_under_pipefail(script: Path):
    assert early_exit_pipes(script.read_text()) == []
