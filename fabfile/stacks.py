"""data.up: bring the data stack to its declared state and wait until healthy.

Compose itself only recreates what changed; the before/after snapshot of container ids and
start times is how the step knows, and says, whether anything was created or restarted.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from fabfile.aws import logs
from fabfile.commands import compose as cmd
from fabfile.config import Environment, Host
from fabfile.errors import StepFailed
from fabfile.flow import Outcome, Pool, Step
from fabfile.ops import registry
from fabfile.remote import Remote
from fabfile.services import compose_project
from fabfile.sync import wire

GRACE = 60  # seconds the SSH command may outlive compose's own --wait-timeout


def wait_timeout(env: Environment) -> int:
    return max(env.command_timeout - GRACE, 30)


def plan_up(stack: str, env: Environment, host: Host) -> list[str]:
    return [f"$ {wire(host, c)}" for c in (
        cmd.config_check(env, stack),
        cmd.snapshot(env, stack),
        cmd.up(env, stack, wait_timeout(env)),
        cmd.snapshot(env, stack),
    )]


def changes(before: str, after: str) -> list[str]:
    """Names of containers that are new or (re)started between two snapshots."""
    old = set(before.split("\n"))
    return sorted(line.split(" ")[1].lstrip("/") for line in after.splitlines()
                  if line.strip() and line not in old)


def apply_up(stack: str, env: Environment, host: Host, remote: Remote) -> Outcome:
    remote.run(cmd.config_check(env, stack))
    registry.login(env, remote)  # compose pulls what the host does not have yet
    before = remote.run(cmd.snapshot(env, stack)).stdout
    up = remote.run(cmd.up(env, stack, wait_timeout(env)),
                    timeout=wait_timeout(env) + GRACE, check=False)
    if not up.ok:
        ps = remote.run(cmd.compose(env, stack, "ps", "--all"), check=False)
        raise StepFailed(remote.failure(up) + "\n" + ps.stdout.strip())
    after = remote.run(cmd.snapshot(env, stack)).stdout
    touched = changes(before, after)
    project = compose_project(env, stack)
    count = len([line for line in after.splitlines() if line.strip()])
    if not touched:
        return Outcome(False, f"nothing to do: all {count} containers of {project} "
                              "already up to date and healthy")
    return Outcome(True, f"{project}: created or restarted {', '.join(touched)}; "
                         "all healthy")


def prepare_data(env: Environment, pool: Pool) -> Callable[[Environment, Host, Remote], Outcome]:
    """The log groups first, when the stack logs to CloudWatch."""
    logs.prepare(env, lambda change: pool.printer.line("aws", change))
    return partial(apply_up, "data")


DATA_UP = Step("data.up", ("data",), "start the data stack and wait until healthy",
               partial(plan_up, "data"), prepare=prepare_data)
