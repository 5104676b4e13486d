"""docker compose command lines for the two stacks."""

from __future__ import annotations

import shlex

from fabfile.config import Environment
from fabfile.services import compose_project

ENV_FILE = ".env.ec2"
LABEL = "com.docker.compose.project"


def compose_files(env: Environment, stack: str) -> list[str]:
    """Base file plus overrides: split publishes data ports on the private address; single
    attaches core to the data network; awslogs replaces the local log rotation."""
    files = [f"compose/docker-compose.{stack}.yml"]
    if stack == "data" and env.topology == "split":
        files.append("compose/docker-compose.data.split.yml")
    if stack == "core" and env.topology == "single":
        files.append("compose/docker-compose.core.single.yml")
    if env.log_driver == "awslogs":
        files.append(f"compose/docker-compose.{stack}.awslogs.yml")
    return files


def suite_variables(env: Environment) -> dict[str, str]:
    """Variables the suite sets from config/environments.yml (not secrets, not in .env.ec2)."""
    variables = {
        "JAFAR_REGISTRY": env.registry,
        "JAFAR_TAG": env.tag,
        "COMPOSE_PROFILES": ",".join(env.compose_profiles),
    }
    if env.log_driver == "awslogs" and env.awslogs_group and env.aws_region:
        variables.update(AWSLOGS_GROUP=env.awslogs_group, AWS_REGION=env.aws_region)
    if env.topology == "split" and env.data_host.private_address:
        variables["DATA_BIND_ADDRESS"] = env.data_host.private_address
    variables.update(sorted(env.images.items()))
    return variables


def compose(env: Environment, stack: str, *args: str) -> str:
    """`cd DEPLOY && env VARS docker compose -p PROJECT --env-file .env.ec2 -f ... ARGS`."""
    argv = ["env", *(f"{k}={v}" for k, v in suite_variables(env).items()),
            "docker", "compose", "-p", compose_project(env, stack), "--env-file", ENV_FILE]
    for f in compose_files(env, stack):
        argv += ["-f", f]
    return f"cd {shlex.quote(env.deploy_path)} && {shlex.join([*argv, *args])}"


def up(env: Environment, stack: str, wait_timeout: int) -> str:
    """Create or update the stack and block until every service is healthy."""
    return compose(env, stack, "up", "--detach", "--wait", "--wait-timeout", str(wait_timeout))


def config_check(env: Environment, stack: str) -> str:
    """Validate the stack as the host sees it (files + env) before touching containers."""
    return compose(env, stack, "config", "--quiet")


def snapshot(env: Environment, stack: str) -> str:
    """One line per container of the stack: id, name, start time, state. Unchanged lines before
    and after `up` mean nothing was created or restarted."""
    project = compose_project(env, stack)
    ps = shlex.join(["docker", "ps", "--all", "--quiet", "--no-trunc",
                     "--filter", f"label={LABEL}={project}"])
    inspect = shlex.join(["xargs", "-r", "docker", "inspect", "--format",
                          "{{.Id}} {{.Name}} {{.State.StartedAt}} {{.State.Status}}"])
    return f"{ps} | {inspect}"
