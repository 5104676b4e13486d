"""Backup sets on the data host: take one, list them, verify one, restore one.

A set is a folder of backups/ on the data host, named by its id (the UTC time it was taken),
with a manifest; scripts/backup.sh writes it. A restore first checks the set's checksums, stops
the jafar services that write to the stores it replaces (on every core host: nothing accepted
meanwhile is silently lost), removes each store with its volume, brings it up empty and loads it,
then starts the services again.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from fabfile.backup import commands as cmd
from fabfile.commands.compose import compose
from fabfile.commands.replica import init_replica
from fabfile.commands.state import read_release
from fabfile.config import Environment, Host
from fabfile.errors import BadInput, StepFailed
from fabfile.flow import Pool, columns
from fabfile.ops.state import parse_release
from fabfile.replica import PRIMARY_TIMEOUT
from fabfile.services import JAFAR

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
COMPLETE = re.compile(r"^backup (\S+) complete$", re.MULTILINE)
VERIFIED = re.compile(r"^verify (\S+) passed$", re.MULTILINE)
REMOVED = re.compile(r"^removed (\S+)$", re.MULTILINE)
BACKUP_TIMEOUT = 600    # Redis' BGSAVE; pg_dump is bounded by the remote command's own limit
VERIFY_TIMEOUT = 3600   # the scratch restores of a set, and reading them back
STORE_WAIT = 180        # a store, brought up empty, turning healthy
STORES = tuple(cmd.STORE_FILES)
# which stores a jafar service writes to, by the names services.py uses for them
USES = {"ledger": "postgres", "redis": "redis", "mongo": "mongo"}


def new_id(now: float | None = None) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def check_id(text: str) -> str:
    if not ID_PATTERN.fullmatch(text):
        raise BadInput(f"--from {text!r} is not a backup id (letters, digits, . _ -, as "
                       "inv backup.list shows them)")
    return text


def parse_stores(text: str | None) -> tuple[str, ...]:
    """--only ledger,redis -> the stores to restore, in the order they are restored."""
    if not text:
        return STORES
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in STORES]
    if unknown or not names:
        raise BadInput(f"--only names {', '.join(unknown) or 'nothing'}: choose from "
                       f"{', '.join(STORES)} (comma separated)")
    return tuple(s for s in STORES if s in names)


@dataclass(frozen=True)
class BackupSet:
    id: str
    finished: str
    release: str
    files: dict[str, dict]
    stores: dict[str, dict]

    @property
    def size(self) -> int:
        return sum(int(f.get("bytes", 0)) for f in self.files.values())

    def as_dict(self) -> dict[str, object]:
        return {"id": self.id, "finished": self.finished, "release": self.release,
                "bytes": self.size, "files": self.files, "stores": self.stores}


def parse_manifests(output: str) -> list[BackupSet]:
    """The sets, oldest first; a line that is not a manifest is skipped."""
    found = []
    for line in output.splitlines():
        try:
            doc = json.loads(line)
            found.append(BackupSet(str(doc["id"]), str(doc["finished"]), str(doc["release"]),
                                   dict(doc["files"]), dict(doc["stores"])))
        except (ValueError, KeyError, TypeError):
            continue
    return sorted(found, key=lambda s: s.id)


def table(sets: list[BackupSet]) -> list[str]:
    if not sets:
        return ["no backup on the data host yet (take one: inv backup)"]
    rows = []
    for s in sets:
        what = ", ".join(f"{k} ({v['skipped']})" if "skipped" in v else k
                         for k, v in sorted(s.stores.items()))
        rows.append((s.id, s.finished, s.release, human(s.size), what))
    return columns(("ID", "FINISHED", "RELEASE", "SIZE", "STORES"), rows)


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def list_sets(env: Environment, pool: Pool) -> list[BackupSet]:
    return parse_manifests(pool.get(env.data_host).run(cmd.manifests(env)).stdout)


def take(env: Environment, pool: Pool, backup_id: str,
         retain: bool = True) -> tuple[BackupSet, list[str]]:
    """Run scripts/backup.sh on the data host: the set it wrote, read back from its manifest,
    and the ids the retention (backup_keep) removed."""
    host = env.data_host
    remote = pool.get(host)
    pool.renew(host, remote)
    out = remote.run(cmd.take(env, backup_id, running_release(env, pool), BACKUP_TIMEOUT,
                              retain),
                     timeout=BACKUP_TIMEOUT + 300).stdout
    if backup_id not in COMPLETE.findall(out):
        raise StepFailed(f"{host.name}: scripts/backup.sh did not say `backup {backup_id} "
                         "complete`")
    for found in list_sets(env, pool):
        if found.id == backup_id:
            return found, REMOVED.findall(out)
    raise StepFailed(f"{host.name}: scripts/backup.sh said `backup {backup_id} complete` but "
                     f"backups/{backup_id}/manifest.json cannot be read")


@dataclass(frozen=True)
class Verdict:
    passed: bool
    table: list[str]   # STORE WHAT RECORDED RESTORED RESULT, a line per check
    failed: int        # checks that differ or failed


def verify(env: Environment, pool: Pool, backup_id: str) -> Verdict:
    """Run scripts/backup-verify.sh on the data host. A difference is a verdict (its table
    says which); a verify that could not compare at all (no table) is a step failure."""
    host = env.data_host
    remote = pool.get(host)
    pool.renew(host, remote)
    out = remote.run(cmd.verify(env, backup_id), timeout=VERIFY_TIMEOUT, check=False)
    lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
    rows = [ln for ln in lines if not VERIFIED.match(ln)]
    if not rows or not rows[0].startswith("STORE "):
        said = (out.stderr.strip().splitlines() or [f"exit {out.exited}"])[-1]
        raise StepFailed(f"{host.name}: scripts/backup-verify.sh {backup_id}: {said}")
    passed = out.exited == 0 and backup_id in VERIFIED.findall(out.stdout)
    failed = sum(1 for ln in rows[1:] if ln.split()[-1] == "DIFFERENT" or "  FAILED: " in ln)
    return Verdict(passed, rows, failed)


def newest(sets: list[BackupSet]) -> BackupSet:
    """The set finished last (what verify checks when no --from is given)."""
    if not sets:
        raise BadInput("there is no backup on the data host yet: take one with inv backup")
    return max(sets, key=lambda s: (s.finished, s.id))


def running_release(env: Environment, pool: Pool) -> str:
    """The tag the first core host runs (its state/release.json), for the manifest."""
    core = env.hosts_with("core")
    if not core:
        return "unknown"
    text = pool.get(core[0]).run(read_release(env.deploy_path)).stdout
    release = parse_release(core[0].name, text)
    return release.tag if release is not None else "unknown"


def find(sets: list[BackupSet], backup_id: str) -> BackupSet:
    for s in sets:
        if s.id == backup_id:
            return s
    known = ", ".join(s.id for s in sets[-3:]) or "none yet"
    raise BadInput(f"--from {backup_id}: no such backup on the data host (the latest: {known}; "
                   "inv backup.list shows them all)")


def writers(stores: tuple[str, ...]) -> list[str]:
    """The jafar services that write to these stores: stopped while they are restored."""
    return [s.name for s in JAFAR if any(USES[st] in s.uses for st in stores)]


def load_store(env: Environment, pool: Pool, store: str, backup_id: str) -> None:
    """Remove the store with its volumes, bring it up empty, load the set's file into it
    (MongoDB: a new replica set with its users first)."""
    data = env.data_host
    remote = pool.get(data)
    pool.renew(data, remote)
    remote.run(cmd.remove_store(env, store), timeout=300)
    remote.run(cmd.up_store(env, store, STORE_WAIT), timeout=STORE_WAIT + 60)
    if store == "mongo":
        remote.run(init_replica(env, PRIMARY_TIMEOUT), timeout=PRIMARY_TIMEOUT + 60)
        remote.run(cmd.load_mongo(env, backup_id), timeout=3600)
    elif store == "ledger":
        remote.run(cmd.load_ledger(env, backup_id), timeout=3600)
    else:
        remote.run(cmd.load_redis(env, backup_id), timeout=3600)
        remote.run(cmd.up_store(env, store, STORE_WAIT), timeout=STORE_WAIT + 60)


def restore(env: Environment, pool: Pool, chosen: BackupSet, stores: tuple[str, ...],
            say: Callable[[str, str], None], safety: bool) -> str | None:
    """Restore `stores` from `chosen`; returns the id of the safety backup taken first."""
    data = env.data_host
    remote = pool.get(data)
    missing = [s for s in stores if s not in chosen.stores or "skipped" in chosen.stores[s]]
    if missing:
        raise BadInput(f"backup {chosen.id} holds no {', '.join(missing)}: leave it out "
                       "with --only")
    checked = remote.run(cmd.check_files(env, chosen.id), check=False)
    if not checked.ok:
        bad = [line.split(":")[0] for line in checked.stdout.splitlines()
               if line.endswith(": FAILED") or "FAILED open" in line]
        raise StepFailed(f"{data.name}: backup {chosen.id}: {', '.join(bad) or 'its files'} "
                         "changed since the backup (the SHA-256 is not the manifest's); "
                         "nothing was stopped; restore another set")
    say(data.name, f"backup {chosen.id}: every file has the SHA-256 of its manifest")
    core: list[Host] = [h for h in env.hosts if h.has("core")]
    services = writers(stores)
    for host in core:
        pool.renew(host, pool.get(host))
        pool.get(host).run(compose(env, "core", "stop", *services), timeout=300)
        say(host.name, f"stopped {', '.join(services)} (they write to {', '.join(stores)})")
    safety_id = None
    if safety:
        safety_id = f"{new_id()}-before-restore"
        try:
            take(env, pool, safety_id, retain=False)  # the retention could remove `chosen`
        except StepFailed as exc:
            raise StepFailed(f"{exc}; the safety backup failed, so nothing was restored: "
                             f"{', '.join(services)} stay stopped (start them with inv "
                             "deploy --only core.up, or restore with --skip-safety-backup "
                             "when the stores are lost anyway)") from None
        say(data.name, f"safety backup {safety_id} taken (what was there before the restore)")
    remote.run(cmd.mark_restoring(env, chosen.id))
    for store in stores:
        try:
            load_store(env, pool, store, chosen.id)
        except StepFailed as exc:
            raise StepFailed(f"{exc}; {', '.join(services)} stay stopped and backups wait "
                             "until a restore succeeds (run it again, or restore another "
                             "set)") from None
        say(data.name, f"{store}: emptied and loaded from {chosen.stores[store]['file']}")
    remote.run(cmd.unmark_restoring(env))
    for host in core:
        pool.renew(host, pool.get(host))
        pool.get(host).run(compose(env, "core", "start", *services), timeout=300)
        say(host.name, f"started {', '.join(services)}")
    return safety_id
