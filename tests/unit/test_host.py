"""host.prepare / host.harden builders and host.check's reading of the facts."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from fabfile import host, hostcheck
from fabfile.commands import host as cmd
from fabfile.config import HostSetup
from fabfile.errors import BadInput
from tests.conftest import shipped

SAMPLE = (Path(__file__).parent / "data" / "hostcheck_sandbox.txt").read_text()


def test_ensure_service_is_check_then_act():
    assert cmd.ensure_service("docker") == (
        "if ! systemctl is-enabled --quiet docker || ! systemctl is-active --quiet docker; then\n"
        "  systemctl enable --now --quiet docker\n"
        "  echo 'CHANGED started docker'\n"
        "fi")


def test_ensure_packages_installs_only_the_missing():
    text = cmd.ensure_packages(["ufw", "fail2ban"])
    assert text.startswith("missing=''\nfor p in ufw fail2ban; do\n")
    assert "apt-get install -y -q --no-install-recommends $missing" in text
    assert text.endswith('  echo "CHANGED installed$missing"\nfi')


def test_changes_are_read_from_the_script_output():
    assert host.changes("noise\nCHANGED /etc/x\nCHANGED started docker\n") == [
        "/etc/x", "started docker"]


def test_daemon_json_for_the_sandbox():
    assert json.loads(host.daemon_json(shipped("sandbox"))) == {
        "insecure-registries": ["registry:5000"], "live-restore": True,
        "log-driver": "json-file", "log-opts": {"max-file": "5", "max-size": "10m"},
        "userland-proxy": False}
    assert "insecure-registries" not in host.daemon_json(shipped("prod"))


def test_ufw_rules_follow_roles():
    prod = shipped("prod")
    data, core = prod.hosts[0], prod.hosts[1]
    assert host.ufw_rules(prod, core) == ["allow from 10.0.0.0/24 to any port 22 proto tcp",
                                          "allow 80,443/tcp"]
    assert host.ufw_rules(prod, data) == [
        "allow from 10.0.0.0/24 to any port 22 proto tcp",
        "allow from 10.0.0.0/16 to any port 27017:27019 proto tcp",
        "allow from 10.0.0.0/16 to any port 6379 proto tcp",
        "allow from 10.0.0.0/16 to any port 5432 proto tcp"]


def test_docker_user_chain_drops_all_but_the_allowed():
    prod = shipped("prod")
    rules = host.docker_user_rules(prod, prod.hosts[1]).splitlines()
    assert rules[-3:] == ["-A DOCKER-USER -j DROP", "COMMIT", "# END jafar DOCKER-USER"]
    assert "-A DOCKER-USER -p tcp -m conntrack --ctorigdstport 443 -j RETURN" in rules
    assert not any("27017" in r for r in rules)
    data_rules = host.docker_user_rules(prod, prod.hosts[0])
    assert ("-A DOCKER-USER -s 10.0.0.0/16 -p tcp -m conntrack --ctorigdstport 6379 -j RETURN"
            in data_rules and "--ctorigdstport 443" not in data_rules)


def test_shared_kernel_skips_kernel_settings():
    sandbox = shipped("sandbox")
    script = host.harden_script(sandbox, sandbox.hosts[0])
    assert "91-jafar-kernel.conf" not in script and "auditd" not in script
    ec2 = replace(sandbox, host_setup=replace(sandbox.host_setup, shared_kernel=False))
    script = host.harden_script(ec2, ec2.hosts[0])
    assert "91-jafar-kernel.conf" in script and "augenrules --load" in script


def test_sshd_extra_lines_are_appended():
    env = shipped("sandbox")
    env = replace(env, host_setup=replace(env.host_setup, sshd_extra=("AllowGroups deploy",)))
    assert host.sshd_config(env).endswith("# site-specific (host.sshd_extra)\n"
                                          "AllowGroups deploy\n")


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def test_operator_keys_must_include_the_key_we_connect_with(tmp_path):
    key = keygen(tmp_path / "id")
    other = Path(f"{keygen(tmp_path / 'other')}.pub")
    env = shipped("sandbox")
    env = replace(env, hosts=(replace(env.hosts[0], ssh=replace(env.hosts[0].ssh, key=key)),),
                  host_setup=replace(env.host_setup, operator_keys=(other,)))
    with pytest.raises(BadInput, match="is not in host.operator_keys"):
        host.check_operator_keys(env)
    env = replace(env, host_setup=replace(env.host_setup,
                                          operator_keys=(other, Path(f"{key}.pub"))))
    host.check_operator_keys(env)
    empty = tmp_path / "empty.pub"
    empty.write_text("# FILL IN\n")
    with pytest.raises(BadInput, match="no public key in"):
        host.check_operator_keys(replace(env, host_setup=HostSetup(operator_keys=(empty,))))


def test_host_check_passes_on_a_hardened_sandbox_host():
    env = shipped("sandbox")
    controls = hostcheck.evaluate(env, env.hosts[0], SAMPLE)
    assert [c.control for c in controls if not c.ok] == []
    assert len(controls) > 50


@pytest.mark.parametrize("old, new, control", [
    ("permitrootlogin no", "permitrootlogin yes", "sshd permitrootlogin"),
    ("Status: active", "Status: inactive", "ufw active"),
    ("-A DOCKER-USER -j DROP", "", "DOCKER-USER filters published ports"),
    ("net.ipv4.conf.all.rp_filter = 1", "net.ipv4.conf.all.rp_filter = 0",
     "sysctl net.ipv4.conf.all.rp_filter"),
    ("0.0.0.0:22 ", "0.0.0.0:22 \nLISTEN 0 128 0.0.0.0:6379 0.0.0.0:*",
     "only expected ports listen publicly"),
    ('"live-restore": true', '"live-restore": false', "docker live-restore"),
    ("rc=0", "rc=255", "fail2ban sshd jail active"),
])
def test_host_check_names_each_broken_control(old, new, control):
    env = shipped("sandbox")
    assert old in SAMPLE
    failed = [c.control for c in hostcheck.evaluate(env, env.hosts[0], SAMPLE.replace(old, new))
              if not c.ok]
    assert failed == [control]


def test_public_listeners_ignore_loopback():
    ss = ("LISTEN 0 4096 127.0.0.1:35423 0.0.0.0:*\nLISTEN 0 128 [::]:22 [::]:*\n"
          "LISTEN 0 4096 10.0.2.10:5432 0.0.0.0:*\nLISTEN 0 5 [::1]:631 [::]:*\n")
    assert hostcheck.public_listeners(ss) == [("::", 22), ("10.0.2.10", 5432)]


def test_ec2_hosts_also_check_time_sync_and_audit_rules():
    env = shipped("sandbox")
    ec2 = replace(env, host_setup=replace(env.host_setup, shared_kernel=False))
    assert "auditctl -l" in hostcheck.probe(ec2) and "auditctl" not in hostcheck.probe(env)
    kernel = "\n=== kernel\nchrony=active\naudit-rules=0\n"
    failed = [c.control for c in hostcheck.evaluate(ec2, ec2.hosts[0], SAMPLE + kernel)
              if not c.ok]
    assert "auditd rules for Docker loaded" in failed and "time sync (chrony)" not in failed
