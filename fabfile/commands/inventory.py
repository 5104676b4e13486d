"""What runs on a host: every container of the stacks, one tab-separated line each."""

from __future__ import annotations

import shlex

from fabfile.commands.compose import LABEL

FIELDS = ("service", "number", "id", "name", "state", "health", "image", "started", "networks")
FORMAT = "\t".join([
    '{{index .Config.Labels "com.docker.compose.service"}}',
    '{{index .Config.Labels "com.docker.compose.container-number"}}',
    "{{.Id}}",
    "{{.Name}}",
    "{{.State.Status}}",
    "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}",
    "{{.Config.Image}}",
    "{{.State.StartedAt}}",
    "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}={{$v.IPAddress}} {{end}}",
])


def containers(projects: list[str]) -> str:
    """`service number id name state health image started net=ip ...` per container."""
    listings = "; ".join(shlex.join(["docker", "ps", "--all", "--quiet", "--no-trunc",
                                      "--filter", f"label={LABEL}={p}"]) for p in projects)
    return (f"ids=$({listings}); "
            f"[ -z \"$ids\" ] || docker inspect --format {shlex.quote(FORMAT)} $ids")


def memory() -> str:
    """The host's memory in kB, as the kernel reports it."""
    return "awk '/^MemTotal:/ {print $2}' /proc/meminfo"
