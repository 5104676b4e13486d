"""The backup namespace (`inv backup`, `backup.list`, `backup.verify`, `backup.schedule`) and
`inv restore`.

A backup takes the `backup` lock of the data host, never the deploy lock: it must not block an
incident deploy. A restore replaces data, so it takes the deploy lock of every host it touches,
is always confirmed, and is audited like every change.
"""

from __future__ import annotations

import json as json_mod

from invoke import Collection, Context, task

from fabfile.aws import offsite as s3
from fabfile.aws import snapshots
from fabfile.backup import offsite, sets
from fabfile.backup import schedule as schedule_mod
from fabfile.config import Environment
from fabfile.errors import BadInput, StepFailed
from fabfile.flow import Pool, remotes, run_steps, summary
from fabfile.health import HEALTH
from fabfile.ops.audit import Trail
from fabfile.ops.guard import Mutation
from fabfile.ops.identity import Operator, whoami
from fabfile.remote import preflight
from fabfile.tasks.common import (
    HOST_HELP,
    JSON_HELP,
    READ_TIMEOUT,
    TIMEOUT_HELP,
    Session,
    confirm,
    failed_step,
    handled,
    require_mutable,
)

BACKUP_LOCK = "backup"


@task(name="run", default=True, auto_shortflags=False, help={"host": HOST_HELP})
@handled
def backup(c: Context, host: str | None = None) -> None:
    """Take one backup set on the data host (the ledger's pg_dump, Redis' RDB, MongoDB's
    mongodump; a manifest with each file's SHA-256 and what each store held) and, with
    backup_snapshots, an EBS snapshot of each data volume; under the backup lock; audited."""
    session = Session(c, host)
    env = session.env
    require_mutable(env)
    operator = whoami(env)
    preflight(env)
    backup_id = sets.new_id()
    trail = Trail("backup", {"id": backup_id})
    data = env.data_host
    with remotes(env, session.printer) as pool:
        try:
            with Mutation(env, pool, [data], trail, operator, name=BACKUP_LOCK):
                taken, removed = sets.take(env, pool, backup_id)
                detail = f"backup {taken.id}: {sets.human(taken.size)}, " + ", ".join(
                    f"{k} {v['sha256'][:12]}" for k, v in sorted(taken.files.items()))
                if removed:
                    detail += f"; retention removed {', '.join(removed)}"
                if env.backup_snapshots:
                    detail += "; " + snapshot(env, taken.id)
                if env.backup_s3:
                    detail += "; " + offsite_copy(env, pool, taken.id)
                trail.add(data.name, "backup", "changed", detail)
                session.printer.line(data.name, detail)
        finally:
            pool.report()


def snapshot(env: Environment, backup_id: str) -> str:
    """The EBS snapshots of this set, then their retention; what was done, in words."""
    try:
        taken = snapshots.take(env, backup_id)
    except StepFailed as exc:
        raise StepFailed(f"backup {backup_id} is complete on the data host, but its EBS "
                         f"snapshots were not taken: {exc}") from None
    said = "EBS snapshots " + ", ".join(f"{s.id} ({s.device})" for s in taken)
    gone = snapshots.prune(env)
    if gone:
        said += f"; snapshot retention deleted {len(gone)} of backups " + ", ".join(
            sorted({s.backup_id for s in gone}))
    return said


def offsite_copy(env: Environment, pool: Pool, backup_id: str) -> str:
    """This set and every other one S3 lacks, to S3; what was done, in words."""
    try:
        return offsite.send(env, pool, sets.list_sets(env, pool)).describe(env)
    except StepFailed as exc:
        raise StepFailed(f"backup {backup_id} is complete on the data host, but it is not "
                         f"(all) in S3: {exc}; send it with inv backup.upload --host "
                         f"{env.name}") from None


@task(name="upload", auto_shortflags=False, help={
    "host": HOST_HELP, "from": "only this backup id (default: every set S3 lacks)"})
@handled
def backup_upload(c: Context, host: str | None = None, from_: str = "") -> None:
    """Send the data host's sets that S3 lacks (the timer's, or one whose upload failed) to
    backup_s3, age-encrypted on the host, SSE-KMS and Object Lock in S3; then S3's retention.
    Under the backup lock; audited; a second run says nothing to do."""
    backup_id = sets.check_id(from_) if from_ else ""
    session, operator = offsite_session(c, host)
    env = session.env
    data = env.data_host
    trail = Trail("backup.upload", {"id": backup_id or "all"})
    with remotes(env, session.printer) as pool:
        try:
            with Mutation(env, pool, [data], trail, operator, name=BACKUP_LOCK):
                local = sets.list_sets(env, pool)
                if backup_id:
                    sets.find(local, backup_id)
                sent = offsite.send(env, pool, local, only=backup_id)
                detail = sent.describe(env)
                changed = bool(sent.ids or sent.pruned.deleted)
                trail.add(data.name, "backup.upload", "changed" if changed else "ok", detail)
                session.printer.line(data.name, detail)
        finally:
            pool.report()


@task(name="fetch", auto_shortflags=False, help={
    "host": HOST_HELP, "from": "the backup id to bring back from S3 (inv backup.list)"})
@handled
def backup_fetch(c: Context, host: str | None = None, from_: str = "") -> None:
    """Bring a set from S3 to the data host (a new host, or one that lost its sets): the
    ciphertext streams there, is decrypted with the age identity from Secrets Manager and
    checked against the set's SHA-256 sums; then inv restore --from ID. Under the backup
    lock; audited; a set already on the host is nothing to do."""
    if not from_:
        raise BadInput("--from is required: the backup id to fetch (inv backup.list shows "
                       "the sets in S3)")
    backup_id = sets.check_id(from_)
    session, operator = offsite_session(c, host)
    env = session.env
    data = env.data_host
    trail = Trail("backup.fetch", {"id": backup_id})
    with remotes(env, session.printer) as pool:
        try:
            with Mutation(env, pool, [data], trail, operator, name=BACKUP_LOCK):
                if any(x.id == backup_id for x in sets.list_sets(env, pool)):
                    detail = f"nothing to do: backup {backup_id} is on the data host already"
                    trail.add(data.name, "backup.fetch", "ok", detail)
                else:
                    detail = offsite.fetch(env, pool, backup_id)
                    trail.add(data.name, "backup.fetch", "changed", detail)
                session.printer.line(data.name, detail)
        finally:
            pool.report()


def offsite_session(c: Context, host: str | None) -> tuple[Session, Operator]:
    """backup.upload's and backup.fetch's session and operator: backup_s3 and a mutable
    environment are checked (exit 2) before anything is contacted."""
    session = Session(c, host)
    if session.env.backup_s3 is None:
        raise BadInput(f"environment {session.env.name} has no backup_s3: block, so there is "
                       "no copy in S3 to send or fetch; add one (README, Backups offsite)")
    require_mutable(session.env)
    operator = whoami(session.env)
    preflight(session.env)
    return session, operator


@task(name="verify", auto_shortflags=False, help={
    "host": HOST_HELP, "from": "the backup id to verify (default: the set finished last)"})
@handled
def backup_verify(c: Context, host: str | None = None, from_: str = "") -> None:
    """Prove a backup set restores: load it into scratch containers on the data host (no
    network, CPU and memory limited, removed afterwards) and compare each table's and
    collection's rows and checksum with what its manifest recorded; exit 1 on any difference.
    Under the backup lock (never the deploy lock); a failed verify is audited."""
    backup_id = sets.check_id(from_) if from_ else ""
    session = Session(c, host)
    env = session.env
    require_mutable(env)
    operator = whoami(env)
    preflight(env)
    data = env.data_host
    with remotes(env, session.printer) as pool:
        try:
            found = sets.list_sets(env, pool)
            chosen = sets.find(found, backup_id) if backup_id else sets.newest(found)
            trail = Trail("backup.verify", {"id": chosen.id})
            with Mutation(env, pool, [data], trail, operator, name=BACKUP_LOCK):
                verdict = sets.verify(env, pool, chosen.id)
                print(session.masker("\n".join(verdict.table)))
                detail = (f"backup {chosen.id} restores to what it recorded" if verdict.passed
                          else f"backup {chosen.id}: {verdict.failed} check(s) differ or failed")
                trail.add(data.name, "backup.verify", "ok" if verdict.passed else "failed",
                          detail)
                if not verdict.passed:
                    trail.result = "failed"
        finally:
            pool.report()
    if not verdict.passed:
        raise StepFailed(f"{detail} (the table above); take a new backup and verify it, and "
                         "find out what changed the set")
    print(f"verified: {detail}")


@task(name="list", auto_shortflags=False,
      help={"host": HOST_HELP, "json": JSON_HELP, "timeout": TIMEOUT_HELP})
@handled
def backup_list(c: Context, host: str | None = None, json: bool = False,
                timeout: int = READ_TIMEOUT) -> None:
    """The backup sets kept on the data host, oldest first: id, when, release, size, stores;
    with backup_snapshots, each backup's EBS snapshots and their state; with backup_s3, which
    sets S3 holds (locked until when) and which only S3 has."""
    session = Session(c, host, timeout=timeout)
    env = session.env
    found = session.gather(lambda h, pool: sets.list_sets(env, pool), (env.data_host,))
    taken = snapshots.by_backup(snapshots.existing(env)) if env.backup_snapshots else {}
    copies = s3.listed(env, with_locks=True) if env.backup_s3 else {}
    if json:
        rows = [s.as_dict() for s in found]
        for row in rows:
            if env.backup_snapshots:
                row["snapshots"] = [x.as_dict() for x in taken.get(row["id"], [])]
            if env.backup_s3:
                row["on_host"] = True
                row["s3"] = copies[row["id"]].as_dict() if row["id"] in copies else None
        if env.backup_s3:  # the sets only S3 holds (the host lost them, or never had them)
            rows += [{"id": i, "on_host": False, "s3": x.as_dict()} for i, x in copies.items()
                     if i not in {s.id for s in found}]
        text = json_mod.dumps(rows, indent=2)
    else:
        text = "\n".join(sets.table(found) + [
            f"EBS snapshots of {b}: " + ", ".join(f"{x.id} {x.device} {x.state}" for x in xs)
            for b, xs in sorted(taken.items())] + offsite.table(env, found, copies))
    print(session.masker(text))


@task(name="restore", auto_shortflags=False, help={
    "host": HOST_HELP, "yes": "do not ask (a restore always asks otherwise, on any environment)",
    "from": "the backup id to restore (inv backup.list shows them)",
    "only": "the stores to restore, comma separated: ledger, redis, mongo (default: all)",
    "skip_safety_backup": "do not back up what is there first (when the stores are down and "
                          "a backup of them would fail)",
})
@handled
def restore(c: Context, host: str | None = None, from_: str = "", only: str = "",
            skip_safety_backup: bool = False, yes: bool = False) -> None:
    """Replace the stores' data with a backup set: the services that write to them are stopped
    on every core host, a safety backup is taken, each store is removed with its volume,
    brought up empty and loaded, the services start again, then health."""
    if not from_:
        raise BadInput("--from is required: the backup id to restore (inv backup.list shows "
                       "them)")
    backup_id = sets.check_id(from_)
    stores = sets.parse_stores(only)
    session = Session(c, host)
    env = session.env
    require_mutable(env)
    operator = whoami(env)
    preflight(env)
    trail = Trail("restore", {"from": backup_id, "only": ",".join(stores),
                              "safety_backup": not skip_safety_backup})
    data = env.data_host
    core = [h for h in env.hosts if h.has("core")]
    rows = []
    with remotes(env, session.printer) as pool:
        try:
            chosen = find_or_hint(env, sets.list_sets(env, pool), backup_id)
            confirm(env, yes, f"replace {', '.join(stores)} with backup {backup_id} "
                    "(the services that use them stop meanwhile)", always=True)

            def say(host_name: str, text: str) -> None:
                session.printer.line(host_name, text)
                trail.add(host_name, "restore", "changed", text)

            with Mutation(env, pool, [data, *[h for h in core if h != data]], trail, operator):
                sets.restore(env, pool, chosen, stores, say, not skip_safety_backup)
                rows = run_steps(env, [HEALTH], pool, trail)
                failed_step(rows, session, resume_hint=False)
        finally:
            summary(rows, session.printer)
            pool.report()


def find_or_hint(env: Environment, found: list[sets.BackupSet], backup_id: str) -> sets.BackupSet:
    """The set on the host; when only S3 has it, say how to bring it back (exit 2)."""
    try:
        return sets.find(found, backup_id)
    except BadInput:
        if env.backup_s3 and backup_id in s3.listed(env):
            raise BadInput(f"--from {backup_id}: that set is in S3, not on the data host: bring "
                           f"it back first with inv backup.fetch --host {env.name} --from "
                           f"{backup_id}") from None
        raise


@task(name="schedule", auto_shortflags=False, help={"host": HOST_HELP})
@handled
def backup_schedule(c: Context, host: str | None = None) -> None:
    """Install the daily backup on the data host: a systemd timer (at backup_at UTC) running
    scripts/backup.sh as the deploy user, whose metrics node_exporter reports (the
    BackupTooOld alert); a second run says nothing to do."""
    session = Session(c, host)
    env = session.env
    require_mutable(env)
    operator = whoami(env)
    preflight(env)
    trail = Trail("backup.schedule", {"at": env.backup_at})
    data = env.data_host
    with remotes(env, session.printer) as pool:
        try:
            with Mutation(env, pool, [data], trail, operator, admin=True, name=BACKUP_LOCK):
                out = pool.get(data, admin=True).run(schedule_mod.install(env)).stdout
                done = [ln.removeprefix("CHANGED ") for ln in out.splitlines()
                        if ln.startswith("CHANGED ")]
                what = schedule_mod.describe(env)
                if done:
                    trail.add(data.name, "backup.schedule", "changed", "; ".join(done))
                    session.printer.line(data.name, f"{'; '.join(done)}: {what}")
                else:
                    trail.add(data.name, "backup.schedule", "ok", "nothing to do")
                    session.printer.line(data.name, f"nothing to do: {what}, as "
                                                            "installed")
        finally:
            pool.report()


namespace = Collection("backup", backup, backup_list, backup_verify, backup_schedule,
                       backup_upload, backup_fetch)
