"""The health probe: one remote command that reports every container and every /health."""

from __future__ import annotations

import shlex

from fabfile.commands.compose import LABEL

INSPECT_FORMAT = ("{{index .Config.Labels \"com.docker.compose.service\"}}\t{{.Name}}\t"
                  "{{.State.Status}}\t{{if .State.Health}}{{.State.Health.Status}}{{else}}none"
                  "{{end}}\t{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}")


def probe(projects: list[str], http_services: list[str], port: int,
          gateway: str | None) -> str:
    """Prints `C<TAB>service<TAB>container<TAB>state<TAB>health` per container, then
    `H<TAB>container<TAB>body<TAB>code` for each running HTTP service (GET /health on the
    container's own address, so every replica is checked), and `G<TAB>code` for the gateway's
    HTTPS /health on the host at the address it publishes on (`gateway`; None: no gateway
    here). Each request has the 5 s the Compose health checks give."""
    listings = "; ".join(shlex.join(["docker", "ps", "--all", "--quiet", "--no-trunc",
                                      "--filter", f"label={LABEL}={p}"]) for p in projects)
    lines = [
        f"http=' {' '.join(http_services)} '",
        f"ids=$({listings}) || exit 1",  # label filters AND together: one listing each
        'if [ -n "$ids" ]; then',
        f"  docker inspect --format {shlex.quote(INSPECT_FORMAT)} $ids |",
        "  while IFS=\"$(printf '\\t')\" read -r svc name state health ips; do",
        "    printf 'C\\t%s\\t%s\\t%s\\t%s\\n' \"$svc\" \"${name#/}\" \"$state\" \"$health\"",
        "    case \"$http\" in",
        "      *\" $svc \"*)",
        "        ip=${ips%% *}",
        "        if [ \"$state\" = running ] && [ -n \"$ip\" ]; then",
        f"          resp=$(curl -s -m 5 -w '\\n%{{http_code}}' \"http://$ip:{port}/health\")",
        "          code=$(printf '%s' \"$resp\" | tail -n 1)",
        "          body=$(printf '%s' \"$resp\" | sed '$d' | tr '\\n\\t' '  ')",
        "          printf 'H\\t%s\\t%s\\t%s\\n' \"${name#/}\" \"$body\" \"$code\"",
        "        fi;;",
        "    esac",
        "  done",
        "fi",
    ]
    if gateway:
        lines.append("printf 'G\\t%s\\n' \"$(curl -sk -m 5 -o /dev/null -w '%{http_code}' "
                     f"{shlex.quote(f'https://{gateway}/health')})\"")
    return "\n".join(lines)
