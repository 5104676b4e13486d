"""`inv ps` and `inv logs`: what runs where, and what it says (read-only, no lock).

ps reads each host in one round trip: every container of the host's stacks and the recorded
scale overrides, so that each service's replica count shows against the wanted count.
logs streams `docker compose logs` of one service (all its replicas), every line masked.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from datetime import datetime

from fabfile.commands import compose as compose_cmd
from fabfile.commands import inventory as inventory_cmd
from fabfile.commands import sections
from fabfile.commands import state as state_cmd
from fabfile.config import Environment, Host
from fabfile.errors import BadInput
from fabfile.flow import columns
from fabfile.ops import inventory
from fabfile.ops.state import parse_overrides, wanted
from fabfile.services import BY_NAME, SERVICES, STACKS, Service, compose_project, stack_services

PROBE = ("scale", "containers")
SINCE = re.compile(r"[1-9][0-9]{0,5}[smh]|\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d)?Z")


@dataclass
class Replica:
    host: str
    service: str
    replica: int
    container: str
    state: str
    health: str
    tag: str
    uptime: str


@dataclass
class Count:
    host: str
    service: str
    running: int
    wanted: int

    @property
    def ok(self) -> bool:
        return self.running == self.wanted


def probe(env: Environment, host: Host) -> str:
    projects = [compose_project(env, s) for s in STACKS if host.has(s)]
    return sections.script({"scale": state_cmd.read_scale(env.deploy_path),
                            "containers": inventory_cmd.containers(projects)})


def uptime(started: str, now: float) -> str:
    """`3d 4h`, `2h 5m`, `7m` from Docker's RFC 3339 start time (nanoseconds allowed)."""
    try:
        stamp = datetime.fromisoformat(re.sub(r"\.(\d{6})\d*", r".\1", started)
                                       .replace("Z", "+00:00")).timestamp()
    except ValueError:
        return "-"
    seconds = max(int(now - stamp), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m" if minutes else f"{seconds}s"


def evaluate(env: Environment, host: Host, output: str,
             now: float | None = None) -> tuple[list[Replica], list[Count]]:
    s = sections.split(output, PROBE)
    now = time.time() if now is None else now
    found = inventory.parse(s.get("containers", ""))
    replicas = [Replica(host.name, c.service, c.number, c.name, c.state, c.health, c.tag,
                        uptime(c.started, now) if c.state == "running" else "-") for c in found]
    want = wanted(env, parse_overrides(host.name, s.get("scale", "{}")))
    counts = [Count(host.name, svc.name, len([c for c in found if c.service == svc.name
                                              and c.state == "running"]),
                    want.get(svc.name, 1))
              for stack in STACKS if host.has(stack) for svc in stack_services(stack, env)]
    return replicas, counts


def table(replicas: list[Replica], counts: list[Count]) -> list[str]:
    lines = columns(("HOST", "SERVICE", "REPLICA", "STATE", "HEALTH", "TAG", "UPTIME"),
                    [(r.host, r.service, str(r.replica), r.state, r.health, r.tag, r.uptime)
                     for r in replicas])
    lines.append("")
    lines += columns(("HOST", "SERVICE", "RUNNING/WANTED"),
                     [(c.host, c.service, f"{c.running}/{c.wanted}"
                       + ("" if c.ok else "  MISMATCH")) for c in counts])
    return lines


def as_json(replicas: list[Replica], counts: list[Count]) -> str:
    return json.dumps({"ok": all(c.ok for c in counts),
                       "replicas": [asdict(r) for r in replicas],
                       "counts": [{**asdict(c), "ok": c.ok} for c in counts]}, indent=2)


# --- logs -------------------------------------------------------------------------------------

def log_service(name: str) -> Service:
    service = BY_NAME.get(name)
    if service is None:
        shown = ascii(name) if not name.isascii() else repr(name)
        raise BadInput(f"logs: unknown service {shown}; services: "
                       f"{', '.join(s.name for s in SERVICES)}")
    return service


def log_options(since: str | None, tail: str) -> tuple[str | None, str]:
    if since is not None and not SINCE.fullmatch(since):
        raise BadInput(f"logs: --since {since[:40]!r} is not a duration like 10m, 2h, 30s or a "
                       "UTC time like 2026-11-29T10:15:00Z")
    if tail != "all" and not (tail.isdigit() and 1 <= int(tail) <= 100000):
        raise BadInput(f"logs: --tail {tail[:40]!r} must be a number of lines from 1 to "
                       "100000, or all")
    return since, tail


def logs_command(env: Environment, service: Service, since: str | None, tail: str,
                 follow: bool) -> str:
    args = ["logs", "--no-color", "--timestamps", "--tail", tail]
    if since:
        args += ["--since", since]
    if follow:
        args.append("--follow")
    return compose_cmd.compose(env, service.stack, *args, service.name)
