"""The audit trail on a host: append one signed record through the narrow sudo helper, read."""

from __future__ import annotations

import shlex

LOG = "/var/log/jafar/audit.log"
HELPER = "/usr/local/sbin/jafar-audit-append"


def append() -> str:
    """Append the record given on stdin (the helper checks that it chains to the last line)."""
    return shlex.join(["sudo", "-n", HELPER])


def append_then(command: str) -> str:
    """Append (stdin), then run `command` whatever the append did; exit with the append's
    status. How a mutating task ends: record, then release the lock, in one round trip."""
    return f"{append()}; rc=$?; {command}; exit $rc"


def read() -> str:
    """The whole trail, or nothing when the host has none yet."""
    return f"cat {shlex.quote(LOG)} 2>/dev/null || true"


def sudoers(deploy_user: str) -> str:
    """The one command the deploy user may run as root."""
    return f"{deploy_user} ALL=(root) NOPASSWD: {HELPER}\n"


def prepare_trail(deploy_user: str) -> str:
    """Create the trail root-owned, readable by the deploy group, append-only where possible."""
    log = shlex.quote(LOG)
    group = shlex.quote(deploy_user)
    return "\n".join([
        f"if [ ! -f {log} ] || [ \"$(stat -c '%U:%G %a' {log})\" != root:{deploy_user}' 640' ]; "
        "then",
        f"  install -d -m 0750 -o root -g {group} /var/log/jafar",
        f"  touch {log} && chown root:{group} {log} && chmod 0640 {log}",
        f"  echo {shlex.quote('CHANGED audit trail ' + LOG)}",
        "fi",
        f"if ! lsattr {log} 2>/dev/null | cut -d' ' -f1 | grep -q a; then",
        f"  chattr +a {log} 2>/dev/null && echo 'CHANGED audit trail append-only (chattr +a)' "
        "|| true",
        "fi",
    ])
