"""`inv` and `fab` both load the suite's tasks from a checkout, and are the suite's own
programs: a command line they cannot parse is bad input (exit 2), like any other."""

from __future__ import annotations

import pytest

from tests.conftest import command, run_inv

TASKS = ("deploy", "health", "env.sync", "files.sync", "data.up", "replica.init", "core.up",
         "env.check", "host.trust", "sandbox.up", "sandbox.reset", "scale", "ps", "logs",
         "release", "rollback", "releases", "lock.status", "lock.release", "audit.show",
         "audit.verify", "audit.signers", "monitor.status", "monitor.alarms")


@pytest.mark.parametrize("program", ["inv", "fab"])
def test_lists_every_task(program):
    r = run_inv("--list", program=program)
    assert r.returncode == 0, r.stderr
    listed = {line.split()[0] for line in r.stdout.splitlines()[2:] if line.startswith("  ")}
    assert set(TASKS) <= listed


def test_the_installed_commands_are_the_suites():
    for program in ("inv", "fab"):
        assert "fabfile.program" in open(command(program)[0]).read(), program


@pytest.mark.parametrize("program", ["inv", "fab"])
@pytest.mark.parametrize("args, message", [
    (["deploy", "--hots", "prod"], "error: No idea what '--hots' is!"),
    (["nosuch-task"], "error: No idea what 'nosuch-task' is!"),
    (["scale", "--host"], "error: Flag '--host' needed value and was not given one!"),
    (["--no-such-core-flag"], "error: No idea what '--no-such-core-flag' is!"),
    (["--help", "nosuch"], "error: No idea what 'nosuch' is!"),
    (["--list", "nosuch"], "error: Sub-collection 'nosuch' not found!"),
    (["health", "--host", "sandbox", "--timeout", "abc"],
     "error: a flag's value is not a number (invalid literal for int() with base 10: 'abc'); "
     "give one, e.g. --timeout 20"),
])
def test_parse_errors_are_bad_input(program, args, message):
    r = run_inv(*args, program=program)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.strip().splitlines() == [message]


def test_an_unknown_collection_is_bad_input():
    r = run_inv("-c", "nosuch", "--list")
    assert r.returncode == 2 and r.stderr.strip() == "error: Can't find any collection named " \
        "'nosuch'!"
