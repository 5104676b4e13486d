"""One rolling mechanism: replace a service's replicas on a host without dropping a request.

For a release, a rollback (and secret rotation): start as many new replicas as run now, with
the new image, beside the old ones; wait until every new one is healthy (never routed before);
route to old and new together and watch the gateway's answers for `watch` seconds; if the new
replicas answered 5xx more often than the old, route back to the old only, drain and remove
the new (the old never stopped serving); otherwise route to the new only, wait until the
gateway finished what it sent the old, then stop and remove them. A wrinkle-free copy of
wowu/docker-rollout's idea, with the drain and the rollback it lacks.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from fabfile.commands import compose as compose_cmd
from fabfile.commands import release as release_cmd
from fabfile.config import Environment
from fabfile.errors import StepFailed
from fabfile.ops import inventory, routing
from fabfile.ops.inventory import Container
from fabfile.ops.scale import STOP_GRACE, containers_now
from fabfile.remote import Remote, Result
from fabfile.services import compose_project


class RollFailed(StepFailed):
    """The new replicas of a service were not good; they are gone, the old ones serve."""

    def __init__(self, host: str, service: str, why: str, detail: str = "") -> None:
        super().__init__(f"{service} on {host}: {why}" + (f"\n  {detail}" if detail else ""))
        self.host = host
        self.service = service


@dataclass(frozen=True)
class Answers:
    """What the gateway answered from a group of replicas during the watch."""

    total: int
    errors: int   # 5xx from the upstream

    @property
    def rate(self) -> float:
        return self.errors / self.total if self.total else 0.0


def answers(log: str, addresses: set[str]) -> Answers:
    """Count the gateway's access-log lines whose upstream was one of `addresses`."""
    total = errors = 0
    for line in log.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        upstream = str(entry.get("upstream_addr", "")).split(",")[-1].strip()
        if upstream.rsplit(":", 1)[0] not in addresses:
            continue
        total += 1
        status = str(entry.get("upstream_status", "")).split(",")[-1].strip()
        if status.isdigit() and int(status) >= 500:
            errors += 1
    return Answers(total, errors)


def worse(new: Answers, old: Answers) -> bool:
    """A 5xx rise: the new replicas failed some requests, and more often than the old."""
    return new.errors > 0 and new.rate > old.rate


def replace(env: Environment, remote: Remote, service: str, images: dict[str, str],
            count: int) -> str:
    """Roll `service` on this host to `images[service]`, keeping `count` replicas. Returns
    what happened; raises RollFailed with nothing left of the new release."""
    settings = env.release
    before = containers_now(env, remote)
    old = inventory.of(before, service)
    if count == 0:
        return f"{service}: scaled to 0, nothing to replace"
    known = {c.id for c in before}
    up = remote.run(compose_cmd.scale_up(env, service, len(old) + count,
                                         settings.health_timeout, images),
                    timeout=settings.health_timeout + 60, check=False)
    after = containers_now(env, remote)
    new = [c for c in inventory.of(after, service) if c.id not in known]
    bad = [c for c in new if not c.ok]
    if not up.ok or len(new) < count or bad:
        why = (f"new replicas not healthy within {settings.health_timeout}s" if up.ok or new
               else "the new replicas did not start")
        detail = health_detail(remote, bad or new, up)
        remove(remote, new)
        raise RollFailed(remote.host.name, service, why + "; removed them, the old replicas "
                         "kept serving", detail)
    network = routing.services_network(env)
    both = routing.refresh(env, remote, after)
    if settings.watch:
        time.sleep(settings.watch)
        log = remote.run(release_cmd.gateway_log(compose_project(env, "core"), both.at)).stdout
        seen_new = answers(log, {c.address(network) or "" for c in new})
        seen_old = answers(log, {c.address(network) or "" for c in old})
        if worse(seen_new, seen_old):
            routing.refresh(env, remote, after, frozenset(c.id for c in new))
            remove(remote, new)
            raise RollFailed(remote.host.name, service,
                             f"the gateway's 5xx rose: {seen_new.errors} of {seen_new.total} "
                             f"answers from the new replicas (old: {seen_old.errors} of "
                             f"{seen_old.total}); routed back to the old ones and removed the "
                             "new")
    routing.refresh(env, remote, after, frozenset(c.id for c in old))
    remove(remote, old)
    return (f"{service}: {len(new)} new replica(s) healthy and routed, {len(old)} old drained "
            "and removed")


def remove(remote: Remote, containers: list[Container]) -> None:
    if containers:
        remote.run(compose_cmd.remove([c.id for c in containers], STOP_GRACE),
                   timeout=STOP_GRACE + 60)


def health_detail(remote: Remote, containers: list[Container], up: Result) -> str:
    """The last lines of the failing health checks (masked by the remote's printer)."""
    if containers:
        out = remote.run(release_cmd.health_log(containers[0].id), check=False)
        lines = [line for line in out.stdout.splitlines() if line.strip()][-6:]
    else:
        lines = up.stderr.strip().splitlines()[-4:]
    return remote.printer.mask("\n  ".join(lines))
