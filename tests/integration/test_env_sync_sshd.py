"""env.sync and host.trust for real, against a real sshd on loopback."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fabfile import envfile
from tests.conftest import env_yaml, run_inv

CANARY = "canary-7c1d9e55f0a2b4e8"


@pytest.fixture
def target(sshd, environments, tmp_path: Path):
    """An environment whose single host is the sshd, with a complete env file of canaries."""
    env_file = tmp_path / "env"
    env_file.write_text("".join(f"{k}={CANARY}-{i}\n"
                                for i, k in enumerate(envfile.example_keys())))
    env_file.chmod(0o600)
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_line())
    deploy = tmp_path / "deploy"
    host = (f"- name: h1\n  address: 127.0.0.1\n  port: {sshd.port}\n  user: {sshd.user}\n"
            f"  key: {sshd.user_key}\n  roles: [data, core]\n")
    extra = f"deploy_path: {deploy}\nenv_file: {env_file}\nknown_hosts: {known}\n"
    path = environments(env_yaml(host, extra))
    return {"env": {"JAFAR_ENVIRONMENTS": str(path)}, "deploy": deploy, "env_file": env_file,
            "known": known}


def test_env_sync_uploads_0600_then_has_nothing_to_do(target, sshd):
    first = run_inv("env.sync", "--host", "test", env=target["env"])
    assert first.returncode == 0, first.stderr
    landed = target["deploy"] / ".env.ec2"
    assert landed.read_bytes() == target["env_file"].read_bytes()
    assert stat.S_IMODE(landed.stat().st_mode) == 0o600
    assert f"[h1] env.sync: uploaded {landed} (0600)" in first.stdout
    assert not list(target["deploy"].glob("*.jafar-tmp"))

    second = run_inv("env.sync", "--host", "test", env=target["env"])
    assert second.returncode == 0, second.stderr
    assert "[h1] env.sync: nothing to do:" in second.stdout
    assert "unchanged (same sha256, mode and owner)" in second.stdout

    # a changed mode on the host is repaired, content untouched
    landed.chmod(0o644)
    third = run_inv("env.sync", "--host", "test", env=target["env"])
    assert "uploaded" in third.stdout and stat.S_IMODE(landed.stat().st_mode) == 0o600

    # no secret in output, errors, or any command line the server received
    commands = sshd.commands.read_text()
    assert "umask 077" in commands  # the recorder saw the upload command itself
    for text in (first.stdout, first.stderr, second.stdout, third.stdout, commands,
                 sshd.log.read_text()):
        assert CANARY not in text


def test_unknown_host_key_is_refused_and_nothing_changes(target):
    target["known"].write_text("")
    r = run_inv("env.sync", "--host", "test", env=target["env"])
    assert r.returncode == 1
    assert "is not known; refusing to connect" in r.stderr
    assert "inv host.trust --host test" in r.stderr
    assert not (target["deploy"] / ".env.ec2").exists()


def test_changed_host_key_is_refused(target, sshd):
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHTzgB1yLNJpk2pO8oYjX5ZqQk1d3o7kX9N8bqvLQk2P"
    target["known"].write_text(f"[127.0.0.1]:{sshd.port} {other}\n")
    r = run_inv("env.sync", "--host", "test", env=target["env"])
    assert r.returncode == 1 and "has CHANGED" in r.stderr
    assert not (target["deploy"] / ".env.ec2").exists()


def test_host_trust_records_only_a_matching_fingerprint(target, sshd):
    import subprocess

    target["known"].write_text("")
    fp = subprocess.run(["ssh-keygen", "-lf", "-"], input=sshd.host_pub, text=True,
                        capture_output=True, check=True).stdout.split()[1]
    wrong = "SHA256:" + "A" * 43
    r = run_inv("host.trust", "--host", "test", "--fingerprint", wrong, env=target["env"])
    assert r.returncode == 1 and "is not one of --fingerprint" in r.stderr
    assert target["known"].read_text() == ""

    r = run_inv("host.trust", "--host", "test", "--fingerprint", fp, env=target["env"])
    assert r.returncode == 0, r.stderr
    assert f"presents ssh-ed25519 {fp}" in r.stdout
    assert target["known"].read_text() == sshd.known_hosts_line()

    again = run_inv("host.trust", "--host", "test", "--fingerprint", fp, env=target["env"])
    assert "nothing to do" in again.stdout and "already trusted" in again.stdout
    assert target["known"].read_text() == sshd.known_hosts_line()

    ok = run_inv("env.sync", "--host", "test", env=target["env"])
    assert ok.returncode == 0, ok.stderr
