"""The CIS baseline that host.harden adds to sshd, fail2ban, the firewall and sysctls.

Accounts and PAM (login.defs, password quality, per-user temp dirs, homes 0750), core dumps
off, unused kernel modules blacklisted, package hygiene, process accounting, sysstat, a file
integrity baseline (AIDE) with a daily check reported through node_exporter, and the legal
banner. Everything is data here (files, settings, packages); `script` turns it into check-then-
act shell and `facts`/`evaluate` let host.check report each control.

Kernel-level controls (modules, fs.suid_dumpable via sysctl-kernel.conf, process accounting
and auditd) are applied only where the kernel is the host's own (`shared_kernel: false`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from fabfile.commands import host as cmd
from fabfile.config import Environment, Host
from fabfile.hosts import HARDENING, logforward

LOGIN_DEFS = "/etc/login.defs"
# New files private to their group (027); SHA-512 with explicit rounds for tools that hash
# through login.defs (chpasswd, newusers); ageing defaults for new accounts; homes 0750.
LOGIN_SETTINGS = {"UMASK": "027", "HOME_MODE": "0750", "ENCRYPT_METHOD": "SHA512",
                  "SHA_CRYPT_MIN_ROUNDS": "65536", "SHA_CRYPT_MAX_ROUNDS": "65536",
                  "PASS_MAX_DAYS": "365", "PASS_MIN_DAYS": "1", "PASS_WARN_AGE": "14"}
AGEING = {"min": "1", "max": "365", "warn": "14"}
PACKAGES = ["libpam-pwquality", "libpam-tmpdir", "needrestart", "debsums", "apt-show-versions",
            "apt-listchanges", "sysstat", "aide", "prometheus-node-exporter"]
KERNEL_PACKAGES = ["acct"]
MODULES = ("dccp", "sctp", "rds", "tipc", "usb-storage", "firewire-core")
AIDE_CONF = "/etc/aide/jafar-aide.conf"
AIDE_DB = "/var/lib/aide/jafar.db"
AIDE_CHECK = "/usr/local/sbin/jafar-aide-check"
AIDE_TIMER = "jafar-aide-check.timer"
TLS_EXPIRY = "/usr/local/sbin/jafar-tls-expiry"
TLS_EXPIRY_TIMER = "jafar-tls-expiry.timer"
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
NODE_EXPORTER = "prometheus-node-exporter"
NODE_EXPORTER_PORT = 9100
NODE_LISTEN = "/etc/jafar/node-exporter.listen"  # addresses besides the Docker bridge's
# the private address' port: not 9100, which ufw opens to Docker's address pools (for the
# bridge's listener), and a VPC may be numbered from those pools too
NODE_PRIVATE_PORT = 9101
PAM_MODULES = ("pam_umask", "pam_pwquality", "pam_tmpdir")  # in the common-* stacks


@dataclass(frozen=True)
class File:
    path: str
    source: str = ""     # file name under config/hardening/ ...
    mode: str = "0644"
    on_change: str = ""
    text: str = ""       # ... or the content itself (made from the environment)

    def content(self) -> str:
        return self.text or (HARDENING / self.source).read_text()


BANNER = (File("/etc/issue", "banner.txt"), File("/etc/issue.net", "banner.txt"))
RELOAD_UNITS = "systemctl daemon-reload"
FILES = (
    # Debian's common-session has no pam_umask (Ubuntu's has): without it login.defs' UMASK
    # would not reach SSH sessions
    File("/usr/share/pam-configs/jafar-umask", "pam-umask.profile",
         on_change="DEBIAN_FRONTEND=noninteractive pam-auth-update --package"),
    File("/etc/security/pwquality.conf.d/10-jafar.conf", "pwquality.conf"),
    File("/etc/security/limits.d/10-jafar-coredump.conf", "limits-coredump.conf"),
    File("/etc/systemd/coredump.conf.d/10-jafar.conf", "coredump.conf"),
    File("/etc/needrestart/conf.d/10-jafar.conf", "needrestart.conf"),
    File(AIDE_CONF, "aide.conf", "0600"),
    File(AIDE_CHECK, "jafar-aide-check", "0755"),
    File("/etc/systemd/system/jafar-aide-check.service", "jafar-aide-check.service",
         on_change=RELOAD_UNITS),
    File("/etc/systemd/system/jafar-aide-check.timer", "jafar-aide-check.timer",
         on_change=RELOAD_UNITS),
    # node_exporter on the Docker bridge's address only (Prometheus, a container, reaches it
    # as host.docker.internal); its textfile collector reads the AIDE result
    File("/etc/default/prometheus-node-exporter", "node-exporter.default",
         on_change=f"systemctl restart {NODE_EXPORTER}"),
    File("/usr/local/sbin/jafar-node-exporter", "jafar-node-exporter", "0755",
         on_change=f"systemctl restart {NODE_EXPORTER}"),
    File(f"/etc/systemd/system/{NODE_EXPORTER}.service.d/10-jafar.conf",
         "node-exporter.service.conf",
         on_change=f"systemctl daemon-reload && systemctl restart {NODE_EXPORTER}"),
)
KERNEL_FILES = (File("/etc/modprobe.d/jafar-blacklist.conf", "modprobe-blacklist.conf"),)


def forward_files(env: Environment) -> tuple[File, ...]:
    forward = env.host_setup.log_forward
    if forward is None:
        return ()
    restart = "systemctl restart rsyslog"
    found = (File(logforward.CA, text=forward.ca.read_text(), on_change=restart),
             File(logforward.CONF, text=logforward.rsyslog_conf(forward), on_change=restart))
    if not env.host_setup.shared_kernel:
        found += (File(logforward.AUDIT_PLUGIN, text=logforward.AUDIT_PLUGIN_CONF, mode="0640",
                       on_change="service auditd restart"),)
    return found


def node_listen(env: Environment, host: Host) -> tuple[str, ...]:
    """Where node_exporter listens besides the Docker bridge's address (address:port): in the
    split topology the host's private address (the core hosts' Prometheus scrapes it there)."""
    if env.topology == "split" and host.private_address:
        return (f"{host.private_address}:{NODE_PRIVATE_PORT}",)
    return ()


def tls_expiry_files(env: Environment) -> tuple[File, ...]:
    """The hourly read of the certificates' notAfter (the CertificateExpiring alerts): the
    unit names the deploy path's secrets/, where env.sync puts them."""
    unit = ("# jafar: when the stacks' TLS certificates expire (see "
            f"{TLS_EXPIRY}). Installed by `inv host.harden`.\n"
            "[Unit]\nDescription=jafar TLS certificate expiry check\n\n"
            "[Service]\nType=oneshot\n"
            f"ExecStart={TLS_EXPIRY} {env.deploy_path}/secrets\nNice=19\n")
    return (File(TLS_EXPIRY, "jafar-tls-expiry", "0755"),
            File("/etc/systemd/system/jafar-tls-expiry.service", text=unit,
                 on_change=RELOAD_UNITS),
            File(f"/etc/systemd/system/{TLS_EXPIRY_TIMER}", "jafar-tls-expiry.timer",
                 on_change=RELOAD_UNITS))


def files(env: Environment) -> tuple[File, ...]:
    return (FILES + tls_expiry_files(env)
            + (KERNEL_FILES if not env.host_setup.shared_kernel else ())
            + forward_files(env))


def packages(env: Environment) -> list[str]:
    kernel = not env.host_setup.shared_kernel
    forward = env.host_setup.log_forward is not None
    return (PACKAGES + (KERNEL_PACKAGES if kernel else [])
            + (logforward.PACKAGES if forward else [])
            + (logforward.AUDIT_PACKAGES if forward and kernel else []))


def services(env: Environment) -> list[str]:
    return (["sysstat", NODE_EXPORTER, AIDE_TIMER, TLS_EXPIRY_TIMER]
            + ([] if env.host_setup.shared_kernel else ["acct"])
            + (["rsyslog"] if env.host_setup.log_forward else []))


def ageing_script(env: Environment) -> str:
    """Password ageing for local accounts that have a usable password (a hash in
    /etc/shadow). Key-only accounts are left alone, the suite's two users always: an expired
    password makes PAM refuse even a key login."""
    a = AGEING
    return "\n".join([
        with_password(env, f"$4 != {a['min']} || $5 != {a['max']} || $6 != {a['warn']}",
                      "print $1") + " |",
        "while read -r user; do",
        f"  chage --mindays {a['min']} --maxdays {a['max']} --warndays {a['warn']} \"$user\"",
        '  echo "CHANGED password ageing for $user"',
        "done",
    ])


def with_password(env: Environment, condition: str, action: str) -> str:
    """awk over /etc/shadow: ACTION for each account with a password hash that meets
    CONDITION, never the suite's own deploy and admin users."""
    setup = env.host_setup
    return (f"awk -F: -v skip=' {setup.deploy_user} {setup.admin_user} ' "
            f"'$2 ~ /^\\$/ && index(skip, \" \" $1 \" \") == 0 && ({condition}) "
            f"{{{action}}}' /etc/shadow")


def homes_script() -> str:
    """Home folders of login users (uid 1000 and up) 0750 at most: no other user reads them."""
    return "\n".join([
        "awk -F: '$3 >= 1000 && $3 < 65534 {print $6}' /etc/passwd | sort -u |",
        "while read -r home; do",
        '  case "$home" in /home/*) ;; *) continue ;; esac',
        '  [ -d "$home" ] || continue',
        '  if [ $(( 0$(stat -c %a "$home") & 027 )) -ne 0 ]; then',
        '    chmod g-w,o-rwx "$home" && echo "CHANGED $home mode $(stat -c %a "$home")"',
        "  fi",
        "done",
    ])


def aide_baseline(force: bool) -> str:
    """Take the AIDE baseline (when there is none, or `force`: after host.harden changed the
    host, whose new state is the reviewed one), then run the check once so node_exporter has a
    result from the start."""
    cond = "true" if force else f"[ ! -s {AIDE_DB} ]"
    return "\n".join([
        f"if {cond}; then",
        f"  install -d -m 0700 {AIDE_DB.rsplit('/', 1)[0]}",
        f"  aide --config {AIDE_CONF} --init >/dev/null",
        f"  mv -f {AIDE_DB}.new {AIDE_DB}",
        f"  {AIDE_CHECK} >/dev/null",
        "  echo 'CHANGED AIDE baseline taken'",
        "fi",
    ])


def script(env: Environment) -> str:
    """Everything but the banner (part of the sshd change) and the AIDE baseline (last)."""
    parts = [cmd.ensure_packages(packages(env))]
    parts += [cmd.ensure_setting(LOGIN_DEFS, k, v) for k, v in LOGIN_SETTINGS.items()]
    parts += [ageing_script(env), homes_script()]
    parts += [cmd.ensure_file(f.path, f.content(), f.mode, on_change=f.on_change)
              for f in files(env)]
    if env.host_setup.log_forward is None:  # forwarding switched off: ours goes
        parts.append(f"if [ -e {logforward.CONF} ]; then rm -f {logforward.CONF}; "
                     "systemctl restart rsyslog; "
                     f"echo 'CHANGED {logforward.CONF} removed (no host.log_forward)'; fi")
    parts.append(cmd.ensure_setting("/etc/default/sysstat", "ENABLED", '"true"', "="))
    # Debian's own daily AIDE run checks the whole disk with its own database: ours replaces it
    parts.append("if systemctl is-enabled --quiet dailyaidecheck.timer 2>/dev/null; then "
                 "systemctl disable --now --quiet dailyaidecheck.timer; "
                 "echo 'CHANGED dailyaidecheck.timer disabled (jafar-aide-check replaces it)'; fi")
    parts += [cmd.ensure_service(s) for s in services(env)]
    return "\n".join(parts)


def banner_script() -> str:
    return "\n".join(cmd.ensure_file(f.path, f.content()) for f in BANNER)


# --- host.check -----------------------------------------------------------------------------

def probe(env: Environment) -> str:
    """Facts for the controls, one line each: `file PATH SHA256 MODE`, `set KEY VALUE`,
    `pkg NAME STATUS`, `svc NAME STATE`, `pam MODULE COUNT`, `aged USER MIN MAX WARN`,
    `home PATH MODE`, `aide OK` (1: the last daily check found every file as baselined)."""
    paths = " ".join(f.path for f in files(env) + BANNER)
    keys = " ".join(LOGIN_SETTINGS)
    return "\n".join([
        f"for f in {paths}; do if [ -f \"$f\" ]; then echo \"file $f $(sha256sum < \"$f\" | "
        "cut -d' ' -f1) $(stat -c %a \"$f\")\"; else echo \"file $f none none\"; fi; done",
        f"for k in {keys}; do echo \"set $k $(sed -n -E \"s/^[[:space:]]*$k[[:space:]]+//p\" "
        f"{LOGIN_DEFS} | sed -E 's/[[:space:]]+$//' | tail -n 1)\"; done",
        f"for p in {' '.join(packages(env))}; do echo \"pkg $p $(dpkg-query -W "
        "-f='${Status}' \"$p\" 2>/dev/null | tr ' ' _)\"; done",
        f"for s in {' '.join(services(env))}; do echo \"svc $s $(systemctl is-active \"$s\" "
        "2>&1)\"; done",
        with_password(env, "1", 'print "aged", $1, $4, $5, $6'),
        "awk -F: '$3 >= 1000 && $3 < 65534 {print $6}' /etc/passwd | sort -u | while read -r h;"
        " do case \"$h\" in /home/*) [ -d \"$h\" ] && echo \"home $h $(stat -c %a \"$h\")\";; "
        "esac; done",
        f"for m in {' '.join(PAM_MODULES)}; do echo \"pam $m $(cat /etc/pam.d/common-session "
        "/etc/pam.d/common-password 2>/dev/null | grep -cw \"$m\\.so\")\"; done",
        f"echo \"aide $(sed -n 's/^jafar_aide_check_ok //p' {TEXTFILE_DIR}/jafar_aide.prom "
        "2>/dev/null || true)\"",
    ])


def evaluate(env: Environment, output: str,
             add: Callable[[str, str, str, bool], None]) -> None:
    """One PASS/FAIL line per control, from `probe`'s output."""
    lines = [line.split() for line in output.splitlines() if line.strip()]
    facts: dict[str, dict[str, list[str]]] = {}
    for fields in lines:
        if len(fields) >= 2:
            facts.setdefault(fields[0], {})[fields[1]] = fields[2:]
    for f in files(env) + BANNER:
        want = hashlib.sha256(f.content().encode()).hexdigest()
        have = facts.get("file", {}).get(f.path, ["none", "none"])
        ok = have[:1] == [want] and have[1:2] == [f"{int(f.mode, 8):o}"]
        add(f"file {f.path}", f"as shipped, mode {f.mode}",
            "as shipped" if ok else ("missing" if have[0] == "none" else
                                     f"differs (mode {have[1] if len(have) > 1 else '?'})"), ok)
    for key, value in LOGIN_SETTINGS.items():
        have = " ".join(facts.get("set", {}).get(key, [])) or "unset"
        add(f"login.defs {key}", value, have, have == value)
    for name in packages(env):
        status = (facts.get("pkg", {}).get(name) or ["missing"])[0]
        add(f"package {name}", "installed", status.replace("_", " "),
            status == "install_ok_installed")
    for name in services(env):
        state = (facts.get("svc", {}).get(name) or ["missing"])[0]
        add(f"service {name}", "active", state, state == "active")
    for module in PAM_MODULES:
        count = (facts.get("pam", {}).get(module) or ["0"])[0]
        add(f"PAM {module} in use", "in common-session/password", "yes" if count != "0"
            else "no", count.isdigit() and int(count) > 0)
    want_age = [AGEING["min"], AGEING["max"], AGEING["warn"]]
    for user, have in sorted(facts.get("aged", {}).items()):
        add(f"password ageing {user}", "min 1, max 365, warn 14",
            f"min {have[0]}, max {have[1]}, warn {have[2]}" if len(have) == 3 else "unreadable",
            have == want_age)
    for home, mode in sorted(facts.get("home", {}).items()):
        m = mode[0] if mode else "?"
        ok = m.isdigit() and int(m, 8) & 0o027 == 0
        add(f"home {home}", "0750 or stricter", m, ok)
    result = next((fields[1] for fields in lines if fields[0] == "aide" and len(fields) > 1),
                  "no result")
    add("AIDE: files as baselined (last daily check)", "1", result, result == "1")
