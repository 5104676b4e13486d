"""Bad input: one clear line on stderr, exit code 2, and no connection to any host.

Each case points its environment at a loopback listener that counts connections, runs the
real `inv` command, and checks that the listener was never contacted.
"""

from __future__ import annotations

import pytest

from tests.cli.conftest import assert_bad_input, hosts
from tests.conftest import PROTECTED, env_yaml, run_inv


def test_unknown_environment(setup, listener):
    r = run_inv("deploy", "--host", "prdo", env=setup())
    assert_bad_input(r, listener, "unknown environment 'prdo': choose one of test")


def test_missing_host_flag(setup, listener):
    r = run_inv("data.up", env=setup())
    assert_bad_input(r, listener, "--host is required")


def test_malformed_yaml(setup, listener):
    r = run_inv("deploy", "--host", "test", env=setup("environments:\n  test: {a: [1\n"))
    assert_bad_input(r, listener, "malformed YAML at line", "fix the syntax")


def test_bad_port(setup, listener):
    r = run_inv("health", "--host", "test",
                env=setup(env_yaml(hosts(listener.port).replace(f"port: {listener.port}",
                                                                "port: 99999"))))
    assert_bad_input(r, listener, "hosts[0].port: must be an integer from 1 to 65535, got 99999")


def test_missing_key_file(setup, listener):
    r = run_inv("health", "--host", "test", env=setup(key="/nonexistent/id_ed25519"))
    assert_bad_input(r, listener, "SSH key /nonexistent/id_ed25519 for admin@127.0.0.1 does "
                     "not exist")


@pytest.mark.parametrize("flag, value, message", [
    ("--from", "data.upp", "--from: unknown step 'data.upp'; steps are: host.prepare, "),
    ("--only", "env.sync,replica", "--only: unknown step 'replica'"),
    ("--skip", "helth", "--skip: unknown step 'helth'"),
])
def test_unknown_step_names(setup, listener, flag, value, message):
    r = run_inv("deploy", "--host", "test", flag, value, env=setup())
    assert_bad_input(r, listener, message)


def test_env_file_with_missing_keys(setup, listener, tmp_path):
    extra = setup()
    envf = tmp_path / "env"
    envf.write_text("REDIS_PASSWORD=canary-0123456789abcdef\n")
    envf.chmod(0o600)
    r = run_inv("env.sync", "--host", "test", env=extra)
    assert_bad_input(r, listener, "missing keys: ", "MONGO_ROOT_PASSWORD")
    assert "canary-0123456789abcdef" not in r.stdout + r.stderr


def test_env_check_refuses_a_group_readable_file(tmp_path, listener):
    envf = tmp_path / "env"
    envf.write_text("A=1\n")
    envf.chmod(0o640)
    r = run_inv("env.check", "--file", str(envf))
    assert_bad_input(r, listener, "mode is 0640, readable by group or others: chmod 600")


def test_protected_environment_needs_yes_without_a_terminal(setup, listener):
    r = run_inv("data.up", "--host", "test", env=setup(extra=PROTECTED))
    assert_bad_input(r, listener, "test is protected", "pass --yes")


def test_dry_run_contacts_nothing_and_prints_every_step(setup, listener):
    r = run_inv("deploy", "--host", "test", "--dry-run", env=setup())
    assert r.returncode == 0, r.stderr
    for step in ("env.sync", "files.sync", "data.up", "replica.init", "core.up", "health"):
        assert f"[h1] {step}: " in r.stdout
    assert listener.accepted == 0


def test_prod_dry_run_needs_no_network_and_no_keys():
    r = run_inv("deploy", "--host", "prod", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "[prod-core-2] core.up: " in r.stdout and "DATA_BIND_ADDRESS=10.0.2.10" in r.stdout

