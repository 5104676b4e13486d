"""replica.init: initiate MongoDB replica set rs0 once, then make sure the users exist.

The work is done by scripts/init-replica.sh (the same script an operator runs by hand); this
step runs it and reads its last lines to tell "initiated now" from "already initiated".
"""

from __future__ import annotations

from fabfile.commands.replica import init_replica
from fabfile.config import Environment, Host
from fabfile.flow import Outcome, Step
from fabfile.remote import Remote
from fabfile.sync import wire

PRIMARY_TIMEOUT = 120
ALREADY = "replica set rs0 already initiated"


def plan(env: Environment, host: Host) -> list[str]:
    return [f"$ {wire(host, init_replica(env, PRIMARY_TIMEOUT))}"]


def outcome(stdout: str) -> Outcome:
    """Changed when rs0 was initiated now or a user was created or updated."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    users = [line for line in lines if line.startswith("user ")]
    user_changes = [u for u in users if not u.endswith(" unchanged")]
    if any(line == ALREADY for line in lines) and not user_changes:
        return Outcome(False, f"nothing to do: {ALREADY}; users unchanged")
    initiated = "already initiated" if any(line == ALREADY for line in lines) else "initiated"
    detail = f"; {'; '.join(user_changes)}" if user_changes else ""
    return Outcome(True, f"replica set rs0 {initiated}{detail}")


def apply(env: Environment, host: Host, remote: Remote) -> Outcome:
    result = remote.run(init_replica(env, PRIMARY_TIMEOUT), timeout=PRIMARY_TIMEOUT + 60)
    return outcome(result.stdout)


REPLICA_INIT = Step("replica.init", ("data",),
                    "initiate replica set rs0 (once) and ensure the MongoDB users",
                    plan, apply)
