"""What the CLI tests share: an environments file whose only host is a loopback listener that
counts connections (proof that nothing was contacted), a real operator key, a complete env
file of canaries, and the check that a result is one line of bad input."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fabfile.stackspec import infra_images
from tests.conftest import complete_env, env_yaml, shipped

# what the compose files run by default, with Grafana (the shipped prod enables it)
DEFAULT_IMAGES = infra_images(shipped("prod"))


def hosts(port: int, key: str = "/nonexistent/id_ed25519") -> str:
    return f"""\
- name: h1
  address: 127.0.0.1
  port: {port}
  user: admin
  key: {key}
  roles: [data, core]
"""


@pytest.fixture(scope="session")
def operator_key(tmp_path_factory):
    """A real key, and its operator file (tester.pub): the person who acts."""
    tmp = tmp_path_factory.mktemp("operator")
    key = tmp / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True,
                   timeout=30)
    (tmp / "tester.pub").write_text(Path(f"{key}.pub").read_text())
    return key, tmp / "tester.pub"


@pytest.fixture
def setup(environments, listener, tmp_path, operator_key):
    """An environments file whose only host is the listener; returns (path, extra env)."""
    def make(text: str | None = None, extra: str = "", key: str | None = None):
        keyfile, operators = operator_key
        known = tmp_path / "known_hosts"
        known.write_text("")
        env_file = tmp_path / "env"  # complete and valid: the masker has every value
        if not env_file.exists():
            env_file.write_text(complete_env())
            env_file.chmod(0o600)
        pins = tmp_path / "pins.yml"  # every image pinned (a protected environment needs it)
        if not pins.exists():
            pins.write_text("".join(f"{var}: {ref}@sha256:{'0' * 64}\n"
                                    for var, (ref, _) in DEFAULT_IMAGES.items()))
        base = (f"known_hosts: {known}\nenv_file: {tmp_path / 'env'}\npins: {pins}\n"
                f"host: {{operator_keys: [{operators}]}}\n" + extra)
        body = text if text is not None else env_yaml(
            hosts(listener.port, key or str(keyfile)), base)
        path = environments(body)
        return {"JAFAR_ENVIRONMENTS": str(path)}
    return make


def assert_bad_input(result, listener, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert listener.accepted == 0


