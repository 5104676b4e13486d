"""`inv scale api=3,wallet=2`: replicas per core host, changed without dropping a request.

Scaling up starts only the new replicas (no existing container is recreated) and routes to
them once healthy; scaling down takes the replicas out of the gateway's list, waits until the
gateway has finished what it sent them, and only then stops them (SIGTERM, then the stop
grace period). Before any change the host must have room: memory for every container's limit
(with the doubling a release needs) and connections within each data store's limit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from fabfile.commands import compose as compose_cmd
from fabfile.commands import inventory as inventory_cmd
from fabfile.config import DATA_LIMIT_KEYS, Environment, Host
from fabfile.errors import BadInput, StepFailed
from fabfile.flow import Pool
from fabfile.ops import inventory, routing, state
from fabfile.ops.audit import Trail
from fabfile.ops.guard import Mutation
from fabfile.ops.identity import Operator
from fabfile.ops.inventory import Container
from fabfile.ops.state import CoreState
from fabfile.remote import Printer, Remote
from fabfile.services import JAFAR, SERVICES, compose_project, jafar_service
from fabfile.stacks import wait_timeout

STOP_GRACE = 30            # the services' stop_grace_period
USABLE_MEMORY = 0.9        # of MemTotal; the rest is the OS's
RESERVED_CONNECTIONS = 10  # per store: health checks, backups, exporters, an operator's shell
DEFAULT = None             # `api=default`: drop the override, use `replicas:`
SPEC_ITEM = re.compile(r"([a-z]+(?:-[a-z]+)*)=(\d+|default)")


def allowed_names() -> str:
    return ", ".join(s.short for s in JAFAR)


def parse_spec(spec: str, max_replicas: int) -> dict[str, int | None]:
    """`api=3,wallet=2` -> {"api-service": 3, "wallet-service": 2}; `x=default` -> None.
    Everything is checked here, before any connection (BadInput, exit 2)."""
    shape = (f"use SERVICE=COUNT[,SERVICE=COUNT], e.g. api=3,wallet=2; services: "
             f"{allowed_names()}; counts 1 to {max_replicas}, or default")
    if not spec or not spec.strip():
        raise BadInput(f"scale: nothing to scale; {shape}")
    wanted: dict[str, int | None] = {}
    for item in spec.split(","):
        shown = ascii(item) if not item.isascii() else repr(item)
        match = SPEC_ITEM.fullmatch(item)
        if not match:
            name, eq, count = item.partition("=")
            if eq and SPEC_ITEM.fullmatch(f"{name}=1") and not count.isdigit():
                raise BadInput(f"scale: {shown}: the count must be a whole number from 1 to "
                               f"{max_replicas}, or default")
            raise BadInput(f"scale: {shown} is not SERVICE=COUNT; {shape}")
        name, count = match.groups()
        service = jafar_service(name)
        if service is None:
            other = next((s for s in SERVICES if s.name == name), None)
            why = (f"{name} does not scale (only the seven jafar services do)" if other
                   else f"unknown service {name!r}")
            raise BadInput(f"scale: {why}; services: {allowed_names()}")
        if service.name in wanted:
            raise BadInput(f"scale: {service.short} is given twice; give each service once")
        if count == "default":
            wanted[service.name] = DEFAULT
            continue
        number = int(count)
        if not 0 <= number <= max_replicas:
            raise BadInput(f"scale: {service.short}={number} is out of range; counts are 1 to "
                           f"{max_replicas} (max_replicas), or 0 with --allow-zero")
        wanted[service.name] = number
    return wanted


# --- room for the new counts -----------------------------------------------------------------

def capacity(env: Environment, host: str, counts: dict[str, int], memory_kb: int,
             core_hosts: int) -> list[str]:
    """Why these counts (per core host, all seven services) do not fit, one line per limit."""
    problems = []
    on_host = [s for s in SERVICES if (s.stack == "core" or env.topology == "single")
               and not s.scalable and (s.profile is None or s.profile in env.compose_profiles)]
    fixed = sum(s.memory_mb for s in on_host)
    jafar = {s.name: counts[s.name] * s.memory_mb for s in JAFAR}
    doubling = max(jafar.values())
    need = fixed + sum(jafar.values()) + doubling
    usable = memory_kb / 1024 * USABLE_MEMORY
    if need > usable:
        problems.append(
            f"memory on {host}: the containers' limits need {need} MiB with a release's "
            f"doubling of the largest service ({doubling} MiB), but {int(usable)} MiB is usable "
            f"({int(USABLE_MEMORY * 100)} % of {memory_kb // 1024} MiB)")
    for store in DATA_LIMIT_KEYS:
        users = [s for s in JAFAR if store in s.uses]
        used = sum(counts[s.name] for s in users) * core_hosts * env.pool_size
        limit = env.data_limits[store]
        if used + RESERVED_CONNECTIONS > limit:
            per = " + ".join(f"{s.short} {counts[s.name]}" for s in users)
            problems.append(
                f"{store} connections: ({per}) replicas x {core_hosts} core host(s) x pool "
                f"{env.pool_size} = {used}, plus {RESERVED_CONNECTIONS} reserved, exceeds "
                f"data_limits.{store} = {limit}")
    return problems


# --- changing the count on one host ----------------------------------------------------------

def victims(containers: list[Container], service: str, keep: int) -> list[Container]:
    """Which replicas go when scaling down: the highest replica numbers (as compose would)."""
    mine = sorted(inventory.of(containers, service), key=lambda c: c.number)
    return mine[keep:]


def containers_now(env: Environment, remote: Remote) -> list[Container]:
    return inventory.parse(remote.run(
        inventory_cmd.containers([compose_project(env, "core")])).stdout)


def scale_down(env: Environment, remote: Remote, containers: list[Container], service: str,
               count: int) -> list[str]:
    """Drain, then stop, the replicas beyond `count`. Returns the names removed."""
    going = victims(containers, service, count)
    if not going:
        return []
    routing.refresh(env, remote, containers, frozenset(c.id for c in going))
    remote.run(compose_cmd.remove([c.id for c in going], STOP_GRACE), timeout=STOP_GRACE + 60)
    return [c.name for c in going]


def scale_up(env: Environment, remote: Remote, containers: list[Container], service: str,
             count: int, wait_timeout: int, images: dict[str, str]) -> list[str]:
    """Start the missing replicas (of the release the host runs: `images`), wait until
    healthy, then route to them. A replica that does not turn healthy in time is removed (it
    never took traffic) and the step fails."""
    before = {c.id for c in containers}
    up = remote.run(compose_cmd.scale_up(env, service, count, wait_timeout, images),
                    timeout=wait_timeout + 60, check=False)
    after = containers_now(env, remote)
    new = [c for c in inventory.of(after, service) if c.id not in before]
    if not up.ok:
        if new:
            remote.run(compose_cmd.remove([c.id for c in new], 5), check=False)
        detail = remote.failure(up)
        raise StepFailed(f"{detail}\n  the new replicas of {service} did not become healthy; "
                         "removed them (they never took traffic)")
    routing.refresh(env, remote, after)
    return [c.name for c in new]


# --- the whole operation ----------------------------------------------------------------------

def target_overrides(merged: dict[str, int], wanted: dict[str, int | None]) -> dict[str, int]:
    """The overrides after this scale: `default` removes one, a count sets one."""
    new = dict(merged)
    for name, count in wanted.items():
        if count is DEFAULT:
            new.pop(name, None)
        else:
            new[name] = count
    return dict(sorted(new.items()))


def summary(env: Environment, counts: dict[str, int], names: list[str], hosts: int) -> str:
    per = f" x {hosts} hosts" if hosts > 1 else ""
    return ", ".join(f"{n}: {counts[n]} per host{per}" for n in names)


def run(env: Environment, pool: Pool, printer: Printer, wanted: dict[str, int | None],
        operator: Operator, trail: Trail, confirm: Callable[[str], None]) -> None:
    """Read every core host (one round trip each); if they already run and record the wanted
    counts, say so and stop (no lock, no audit). Otherwise lock, check room on every host, then
    change one host at a time, record the overrides, audit, release."""
    hosts = sorted(env.hosts_with("core"), key=lambda h: h.name)
    states = {h.name: state.parse(h.name, pool.get(h).run(state.probe(env)).stdout)
              for h in hosts}
    merged, notes = state.merge({n: s.overrides for n, s in states.items()})
    for note in notes:
        printer.line("", note)
    new = target_overrides(merged, wanted)
    counts = state.wanted(env, new)
    names = list(wanted)
    shown = summary(env, counts, names, len(hosts))
    pending = [h for h in hosts if states[h.name].overrides != new or any(
        states[h.name].count(n) != counts[n] for n in names)]
    if not pending:
        printer.line("", f"nothing to do: {shown} already (recorded on every core host)")
        return
    confirm(f"scale {shown}")
    with Mutation(env, pool, hosts, trail, operator):
        fresh = {}
        for h in hosts:  # under the lock: the state that counts, and room on every host
            remote = pool.get(h)
            pool.renew(h, remote)
            fresh[h.name] = state.parse(h.name, remote.run(state.probe(env)).stdout)
            problems = capacity(env, h.name, counts, fresh[h.name].memory_kb, len(hosts))
            if problems:
                trail.add(h.name, "scale", "failed", problems[0])
                raise StepFailed(f"scale refused, nothing changed: {'; '.join(problems)}")
        for h in hosts:
            scale_host(env, pool, h, fresh[h.name], names, counts, new, trail)
    printer.line("", f"scaled: {shown}")


def scale_host(env: Environment, pool: Pool, host: Host, current: CoreState, names: list[str],
               counts: dict[str, int], overrides: dict[str, int], trail: Trail) -> None:
    remote = pool.get(host)
    containers = current.containers
    for name in names:
        have, want = current.count(name), counts[name]
        pool.renew(host, remote)
        try:
            if want < have:
                gone = scale_down(env, remote, containers, name, want)
                detail = f"{name}: {have} -> {want}: drained and stopped {', '.join(gone)}"
            elif want > have:
                started = scale_up(env, remote, containers, name, want, wait_timeout(env),
                                   current.images)
                detail = (f"{name}: {have} -> {want}: started {', '.join(started)}; healthy, "
                          "routed")
            else:
                continue
        except StepFailed as exc:
            trail.add(host.name, f"scale {name}", "failed", str(exc).splitlines()[0])
            raise
        trail.add(host.name, f"scale {name}", "changed", detail)
        remote.say(detail)
        containers = containers_now(env, remote)
    if current.overrides != overrides:
        remote.run_with_input(state.write_command(env), state.encode(overrides))
        trail.add(host.name, "scale overrides", "changed",
                  f"recorded {json.dumps(overrides, sort_keys=True)}")
