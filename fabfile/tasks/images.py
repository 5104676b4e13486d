"""The images namespace: the infrastructure images pinned by digest."""

from __future__ import annotations

from invoke import Collection, Context, task
from invoke.exceptions import Exit

from fabfile.flow import remotes
from fabfile.ops import pins
from fabfile.remote import preflight
from fabfile.tasks.common import HOST_HELP, Session, handled, require_mutable


@task(name="pin", auto_shortflags=False, help={
    "host": HOST_HELP,
    "check": "only compare: exit 1 when a pin differs from what the registry serves (for a "
             "scheduled job); write nothing",
})
@handled
def pin(c: Context, host: str | None = None, check: bool = False) -> None:
    """Resolve every infrastructure image the environment runs to the digest its registry
    serves now (pulled on the hosts that run it) and write them to the pins file."""
    session = Session(c, host)
    env = session.env
    if not check:
        require_mutable(env)
    preflight(env)
    with remotes(env, session.printer) as pool:
        try:
            differ = pins.pin(env, pool, check, lambda line: session.printer.line("", line))
        finally:
            pool.report()
    if check and differ:
        raise Exit(code=1)


namespace = Collection("images", pin)
