"""health: `docker compose ps` state and `/health` of every service, per host, in one round trip.

A service is healthy when every one of its containers runs, Docker's healthcheck (if any) says
healthy, and its own GET /health answers 200. Services the environment expects but that have
no container are reported as missing. The failing dependencies a service names in its /health
body are shown, so "redis is down" also shows who suffers from it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from fabfile.commands.health import probe
from fabfile.config import Environment, Host
from fabfile.errors import StepFailed
from fabfile.flow import Outcome, Step, columns
from fabfile.remote import Remote
from fabfile.services import JAFAR_PORT, STACKS, compose_project, stack_services
from fabfile.sync import wire


@dataclass
class Check:
    host: str
    service: str
    container: str
    state: str          # running, exited, restarting, ..., or "missing"
    docker_health: str  # healthy, unhealthy, starting, none
    http: str           # HTTP status of GET /health, "-" where not applicable
    detail: str
    healthy: bool


def probe_command(env: Environment, host: Host) -> str:
    stacks = [s for s in STACKS if host.has(s)]
    http = [s.name for st in stacks for s in stack_services(st, env) if s.health_port]
    gateway = (env.gateway_address(host) or "127.0.0.1") if host.has("core") else None
    return probe([compose_project(env, s) for s in stacks], http, JAFAR_PORT, gateway)


def plan(env: Environment, host: Host) -> list[str]:
    return [f"$ {wire(host, probe_command(env, host))}"]


def failing_checks(body: str) -> str:
    """The dependencies a /health body reports as failing, e.g. 'redis: connection refused'.
    A body that is not JSON is kept whole here: it is masked before any cut."""
    try:
        checks = json.loads(body).get("checks", {})
    except (ValueError, AttributeError):
        return body
    if not isinstance(checks, dict):
        return ""
    return ", ".join(f"{k}: {v}" for k, v in checks.items() if v != "ok")


def evaluate(env: Environment, host: Host, output: str) -> list[Check]:
    """Turn the probe's lines into one Check per container (plus one per missing service)."""
    checks: dict[str, Check] = {}
    gateway_code = "-"
    for line in output.splitlines():
        fields = line.split("\t")
        if fields[0] == "C" and len(fields) == 5:
            _, service, name, state, docker_health = fields
            ok = state == "running" and docker_health in ("healthy", "none")
            checks[name] = Check(host.name, service, name, state, docker_health, "-",
                                 "" if ok else f"container {state}, health {docker_health}", ok)
        elif fields[0] == "H" and len(fields) == 4 and fields[1] in checks:
            c = checks[fields[1]]
            c.http = fields[3] or "none"
            if c.http != "200":
                c.healthy = False
                why = failing_checks(fields[2]) or "no answer"
                c.detail = "; ".join(p for p in (c.detail, f"/health {c.http}: {why}") if p)
        elif fields[0] == "G" and len(fields) == 2:
            gateway_code = fields[1] or "none"
    for c in checks.values():
        if c.service == "gateway":
            c.http = gateway_code
            if gateway_code != "200":
                c.healthy = False
                c.detail = "; ".join(p for p in (c.detail, f"https /health {gateway_code}") if p)
    found = {c.service for c in checks.values()}
    result = sorted(checks.values(), key=lambda c: (c.service, c.container))
    for stack in STACKS:
        if host.has(stack):
            for s in stack_services(stack, env):
                if s.name not in found:
                    result.append(Check(host.name, s.name, "-", "missing", "-", "-",
                                        "no container", False))
    return result


def check_host(env: Environment, host: Host, remote: Remote) -> list[Check]:
    return evaluate(env, host, remote.run(probe_command(env, host)).stdout)


#: The deploy's gate counts a service unhealthy when it failed this many probes in a row, this
#: far apart, as Docker counts a health check's retries: one slow answer on a busy host is not
#: a failed deploy, a service that stays down is.
PROBES = 3
PROBE_PAUSE_S = 2.0


def apply(env: Environment, host: Host, remote: Remote) -> Outcome:
    """As a deploy step: fail the flow when anything stays unhealthy, naming it."""
    for attempt in range(1, PROBES + 1):
        checks = check_host(env, host, remote)
        bad = [c for c in checks if not c.healthy]
        if not bad:
            again = f" on probe {attempt} of {PROBES}" if attempt > 1 else ""
            return Outcome(False, f"all {len(checks)} containers healthy{again} "
                                  "(read-only check)")
        if attempt < PROBES:
            time.sleep(PROBE_PAUSE_S)
    raise StepFailed(f"{host.name}: unhealthy on {PROBES} probes {PROBE_PAUSE_S:g}s apart: "
                     + "; ".join(f"{c.service} ({c.detail})" for c in bad))


HEALTH = Step("health", ("data", "core"), "docker compose ps and /health of every service",
              plan, apply)


def masked(checks: list[Check], mask: Callable[[str], str], width: int = 200) -> list[Check]:
    """Every text field masked, then the detail cut to `width` (in that order: a secret cut
    in two would not be recognised)."""
    out = []
    for c in checks:
        fields = {k: mask(v) if isinstance(v, str) else v for k, v in asdict(c).items()}
        detail = fields["detail"]
        fields["detail"] = detail if len(detail) <= width else detail[:width - 3] + "..."
        out.append(Check(**fields))
    return out


def table(checks: list[Check]) -> list[str]:
    heads = ("HOST", "SERVICE", "CONTAINER", "STATE", "HEALTH", "/health", "OK", "DETAIL")
    rows = [(c.host, c.service, c.container, c.state, c.docker_health, c.http,
             "yes" if c.healthy else "NO", c.detail) for c in checks]
    return columns(heads, rows)


def as_json(checks: list[Check]) -> str:
    return json.dumps({"healthy": all(c.healthy for c in checks),
                       "checks": [asdict(c) for c in checks]}, indent=2)
