"""host.check's container controls (CIS Docker Benchmark, section 5) on what actually runs.

The compose files ask for them; these lines prove each running container got them: a PIDs
limit, a memory limit, CPU shares or a CPU limit, no-new-privileges, a read-only root, every
capability dropped, and a non-root user unless the service catalogue says why it needs root.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass

from fabfile.services import BY_NAME

COMPOSE_SERVICE = "com.docker.compose.service"
FIELDS = ("name", "service", "user", "pids", "memory", "cpu_shares", "nano_cpus", "cpu_quota",
          "read_only", "security_opt", "cap_drop")
FORMAT = "|".join((
    "{{.Name}}", f'{{{{index .Config.Labels "{COMPOSE_SERVICE}"}}}}', "{{.Config.User}}",
    "{{.HostConfig.PidsLimit}}", "{{.HostConfig.Memory}}", "{{.HostConfig.CpuShares}}",
    "{{.HostConfig.NanoCpus}}", "{{.HostConfig.CpuQuota}}", "{{.HostConfig.ReadonlyRootfs}}",
    "{{json .HostConfig.SecurityOpt}}", "{{json .HostConfig.CapDrop}}"))


@dataclass(frozen=True)
class Container:
    name: str
    service: str      # the compose service ("" for a container compose did not start)
    user: str         # the image's or compose's user ("" is root)
    pids: str
    memory: str
    cpu_shares: str
    nano_cpus: str
    cpu_quota: str
    read_only: str
    security_opt: str  # JSON lists, as docker inspect prints them (null when unset)
    cap_drop: str

    @property
    def label(self) -> str:
        return self.name.lstrip("/")

    def runs_as_root(self) -> bool:
        user = self.user.split(":", 1)[0]
        return user in ("", "0", "root")

    def may_run_as_root(self) -> bool:
        """Only a catalogue service whose uid is 0 (the gateway: nginx's master binds 80/443
        and reads the TLS key; its workers drop to nginx)."""
        known = BY_NAME.get(self.service)
        return known is not None and known.uid == 0


def probe() -> str:
    """Every running container's settings, one line each (nothing when none runs)."""
    return f"docker ps -q | xargs -r docker inspect --format {shlex.quote(FORMAT)}"


def parse(output: str) -> list[Container] | None:
    """None when the output is not the probe's (Docker unreachable, say)."""
    found = []
    for line in output.splitlines():
        if not line.strip() or (line.startswith("Error") and "No such" in line):
            continue  # a container that ended between `docker ps` and `docker inspect`
        fields = line.split("|")
        if len(fields) != len(FIELDS) or not fields[0].startswith("/"):
            return None
        found.append(Container(*fields))
    return found


def _listed(value: str) -> list[str]:
    try:
        items = json.loads(value)
    except ValueError:
        return []
    return [str(i) for i in items] if isinstance(items, list) else []


def _positive(value: str) -> bool:
    return value.lstrip("-").isdigit() and int(value) > 0


CHECKS: tuple[tuple[str, Callable[[Container], bool]], ...] = (
    ("a PIDs limit", lambda c: _positive(c.pids)),
    ("a memory limit", lambda c: _positive(c.memory)),
    ("CPU shares or a CPU limit",
     lambda c: _positive(c.cpu_shares) or _positive(c.nano_cpus) or _positive(c.cpu_quota)),
    ("no-new-privileges", lambda c: any(o.split("=")[0].split(":")[0] == "no-new-privileges"
                                        and not o.endswith("false")
                                        for o in _listed(c.security_opt))),
    ("a read-only root", lambda c: c.read_only == "true"),
    ("every capability dropped", lambda c: "ALL" in _listed(c.cap_drop)),
    ("a non-root user (root only where the catalogue says why)",
     lambda c: not c.runs_as_root() or c.may_run_as_root()),
)


def evaluate(output: str, add: Callable[[str, str, str, bool], None]) -> None:
    """One PASS/FAIL line per control over all running containers, naming those that lack it."""
    containers = parse(output)
    if containers is None:
        add("containers: settings readable", "docker inspect of the running containers",
            (output.strip().splitlines() or ["no output"])[0], False)
        return
    for what, has in CHECKS:
        missing = sorted(c.label for c in containers if not has(c))
        actual = (f"missing: {', '.join(missing)}" if missing else
                  f"all {len(containers)}" if containers else "no container running")
        add(f"containers: {what}", "every running container", actual, not missing)
