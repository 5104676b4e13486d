"""The audit namespace: read the signed trail, verify it, print the signers for an auditor."""

from __future__ import annotations

import json as jsonlib
import re
import tempfile
import time
from pathlib import Path

from invoke import Collection, Context, task
from invoke.exceptions import Exit

from fabfile.commands import audit as audit_cmd
from fabfile.errors import BadInput
from fabfile.flow import columns
from fabfile.ops import audit
from fabfile.ops.identity import allowed_signers
from fabfile.tasks.common import (
    HOST_HELP,
    JSON_HELP,
    READ_TIMEOUT,
    TIMEOUT_HELP,
    Session,
    handled,
)

SINCE = re.compile(r"([1-9][0-9]{0,4})([mhd])")
UNIT = {"m": 60, "h": 3600, "d": 86400}


def cutoff(since: str | None, now: float) -> str | None:
    """`7d` -> the UTC time 7 days ago, as records write it (they sort as text)."""
    if since is None:
        return None
    match = SINCE.fullmatch(since)
    if not match:
        raise BadInput(f"--since {since[:40]!r} is not a duration like 30m, 12h or 7d")
    seconds = int(match[1]) * UNIT[match[2]]
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - seconds))


def trails(session: Session) -> list[tuple[str, list[str]]]:
    return session.gather(lambda h, pool: [(h.name, [
        line for line in pool.get(h).run(audit_cmd.read()).stdout.splitlines() if line])])


@task(name="show", auto_shortflags=False, help={
    "host": HOST_HELP, "json": JSON_HELP, "since": "only records newer than this: 30m, 12h, 7d",
    "timeout": TIMEOUT_HELP})
@handled
def audit_show(c: Context, host: str | None = None, since: str | None = None,
               json: bool = False, timeout: int = READ_TIMEOUT) -> None:
    """The audit trail of every host: when, who, what, with which result (newest last)."""
    start = cutoff(since, time.time())
    session = Session(c, host, timeout=timeout)
    records = []
    for _, lines in trails(session):
        for line in lines:
            parsed = audit.parse(line)
            if parsed and (start is None or str(parsed[0].get("time", "")) >= start):
                records.append(parsed[0])
    records.sort(key=lambda r: (str(r.get("time")), str(r.get("host"))))
    if json:
        print(session.masker(jsonlib.dumps(records, indent=2)))
        return
    rows = []
    for r in records:
        who = r.get("who") if isinstance(r.get("who"), dict) else {}
        steps = r.get("steps") if isinstance(r.get("steps"), list) else []
        detail = "; ".join(f"{s.get('step')} {s.get('result')}" for s in steps
                           if isinstance(s, dict))
        rows.append((str(r.get("time")), str(r.get("host")), str(r.get("seq")),
                     str(who.get("person")), str(r.get("task")), str(r.get("result")), detail))
    print(session.masker("\n".join(columns(
        ("TIME", "HOST", "SEQ", "WHO", "TASK", "RESULT", "STEPS"), rows))))


@task(name="verify", auto_shortflags=False, help={"host": HOST_HELP, "timeout": TIMEOUT_HELP})
@handled
def audit_verify(c: Context, host: str | None = None, timeout: int = READ_TIMEOUT) -> None:
    """Check every record's signature (OpenSSH, against the operators' keys), the hash chain
    and that this machine's last record per host is still there; name the first bad one."""
    session = Session(c, host, timeout=timeout)
    env = session.env
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        signers = Path(tmp) / "allowed_signers"
        signers.write_text(allowed_signers(env))
        for name, lines in trails(session):
            found = audit.verify(name, lines, signers, audit.local_head(env.name, name))
            problems += found
            print(f"{name}: " + (found[0].removeprefix(f"{name}: ") if found else
                                 f"{len(lines)} records: signatures, chain and tail intact"))
    if problems:
        raise Exit(f"audit trail check failed: {problems[0]}", code=1)


@task(name="signers", auto_shortflags=False, help={"host": HOST_HELP})
@handled
def audit_signers(c: Context, host: str | None = None) -> None:
    """Print the allowed_signers file an auditor verifies the trail with (ssh-keygen -Y)."""
    print(allowed_signers(Session(c, host, connects=False).env), end="")


namespace = Collection("audit", audit_show, audit_verify, audit_signers)
