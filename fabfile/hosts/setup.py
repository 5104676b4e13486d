"""host.prepare and host.harden: shape a fresh EC2 instance, idempotently, without lockout.

Both connect as the AMI's sudo user (`host.admin_user`), run one script of check-then-act
snippets (commands/host.py) and report what changed. host.harden validates the new sshd
config with `sshd -t` before the reload, and afterwards opens NEW connections as the deploy
user and as the admin user: if one fails, it restores the previous config, reloads, and says
so. The firewall rules change without a moment in which SSH is not allowed.
"""

from __future__ import annotations

import functools
import gzip
import json
import time
from dataclasses import replace
from pathlib import Path

import paramiko

from fabfile.commands import audit as audit_cmd
from fabfile.commands import host as cmd
from fabfile.config import USERNS_BASE, USERNS_SIZE, USERNS_USER, Environment, Host
from fabfile.errors import BadInput, StepFailed
from fabfile.flow import Outcome, Step, admin_host
from fabfile.hosts import HARDENING, baseline
from fabfile.monitor import cluster
from fabfile.remote import Remote, become, open_connection

SSHD_DROPIN = "/etc/ssh/sshd_config.d/10-jafar-hardening.conf"
SYSCTL_NETWORK = "/etc/sysctl.d/90-jafar-network.conf"
PLUGIN_PATH = "/usr/libexec/docker/cli-plugins/docker-compose"
SUDOERS_AUDIT = "/etc/sudoers.d/jafar-audit"
DATA_PORTS = ("27017:27019", "6379", "5432")
DOCKER_POOLS = ("172.16.0.0/12", "192.168.0.0/16")  # Docker's default address pools
BASE_PACKAGES = ["ca-certificates", "curl", "gnupg", "unattended-upgrades", "iproute2", "acl"]
DATA_PACKAGES = ["age"]  # encrypts the backup sets before they leave the host (backup_s3)
HARDEN_PACKAGES = ["fail2ban", "python3-systemd", "ufw", "iptables"]
DOCKER_APT_KEY_FINGERPRINT = "9DC858229FC7DD38854AE2D88D81803C0EBFCD88"


def operator_keys_text(env: Environment) -> str:
    """The operators' public keys, comments dropped: the deploy user's authorized_keys."""
    lines = []
    for path in env.host_setup.operator_keys:
        if path.is_file():
            lines += [ln.strip() for ln in path.read_text().splitlines()
                      if ln.strip() and not ln.lstrip().startswith("#")]
    return "".join(f"{line}\n" for line in lines)


def check_operator_keys(env: Environment) -> None:
    """Before connecting: the keys exist, and ours is among them (else hardening locks us out)."""
    setup = env.host_setup
    if not setup.operator_keys:
        raise BadInput(f"environment {env.name}: host.operator_keys is empty; list the public "
                       "keys allowed to log in as the deploy user")
    for path in setup.operator_keys:
        if not path.is_file():
            raise BadInput(f"operator key {path} does not exist; fix host.operator_keys of "
                           f"{env.name}")
    allowed = {line.split()[1] for line in operator_keys_text(env).splitlines()
               if len(line.split()) > 1}
    if not allowed:
        raise BadInput(f"no public key in {', '.join(map(str, setup.operator_keys))}; add the "
                       "operators' keys (one per line) before preparing hosts")
    for h in env.hosts:
        try:
            ours = paramiko.PKey.from_path(h.ssh.key).get_base64()
        except (OSError, paramiko.SSHException):
            continue  # preflight reports a missing key file
        if ours not in allowed:
            raise BadInput(f"the key {h.ssh.key} of host {h.name} is not in host.operator_keys: "
                           "after hardening nobody could log in with it; add its .pub")


def daemon_json(env: Environment) -> str:
    settings: dict[str, object] = {
        "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "5"},
        "live-restore": True,
        "userland-proxy": False,
        # CIS Docker 2.1, 2.14, 5.x: no traffic between containers on the default bridge (the
        # stacks use their own networks), no privilege gain through setuid binaries in any
        # container, no core dumps (they would hold secrets from memory)
        "icc": False,
        "no-new-privileges": True,
        "default-ulimits": {"core": {"Name": "core", "Hard": 0, "Soft": 0}},
    }
    if env.host_setup.insecure_registries:
        settings["insecure-registries"] = list(env.host_setup.insecure_registries)
    if env.host_setup.userns_remap:
        # CIS Docker 2.8: a container's root is an unprivileged uid on the host
        settings["userns-remap"] = USERNS_USER
    return json.dumps(settings, indent=2, sort_keys=True) + "\n"


def docker_apt_repository() -> str:
    """Docker's apt repository, its key checked against the published fingerprint."""
    return "\n".join([
        "if [ ! -s /etc/apt/keyrings/docker.asc ]; then",
        "  install -m 0755 -d /etc/apt/keyrings",
        "  . /etc/os-release",
        '  curl -fsSL "https://download.docker.com/linux/$ID/gpg" -o /tmp/docker.asc',
        "  fp=$(gpg --show-keys --with-colons /tmp/docker.asc | awk -F: '/^fpr/ {print $10; "
        "exit}')",
        f'  [ "$fp" = {DOCKER_APT_KEY_FINGERPRINT} ] || {{ echo "Docker apt key fingerprint '
        '$fp is not the published one" >&2; exit 1; }',
        "  install -m 0644 /tmp/docker.asc /etc/apt/keyrings/docker.asc",
        "  echo 'CHANGED Docker apt key'",
        "fi",
        "if [ ! -s /etc/apt/sources.list.d/docker.list ]; then",
        "  . /etc/os-release",
        '  echo "deb [arch=$(dpkg --print-architecture) signed-by=/etc/apt/keyrings/docker.asc] '
        'https://download.docker.com/linux/$ID $VERSION_CODENAME stable" '
        "> /etc/apt/sources.list.d/docker.list",
        "  echo 'CHANGED Docker apt repository'",
        "fi",
    ])


def prepare_script(env: Environment, host: Host) -> str:
    setup = env.host_setup
    docker = (["docker.io"] if setup.docker_source == "debian" else
              ["docker-ce", "docker-ce-cli", "containerd.io", "docker-compose-plugin"])
    parts = [cmd.ensure_packages(BASE_PACKAGES + ([] if setup.shared_kernel else ["chrony"])
                                 + (DATA_PACKAGES if host.has("data") else []))]
    if setup.docker_source == "docker-apt":
        parts.append(docker_apt_repository())
    if setup.userns_remap:  # the range must exist before the daemon restarts with it
        parts += [cmd.ensure_system_user(USERNS_USER),
                  *(cmd.ensure_subordinate_range(f, USERNS_USER, USERNS_BASE, USERNS_SIZE)
                    for f in ("/etc/subuid", "/etc/subgid"))]
    parts += [
        cmd.ensure_packages(docker),
        cmd.ensure_file("/etc/docker/daemon.json", daemon_json(env),
                        on_change="systemctl restart docker"),
        cmd.ensure_service("docker"),
        cmd.ensure_file("/etc/apt/apt.conf.d/20auto-upgrades",
                        (HARDENING / "auto-upgrades.conf").read_text()),
        cmd.ensure_user(setup.deploy_user, "docker", operator_keys_text(env)),
        # the suite's own folders (a lock taken as root before this step made some of them)
        *(cmd.ensure_dir(f"{env.deploy_path}{sub}", setup.deploy_user)
          for sub in ("", "/state", "/state/locks")),
        # the audit trail: root-owned, appended only through one narrow sudo helper
        cmd.ensure_file(audit_cmd.HELPER, (HARDENING / "jafar-audit-append").read_text(),
                        "0755"),
        cmd.ensure_file(SUDOERS_AUDIT, audit_cmd.sudoers(setup.deploy_user), "0440",
                        validate="visudo -cqf"),
        audit_cmd.prepare_trail(setup.deploy_user),
    ]
    if not setup.shared_kernel:
        parts.append(cmd.ensure_service("chrony"))
    return cmd.script(*parts)


def plan_prepare(env: Environment, host: Host) -> list[str]:
    lines = [f"$ {become(cmd.docker_storage_probe())}",
             "refuse if userns-remap would be switched while the daemon holds volumes or "
             "containers",
             f"$ {become(prepare_script(env, host))}"]
    if env.host_setup.docker_source == "debian" and env.host_setup.compose_plugin:
        lines.append(f"if `docker compose version` fails: upload {env.host_setup.compose_plugin}"
                     f" gzipped on stdin, then $ {cmd.install_gzipped(PLUGIN_PATH, '0755')}")
    return lines


def changes(output: str) -> list[str]:
    return [line[len("CHANGED "):] for line in output.splitlines() if line.startswith("CHANGED ")]


def remap_refusal(env: Environment, probe_output: str) -> str | None:
    """Why userns-remap may not be switched here, or None. Switching gives the daemon another
    storage root: the volumes and containers of the old one would vanish from its view and the
    data stack would initialise empty databases. Only a host with none may switch."""
    seen = dict(w.split("=", 1) for w in probe_output.split() if "=" in w)
    on, wanted = seen.get("remap") == "1", env.host_setup.userns_remap
    volumes, containers = int(seen.get("volumes", "0")), int(seen.get("containers", "0"))
    if on == wanted or not (volumes or containers):
        return None
    switch = "on" if wanted else "off"
    return (f"refused to turn userns-remap {switch}: the Docker daemon holds "
            f"{volumes} volume(s) and {containers} container(s), which the new storage root "
            "would not show (the data stack would start on empty databases); switch it only on a "
            f"fresh host (move the data there with a backup and restore), or set "
            f"host.userns_remap: {str(on).lower()} for {env.name}")


def gzipped_bytes(data: bytes) -> bytes:
    """Data as sent to the hosts: gzip's fast level cuts the plugin's 76 MB to a third, and
    SSH through paramiko, not the disk, is what limits a fleet's prepare."""
    return gzip.compress(data, compresslevel=1, mtime=0)


@functools.cache
def gzipped(path: Path) -> bytes:
    """A file's gzipped bytes, made once per run for every host."""
    return gzipped_bytes(path.read_bytes())


def apply_prepare(env: Environment, host: Host, remote: Remote) -> Outcome:
    refusal = remap_refusal(env, remote.run(cmd.docker_storage_probe()).stdout)
    if refusal:
        raise StepFailed(refusal)
    done = changes(remote.run(prepare_script(env, host), timeout=1800).stdout)
    setup = env.host_setup
    if remote.run("docker compose version --short", check=False).exited != 0:
        if setup.docker_source != "debian" or setup.compose_plugin is None:
            raise StepFailed(f"{host.name}: docker compose is missing after the install")
        remote.run_with_input(cmd.install_gzipped(PLUGIN_PATH, "0755"),
                              gzipped(setup.compose_plugin), timeout=600)
        done.append(f"Compose plugin uploaded to {PLUGIN_PATH}")
    if not done:
        return Outcome(False, "nothing to do: packages, Docker daemon settings, deploy user, "
                              "deploy path and unattended upgrades already as wanted")
    return Outcome(True, "; ".join(done))


# --- harden ---------------------------------------------------------------------------------

def sshd_config(env: Environment) -> str:
    """The drop-in: the baseline, then who may log in at all (the deploy user and the admin
    user, nobody else), then the site's own lines."""
    setup = env.host_setup
    extra = "".join(f"{line}\n" for line in setup.sshd_extra)
    return ((HARDENING / "sshd.conf").read_text()
            + f"# only the suite's two users (host.deploy_user, host.admin_user)\n"
              f"AllowUsers {setup.deploy_user} {setup.admin_user}\n"
            + (f"# site-specific (host.sshd_extra)\n{extra}" if extra else ""))


def sshd_script(env: Environment) -> str:
    """Install the drop-in; `sshd -t` must accept it, else the previous one is put back."""
    content = sshd_config(env)
    return "\n".join([
        "grep -Eq '^Include /etc/ssh/sshd_config.d/\\*.conf' /etc/ssh/sshd_config || "
        "{ echo 'sshd_config does not include sshd_config.d/*.conf' >&2; exit 1; }",
        "mkdir -p /run/sshd",
        f"if [ -f {SSHD_DROPIN} ]; then cp -p {SSHD_DROPIN} {SSHD_DROPIN}.jafar-prev; "
        f"else rm -f {SSHD_DROPIN}.jafar-prev; fi",
        baseline.banner_script(),
        cmd.ensure_file(SSHD_DROPIN, content, "0644"),
        "if ! err=$(sshd -t 2>&1); then",
        f"  {restore_sshd_script()}",
        '  echo "sshd -t rejected the new config, previous one restored: $err" >&2',
        "  exit 3",
        "fi",
        reload_sshd(),
    ])


def restore_sshd_script() -> str:
    return "\n".join([f"if [ -f {SSHD_DROPIN}.jafar-prev ]; then mv -f {SSHD_DROPIN}.jafar-prev "
                      f"{SSHD_DROPIN}; else rm -f {SSHD_DROPIN}; fi", reload_sshd()])


#: The sockets the main sshd holds open (its listeners, and its stdio to the journal).
SSHD_SOCKETS = ("ls -l /proc/\"$(systemctl show -p MainPID --value ssh)\"/fd 2>/dev/null "
                "| grep -o 'socket:\\[[0-9]*\\]' | sort")


def reload_sshd(seconds: int = 10) -> str:
    """`systemctl reload ssh`, then wait until sshd has re-executed: reload returns once SIGHUP
    is sent, and a login accepted before sshd acts on it still meets the old config (which is
    how a lockout check once passed a drop-in that denied the deploy user). sshd re-executes
    with new listening sockets, so wait until they differ; not at all → exit 4.
    (Not `restart`: systemd's start limit can leave sshd stopped after a few in a row.)"""
    return "\n".join([
        f"before=$({SSHD_SOCKETS})",
        "systemctl reload ssh",
        "reloaded=no",
        f"for _ in $(seq {seconds * 10}); do",
        f"  now=$({SSHD_SOCKETS})",
        '  if [ "$now" != "$before" ] && [ "$(echo "$now" | wc -l)" -ge '
        '"$(echo "$before" | wc -l)" ]; then reloaded=yes; break; fi',
        "  sleep 0.1",
        "done",
        f'[ "$reloaded" = yes ] || {{ echo "sshd did not re-execute within {seconds} s of '
        'systemctl reload ssh" >&2; exit 4; }',
    ])


def ufw_rules(env: Environment, host: Host) -> list[str]:
    """The wanted rules, written as `ufw show added` prints them (so they compare equal)."""
    # `allow`, not `limit`: ufw's limit refuses a 7th connection within 30 s from one address,
    # which a deploy's own connections reach; brute force is fail2ban's job (sshd jail).
    cidr = env.host_setup.ssh_cidr
    rules = ["allow 22/tcp" if cidr in ("0.0.0.0/0", "::/0") else
             f"allow from {cidr} to any port 22 proto tcp"]
    if host.has("core"):
        rules.append("allow 80,443/tcp")
    if host.has("data") and env.topology == "split":
        rules += [f"allow from {source} to any port {p} proto tcp"
                  for source in core_addresses(env) for p in DATA_PORTS]
    # node_exporter listens on the Docker bridge's address; containers (Prometheus) come from
    # Docker's address pools. In the split topology also on the private address, for the
    # other core hosts' Prometheus.
    rules += [f"allow from {pool} to any port {baseline.NODE_EXPORTER_PORT} proto tcp"
              for pool in DOCKER_POOLS]
    if baseline.node_listen(env, host):
        own = host.private_address or host.ssh.address
        rules += [f"allow from {source} to any port {baseline.NODE_PRIVATE_PORT} proto tcp"
                  for source in core_addresses(env) if source != own]
    return rules


def core_addresses(env: Environment) -> list[str]:
    """Where the data ports may be reached from: each core host's private address, nothing
    else of the VPC (a compromised bastion or a stray instance gets nothing)."""
    return [h.private_address or h.ssh.address for h in env.hosts_with("core")]


def docker_user_rules(env: Environment, host: Host) -> str:
    """Docker publishes ports past ufw's INPUT chain: filter them in DOCKER-USER."""
    lines = ["# BEGIN jafar DOCKER-USER (managed by inv host.harden)", "*filter",
             ":DOCKER-USER - [0:0]", "-F DOCKER-USER",
             "-A DOCKER-USER -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
             "-A DOCKER-USER -i docker0 -j RETURN", "-A DOCKER-USER -i br-+ -j RETURN"]
    if host.has("core"):
        lines += [f"-A DOCKER-USER -p tcp -m conntrack --ctorigdstport {p} -j RETURN"
                  for p in (80, 443)]
    if host.has("core") and cluster.clustered(env):  # Alertmanager's gossip, from its peers
        lines += [f"-A DOCKER-USER -s {peer.rpartition(':')[0]} -p {proto} -m conntrack "
                  f"--ctorigdstport {cluster.CLUSTER_PORT} -j RETURN"
                  for peer in cluster.peers(env, host) for proto in ("tcp", "udp")]
    if host.has("data") and env.topology == "split":
        lines += [f"-A DOCKER-USER -s {source} -p tcp -m conntrack --ctorigdstport "
                  f"{p} -j RETURN" for source in core_addresses(env) for p in DATA_PORTS]
    lines += ["-A DOCKER-USER -j DROP", "COMMIT", "# END jafar DOCKER-USER"]
    return "\n".join(lines) + "\n"


def firewall_script(env: Environment, host: Host) -> str:
    """ufw: deny incoming by default, the wanted rules only, DOCKER-USER from after.rules."""
    block = docker_user_rules(env, host)
    return "\n".join([
        "after=/etc/ufw/after.rules",
        "sed '/^# BEGIN jafar DOCKER-USER/,/^# END jafar DOCKER-USER/d' $after > $after.base",
        cmd.ensure_file("/etc/ufw/after.rules.jafar", block, "0640"),
        "cat $after.base /etc/ufw/after.rules.jafar > $after.want && rm -f $after.base",
        "if ! cmp -s $after.want $after; then mv -f $after.want $after; "
        "echo 'CHANGED /etc/ufw/after.rules (DOCKER-USER)'; reload=1; "
        "else rm -f $after.want; reload=0; fi",
        # ufw applies its own sysctl file on every start (log_martians=0): point it at ours
        f"if ! grep -qx 'IPT_SYSCTL={SYSCTL_NETWORK}' /etc/default/ufw; then",
        f"  sed -i 's|^IPT_SYSCTL=.*|IPT_SYSCTL={SYSCTL_NETWORK}|' /etc/default/ufw",
        "  echo 'CHANGED /etc/default/ufw (IPT_SYSCTL)'; reload=1",
        "fi",
        cmd.ufw_rules(ufw_rules(env, host)),
        "if ! ufw status verbose | grep -q 'Default: deny (incoming), allow (outgoing)'; then",
        "  ufw default deny incoming >/dev/null && ufw default allow outgoing >/dev/null",
        "  echo 'CHANGED ufw defaults'",
        "fi",
        "if ! ufw status | grep -q '^Status: active'; then",
        "  ufw --force enable >/dev/null && echo 'CHANGED ufw enabled'",
        "elif [ $reload = 1 ]; then ufw reload >/dev/null; fi",
    ])


def harden_script(env: Environment, host: Host) -> str:
    setup = env.host_setup
    parts = [
        cmd.ensure_packages(HARDEN_PACKAGES + ([] if setup.shared_kernel else ["auditd"])),
        cmd.ensure_file("/etc/fail2ban/jail.d/jafar.conf",
                        (HARDENING / "fail2ban-sshd.conf").read_text(),
                        on_change="systemctl restart fail2ban"),
        cmd.ensure_service("fail2ban"),
        cmd.ensure_file(SYSCTL_NETWORK, (HARDENING / "sysctl.conf").read_text(),
                        on_change=f"sysctl -q -p {SYSCTL_NETWORK}"),
        baseline.script(env),  # installs and starts node_exporter: then where it listens
        cmd.ensure_file(baseline.NODE_LISTEN,
                        "".join(f"{a}\n" for a in baseline.node_listen(env, host)),
                        on_change=f"systemctl restart {baseline.NODE_EXPORTER}"),
    ]
    if not setup.shared_kernel:
        parts += [
            cmd.ensure_file("/etc/sysctl.d/91-jafar-kernel.conf",
                            (HARDENING / "sysctl-kernel.conf").read_text(),
                            on_change="sysctl -q -p /etc/sysctl.d/91-jafar-kernel.conf"),
            cmd.ensure_file("/etc/audit/rules.d/jafar.rules", audit_rules(env), "0640",
                            on_change="augenrules --load >/dev/null"),
            cmd.ensure_service("auditd"),
        ]
    parts.append(firewall_script(env, host))
    return cmd.script(*parts)


#: What the CIS Docker Benchmark (1.1.x) has audited on a Docker host: the daemon, containerd,
#: runc and the shims (where Debian's and Docker's packages put them), their configuration,
#: units and sockets, and Docker's state. auditctl -c skips a path this host does not have.
DOCKER_WATCHES = (
    "/usr/bin/docker", "/usr/bin/dockerd", "/usr/sbin/dockerd", "/usr/bin/containerd",
    "/usr/sbin/containerd", "/usr/bin/containerd-shim", "/usr/bin/containerd-shim-runc-v1",
    "/usr/bin/containerd-shim-runc-v2", "/usr/bin/runc", "/usr/sbin/runc",
    "/etc/docker", "/etc/docker/daemon.json", "/etc/default/docker", "/etc/sysconfig/docker",
    "/etc/containerd/config.toml", "/var/lib/docker", "/run/containerd",
    "/run/containerd/containerd.sock", "/run/docker.sock",
    "/lib/systemd/system/docker.service", "/lib/systemd/system/docker.socket",
    "/lib/systemd/system/containerd.service",
)


def audit_rules(env: Environment) -> str:
    lines = ["## jafar: audit Docker, its socket and the deploy path (inv host.harden)",
             "-c"]  # continue past a path this distribution does not have
    lines += [f"-w {p} -p rwxa -k docker" for p in DOCKER_WATCHES]
    lines.append(f"-w {env.deploy_path} -p wa -k jafar-deploy")
    return "\n".join(lines) + "\n"


def plan_harden(env: Environment, host: Host) -> list[str]:
    return [f"$ {become(cmd.script(sshd_script(env)))}",
            f"then NEW connections as {env.host_setup.deploy_user} and "
            f"{env.host_setup.admin_user}@{host.ssh.address}; if one fails: "
            f"$ {become(restore_sshd_script())}",
            f"$ {become(harden_script(env, host))}",
            "then NEW connections as both again; if one fails: $ sudo -n ufw --force disable",
            "then the AIDE baseline (again when anything above changed): "
            f"$ {become(baseline.aide_baseline(force=False))}"]


def can_log_in(env: Environment, host: Host, attempts: int = 5) -> str | None:
    """None when brand-new connections as the deploy user AND as the admin user work, else
    why not. sshd re-execs on reload, so a refused or reset connection is tried again
    (bounded); a refused login is final."""
    deploy = replace(host, ssh=replace(host.ssh, user=env.host_setup.deploy_user),
                     become=False)
    for target in (deploy, admin_host(env, host)):
        why = new_login(env, target, attempts)
        if why is not None:
            return f"as {target.ssh.user}: {why}"
    return None


def new_login(env: Environment, target: Host, attempts: int) -> str | None:
    for attempt in range(attempts):
        try:
            conn = open_connection(env, target)
            break
        except StepFailed as exc:
            transient = any(t in str(exc) for t in ("banner", "reset", "refused", "reach",
                                                    "did not answer"))
            if not transient or attempt == attempts - 1:
                return str(exc)
            time.sleep(1)
    try:
        result = conn.run("true", hide=True, warn=True, timeout=env.connect_timeout)
        return None if result.exited == 0 else f"`true` exited {result.exited}"
    finally:
        conn.close()


def apply_harden(env: Environment, host: Host, remote: Remote) -> Outcome:
    done = changes(remote.run(cmd.script(sshd_script(env))).stdout)
    if done:
        why = can_log_in(env, host)
        if why is not None:
            remote.run(restore_sshd_script())
            raise StepFailed(f"{host.name}: after the sshd change a new connection failed "
                             f"({why}); restored the previous sshd config and reloaded: the "
                             "host stays reachable")
    try:
        firewall = changes(remote.run(harden_script(env, host), timeout=1200).stdout)
    except StepFailed as exc:  # the script kept SSH allowed; prove it, or open the door
        if can_log_in(env, host) is not None:
            remote.run("ufw --force disable")
            raise StepFailed(f"{exc}\n  and a new login failed afterwards: disabled ufw "
                             "(check host.ssh_cidr)") from None
        raise
    if firewall:
        why = can_log_in(env, host)
        if why is not None:
            remote.run("ufw --force disable")
            raise StepFailed(f"{host.name}: after the firewall change a new connection "
                             f"failed ({why}); disabled ufw: check host.ssh_cidr")
    done += firewall
    # the file-integrity baseline is the hardened state: retaken whenever harden changed it
    done += changes(remote.run(cmd.script(baseline.aide_baseline(force=bool(done))),
                               timeout=1200).stdout)
    if not done:
        return Outcome(False, "nothing to do: sshd, banner, fail2ban, sysctl, firewall, "
                              "accounts and PAM, core dumps, packages, AIDE"
                              f"{'' if env.host_setup.shared_kernel else ', modules, acct, auditd'}"
                              " already hardened")
    return Outcome(True, "; ".join(done))


HOST_PREPARE = Step("host.prepare", ("data", "core"),
                    "Docker Engine + Compose, deploy user, daemon settings, security upgrades",
                    plan_prepare, apply_prepare, admin=True, parallel=True)
HOST_HARDEN = Step("host.harden", ("data", "core"),
                   "sshd (validated, lockout-safe), fail2ban, ufw + DOCKER-USER, sysctl, auditd, "
                   "CIS baseline (accounts, PAM, core dumps, packages, AIDE)",
                   plan_harden, apply_harden, admin=True, parallel=True)

