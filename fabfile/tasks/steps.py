"""One task per flow step (the runbook's single steps): env.sync, files.sync, data.up,
replica.init, core.up; host.prepare and host.harden live in the host namespace."""

from __future__ import annotations

from collections.abc import Callable

from invoke import Context, task

from fabfile.steps import STEPS
from fabfile.tasks.common import DRY_HELP, HOST_HELP, YES_HELP, execute, handled


def step_task(name: str) -> Callable[..., None]:
    """A task that runs one flow step alone, as in the runbook."""
    step = STEPS[name]

    @task(name=name.split(".")[-1], auto_shortflags=False,
          help={"host": HOST_HELP, "dry_run": DRY_HELP, "yes": YES_HELP})
    @handled
    def one_step(c: Context, host: str | None = None, dry_run: bool = False,
                 yes: bool = False) -> None:
        execute(c, host, [name], dry_run, yes, name, {})

    one_step.__doc__ = f"{step.summary[0].upper()}{step.summary[1:]} (flow step {name})."
    one_step.body.__doc__ = one_step.__doc__
    return one_step
