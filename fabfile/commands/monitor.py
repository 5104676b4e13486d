"""What monitor.status runs on a core host: Prometheus' own API, asked from inside its
container (over the SSH connection; no port is opened or published for it)."""

from __future__ import annotations

import shlex

from fabfile.commands.compose import LABEL

API = "http://127.0.0.1:9090/api/v1"
NO_PROMETHEUS = 3  # exit code: no running Prometheus container in the project


def prometheus_query(project: str) -> str:
    """Prints `T<TAB>` + the active targets' JSON, then `A<TAB>` + the alerts' JSON (each one
    line, as Prometheus writes it); exits 3 when the project runs no Prometheus."""
    find = shlex.join(["docker", "ps", "--quiet", "--filter", f"label={LABEL}={project}",
                       "--filter", "label=com.docker.compose.service=prometheus"])
    lines = [
        f"c=$({find} | head -n 1)",
        f'[ -n "$c" ] || {{ echo "no running prometheus container" >&2; exit {NO_PROMETHEUS}; }}',
    ]
    for tag, path in (("T", "targets?state=active"), ("A", "alerts")):
        # no -T: Debian bookworm's busybox wget crashes on it (the SSH command's timeout bounds it)
        get = shlex.join(["wget", "-q", "-O", "-", f"{API}/{path}"])
        lines.append(f'out=$(docker exec "$c" {get}) || exit 1')
        lines.append(f"printf '{tag}\\t%s\\n' \"$(printf '%s' \"$out\" | tr -d '\\n')\"")
    return "\n".join(lines)


def reload_config(project: str, services: tuple[str, ...]) -> str:
    """SIGHUP to the project's running containers of these services: Prometheus and
    Alertmanager read their configuration again (one they cannot load is refused and the old
    one kept; their log says why). Prints `reloaded NAME` for each container signalled;
    nothing when none runs yet (the first core.up starts them with the new files)."""
    lines = []
    for service in services:
        find = shlex.join(["docker", "ps", "--quiet", "--filter", f"label={LABEL}={project}",
                           "--filter", f"label=com.docker.compose.service={service}"])
        lines.append(f"for c in $({find}); do docker kill --signal HUP \"$c\" >/dev/null "
                     f"&& echo \"reloaded {service}\"; done")
    return "\n".join(lines)
