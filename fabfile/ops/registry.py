"""Log a host in to the environment's registry before it pulls: for ECR, with a token from
ecr.get_authorization_token sent to `docker login --password-stdin` on the SSH channel's stdin,
never on a command line and never printed (the masker knows it from the moment it is fetched).
Other registries (the sandbox's) need nothing."""

from __future__ import annotations

from fabfile.aws import ecr
from fabfile.commands import release as release_cmd
from fabfile.config import Environment
from fabfile.errors import StepFailed
from fabfile.remote import Remote

_done: set[tuple[str, str]] = set()  # (host, registry) logged in during this run


def login(env: Environment, remote: Remote) -> None:
    """Once per host and run; nothing for a registry that is not ECR."""
    registry = ecr.registry_host(env)
    if registry is None or (remote.host.name, registry) in _done:
        return
    secret = ecr.password(env, registry)
    remote.printer.mask.add([secret])
    result = remote.run_with_input(release_cmd.login(registry), f"{secret}\n".encode(),
                                   timeout=60, check=False)
    if not result.ok:
        raise StepFailed(remote.failure(result))
    _done.add((remote.host.name, registry))
