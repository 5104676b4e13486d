"""docker compose command lines for the two stacks."""

from __future__ import annotations

import shlex

from fabfile.config import Environment
from fabfile.monitor import cluster
from fabfile.services import BY_NAME, compose_project

ENV_FILE = ".env.ec2"
LABEL = "com.docker.compose.project"


def compose_files(env: Environment, stack: str) -> list[str]:
    """Base file plus overrides: split publishes data ports on the private address; single
    attaches core to the data network; two core hosts or more join their Alertmanagers;
    awslogs replaces the local log rotation."""
    files = [f"compose/docker-compose.{stack}.yml"]
    if stack == "data" and env.topology == "split":
        files.append("compose/docker-compose.data.split.yml")
    if stack == "core" and env.topology == "single":
        files.append("compose/docker-compose.core.single.yml")
    if stack == "core" and cluster.clustered(env):
        files.append(cluster.COMPOSE_FILE)
    if env.log_driver == "awslogs":
        files.append(f"compose/docker-compose.{stack}.awslogs.yml")
    return files


def suite_variables(env: Environment, images: dict[str, str] | None = None) -> dict[str, str]:
    """Variables the suite sets from config/environments.yml (not secrets, not in .env.ec2);
    `images` pins jafar services to a release's images (service -> repo:tag@digest)."""
    variables = {
        "JAFAR_REGISTRY": env.registry,
        "JAFAR_TAG": env.tag,
        "COMPOSE_PROFILES": ",".join(env.compose_profiles),
        "JAFAR_HEALTH_INTERVAL": env.health_interval,
        "JAFAR_DB_POOL_SIZE": str(env.pool_size),
        "MONGO_MAX_CONNECTIONS": str(env.data_limits["mongo"]),
        "REDIS_MAXCLIENTS": str(env.data_limits["redis"]),
        "POSTGRES_MAX_CONNECTIONS": str(env.data_limits["postgres"]),
        # a thread (MongoDB) or a process (PostgreSQL) per connection, and room for their own
        "MONGO_PIDS_LIMIT": str(env.data_limits["mongo"] + 256),
        "POSTGRES_PIDS_LIMIT": str(env.data_limits["postgres"] + 128),
    }
    if env.log_driver == "awslogs" and env.awslogs_group and env.aws:
        variables.update(AWSLOGS_GROUP=env.awslogs_group, AWS_REGION=env.aws.region)
    if env.topology == "split" and env.data_host.private_address:
        variables["DATA_BIND_ADDRESS"] = env.data_host.private_address
    variables.update(sorted(env.images.items()))
    # the pins (inv images.pin) of the references asked for: the same image, by digest
    variables.update((var, pin) for var, pin in sorted(env.pins.items())
                     if var not in env.images or pin.split("@", 1)[0] == env.images[var])
    variables.update((BY_NAME[name].image_variable, ref) for name, ref in sorted(
        (images or {}).items()))
    return variables


def compose(env: Environment, stack: str, *args: str,
            images: dict[str, str] | None = None) -> str:
    """`cd DEPLOY && env VARS docker compose -p PROJECT --env-file .env.ec2 -f ... ARGS`."""
    argv = ["env", *(f"{k}={v}" for k, v in suite_variables(env, images).items()),
            "docker", "compose", "-p", compose_project(env, stack), "--env-file", ENV_FILE]
    for f in compose_files(env, stack):
        argv += ["-f", f]
    return f"cd {shlex.quote(env.deploy_path)} && {shlex.join([*argv, *args])}"


def up(env: Environment, stack: str, wait_timeout: int, counts: dict[str, int] | None = None,
       images: dict[str, str] | None = None) -> str:
    """Create or update the stack and block until every service is healthy; `counts` gives
    the replicas of scaled services (compose would otherwise go back to one), `images` the
    release recorded on the host."""
    scale = [a for name, n in (counts or {}).items() for a in ("--scale", f"{name}={n}")]
    return compose(env, stack, "up", "--detach", "--wait", "--wait-timeout", str(wait_timeout),
                   *scale, images=images)


def scale_up(env: Environment, service: str, count: int, wait_timeout: int,
             images: dict[str, str] | None = None) -> str:
    """Start only the missing replicas of one service and wait until they are healthy: no
    existing container is recreated (--no-recreate) and nothing else is touched (--no-deps).
    With another image than the running replicas', this starts the new release beside the
    old one (how a release rolls)."""
    return compose(env, "core", "up", "--detach", "--no-recreate", "--no-deps", "--wait",
                   "--wait-timeout", str(wait_timeout), "--scale", f"{service}={count}", service,
                   images=images)


def recreate(env: Environment, stack: str, services: list[str], wait_timeout: int) -> str:
    """Replace these services' containers (new ones see the files as they are now, e.g. a
    new certificate) and wait until they are healthy; nothing else is touched."""
    return compose(env, stack, "up", "--detach", "--force-recreate", "--no-deps", "--wait",
                   "--wait-timeout", str(wait_timeout), *services)


def remove(ids: list[str], grace: int) -> str:
    """Stop (SIGTERM, then `grace` seconds to finish in-flight work) and remove containers."""
    return " && ".join([shlex.join(["docker", "stop", "--time", str(grace), *ids]),
                        shlex.join(["docker", "rm", *ids])])


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
