"""The env namespace: check the env file offline, sync it (a flow step)."""

from __future__ import annotations

from pathlib import Path

from invoke import Collection, Context, task

from fabfile import envfile
from fabfile.config import load_environment
from fabfile.errors import BadInput
from fabfile.tasks.common import handled, target
from fabfile.tasks.steps import step_task


@task(name="check", auto_shortflags=False, help={
    "host": "environment whose env_file to check (default: ./.env.ec2)",
    "file": "path of the env file to check instead"})
@handled
def env_check(c: Context, host: str | None = None, file: str | None = None) -> None:
    """Report missing, empty, unknown or weak keys of an env file (by name, never by value)."""
    if file is not None and not file.strip():
        raise BadInput("--file is empty; give the path of an env file")
    name = target(c, host)
    path = Path(file) if file else (load_environment(name).env_file if name else
                                    envfile.ROOT / ".env.ec2")
    envfile.require_valid(path)
    print(f"{path}: ok ({len(envfile.example_keys())} keys, mode 0600)")


namespace = Collection("env", env_check, step_task("env.sync"))
