"""Bad input, round two: what a hostile or careless operator found. Each case: exit 2, one
line, within a bounded time, nothing contacted, nothing of a secret or a file printed."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.cli.conftest import assert_bad_input, hosts
from tests.conftest import PROTECTED, ROOT, complete_env, env_yaml, run_inv

CANARY = "canary-b81f0c2e9a7d4d15"


def timed(*args: str, env: dict[str, str] | None = None, limit: float = 10.0):
    start = time.monotonic()
    r = run_inv(*args, env=env, timeout=60)
    assert time.monotonic() - start < limit, f"took {time.monotonic() - start:.1f}s"
    return r


def no_secret(r) -> None:
    assert CANARY not in r.stdout + r.stderr and "Traceback" not in r.stderr


# --- 1-3: the env file is read as Compose reads it, never printed back ----------------------

@pytest.mark.parametrize("extra, message", [
    ("ghp_canaryPASTEDtoken0123456789\n", "not a KEY=VALUE line; fix or remove it"),
    ("9KEY=canary\n", "not a KEY=VALUE line (a key is letters, digits and '_'"),
    ("REDIS_PASSWORD=canary-b81f0c2e9a7d4d15-dup\n", "REDIS_PASSWORD is given twice"),
    ("AUTH_X=ab$POSTGRES_PASSWORD-canary\n", "AUTH_X: '$' outside single quotes"),
    ('AUTH_Y="ab${HOME}canary"\n', "AUTH_Y: '$' outside single quotes"),
    ("AUTH_Z=ab$$cd-canary\n", "AUTH_Z: '$' outside single quotes"),
])
def test_env_file_lines_are_named_never_shown(setup, listener, tmp_path, extra, message):
    env = setup()
    (tmp_path / "env").write_text(complete_env() + extra)
    for args in (["env.check", "--file", str(tmp_path / "env")], ["health", "--host", "test"],
                 ["deploy", "--host", "test", "--dry-run"]):
        r = timed(*args, env=env)
        assert_bad_input(r, listener, message)
        no_secret(r)
        assert "PASTED" not in r.stderr and "ab$" not in r.stderr


def test_env_check_of_a_system_file_prints_none_of_it(listener):
    r = timed("env.check", "--file", "/etc/passwd")
    assert_bad_input(r, listener, "/etc/passwd: line 1: not a KEY=VALUE line")
    assert "root:" not in r.stderr


@pytest.mark.parametrize("key, value, allowed", [
    ("REDIS_PASSWORD", "canary with spaces 0123456789", "A-Z a-z 0-9 . _ ~ + / = -"),
    ("REDIS_PASSWORD", "canary;reboot0123456789", "A-Z a-z 0-9 . _ ~ + / = -"),
    ("MONGO_KEYFILE", "canary-key-with-dashes-0123456789", "one line of base64 characters"),
])
def test_env_values_a_server_would_refuse(setup, listener, tmp_path, key, value, allowed):
    env = setup()
    text = "".join(f"{key}={value}\n" if line.startswith(f"{key}=") else line + "\n"
                   for line in complete_env().splitlines())
    (tmp_path / "env").write_text(text)
    r = timed("env.sync", "--host", "test", env=env)
    assert_bad_input(r, listener, f"characters the server cannot take: {key} ({allowed}")
    assert value not in r.stderr


# --- 4: full matches ---------------------------------------------------------------------

@pytest.mark.parametrize("extra, key", [
    ('tag: "v1\\n"\n', "environments.test.tag: invalid value 'v1\\n'"),
    ('deploy_path: "/opt/jafar\\n"\n', "deploy_path: must be a dedicated folder"),
    ('project: "jafar\\n"\n', "environments.test.project: invalid value 'jafar\\n'"),
    ('host: {admin_user: "ubuntu\\n"}\n', "host.admin_user: invalid value 'ubuntu\\n'"),
])
def test_a_trailing_newline_is_not_a_valid_value(setup, listener, extra, key):
    text = env_yaml(hosts(listener.port), extra).replace("    tag: t1\n", "") \
        if "tag:" in extra else None
    r = timed("health", "--host", "test", env=setup(text=text, extra=extra) if text else
              setup(extra=extra))
    assert_bad_input(r, listener, key)


def test_a_host_address_with_a_newline(setup, listener):
    text = env_yaml(hosts(listener.port).replace("address: 127.0.0.1",
                                                 'address: "core1.example\\n"'))
    r = timed("health", "--host", "test", env=setup(text=text))
    assert_bad_input(r, listener, "is neither an IP address nor a host name")


# --- 5: hostile YAML ---------------------------------------------------------------------

def hostile(kind: str, path: Path) -> None:
    if kind == "random":
        path.write_bytes(random.Random(7).randbytes(50 * 1024 * 1024))
    elif kind == "brackets":
        path.write_text("[" * 100000)
    elif kind == "scalar":
        path.write_text("environments: '" + "x" * (50 * 1024 * 1024) + "'\n")
    elif kind == "bomb":
        lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
        for i in range(1, 9):
            prev, cur = chr(96 + i), chr(97 + i)
            lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
        path.write_text("\n".join(lines) + "\nenvironments: {test: {hosts: *i}}\n")
    elif kind == "latin1":
        path.write_bytes("environments:\n  t\xe9st: {}\n".encode("latin-1"))


@pytest.mark.parametrize("kind, message", [
    ("random", "more than 1048576: not an environments file"),
    ("brackets", "nested deeper than 32 levels"),
    ("scalar", "more than 1048576: not an environments file"),
    ("bomb", "line 1: anchors and aliases (& and *) are not allowed"),
    ("latin1", "is not UTF-8 text"),
])
def test_hostile_environments_files_fail_fast(environments, listener, tmp_path, kind, message):
    path = environments("")
    hostile(kind, path)
    r = timed("health", "--host", "test", env={"JAFAR_ENVIRONMENTS": str(path)}, limit=10)
    assert_bad_input(r, listener, message)


def test_a_non_utf8_env_file_is_refused_even_in_a_dry_run(setup, listener, tmp_path):
    env = setup()
    (tmp_path / "env").write_bytes(complete_env().encode() + b"X=\xff\xfe\n")
    r = timed("deploy", "--host", "test", "--dry-run", env=env)
    assert_bad_input(r, listener, "is not UTF-8 text; save the file as UTF-8")


def test_a_long_bad_value_is_cut_in_the_message(setup, listener):
    r = timed("health", "--host", "test", env=setup(extra=f"topology: {'x' * 5000}\n"))
    assert_bad_input(r, listener, "topology: must be one of single, split")
    assert len(r.stderr) < 400


# --- 6: unknown top-level keys -----------------------------------------------------------

def test_a_misspelt_top_level_key_is_refused(setup, listener):
    text = "default:\n  deploy_path: /opt/other\n" + env_yaml(hosts(listener.port))
    r = timed("health", "--host", "test", env=setup(text=text))
    assert_bad_input(r, listener, "'default': unknown top-level key; allowed keys are: adhoc, "
                                  "defaults, environments")


# --- 7: tracked secret files, by their configured names ---------------------------------

def test_a_tracked_env_file_of_any_name_is_refused(setup, listener, tmp_path):
    """The env file lives in the checkout (git-ignored folder) and a temporary git index says
    it is tracked: the suite asks git about the configured file itself."""
    inside = ROOT / ".pytest_cache" / f"jafar-cli-{os.getpid()}" / "staging.env"
    inside.parent.mkdir(parents=True, exist_ok=True)
    inside.write_text(complete_env())
    inside.chmod(0o600)
    index = tmp_path / "index"
    try:
        rel = inside.relative_to(ROOT).as_posix()
        blob = subprocess.run(["git", "-C", str(ROOT), "hash-object", "-w", "--stdin"],
                              input="x", capture_output=True, text=True, check=True).stdout
        subprocess.run(["git", "-C", str(ROOT), "update-index", "--add", "--cacheinfo",
                        f"100644,{blob.strip()},{rel}"], env={**os.environ,
                        "GIT_INDEX_FILE": str(index)}, check=True, capture_output=True)
        env = setup(extra=f"env_file: {inside}\n")
        r = timed("data.up", "--host", "test", env={**env, "GIT_INDEX_FILE": str(index)})
        assert_bad_input(r, listener, f"refusing to deploy: git tracks secret file(s) {rel}")
    finally:
        inside.unlink()


# --- 9-10: ad-hoc targets and look-alike names -------------------------------------------

@pytest.mark.parametrize("target, message", [
    ("deploy@host.example:99999", "the port '99999' is not a number from 1 to 65535; an "
                                  "ad-hoc target is user@address[:port]"),
    ("a@b:\u00b2", "the port '\\xb2' is not a number from 1 to 65535"),
    ("deploy@bad_host!:22", "'bad_host!' is neither an IP address nor a host name"),
    ("Root User@10.0.0.1", "the user 'Root User' is not a Unix user name"),
    ("@10.0.0.1", "the user '' is not a Unix user name"),
    ("deploy@10.0.0.1:22:33", "an ad-hoc target is user@address[:port]"),
])
def test_ad_hoc_targets_are_checked_first(setup, listener, target, message):
    r = timed("health", "--host", target, env=setup())
    assert_bad_input(r, listener, message)


def test_ad_hoc_targets_are_read_only_without_an_adhoc_block(setup, listener, tmp_path):
    text = (f"defaults: {{registry: r.example/jafar, tag: t1, env_file: {tmp_path / 'env'}}}\n"
            + env_yaml(hosts(listener.port)))
    r = timed("data.up", "--host", f"deploy@127.0.0.1:{listener.port}", env=setup(text=text))
    assert_bad_input(r, listener, "an ad-hoc target is read-only; to change one, add an "
                                  "`adhoc:` block")


def test_an_address_of_a_protected_environment_is_not_ad_hoc(setup, listener):
    r = timed("data.up", "--host", "deploy@127.0.0.1",
              env=setup(extra=PROTECTED))
    assert_bad_input(r, listener, "127.0.0.1 is h1 of the protected environment test; use "
                                  "--host test")


def test_an_adhoc_block_may_not_reuse_a_named_environments_secrets(setup, listener, tmp_path):
    text = (f"adhoc:\n  env_file: {tmp_path / 'env'}\n" +
            env_yaml(hosts(listener.port), f"env_file: {tmp_path / 'env'}\n"))
    r = timed("data.up", "--host", "deploy@192.0.2.7", env=setup(text=text))
    assert_bad_input(r, listener, "adhoc.env_file is the env file of environment test")


def test_look_alike_names_are_shown_escaped(setup, listener):
    r = timed("health", "--host", "pr\u043ed", env=setup())
    assert_bad_input(r, listener, "unknown environment 'pr\\u043ed'")


# --- 11: small ones ----------------------------------------------------------------------

@pytest.mark.parametrize("path, message", [
    ("/tmp", "env file /tmp is a directory; give the path of a file"),
    ("/dev/zero", "env file /dev/zero is not a regular file"),
    ("", "--file is empty; give the path of an env file"),
])
def test_env_check_file_that_is_not_an_env_file(listener, path, message):
    r = timed("env.check", "--file", path)
    assert_bad_input(r, listener, message)


class Silent:
    """A TCP port that accepts and then says nothing (a frozen host's sshd)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return


def test_a_host_that_never_answers_times_out_and_says_so(environments, tmp_path, operator_key):
    silent = Silent()
    key, operators = operator_key
    (tmp_path / "env").write_text(complete_env())
    (tmp_path / "env").chmod(0o600)
    (tmp_path / "known_hosts").write_text("")
    path = environments(env_yaml(hosts(silent.port, str(key)),
                                 f"known_hosts: {tmp_path / 'known_hosts'}\n"
                                 f"env_file: {tmp_path / 'env'}\nconnect_timeout: 2\n"
                                 f"host: {{operator_keys: [{operators}]}}\n"))
    start = time.monotonic()
    r = run_inv("health", "--host", "test", env={"JAFAR_ENVIRONMENTS": str(path)}, timeout=60)
    assert time.monotonic() - start < 15
    assert r.returncode == 1
    assert "accepted the connection but its SSH server did not answer within 2s (timed out " \
           "after" in r.stderr
    assert "No existing session" not in r.stderr


def test_host_hardening_settings_are_refused_before_any_connection(setup, listener, tmp_path):
    """gateway_bind and host.log_forward: one line, exit 2, no host contacted; a key given as
    the collector's CA is named, never shown."""
    env = setup(extra="gateway_bind: lb.example\n")
    r = run_inv("host.harden", "--host", "test", "--yes", env=env)
    assert_bad_input(r, listener, "gateway_bind: 'lb.example' is not an IPv4 address")
    key = tmp_path / "collector.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\ncanary-b81f0c2e9a7d4d15\n")
    path = Path(setup()["JAFAR_ENVIRONMENTS"])
    text = path.read_text()
    path.write_text(text.replace(
        "host: {operator_keys: [", "host: {log_forward: {target: 'logs.internal:6514', "
        f"name: logs.internal, ca: '{key}'}}, operator_keys: ["))
    assert "log_forward" in path.read_text()
    r = run_inv("host.check", "--host", "test", env={"JAFAR_ENVIRONMENTS": str(path)})
    assert_bad_input(r, listener, "log_forward.ca:", "is not a PEM certificate")
    assert "canary" not in r.stdout + r.stderr


@pytest.mark.parametrize("value", ["0", "3601", "-5"])
def test_a_read_only_timeout_out_of_range_is_refused(setup, listener, value):
    r = timed("health", "--host", "test", "--timeout", value, env=setup())
    assert_bad_input(r, listener, f"--timeout must be from 1 to 3600 seconds, got {value}")
