"""The lock on a host: an atomic `mkdir` under the deploy path's state/, with who holds it.

`state/locks/<name>/` holds `holder.json` (who, where, which command, since when), `renewed`
(the host's clock, seconds, rewritten at every step) and `token` (this run's random token: only
the run that took the lock renews or releases it). The directory and its files are writable by
root and the deploy user alike (the deploy path itself is 0750): a run that starts with the
host steps takes the lock as root and finishes as the deploy user.
"""

from __future__ import annotations

import shlex

from fabfile.commands.audit import LOG as AUDIT_LOG


def lock_dir(deploy_path: str, name: str) -> str:
    return f"{deploy_path}/state/locks/{name}"


def acquire(deploy_path: str, name: str, token: str) -> str:
    """Take the lock (holder.json on stdin) or report who holds it. Prints
    `ACQUIRED <now>` or `HELD <now> <renewed>` then the holder's JSON; and in both cases the
    audit trail's tail: `AUDIT <sha256 of the last record line or -> <records>`.

    The lock directory is filled under a temporary name, then renamed into place: rename(2)
    onto an existing (non-empty) lock fails, so exactly one run wins and a reader never sees
    a lock without its holder."""
    d = shlex.quote(lock_dir(deploy_path, name))
    new = shlex.quote(f"{deploy_path}/state/locks/.{name}.{token}")
    state = shlex.quote(f"{deploy_path}/state")
    return "\n".join([
        "set -eu",
        "now=$(date +%s)",
        f"mkdir -p {state}/locks",
        # created as root on a fresh host: give them to whoever owns the deploy path
        f"chown --reference={shlex.quote(deploy_path)} {state} {state}/locks 2>/dev/null || true",
        f"mkdir {new}",
        f"printf '%s\\n' \"$now\" > {new}/renewed",
        f"printf '%s\\n' {shlex.quote(token)} > {new}/token",
        f"cat > {new}/holder.json",
        f"chmod 0777 {new} && chmod 0666 {new}/holder.json {new}/token {new}/renewed",
        f"if mv -T {new} {d} 2>/dev/null; then",
        '  echo "ACQUIRED $now"',
        "else",
        f"  rm -rf {new}",
        f'  echo "HELD $now $(cat {d}/renewed 2>/dev/null || echo 0)"',
        f"  cat {d}/holder.json 2>/dev/null || true",
        "  echo",
        "fi",
        audit_tail(),
    ])


def audit_tail() -> str:
    """`AUDIT <sha256 of the last line> <count>` of the host's trail (`AUDIT - 0` when empty)."""
    log = shlex.quote(AUDIT_LOG)
    return (f"if [ -s {log} ]; then echo \"AUDIT $(tail -n 1 {log} | sha256sum | cut -d' ' -f1)"
            f" $(wc -l < {log})\"; else echo 'AUDIT - 0'; fi")


def renew(deploy_path: str, name: str, token: str) -> str:
    """A prologue for the next command of a step: rewrite `renewed` if the lock is still ours.
    Never fails the command it precedes."""
    d = shlex.quote(lock_dir(deploy_path, name))
    return (f"{{ [ \"$(cat {d}/token 2>/dev/null)\" = {shlex.quote(token)} ] && "
            f"date +%s > {d}/renewed; }} 2>/dev/null || true; ")


def release(deploy_path: str, name: str, token: str) -> str:
    """Remove the lock if it is still ours; says RELEASED or NOT-OURS."""
    d = shlex.quote(lock_dir(deploy_path, name))
    return (f"if [ \"$(cat {d}/token 2>/dev/null)\" = {shlex.quote(token)} ]; then "
            f"rm -rf {d} && echo RELEASED; else echo NOT-OURS; fi")


def status(deploy_path: str, name: str) -> str:
    """`FREE <now>` or `HELD <now> <renewed>` and the holder's JSON; then the audit tail."""
    d = shlex.quote(lock_dir(deploy_path, name))
    return (f"now=$(date +%s); if [ -d {d} ]; then "
            f"echo \"HELD $now $(cat {d}/renewed 2>/dev/null || echo 0)\"; "
            f"cat {d}/holder.json 2>/dev/null || true; echo; else echo \"FREE $now\"; fi; "
            + audit_tail())


def force_release(deploy_path: str, name: str) -> str:
    """`inv lock.release`: remove whatever lock is there (after the operator confirmed)."""
    d = shlex.quote(lock_dir(deploy_path, name))
    return f"if [ -d {d} ]; then rm -rf {d} && echo RELEASED; else echo FREE; fi"
