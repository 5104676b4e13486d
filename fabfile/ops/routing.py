"""Which replicas take traffic: healthy ones only, and a replica leaves the list (drained)
before it stops. One mechanism for scale now, and for release, rotation and host rolling.
"""

from __future__ import annotations

from dataclasses import dataclass

from fabfile.commands import routing as cmd
from fabfile.config import Environment
from fabfile.ops.inventory import Container
from fabfile.remote import Remote
from fabfile.services import JAFAR, compose_project

# nginx's proxy_read_timeout is 30 s: an old worker has finished within that, plus margin
DRAIN_SECONDS = 45


def services_network(env: Environment) -> str:
    """The core stack's network that the gateway and the services share."""
    return f"{compose_project(env, 'core')}_services"


def routes(env: Environment, containers: list[Container],
           excluded: frozenset[str] = frozenset()) -> dict[str, list[str]]:
    """service -> addresses of its replicas that may take traffic: running, healthy, not
    about to be stopped (`excluded` ids)."""
    network = services_network(env)
    found: dict[str, list[str]] = {s.name: [] for s in JAFAR}
    for c in containers:
        address = c.address(network)
        if c.service in found and c.ok and c.id not in excluded and address:
            found[c.service].append(address)
    return found


@dataclass(frozen=True)
class Routed:
    outcome: str   # UNCHANGED, WRITTEN (no gateway runs yet) or RELOADED (old workers drained)
    at: int        # the host's clock when it was done (epoch seconds)


def refresh(env: Environment, remote: Remote, containers: list[Container],
            excluded: frozenset[str] = frozenset()) -> Routed:
    """Route to exactly these replicas (healthy, not excluded)."""
    conf = cmd.gateway_conf(routes(env, containers, excluded), env.gateway.server_names,
                            env.gateway.trusted_proxies)
    result = remote.run_with_input(
        cmd.apply(env.deploy_path, compose_project(env, "core"), DRAIN_SECONDS), conf.encode(),
        timeout=DRAIN_SECONDS + 60)
    last = (result.stdout.strip().splitlines() or ["UNCHANGED 0"])[-1].split()
    return Routed(last[0], int(last[-1]) if last[-1].isdigit() else 0)
