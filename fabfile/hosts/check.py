"""host.check: read-only audit of every control that host.prepare and host.harden set.

One remote command gathers the facts (sshd -T, fail2ban, ufw, DOCKER-USER, listeners, Docker
daemon, sysctl, apt, the CIS baseline's: files, login.defs, packages, services, PAM, accounts,
homes, the last AIDE check; and the running containers' settings); pure functions compare them
with what the config wants. Each control is PASS or FAIL with what was expected and what was found.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
from collections.abc import Callable
from dataclasses import asdict, dataclass

from fabfile.commands import sections as sections_cmd
from fabfile.config import USERNS_USER, Environment, Host
from fabfile.flow import columns
from fabfile.hosts import HARDENING, baseline, containers
from fabfile.hosts.setup import DOCKER_POOLS, DOCKER_WATCHES, sshd_config, ufw_rules
from fabfile.monitor import cluster

SECTIONS = ("sshd", "fail2ban", "ufw", "ufw-added", "docker-user", "listen", "daemon", "sysctl",
            "apt", "kernel", "baseline", "jail-conf", "containers")


@dataclass
class Control:
    host: str
    control: str
    expected: str
    actual: str
    ok: bool


def wanted_sysctls(env: Environment) -> dict[str, str]:
    files = ["sysctl.conf"] + ([] if env.host_setup.shared_kernel else ["sysctl-kernel.conf"])
    wanted = {}
    for name in files:
        for line in (HARDENING / name).read_text().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                key, value = (p.strip() for p in line.split("=", 1))
                wanted[key] = value
    return wanted


def wanted_sshd(env: Environment) -> dict[str, str]:
    """sshd -T prints lowercase keywords; lists stay as written."""
    wanted = {}
    for line in sshd_config(env).splitlines():
        if line.strip() and not line.startswith("#"):
            key, value = line.split(None, 1)
            wanted.setdefault(key.lower(), value.strip())
    # sshd -T spells these differently from sshd_config
    wanted.pop("authenticationmethods", None)
    return wanted


def probe(env: Environment) -> str:
    keys = " ".join(shlex.quote(k) for k in wanted_sysctls(env))
    sections = {
        "sshd": "sshd -T 2>&1",
        "fail2ban": "fail2ban-client status sshd 2>&1; echo rc=$?",
        # the package's jail.conf as shipped: our settings live in jail.d only
        "jail-conf": "dpkg --verify fail2ban 2>&1 | grep -F /etc/fail2ban/jail.conf "
                     "|| echo unchanged",
        "ufw": "ufw status verbose 2>&1",
        "ufw-added": "ufw show added 2>&1 | sed 1d",
        "docker-user": "iptables -S DOCKER-USER 2>&1",
        "listen": "ss -Hltn 2>&1",
        "daemon": "cat /etc/docker/daemon.json 2>&1; echo; "
                  "docker info --format 'live-restore={{.LiveRestoreEnabled}} "
                  "logging={{.LoggingDriver}} security={{json .SecurityOptions}}' 2>&1",
        "sysctl": f"for k in {keys}; do printf '%s = %s\\n' \"$k\" \"$(sysctl -n \"$k\" "
                  "2>&1)\"; done",
        "apt": "apt-config dump APT::Periodic 2>&1; dpkg-query -W -f='${Status}\\n' "
               "unattended-upgrades 2>&1",
    }
    sections["baseline"] = baseline.probe(env)
    sections["containers"] = containers.probe()
    if not env.host_setup.shared_kernel:
        present = " ".join(DOCKER_WATCHES)
        sections["kernel"] = ("echo chrony=$(systemctl is-active chrony 2>&1); "
                              "echo audit-rules=$(auditctl -l 2>/dev/null | grep -c 'key=docker'); "
                              f"n=0; for p in {present}; do [ -e \"$p\" ] && n=$((n+1)); done; "
                              "echo audit-paths=$n")
    return sections_cmd.script(sections)


def allowed_ports(env: Environment, host: Host) -> set[int]:
    ports = {22}
    if host.has("core"):
        ports |= {80, 443}
    if host.has("data") and env.topology == "split":
        ports |= {27017, 27018, 27019, 6379, 5432}
    return ports


def bridge_only(address: str, port: int) -> bool:
    """node_exporter, bound to the Docker bridge's address (reached by containers only)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return port == baseline.NODE_EXPORTER_PORT and any(
        ip in ipaddress.ip_network(pool) for pool in DOCKER_POOLS)


def public_listeners(ss_output: str) -> list[tuple[str, int]]:
    """(address, port) of TCP listeners not bound to loopback."""
    found = []
    for line in ss_output.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        address, _, port = fields[3].rpartition(":")
        address = address.strip("[]").split("%")[0]
        if address in ("*", "0.0.0.0", "::"):
            found.append((address, int(port)))
            continue
        try:
            if not ipaddress.ip_address(address).is_loopback:
                found.append((address, int(port)))
        except ValueError:
            continue
    return found


def evaluate(env: Environment, host: Host, output: str) -> list[Control]:
    s = sections_cmd.split(output, SECTIONS)
    out: list[Control] = []

    def add(control: str, expected: str, actual: str, ok: bool) -> None:
        out.append(Control(host.name, control, expected, actual, ok))

    sshd: dict[str, str] = {}
    for line in s.get("sshd", "").splitlines():
        if " " in line:
            k, v = line.split(" ", 1)
            # sshd -T prints one line per allowed user: gather them
            sshd[k] = f"{sshd[k]} {v}" if k == "allowusers" and k in sshd else v
    for key, value in wanted_sshd(env).items():
        actual = sshd.get(key, "missing")
        ok = (sorted(actual.split()) == sorted(value.split()) if key == "allowusers"
              else actual.lower() == value.lower())
        add(f"sshd {key}", value, actual, ok)
    f2b = s.get("fail2ban", "")
    add("fail2ban sshd jail active", "jail running", "rc=0" if "rc=0" in f2b else
        (f2b.strip().splitlines() or ["no output"])[0], "rc=0" in f2b)
    jail_conf = s.get("jail-conf", "").strip() or "no output"
    add("fail2ban jail.conf as shipped (settings in jail.d)", "unchanged", jail_conf[:60],
        jail_conf == "unchanged")
    ufw = s.get("ufw", "")
    add("ufw active", "Status: active", (ufw.splitlines() or ["none"])[0],
        "Status: active" in ufw)
    add("ufw default policy", "deny (incoming), allow (outgoing)",
        next((ln.split(": ", 1)[1] for ln in ufw.splitlines() if ln.startswith("Default:")),
             "none"), "Default: deny (incoming), allow (outgoing)" in ufw)
    added = {ln.strip() for ln in s.get("ufw-added", "").splitlines() if ln.strip()}
    wanted = {f"ufw {r}" for r in ufw_rules(env, host)}
    add("ufw rules", "; ".join(sorted(wanted)), "; ".join(sorted(added)) or "none",
        added == wanted)
    docker_user = s.get("docker-user", "")
    add("DOCKER-USER filters published ports", "-A DOCKER-USER -j DROP",
        "present" if "-A DOCKER-USER -j DROP" in docker_user else "missing",
        "-A DOCKER-USER -j DROP" in docker_user)
    listeners = public_listeners(s.get("listen", ""))
    allowed = allowed_ports(env, host)
    scraped = {(a, int(p)) for a, _, p in
               (x.rpartition(":") for x in baseline.node_listen(env, host))}
    if host.has("core") and cluster.clustered(env):  # Alertmanager's gossip, private only
        scraped.add((cluster.address(host), cluster.CLUSTER_PORT))
    extra = sorted({f"{a}:{p}" for a, p in listeners if p not in allowed
                    and not bridge_only(a, p) and (a, p) not in scraped})
    add("only expected ports listen publicly", ",".join(map(str, sorted(allowed))),
        ", ".join(extra) or "ok", not extra)
    daemon = s.get("daemon", "")
    for needle, label in (('"live-restore": true', "live-restore"),
                          ('"userland-proxy": false', "userland-proxy off"),
                          ('"icc": false', "no inter-container traffic on the default bridge"),
                          ('"no-new-privileges": true', "no-new-privileges by default"),
                          ('"Name": "core"', "no core dumps in containers"),
                          ('"max-size": "10m"', "log rotation"),
                          ("live-restore=true", "live-restore in effect"),
                          ("logging=json-file", "json-file logging in effect")):
        add(f"docker {label}", needle, "yes" if needle in daemon else "no", needle in daemon)
    if env.host_setup.userns_remap:
        needle = f'"userns-remap": "{USERNS_USER}"'
        running = "name=userns" in daemon  # docker info's security options once in effect
        add("docker userns-remap (container root unprivileged on the host)",
            f"{needle}, in effect", "yes" if needle in daemon and running else
            ("configured, not in effect (restart docker)" if needle in daemon else "no"),
            needle in daemon and running)
    got = {}
    for line in s.get("sysctl", "").splitlines():
        if " = " in line:
            k, v = line.split(" = ", 1)
            got[k] = v.strip()
    for key, value in wanted_sysctls(env).items():
        actual = got.get(key, "missing")
        add(f"sysctl {key}", value, actual, actual == value)
    apt = s.get("apt", "")
    on = 'APT::Periodic::Unattended-Upgrade "1";' in apt and "install ok installed" in apt
    add("unattended upgrades", 'Unattended-Upgrade "1" + package', "on" if on else "off", on)
    if not env.host_setup.shared_kernel:
        kernel = dict(line.split("=", 1) for line in s.get("kernel", "").splitlines()
                      if "=" in line)
        add("time sync (chrony)", "active", kernel.get("chrony", "missing"),
            kernel.get("chrony") == "active")
        rules, paths = kernel.get("audit-rules", "0"), kernel.get("audit-paths", "?")
        # one loaded watch per watched path this host has (auditctl skips the others)
        loaded = rules.isdigit() and paths.isdigit() and int(rules) >= int(paths) > 0
        add("auditd watches Docker's files (CIS Docker 1.1)", f">= {paths} (its paths here)",
            rules, loaded)
    baseline.evaluate(env, s.get("baseline", ""), add)
    containers.evaluate(s.get("containers", ""), add)
    return out


def table(controls: list[Control], mask: Callable[[str], str] = str) -> list[str]:
    """Masked before it is cut: a cut secret would no longer be recognised."""
    heads = ("HOST", "CONTROL", "RESULT", "EXPECTED", "ACTUAL")
    rows = [(c.host, c.control, "PASS" if c.ok else "FAIL", mask(c.expected)[:60],
             mask(c.actual)[:60]) for c in controls]
    return columns(heads, rows)


def as_json(controls: list[Control]) -> str:
    return json.dumps({"passed": all(c.ok for c in controls),
                       "controls": [asdict(c) for c in controls]}, indent=2)

