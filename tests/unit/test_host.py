"""host.prepare / host.harden builders and host.check's reading of the facts."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from fabfile.commands import host as cmd
from fabfile.config import HostSetup
from fabfile.errors import BadInput
from fabfile.hosts import check as hostcheck
from fabfile.hosts import setup as host
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
        "userland-proxy": False, "icc": False, "no-new-privileges": True,
        "default-ulimits": {"core": {"Name": "core", "Hard": 0, "Soft": 0}}}
    assert "insecure-registries" not in host.daemon_json(shipped("prod"))


def test_ufw_rules_follow_roles():
    prod = shipped("prod")
    data, core = prod.hosts[0], prod.hosts[1]
    exporter = ["allow from 172.16.0.0/12 to any port 9100 proto tcp",
                "allow from 192.168.0.0/16 to any port 9100 proto tcp"]
    # node_exporter: from the containers, and (split) from the other core hosts' Prometheus
    assert host.ufw_rules(prod, core) == ["allow from 10.0.0.0/24 to any port 22 proto tcp",
                                          "allow 80,443/tcp", *exporter,
                                          "allow from 10.0.1.12 to any port 9101 proto tcp"]
    # the data ports: from each core host's address only, not from the whole VPC
    assert host.ufw_rules(prod, data) == [
        "allow from 10.0.0.0/24 to any port 22 proto tcp",
        "allow from 10.0.1.11 to any port 27017:27019 proto tcp",
        "allow from 10.0.1.11 to any port 6379 proto tcp",
        "allow from 10.0.1.11 to any port 5432 proto tcp",
        "allow from 10.0.1.12 to any port 27017:27019 proto tcp",
        "allow from 10.0.1.12 to any port 6379 proto tcp",
        "allow from 10.0.1.12 to any port 5432 proto tcp", *exporter,
        "allow from 10.0.1.11 to any port 9101 proto tcp",
        "allow from 10.0.1.12 to any port 9101 proto tcp"]
    single = shipped("staging")
    assert not [r for r in host.ufw_rules(single, single.hosts[0]) if "9101" in r]


def test_docker_user_chain_drops_all_but_the_allowed():
    prod = shipped("prod")
    rules = host.docker_user_rules(prod, prod.hosts[1]).splitlines()
    assert rules[-3:] == ["-A DOCKER-USER -j DROP", "COMMIT", "# END jafar DOCKER-USER"]
    assert "-A DOCKER-USER -p tcp -m conntrack --ctorigdstport 443 -j RETURN" in rules
    assert not any("27017" in r for r in rules)
    data_rules = host.docker_user_rules(prod, prod.hosts[0])
    assert ("-A DOCKER-USER -s 10.0.1.12 -p tcp -m conntrack --ctorigdstport 6379 -j RETURN"
            in data_rules and "--ctorigdstport 443" not in data_rules)
    assert "10.0.0.0/16" not in data_rules
    # two core hosts: each lets the other's Alertmanager gossip in (tcp and udp), nobody else
    assert [r for r in rules if "9094" in r] == [
        "-A DOCKER-USER -s 10.0.1.12 -p tcp -m conntrack --ctorigdstport 9094 -j RETURN",
        "-A DOCKER-USER -s 10.0.1.12 -p udp -m conntrack --ctorigdstport 9094 -j RETURN"]
    assert "9094" not in data_rules
    single = shipped("staging")
    assert "9094" not in host.docker_user_rules(single, single.hosts[0])


def test_each_core_host_of_a_cluster_gets_its_own_address_and_peers():
    from fabfile.monitor import cluster

    prod = shipped("prod")
    assert cluster.host_settings(prod, prod.hosts[2]) == (
        "ALERTMANAGER_CLUSTER_LISTEN=0.0.0.0:9094\nALERTMANAGER_CLUSTER_ADDRESS=10.0.1.12\n"
        "ALERTMANAGER_PEERS=10.0.1.11:9094\n")
    assert cluster.host_settings(prod, prod.hosts[0]) == ""  # the data host
    single = shipped("staging")
    assert cluster.host_settings(single, single.hosts[0]) == ""


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


def fake_sshd(bin_dir: Path, reexecutes: bool) -> None:
    """`systemctl` and `ls` stand-ins: the main sshd's fds are a file that a reload rewrites
    (new listening sockets) only when `reexecutes`."""
    fds = bin_dir / "fds"
    fds.write_text("socket:[1]\nsocket:[2]\nsocket:[3]\n")
    after = "socket:[1]\\nsocket:[7]\\nsocket:[8]" if reexecutes else "socket:[1]"
    (bin_dir / "systemctl").write_text(
        "#!/bin/sh\n"
        'case "$1" in show) echo 42;; reload) echo reload >> "$(dirname "$0")/calls"; '
        f'printf "{after}\\n" > "$(dirname "$0")/fds";; esac\n')
    (bin_dir / "ls").write_text('#!/bin/sh\ncat "$(dirname "$0")/fds"\n')
    for name in ("systemctl", "ls"):
        (bin_dir / name).chmod(0o755)


@pytest.mark.parametrize("reexecutes, code", [(True, 0), (False, 4)])
def test_an_sshd_reload_waits_until_sshd_has_new_listeners(tmp_path, reexecutes, code):
    fake_sshd(tmp_path, reexecutes)
    r = subprocess.run(["sh", "-eu", "-c", host.reload_sshd(seconds=1)], capture_output=True,
                       text=True, env={"PATH": f"{tmp_path}:/usr/bin:/bin"}, timeout=30)
    assert (r.returncode, r.stderr) == (code, "" if reexecutes else
                                        "sshd did not re-execute within 1 s of "
                                        "systemctl reload ssh\n")
    assert (tmp_path / "calls").read_text() == "reload\n"


def test_the_sshd_drop_in_and_its_undo_both_wait_for_the_reload():
    env = shipped("sandbox")
    assert host.sshd_script(env).endswith(host.reload_sshd())
    assert host.restore_sshd_script().endswith(host.reload_sshd())


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
    # node_exporter on the Docker bridge only, never on every address
    ("172.17.0.1:9100 ", "0.0.0.0:9100 ", "only expected ports listen publicly"),
    ('"no-new-privileges": true', '"no-new-privileges": false',
     "docker no-new-privileges by default"),
    ("set UMASK 027", "set UMASK 022", "login.defs UMASK"),
    ("=== jail-conf\nunchanged", "=== jail-conf\n??5?????? c /etc/fail2ban/jail.conf",
     "fail2ban jail.conf as shipped (settings in jail.d)"),
    ("hostkey /etc/ssh/ssh_host_ed25519_key", "hostkey /etc/ssh/ssh_host_ecdsa_key",
     "sshd hostkey"),
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
    control = "auditd watches Docker's files (CIS Docker 1.1)"

    def failed(rules: str, paths: str) -> list[str]:
        kernel = f"\n=== kernel\nchrony=active\naudit-rules={rules}\naudit-paths={paths}\n"
        return [c.control for c in hostcheck.evaluate(ec2, ec2.hosts[0], SAMPLE + kernel)
                if not c.ok]

    assert control in failed("0", "14") and "time sync (chrony)" not in failed("0", "14")
    assert control in failed("9", "14")          # some watches were not loaded
    assert control in failed("0", "0")           # a host with none of Docker's paths
    assert control in failed("x", "14")
    assert control not in failed("14", "14")


def test_the_audit_rules_watch_what_the_cis_docker_benchmark_names():
    rules = host.audit_rules(shipped("prod")).splitlines()
    assert rules[1] == "-c"
    for path in ("/usr/bin/dockerd", "/usr/sbin/dockerd", "/usr/bin/containerd", "/usr/sbin/runc",
                 "/usr/bin/runc", "/usr/bin/containerd-shim-runc-v2", "/etc/docker/daemon.json",
                 "/run/containerd/containerd.sock", "/run/docker.sock", "/var/lib/docker",
                 "/lib/systemd/system/docker.service", "/etc/containerd/config.toml"):
        assert f"-w {path} -p rwxa -k docker" in rules, path
    assert rules[-1] == "-w /opt/jafar -p wa -k jafar-deploy"
    # host.check counts the same paths
    assert all(p in hostcheck.probe(replace(shipped("sandbox"), host_setup=replace(
        shipped("sandbox").host_setup, shared_kernel=False))) for p in host.DOCKER_WATCHES)


def test_only_the_suites_two_users_may_log_in():
    env = shipped("prod")
    config = host.sshd_config(env)
    assert "\nAllowUsers deploy ubuntu\n" in config
    assert hostcheck.wanted_sshd(env)["allowusers"] == "deploy ubuntu"


def test_the_admin_user_may_have_its_own_key(tmp_path):
    from fabfile.flow import admin_host

    env = shipped("prod")
    h = env.hosts[0]
    assert admin_host(env, h).ssh.key == h.ssh.key  # by default, the host's key
    own = replace(env, host_setup=replace(env.host_setup, admin_key=tmp_path / "admin_ed25519"))
    reached = admin_host(own, h)
    assert (reached.ssh.user, reached.ssh.key, reached.become) == (
        "ubuntu", tmp_path / "admin_ed25519", True)
    assert h.ssh.key != tmp_path / "admin_ed25519"


def test_the_check_table_masks_before_it_cuts():
    from fabfile.hosts.check import Control, table
    from fabfile.remote import Masker

    secret = "canary-secret-5e7d1f0a2b"
    control = Control("h1", "sshd", "x", "y" * 50 + secret, False)
    row = table([control], Masker([secret]))[-1]
    assert "********" in row and "canary-sec" not in row


def test_a_gzipped_upload_installs_the_file_or_nothing(tmp_path):
    import gzip

    target = tmp_path / "plugins" / "docker-compose"
    script = cmd.install_gzipped(str(target), "0755")
    assert script == (f'tmp=$(mktemp) && gunzip -c > "$tmp" && install -D -m 0755 "$tmp" '
                      f'{target}; rc=$?; rm -f "$tmp"; exit $rc')
    data = b"\x7fELF" + bytes(range(256)) * 100
    ok = subprocess.run(["sh", "-c", script], input=host.gzipped_bytes(data), timeout=30,
                        check=False, capture_output=True)
    assert ok.returncode == 0 and target.read_bytes() == data
    assert oct(target.stat().st_mode & 0o777) == "0o755"
    target.unlink()
    cut = gzip.compress(data)[:-20]  # a stream cut short: no file
    bad = subprocess.run(["sh", "-c", script], input=cut, timeout=30, check=False,
                         capture_output=True)
    assert bad.returncode != 0 and not target.exists()


def test_host_check_accepts_the_gossip_port_on_a_clustered_core_hosts_private_address_only():
    from fabfile.hosts.check import evaluate

    prod = shipped("prod")
    core = prod.hosts[1]
    listen = "LISTEN 0 4096 10.0.1.11:9094 0.0.0.0:*\nLISTEN 0 4096 10.0.1.99:9094 0.0.0.0:*\n"
    out = SAMPLE.replace("=== listen\n", "=== listen\n" + listen)
    control = next(c for c in evaluate(prod, core, out)
                   if c.control == "only expected ports listen publicly")
    assert "10.0.1.99:9094" in control.actual and "10.0.1.11:9094" not in control.actual
    data = next(c for c in evaluate(prod, prod.hosts[0], out.replace("10.0.1.11", "10.0.2.10"))
                if c.control == "only expected ports listen publicly")
    assert "10.0.2.10:9094" in data.actual  # the data host runs no Alertmanager
