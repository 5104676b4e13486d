"""The signed, tamper-evident audit trail.

One record per host for every mutating task that changed something or failed: one line of
JSON (when, who, the task and its arguments, the environment, the image tag, each step's result,
the SHA-256 of the previous line: a hash chain per host), a TAB, and the base64 of its
signature in OpenSSH's SSHSIG format (`ssh-keygen -Y sign -n jafar-audit`, as git signs
commits), made with the operator's own key. An auditor verifies it with OpenSSH alone against
an allowed_signers file (README). The host keeps it in a root-owned append-only file written
only through a narrow sudo helper; this machine keeps a copy (.audit/<env>.log) so that a
deleted tail on the host is noticed.

Signing and verifying use the real `ssh-keygen` (OpenSSH is the reference implementation of
SSHSIG; no Python library for it is as well kept).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from fabfile import ROOT
from fabfile.commands import audit as audit_cmd
from fabfile.config import Environment
from fabfile.errors import BadInput, StepFailed
from fabfile.ops.identity import NAMESPACE, Operator
from fabfile.ops.lock import ZERO, Tail
from fabfile.remote import Remote

MAX_DETAIL = 300


@dataclass
class Entry:
    """What one step did on one host."""

    step: str
    result: str     # changed, ok, failed
    detail: str


@dataclass
class Trail:
    """The entries of one run, per host, and the run's outcome."""

    task: str
    args: dict[str, object]
    entries: dict[str, list[Entry]] = field(default_factory=dict)
    result: str = "ok"  # ok, failed, interrupted

    def add(self, host: str, step: str, result: str, detail: str) -> None:
        self.entries.setdefault(host, []).append(Entry(step, result, detail[:MAX_DETAIL]))

    def worth_recording(self, host: str) -> bool:
        """Only a run that changed something or failed leaves a record."""
        entries = self.entries.get(host, [])
        return self.result != "ok" or any(e.result != "ok" for e in entries)


def fields(env_name: str, host: str, operator: Operator, trail: Trail, tag: str, seq: int,
           prev: str) -> dict[str, object]:
    return {
        "v": 1,
        "seq": seq,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "env": env_name,
        "host": host,
        "who": {"person": operator.person, "user": operator.user,
                "machine": operator.machine, "key": operator.fingerprint},
        "task": trail.task,
        "args": trail.args,
        "tag": tag,
        "steps": [e.__dict__ for e in trail.entries.get(host, [])],
        "result": trail.result,
        "prev": prev,
    }


def encode(record: dict[str, object]) -> str:
    """Canonical JSON on one line: sorted keys, ASCII only (no TAB or newline can appear)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def sign(payload: str, key: Path) -> str:
    """The SSHSIG signature of `payload` made with `key`, as base64 of the armored text."""
    proc = subprocess.run(["ssh-keygen", "-Y", "sign", "-q", "-f", str(key), "-n", NAMESPACE],
                          input=payload.encode(), capture_output=True, timeout=30, check=False)
    if proc.returncode != 0 or b"BEGIN SSH SIGNATURE" not in proc.stdout:
        raise StepFailed(f"ssh-keygen could not sign the audit record with {key} (exit "
                         f"{proc.returncode})")
    return base64.b64encode(proc.stdout).decode()


def line_hash(line: str) -> str:
    """What the next record's `prev` holds: SHA-256 of the line and its newline."""
    return hashlib.sha256((line + "\n").encode()).hexdigest()


def make_line(record: dict[str, object], key: Path) -> str:
    payload = encode(record)
    return f"{payload}\t{sign(payload, key)}"


def append(env: Environment, host: str, remote: Remote, operator: Operator, trail: Trail,
           tag: str, tail: Tail, then: str) -> None:
    """Sign this run's record for `host`, append it there (then run `then`, the lock's
    release, in the same round trip) and keep a local copy. A host that refuses the record
    (no helper yet, or the chain moved) does not fail the task: the record is kept locally in
    .audit/<env>.unsent.log and the operator is told."""
    record = fields(env.name, host, operator, trail, tag, tail.count + 1, tail.last)
    line = make_line(record, operator.key)
    result = remote.run_with_input(audit_cmd.append_then(then), (line + "\n").encode(),
                                   timeout=60, check=False)
    keep_locally(env.name, line, sent=result.ok)
    if not result.ok:
        why = (result.stderr.strip().splitlines() or ["no detail"])[-1]
        remote.say(f"audit record NOT appended on the host ({remote.printer.mask(why)}); "
                   f"kept in .audit/{env.name}.unsent.log")
    if env.log_driver == "awslogs":  # CloudWatch too: a copy off every host we control
        from fabfile.aws import logs

        try:
            logs.ship_audit(env, host, line)
        except (StepFailed, BadInput) as exc:
            remote.say(f"audit record not sent to CloudWatch ({exc}); it is on the host and "
                       f"in .audit/{env.name}.log")


# --- the local copy ---------------------------------------------------------------------------

def local_dir() -> Path:
    """.audit/ in the checkout (git-ignored); $JAFAR_AUDIT_DIR elsewhere (tests)."""
    return Path(os.environ.get("JAFAR_AUDIT_DIR") or ROOT / ".audit")


def local_path(env_name: str) -> Path:
    return local_dir() / f"{env_name}.log"


def keep_locally(env_name: str, line: str, sent: bool) -> None:
    """Every record this machine wrote; those a host did not take go to *.unsent.log."""
    local_dir().mkdir(mode=0o700, exist_ok=True)
    path = local_path(env_name) if sent else local_dir() / f"{env_name}.unsent.log"
    with path.open("a") as f:
        f.write(line + "\n")


def local_head(env_name: str, host: str) -> dict[str, object] | None:
    """The newest record this machine appended to `host`'s trail."""
    path = local_path(env_name)
    if not path.is_file():
        return None
    head = None
    for line in path.read_text().splitlines():
        record = parse(line)
        if record is not None and record[0].get("host") == host:
            head = {"seq": record[0].get("seq"), "line": line}
    return head


# --- reading and verifying --------------------------------------------------------------------

def parse(line: str) -> tuple[dict[str, object], str, str] | None:
    """(record, payload, signature) or None when the line is not a record."""
    payload, tab, sig = line.partition("\t")
    if not tab:
        return None
    try:
        record = json.loads(payload)
    except ValueError:
        return None
    return (record, payload, sig) if isinstance(record, dict) else None


def signature_ok(payload: str, sig: str, person: str, signers: Path) -> bool:
    try:
        armored = base64.b64decode(sig, validate=True)
    except ValueError:
        return False
    with tempfile.NamedTemporaryFile(suffix=".sig") as f:
        f.write(armored)
        f.flush()
        proc = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(signers), "-I", person,
                               "-n", NAMESPACE, "-s", f.name], input=payload.encode(),
                              capture_output=True, timeout=30, check=False)
    return proc.returncode == 0


def verify(host: str, lines: list[str], signers: Path,
           local: dict[str, object] | None) -> list[str]:
    """Problems with one host's trail, first one first: a record that does not parse, is not
    signed by its person, does not follow the previous one (seq and hash chain), or the tail
    that this machine wrote is missing. Empty when the trail is intact."""
    prev = ZERO
    for i, line in enumerate(lines, start=1):
        parsed = parse(line)
        if parsed is None:
            return [f"{host}: record {i}: not a signed audit record (the line was altered)"]
        record, payload, sig = parsed
        who = record.get("who")
        person = who.get("person") if isinstance(who, dict) else None
        if not isinstance(person, str) or not signature_ok(payload, sig, person, signers):
            return [f"{host}: record {i} (seq {record.get('seq')}): signature does not verify "
                    "(the record was edited, or its key is not an operator's)"]
        if record.get("seq") != i:
            return [f"{host}: record {i} has seq {record.get('seq')}, expected {i} (a record "
                    "was deleted, inserted or moved)"]
        if record.get("prev") != prev:
            return [f"{host}: record {i} (seq {i}): does not chain to record {i - 1} (a record "
                    "was deleted, inserted or moved)"]
        if record.get("host") != host:
            return [f"{host}: record {i} (seq {i}) belongs to host {record.get('host')}"]
        prev = line_hash(line)
    if local is not None:
        seq = local["seq"]
        if not isinstance(seq, int) or seq > len(lines) or lines[seq - 1] != local["line"]:
            return [f"{host}: the trail has {len(lines)} records, but this machine appended "
                    f"record {seq} to it: the tail was truncated or replaced"]
    return []
