"""The hosts each core host's Prometheus scrapes for node_exporter (job `node`), as a file_sd
file that files.sync writes per host to config/prometheus/targets/node.json (Prometheus reads
it again when it changes; no reload needed).

A core host scrapes its own node_exporter on the Docker bridge (host.docker.internal, as a
container reaches its host) and, in the split topology, every other host of the environment
on its private address, where host.harden makes node_exporter listen too and lets only the
core hosts in. Each target is labelled with the host's name and roles, so an alert says which
host it is about.
"""

from __future__ import annotations

import json

from fabfile.config import Environment, Host
from fabfile.hosts.baseline import NODE_EXPORTER_PORT, node_listen

PATH = "config/prometheus/targets/node.json"


def node_targets(env: Environment, host: Host) -> list[dict]:
    """What this host's Prometheus scrapes for job `node` (empty on a host without core)."""
    if not host.has("core"):
        return []

    def labels(h: Host) -> dict[str, str]:
        return {"host": h.name, "roles": ",".join(r for r in ("data", "core") if h.has(r))}
    found = [{"targets": [f"host.docker.internal:{NODE_EXPORTER_PORT}"], "labels": labels(host)}]
    for other in env.hosts:
        for listen in node_listen(env, other) if other is not host else ():
            found.append({"targets": [listen], "labels": labels(other)})
    return found


def render(env: Environment, host: Host) -> str:
    return json.dumps(node_targets(env, host), indent=2) + "\n"
