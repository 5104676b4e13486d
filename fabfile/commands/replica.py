"""The replica set script, run on the data host exactly as a person would run it by hand."""

from __future__ import annotations

import shlex

from fabfile.config import Environment
from fabfile.services import compose_project


def init_replica(env: Environment, timeout: int) -> str:
    """`./scripts/init-replica.sh`: initiates rs0 once, waits for a PRIMARY, ensures users."""
    script = shlex.join(["./scripts/init-replica.sh", "--project", compose_project(env, "data"),
                         "--timeout", str(timeout)])
    return f"cd {shlex.quote(env.deploy_path)} && {script}"
