"""Copies of the data host's backup sets in S3, and back (`backup_s3:`).

Sending: each file of a set is encrypted by age on the data host and streamed through the SSH
connection straight into S3 (fabfile/aws/offsite.py); the suite never holds a file whole, and
never a byte in clear. Every complete set on the host that S3 lacks is sent (the timer's too),
then the copies of the ids backup_keep no longer keeps are deleted once their lock has ended.
Fetching: the ciphertext streams back to the data host, which decrypts it with the identity
from Secrets Manager (on stdin), checks the set's SHA-256 sums, and lists it like any other
set: `inv restore --from ID` then works on a host that never had it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from fabfile.aws import offsite as s3
from fabfile.backup import commands as cmd
from fabfile.backup import retention
from fabfile.backup.sets import BackupSet, human
from fabfile.config import Environment
from fabfile.errors import BadInput, StepFailed
from fabfile.flow import Pool

TRANSFER_TIMEOUT = 6 * 3600   # one file of a set, encrypted and sent (or fetched)


def names(found: BackupSet) -> list[str]:
    """A set's files in the order they are sent: the data, the sums, the manifest last (in
    S3, a set with its manifest is whole)."""
    return [*sorted(found.files), "SHA256SUMS", s3.MANIFEST]


@dataclass(frozen=True)
class Sent:
    ids: tuple[str, ...]
    size: int
    until: str                      # the lock of what was sent
    pruned: s3.Pruned

    def describe(self, env: Environment) -> str:
        where = s3.target(env).url()
        said = (f"offsite: {', '.join(self.ids)} sent to {where} ({human(self.size)}, age + "
                f"SSE-KMS, locked until {self.until})" if self.ids else
                f"offsite: nothing to send, every set of the host is in {where}")
        if self.pruned.deleted:
            said += f"; retention deleted {', '.join(self.pruned.deleted)} from S3"
        if self.pruned.locked:
            said += "; not kept, but locked: " + ", ".join(
                f"{i} until {u}" for i, u in self.pruned.locked)
        return said


def send(env: Environment, pool: Pool, local: list[BackupSet], only: str = "") -> Sent:
    """Send the host's complete sets S3 lacks (`only`: that one), then S3's retention."""
    target = s3.target(env)
    in_s3 = s3.listed(env)
    wanted = [x for x in local if (not only or x.id == only)
              and not (x.id in in_s3 and in_s3[x.id].complete)]
    data = env.data_host
    remote = pool.get(data)
    size, until = 0, ""
    if wanted:
        lock = s3.lock_rule(env)
        for found in wanted:
            for name in names(found):
                pool.renew(data, remote)
                command = cmd.encrypt(env, found.id, name, target.age_recipient)
                size += s3.upload(env, s3.key(env, found.id, name), lock,
                                  lambda write, c=command: remote.stream_out(
                                      c, write, timeout=TRANSFER_TIMEOUT))
        until = lock.until(dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    every = set(in_s3) | {x.id for x in wanted}
    pruned = s3.prune(env, retention.kept(env, every)) if every else s3.Pruned((), ())
    return Sent(tuple(x.id for x in wanted), size, until, pruned)


def fetch(env: Environment, pool: Pool, backup_id: str) -> str:
    """Bring a set from S3 to the data host (decrypted there, checked against its sums)."""
    found = s3.listed(env).get(backup_id)
    if found is None or not found.complete:
        raise BadInput(f"--from {backup_id}: no complete set of that id in "
                       f"{s3.target(env).url()} (inv backup.list shows what is there)")
    key = s3.identity(env)  # before any byte moves: a wrong secret costs nothing
    pool.printer.mask.add([key])
    data = env.data_host
    remote = pool.get(data)
    order = [n for n in found.files if n != s3.MANIFEST] + [s3.MANIFEST]
    for i, name in enumerate(order):
        pool.renew(data, remote)
        remote.stream_in(cmd.receive(env, backup_id, name, first=i == 0),
                         s3.chunks(env, backup_id, name), timeout=TRANSFER_TIMEOUT)
    out = remote.run_with_input(cmd.unpack(env, backup_id, order), (key + "\n").encode(),
                                timeout=TRANSFER_TIMEOUT, check=False)
    if f"fetched {backup_id}" not in out.stdout:
        said = (out.stderr.strip().splitlines() or [f"exit {out.exited}"])[-1]
        raise StepFailed(f"{data.name}: backup {backup_id} from S3 did not decrypt or does not "
                         f"match its SHA-256 sums ({said}); nothing was kept")
    return f"backup {backup_id} fetched from S3 ({human(found.size)}), decrypted and checked"


def table(env: Environment, local: list[BackupSet], copies: dict[str, s3.OffsiteSet]) -> list[str]:
    """backup.list's lines about S3: which sets are there, locked until when, which are not."""
    if env.backup_s3 is None:
        return []
    where = s3.target(env).url()
    here = {x.id for x in local}
    lines = [f"in {where}: " + (", ".join(
        f"{i} ({human(x.size)}, locked until {x.locked_until or '-'})" if x.complete
        else f"{i} (incomplete: send it again with inv backup.upload --from {i})"
        for i, x in copies.items()) or "nothing yet")]
    missing = [x.id for x in local if not (x.id in copies and copies[x.id].complete)]
    if missing:
        lines.append(f"not in S3 yet: {', '.join(missing)} (inv backup.upload sends them)")
    only = [i for i in copies if i not in here]
    if only:
        lines.append(f"only in S3: {', '.join(only)} (inv backup.fetch --from ID brings one "
                     "back)")
    return lines
