"""Alertmanager's cluster across the core hosts (split topology, two core hosts or more).

Each core host's Alertmanager gossips with the others (memberlist, TCP and UDP on
CLUSTER_PORT of the private address): they share silences and the notification log, so an
alert that every core host's Prometheus fires pages once, and a silence set on one host holds
on all of them. Without it, two core hosts paged twice, and a silence held on one only.
The port is published on the private address only and let in from the other core hosts only
(DOCKER-USER on the host; in AWS, the core security group from itself, which aws.check
checks). Gossip carries silences and notification state, never a receiver's credentials.
"""

from __future__ import annotations

from fabfile.config import Environment, Host

CLUSTER_PORT = 9094
COMPOSE_FILE = "compose/docker-compose.core.cluster.yml"


def clustered(env: Environment) -> bool:
    return env.topology == "split" and len(env.hosts_with("core")) > 1


def address(host: Host) -> str:
    return host.private_address or host.ssh.address


def peers(env: Environment, host: Host) -> list[str]:
    """The other core hosts' Alertmanagers, as --cluster.peer takes them."""
    return [f"{address(h)}:{CLUSTER_PORT}" for h in env.hosts_with("core") if h.name != host.name]


def host_settings(env: Environment, host: Host) -> str:
    """The .env.ec2 lines of this core host (they differ per host, so not on the command
    line): where it listens and advertises, and whom it joins."""
    if not clustered(env) or not host.has("core"):
        return ""
    return (f"ALERTMANAGER_CLUSTER_LISTEN=0.0.0.0:{CLUSTER_PORT}\n"
            f"ALERTMANAGER_CLUSTER_ADDRESS={address(host)}\n"
            f"ALERTMANAGER_PEERS={','.join(peers(env, host))}\n")
