"""The lock namespace: who holds an environment's lock, and clearing a stale one."""

from __future__ import annotations

import json as jsonlib
import socket

from invoke import Collection, Context, task

from fabfile.commands import lock as lock_cmd
from fabfile.errors import BadInput
from fabfile.flow import columns, remotes
from fabfile.ops import audit
from fabfile.ops.identity import whoami
from fabfile.ops.lock import DEPLOY, ago, parse_status, parse_tail
from fabfile.remote import preflight
from fabfile.tasks.common import (
    HOST_HELP,
    JSON_HELP,
    READ_TIMEOUT,
    TIMEOUT_HELP,
    YES_HELP,
    Session,
    confirm,
    handled,
    require_mutable,
)

NAMES = (DEPLOY, "backup")
NAME_HELP = "which lock: deploy (every mutating task) or backup"


def lock_name(name: str) -> str:
    if name not in NAMES:
        raise BadInput(f"--name must be one of {', '.join(NAMES)}, got {name[:40]!r}")
    return name


@task(name="status", auto_shortflags=False, help={
    "host": HOST_HELP, "json": JSON_HELP, "name": NAME_HELP, "timeout": TIMEOUT_HELP})
@handled
def lock_status(c: Context, host: str | None = None, json: bool = False,
                name: str = DEPLOY, timeout: int = READ_TIMEOUT) -> None:
    """Who holds the lock on each host, since when, last renewed when, and whether it looks
    stale (read-only: takes no lock)."""
    name = lock_name(name)
    session = Session(c, host, timeout=timeout)
    env = session.env
    rows = []
    for h, out in session.gather(lambda h, pool: [(h, pool.get(h).run(
            lock_cmd.status(env.deploy_path, name)).stdout)]):
        held = parse_status(h.name, out)
        stale = held.stale_reason(env.lock_ttl, socket.gethostname()) if held else None
        rows.append({"host": h.name, "lock": name, "held": held is not None,
                     "holder": held.info if held else None,
                     "renewed_seconds_ago": held.now - held.renewed if held else None,
                     "stale": stale})
    if json:
        print(session.masker(jsonlib.dumps(rows, indent=2)))
        return
    print(session.masker("\n".join(columns(
        ("HOST", "LOCK", "STATE", "HOLDER"),
        [(r["host"], name, "STALE" if r["stale"] else "held" if r["held"] else "free",
          describe(r)) for r in rows]))))


def describe(row: dict[str, object]) -> str:
    info = row["holder"]
    if not isinstance(info, dict):
        return "-"
    text = (f"{info.get('person')} ({info.get('user')}@{info.get('machine')} pid "
            f"{info.get('pid')}) `{info.get('command')}` since {info.get('started')}, renewed "
            f"{ago(int(row['renewed_seconds_ago'] or 0))} ago")
    return text + (f"; stale: {row['stale']}" if row["stale"] else "")


@task(name="release", auto_shortflags=False, help={
    "host": HOST_HELP, "yes": YES_HELP, "name": NAME_HELP})
@handled
def lock_release(c: Context, host: str | None = None, yes: bool = False,
                 name: str = DEPLOY) -> None:
    """Clear a lock whose run is gone (stale), after showing its holder and asking; the
    clearing is audited."""
    name = lock_name(name)
    session = Session(c, host)
    env = session.env
    require_mutable(env)
    operator = whoami(env)
    preflight(env)
    with remotes(env, session.printer) as pool:
        try:
            found = []
            for h in sorted(env.hosts, key=lambda h: h.name):
                out = pool.get(h).run(lock_cmd.status(env.deploy_path, name)).stdout
                held = parse_status(h.name, out)
                if held is not None:
                    found.append((h, held, parse_tail(out)))
                    pool.get(h).say(f"{name} lock {held.describe()}")
            if not found:
                session.printer.line("", f"nothing to do: no {name} lock is held on "
                                         f"{env.name}")
                return
            confirm(env, yes, f"clear the {name} lock", always=True)
            trail = audit.Trail("lock.release", {"name": name})
            for h, held, tail in found:
                trail.add(h.name, "lock.release", "changed",
                          f"cleared the {name} lock {held.describe()}")
                audit.append(env, h.name, pool.get(h), operator, trail, env.tag, tail,
                             lock_cmd.force_release(env.deploy_path, name))
                pool.get(h).say(f"{name} lock cleared")
        finally:
            pool.report()


namespace = Collection("lock", lock_status, lock_release)
