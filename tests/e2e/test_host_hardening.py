"""host.prepare, host.harden and host.check on a fresh sandbox host, for real.

The test host boots systemd with a real sshd, ufw, fail2ban and its own Docker daemon; the
tests log in with paramiko and probe ports from this machine (only the sandbox's own
addresses). Resets the sandbox on this machine.
"""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import paramiko
import pytest
import yaml

from tests.conftest import ROOT, run_inv
from tests.e2e.sandbox_helpers import HOST, host_ip, inner, on_host

KEY = ROOT / ".sandbox" / "id_ed25519"
DROPIN = "/etc/ssh/sshd_config.d/10-jafar-hardening.conf"


@pytest.fixture(scope="module")
def hardened():
    reset = run_inv("sandbox.reset", timeout=1800)
    assert reset.returncode == 0, reset.stdout[-3000:] + reset.stderr[-3000:]
    prepare = run_inv("host.prepare", "--host", "sandbox", timeout=1200)
    assert prepare.returncode == 0, prepare.stdout[-3000:] + prepare.stderr
    harden = run_inv("host.harden", "--host", "sandbox", timeout=1200)
    assert harden.returncode == 0, harden.stdout[-3000:] + harden.stderr
    return prepare, harden


@pytest.fixture(autouse=True)
def unbanned(request):
    """The refusal test makes fail2ban ban this machine (its address fronts every sandbox
    connection); each test starts with the ban lifted."""
    if "hardened" in request.fixturenames:
        on_host("fail2ban-client", "unban", "--all", check=False)


def ssh_port() -> int:
    overlay = yaml.safe_load((ROOT / ".sandbox" / "environment.yml").read_text())
    return overlay["hosts"][0]["port"]


def transport() -> paramiko.Transport:
    t = paramiko.Transport(("127.0.0.1", ssh_port()))
    t.start_client(timeout=10)
    return t


def test_fresh_host_is_prepared_and_hardened(hardened):
    prepare, harden = hardened
    assert "created user deploy" in prepare.stdout
    assert "/etc/docker/daemon.json" in prepare.stdout
    assert DROPIN in harden.stdout and "ufw enabled" in harden.stdout


def test_second_run_changes_nothing(hardened):
    for step in ("host.prepare", "host.harden"):
        again = run_inv(step, "--host", "sandbox", timeout=600)
        assert again.returncode == 0, again.stderr
        assert f"[{HOST}] {step}: nothing to do" in again.stdout


def test_host_check_passes_then_names_a_broken_control(hardened):
    ok = run_inv("host.check", "--host", "sandbox", "--json", timeout=300)
    report = json.loads(ok.stdout)
    assert ok.returncode == 0 and report["passed"], [c for c in report["controls"]
                                                     if not c["ok"]]
    names = {c["control"] for c in report["controls"]}
    assert {"sshd permitrootlogin", "fail2ban sshd jail active", "ufw rules",
            "DOCKER-USER filters published ports", "only expected ports listen publicly",
            "docker live-restore", "sysctl net.ipv4.ip_forward", "unattended upgrades"} <= names

    on_host("ufw", "disable")
    try:
        bad = run_inv("host.check", "--host", "sandbox", timeout=300)
        assert bad.returncode == 1 and "ufw active" in bad.stderr
    finally:
        fix = run_inv("host.harden", "--host", "sandbox", timeout=600)
    assert fix.returncode == 0 and "ufw enabled" in fix.stdout


def test_root_and_password_logins_are_refused(hardened):
    # give root our key and deploy a password: the server must still refuse both
    on_host("sh", "-c", f"mkdir -p /root/.ssh && cat > /root/.ssh/authorized_keys <<'K'\n"
            f"{Path(str(KEY) + '.pub').read_text()}K")
    on_host("sh", "-c", "echo 'deploy:canary-Passw0rd-4e1f' | chpasswd")
    key = paramiko.Ed25519Key.from_private_key_file(str(KEY))
    t = transport()
    try:
        with pytest.raises(paramiko.AuthenticationException):
            t.auth_publickey("root", key)
    finally:
        t.close()
    t = transport()
    try:
        with pytest.raises(paramiko.BadAuthenticationType) as exc:
            t.auth_password("deploy", "canary-Passw0rd-4e1f")
        assert exc.value.allowed_types == ["publickey"]
    finally:
        t.close()
    # fail2ban counts the failures as it reads the journal: wait (bounded) until the count
    # stands still, then lift the ban it put on this machine's address (it fronts every
    # sandbox connection)
    deadline, last, still = time.monotonic() + 30, -1, 0
    while time.monotonic() < deadline and still < 3:
        jail = on_host("fail2ban-client", "status", "sshd").stdout
        failed = re.search(r"Total failed:\s*(\d+)", jail)
        count = int(failed.group(1)) if failed else 0
        still = still + 1 if count == last and count > 0 else 0
        last = count
        time.sleep(1)
    assert last >= 2, jail
    # the deploy user with its key gets in (fail2ban may ban again while it reads the journal)
    for attempt in range(3):
        on_host("fail2ban-client", "unban", "--all")
        try:
            t = transport()
            try:
                assert t.auth_publickey("deploy", key) == []
                break
            finally:
                t.close()
        except paramiko.SSHException:
            if attempt == 2:
                raise
            time.sleep(2)


def reachable(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=3).close()
        return True
    except OSError:
        return False


def test_ports_that_are_not_allowed_cannot_be_reached(hardened):
    address = host_ip()
    on_host("sh", "-c", "nohup python3 -m http.server 9999 >/dev/null 2>&1 &")
    image = inner("images", "--format", "{{.Repository}}:{{.Tag}}", "--filter",
                  "reference=registry:5000/sandbox/nginx").split()
    if not image:  # the nginx image arrives with the first deploy; pull it for this test
        overlay = yaml.safe_load((ROOT / ".sandbox" / "environment.yml").read_text())
        image = [overlay["images"]["NGINX_IMAGE"]]
        inner("pull", image[0], timeout=300)
    inner("run", "--detach", "--rm", "--name", "jafar-test-published", "--publish", "9998:80",
          image[0])
    try:
        # the container serves on the host itself (bounded wait for it to start) ...
        served = on_host("sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do curl -s -o /dev/null "
                         "-w '%{http_code}' http://127.0.0.1:9998/ && exit 0; sleep 0.5; done",
                         check=False).stdout
        assert served.endswith(("200", "403", "404")), served
        assert reachable(address, 22)          # allowed from the sandbox network (ssh_cidr)
        assert not reachable(address, 9999)    # a host process: ufw drops it
        assert not reachable(address, 9998)    # a published container port: DOCKER-USER drops
    finally:
        inner("rm", "--force", "jafar-test-published")
        on_host("pkill", "-f", "http.server 9999", check=False)


def config_with_sshd_extra(tmp_path: Path, line: str) -> dict[str, str]:
    doc = yaml.safe_load((ROOT / "config" / "environments.yml").read_text())
    doc["environments"]["sandbox"]["host"]["sshd_extra"] = [line]
    path = tmp_path / "environments.yml"
    path.write_text(yaml.safe_dump(doc))
    return {"JAFAR_ENVIRONMENTS": str(path)}


@pytest.mark.parametrize("line, message", [
    ("NoSuchKeyword yes", "sshd -t rejected the new config, previous one restored"),
    ("AllowUsers nobody", "restored the previous sshd config and reloaded"),
])
def test_broken_sshd_dropin_is_rolled_back(hardened, tmp_path, line, message):
    before = on_host("sha256sum", DROPIN).stdout
    r = run_inv("host.harden", "--host", "sandbox", env=config_with_sshd_extra(tmp_path, line),
                timeout=600)
    assert r.returncode == 1, r.stdout
    assert message in r.stdout + r.stderr
    assert on_host("sha256sum", DROPIN).stdout == before
    assert line not in on_host("sshd", "-T").stdout
    health = run_inv("host.harden", "--host", "sandbox", timeout=600)  # reachable as before
    assert health.returncode == 0 and "nothing to do" in health.stdout
