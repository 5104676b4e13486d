"""Root tasks for versions: release, rollback, releases."""

from __future__ import annotations

import json as jsonlib

from invoke import Context, task

from fabfile.flow import columns, remotes
from fabfile.ops import pins, state
from fabfile.ops import release as ops
from fabfile.ops.audit import Trail
from fabfile.ops.identity import whoami
from fabfile.remote import preflight
from fabfile.tasks.common import (
    HOST_HELP,
    JSON_HELP,
    READ_TIMEOUT,
    TIMEOUT_HELP,
    YES_HELP,
    Session,
    confirm,
    environment,
    handled,
    require_mutable,
)


@task(auto_shortflags=False, help={
    "tag": "the image tag to run, e.g. v1.4.2 (all seven images must exist in the registry)",
    "host": HOST_HELP, "yes": YES_HELP,
    "services": "only these services, comma separated (e.g. api,ledger); default all seven",
})
@handled
def release(c: Context, tag: str | None = None, host: str | None = None,
            services: str | None = None, yes: bool = False) -> None:
    """Roll the services to a new image tag, one at a time, health-gated, without dropping a
    request; undone automatically if the new version is unhealthy or fails under traffic."""
    tag = ops.parse_tag(tag)
    env = environment(c, host)
    names = ops.parse_services(env, services)
    session = Session(c, host, env=env)
    require_mutable(env)
    pins.require_current(env)
    operator = whoami(env)
    preflight(env)
    trail = Trail("release", {"tag": tag, "services": services or "all"})
    with remotes(env, session.printer) as pool:
        try:
            ops.release(env, pool, session.printer, operator, trail, tag, names,
                        lambda what: confirm(env, yes, what))
        finally:
            pool.report()


@task(auto_shortflags=False, help={
    "host": HOST_HELP, "yes": YES_HELP,
    "to": "go back to this tag (its last successful release); default the previous one",
})
@handled
def rollback(c: Context, host: str | None = None, to: str | None = None,
             yes: bool = False) -> None:
    """Go back to the previous successful release (or --to TAG), by digest, with the same
    rolling, health-gated mechanism."""
    if to is not None:
        to = ops.parse_tag(to, "rollback: --to")
    session = Session(c, host)
    env = session.env
    require_mutable(env)
    pins.require_current(env)
    operator = whoami(env)
    preflight(env)
    trail = Trail("rollback", {"to": to or "previous"})
    with remotes(env, session.printer) as pool:
        try:
            ops.rollback(env, pool, session.printer, operator, trail, to,
                         lambda what: confirm(env, yes, what))
        finally:
            pool.report()


@task(auto_shortflags=False, help={"host": HOST_HELP, "json": JSON_HELP,
                                   "timeout": TIMEOUT_HELP})
@handled
def releases(c: Context, host: str | None = None, json: bool = False,
             timeout: int = READ_TIMEOUT) -> None:
    """The release history of every core host, newest first: tag, digests, when, by whom,
    result, and which one runs."""
    session = Session(c, host, timeout=timeout)
    env = session.env
    found = session.gather(lambda h, pool: [state.parse(h.name, pool.get(h).run(
        state.probe(env)).stdout)], hosts=env.hosts_with("core"))
    rows = []
    for current in found:
        running = current.release.id if current.release else None
        for r in sorted(current.history, key=lambda r: r.id, reverse=True):
            rows.append({"host": current.host, **r.as_dict(), "running": r.id == running})
    if json:
        print(session.masker(jsonlib.dumps(rows, indent=2)))
        return
    print(session.masker("\n".join(columns(
        ("HOST", "#", "TAG", "KIND", "RESULT", "RUNNING", "STARTED", "FINISHED", "BY",
         "DIGESTS"),
        [(r["host"], str(r["id"]), r["tag"], r["kind"], r["result"],
          "<- running" if r["running"] else "", r["started"], r["finished"], r["by"],
          digests(r["images"])) for r in rows]))))


def digests(images: dict[str, str]) -> str:
    """`api sha256:0123abcd, ...`: the first 12 hex digits of each pinned image."""
    return ", ".join(f"{name.removesuffix('-service')} {ref.rsplit('@', 1)[-1][:19]}"
                     for name, ref in sorted(images.items()) if "@" in ref)
