"""env.sync and host.trust for real, against a real sshd on loopback."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fabfile import envfile
from fabfile.config import load_environment
from fabfile.errors import StepFailed
from fabfile.ops import datatls
from tests.conftest import complete_env, env_yaml, run_inv

CANARY = "canary-7c1d9e55f0a2b4e8"


@pytest.fixture
def deploy_path():
    """A deploy path of its own under /srv (the suite accepts only /opt or /srv folders)."""
    import shutil
    import uuid

    path = Path(f"/srv/jafar-it-{uuid.uuid4().hex[:8]}")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def target(sshd, environments, tmp_path: Path, deploy_path: Path):
    """An environment whose single host is the sshd, with a complete env file of canaries."""
    env_file = tmp_path / "env"
    env_file.write_text(complete_env(CANARY))
    env_file.chmod(0o600)
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts_line())
    deploy = deploy_path
    host = (f"- name: h1\n  address: 127.0.0.1\n  port: {sshd.port}\n  user: {sshd.user}\n"
            f"  key: {sshd.user_key}\n  roles: [data, core]\n")
    tls = tmp_path / "tls"  # the gateway's pair (content does not matter here)
    tls.mkdir()
    (tls / "tls.crt").write_text("certificate")
    (tls / "tls.key").write_text("canary-tls-key")
    operator = tmp_path / "tester.pub"  # the person behind the key: who locks and signs
    operator.write_text(Path(f"{sshd.user_key}.pub").read_text())
    extra = (f"deploy_path: {deploy}\nenv_file: {env_file}\nknown_hosts: {known}\n"
             f"tls_dir: {tls}\n"
             f"host: {{operator_keys: [{operator}]}}\n")
    path = environments(env_yaml(host, extra))
    datatls.ensure(load_environment("test", path))  # the data plane's CA and certificate
    return {"env": {"JAFAR_ENVIRONMENTS": str(path), "JAFAR_AUDIT_DIR": str(tmp_path / "audit")},
            "deploy": deploy, "env_file": env_file, "known": known}


def test_env_sync_uploads_0600_then_has_nothing_to_do(target, sshd):
    first = run_inv("env.sync", "--host", "test", env=target["env"])
    assert first.returncode == 0, first.stderr
    landed = target["deploy"] / ".env.ec2"
    values = envfile.parse(target["env_file"])
    settings = landed.read_text()
    assert "MONGO_APP_USER=" in settings and CANARY not in settings  # names only
    assert stat.S_IMODE(landed.stat().st_mode) == 0o600
    secret = target["deploy"] / "secrets" / "redis_password"
    assert secret.read_text() == values["REDIS_PASSWORD"]
    assert stat.S_IMODE(secret.stat().st_mode) == 0o440  # 0400 and the ACL's mask
    assert "[h1] env.sync: uploaded .env.ec2 (0600), secrets/" in first.stdout
    assert not list(target["deploy"].glob("*.jafar-tmp"))
    # locked and released; this sshd host has no audit helper (host.prepare never ran): the
    # signed record is kept locally and the operator told, the task still succeeds
    assert (target["deploy"] / "state" / "locks").is_dir()
    assert not (target["deploy"] / "state" / "locks" / "deploy").exists()
    assert "audit record NOT appended on the host" in first.stdout
    unsent = (target["env"]["JAFAR_AUDIT_DIR"] + "/test.unsent.log")
    assert '"task":"env.sync"' in Path(unsent).read_text()

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


def test_host_trust_refuses_a_key_of_a_new_type(target, sshd, tmp_path):
    """A trusted host that now shows a key of another type is not a new host: refused, like a
    changed key, never prompted for or recorded."""
    import subprocess

    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(other)], check=True)
    recorded = f"[127.0.0.1]:{sshd.port} {' '.join(Path(f'{other}.pub').read_text().split()[:2])}\n"
    target["known"].write_text(recorded)
    fp = subprocess.run(["ssh-keygen", "-lf", "-"], input=sshd.host_pub, text=True,
                        capture_output=True, check=True).stdout.split()[1]
    r = run_inv("host.trust", "--host", "test", "--fingerprint", fp, env=target["env"])
    assert r.returncode == 1
    assert "is trusted with ecdsa-sha2-nistp256 but now presents a ssh-ed25519 key" in r.stderr
    assert "not recording it" in r.stderr
    assert target["known"].read_text() == recorded


def test_a_large_upload_arrives_whole_and_in_linear_time(target, tmp_path):
    """64 MB on stdin through a real sshd: paramiko's sendall on the whole buffer is quadratic
    (it copies what is left after every packet; 76 MB took 114 s), the slices take seconds."""
    import hashlib
    import os
    import time

    from fabfile.remote import Masker, Printer, Remote

    env = load_environment("test", Path(target["env"]["JAFAR_ENVIRONMENTS"]))
    data = os.urandom(64 * 1024 * 1024)
    remote = Remote(env, env.hosts[0], Printer(Masker()))
    remote.run("true")  # the connection first: only the transfer is timed
    started = time.monotonic()
    got = remote.run_with_input("sha256sum", data, timeout=300).stdout.split()[0]
    took = time.monotonic() - started
    assert got == hashlib.sha256(data).hexdigest()
    assert took < 45, f"{took:.0f}s for 64 MB"  # 3 s in slices here; 80 s whole (quadratic)


def test_streams_in_and_out_are_never_held_whole_and_a_sink_that_gives_up_stops_it(target):
    """backup.upload and backup.fetch move files of any size through the SSH channel: stdout
    goes to a sink a chunk at a time, stdin is fed from an iterator; a sink that raises (S3
    refused) stops the command on the host."""
    import hashlib
    import os
    import time

    from fabfile.remote import Masker, Printer, Remote

    env = load_environment("test", Path(target["env"]["JAFAR_ENVIRONMENTS"]))
    remote = Remote(env, env.hosts[0], Printer(Masker()))
    pieces = [os.urandom(3 * 1024 * 1024) for _ in range(8)]
    digest = hashlib.sha256(b"".join(pieces)).hexdigest()
    folder = target["deploy"]
    folder.mkdir()
    remote.stream_in(f"cat > {folder}/in.bin", iter(pieces), timeout=120)
    assert hashlib.sha256((folder / "in.bin").read_bytes()).hexdigest() == digest
    got, sizes = hashlib.sha256(), []

    def sink(chunk: bytes) -> None:
        got.update(chunk)
        sizes.append(len(chunk))

    result = remote.stream_out(f"cat {folder}/in.bin", sink, timeout=120)
    assert got.hexdigest() == digest and result.stdout == "" and max(sizes) <= 65536

    class Refused(Exception):
        pass

    def refusing(chunk: bytes) -> None:
        raise Refused

    started = time.monotonic()
    with pytest.raises(Refused):
        remote.stream_out(f"echo $$ > {folder}/pid; exec yes", refusing, timeout=120)
    pid = (folder / "pid").read_text().strip()
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{pid}"), "the command went on after its sink gave up"
    assert time.monotonic() - started < 15


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc: each one's parent)."""
    import os

    parents: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(status.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child != os.getpid():
                found.append(child)
                todo.append(child)
    return found


def test_a_host_that_freezes_before_accepting_a_command_fails_in_seconds(target, sshd):
    """The channel is open, then the server freezes (SIGSTOP on its sshd processes): the exec
    request is never answered. paramiko would wait for ever; the suite gives up after
    connect_timeout (10 s) and says the host stopped answering."""
    import os
    import signal
    import time

    from fabfile.remote import Masker, Printer, Remote

    env = load_environment("test", Path(target["env"]["JAFAR_ENVIRONMENTS"]))
    remote = Remote(env, env.hosts[0], Printer(Masker()))
    remote.run("true")
    chan = remote.conn.client.get_transport().open_session(timeout=10)
    listener = int(next(Path(sshd.log).parent.glob("sshd.pid")).read_text())
    frozen = [listener, *descendants(listener)]
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        began = time.monotonic()
        with pytest.raises(StepFailed, match="the host stopped answering"):
            remote._start(chan, "true", "true")
        took = time.monotonic() - began
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    assert 9 < took < 20, took
