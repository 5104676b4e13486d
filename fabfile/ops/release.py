"""`inv release --tag v1.4.2`, `inv rollback`, `inv releases`: new versions, rolled one service
at a time with the rolling mechanism, undone automatically when the new version is unhealthy.

A release first pulls every image of the tag on every core host and pins each by digest (the
same digest on every host, or it stops), runs the migration hook once if configured, then rolls
the services in order. If one fails (never healthy, or the gateway's 5xx rose), its new
replicas are removed, the services already rolled go back to the previous release the same way
(in reverse order), the attempt is recorded as failed, and the command exits 1. A rollback
rolls to an earlier release's recorded digests, so it runs the same bits even if a tag moved.
Migrations are never undone: they must be backward compatible (expand, then contract).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import replace as dc_replace

from fabfile.commands import release as cmd
from fabfile.config import Environment, Host
from fabfile.errors import BadInput, StepFailed
from fabfile.flow import Pool
from fabfile.ops import registry, rolling, state
from fabfile.ops.audit import Trail
from fabfile.ops.guard import Mutation
from fabfile.ops.identity import Operator
from fabfile.ops.state import CoreState, Release
from fabfile.remote import Printer, Remote
from fabfile.services import JAFAR, jafar_service

# Docker's tag grammar: up to 128 word characters, dots and dashes, not starting with . or -
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def parse_tag(tag: str | None, flag: str = "release: --tag") -> str:
    if not tag:
        raise BadInput(f"{flag} is required, e.g. {flag.split(': ')[-1]} v1.4.2")
    if not TAG.fullmatch(tag):
        shown = ascii(tag[:60]) if not tag.isascii() else repr(tag[:60])
        raise BadInput(f"{flag} {shown} is not a Docker tag (letters, digits, '_', '.', '-'; "
                       "up to 128; not starting with '.' or '-')")
    return tag


def parse_services(env: Environment, spec: str | None) -> list[str]:
    """The services to release, in the environment's release order (default: all seven)."""
    if spec is None:
        return list(env.release.order)
    names = []
    for item in spec.split(","):
        service = jafar_service(item.strip())
        if service is None:
            shown = ascii(item[:40]) if not item.isascii() else repr(item[:40])
            raise BadInput(f"release: --services: unknown service {shown}; services: "
                           f"{', '.join(s.short for s in JAFAR)}")
        names.append(service.name)
    return [s for s in env.release.order if s in names]


def default_refs(env: Environment, tag: str, services: list[str]) -> dict[str, str]:
    return {s: f"{env.registry}/{s}:{tag}" for s in services}


def running_images(env: Environment, current: CoreState) -> dict[str, str]:
    """What each service runs: the recorded release, else what its containers run, else the
    config's tag (a host that never ran the core stack)."""
    images = default_refs(env, env.tag, [s.name for s in JAFAR])
    for c in current.containers:
        if c.service in images:
            images[c.service] = c.image
    images.update(current.images)
    return images


def runs(current: CoreState, service: str, image: str) -> bool:
    """Every replica of `service` runs exactly `image` (and the host records it)."""
    replicas = [c for c in current.containers if c.service == service]
    return current.images.get(service) == image and all(c.image == image for c in replicas)


def pinned(output: str, refs: dict[str, str]) -> dict[str, str]:
    """service -> `repo:tag@sha256:...` from pull's `OK ref digests` lines (tag refs)."""
    by_ref = {}
    for line in output.splitlines():
        fields = line.split("\t")
        if len(fields) == 3 and fields[0] == "OK":
            repo = fields[1].rsplit(":", 1)[0]
            digest = next((d.split("@", 1)[1] for d in fields[2].split()
                           if d.split("@", 1)[0] == repo), None)
            if digest:
                by_ref[fields[1]] = f"{fields[1]}@{digest}"
    missing = [ref for ref in refs.values() if ref not in by_ref]
    if missing:
        raise StepFailed(f"no registry digest for {', '.join(missing)}")
    return {name: by_ref[ref] for name, ref in refs.items()}


def pull_failures(host: str, output: str) -> list[str]:
    return [f"{line.split(chr(9))[1]} on {host}: {line.split(chr(9))[2]}"
            for line in output.splitlines() if line.startswith("FAIL\t")
            and len(line.split("\t")) == 3]


def pull_everywhere(pool: Pool, hosts: list[Host], refs: dict[str, str],
                    by_tag: bool) -> dict[str, str]:
    """Every core host pulls every image; tag refs come back pinned by digest, the same on
    every host (a tag moved between two pulls is a failure). Nothing changes what runs."""
    pins: dict[str, str] | None = None
    for h in hosts:
        registry.login(pool.env, pool.get(h))
        result = pool.get(h).run(cmd.pull(list(refs.values())), check=False)
        failed = pull_failures(h.name, result.stdout)
        if failed or not result.ok:
            raise StepFailed(pool.printer.mask(
                f"pull failed, nothing changed: {'; '.join(failed) or result.stderr.strip()}"))
        found = pinned(result.stdout, refs) if by_tag else dict(refs)
        if pins is not None and found != pins:
            moved = [s for s in found if found[s] != pins[s]]
            raise StepFailed(f"{', '.join(moved)}: the registry served other bits to {h.name} "
                             "(the tag moved during the release); nothing changed, run it again")
        pins = found
    return pins or {}


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def write(env: Environment, remote: Remote, running: Release | None,
          history: list[Release]) -> None:
    """Record the running release (if it changed) and the history, each atomically."""
    write_current, write_history = state.write_release_commands(env)
    if running is not None:
        remote.run_with_input(write_current, state.encode(running.as_dict()))
    remote.run_with_input(write_history, state.encode([r.as_dict() for r in history]))


def roll(env: Environment, pool: Pool, hosts: list[Host], states: dict[str, CoreState],
         services: list[str], pins: dict[str, str], trail: Trail, entry: Release) -> None:
    """Roll every host, service by service; on a failure undo what was rolled, record the
    attempt as failed and raise. `entry` is the history entry to record (its images are
    filled per host)."""
    counts = state.wanted(env, state.merge({n: s.overrides for n, s in states.items()})[0])
    done: list[tuple[Host, str, dict[str, str]]] = []
    finals: dict[str, dict[str, str]] = {}
    try:
        for h in hosts:
            remote = pool.get(h)
            images = running_images(env, states[h.name])
            for service in services:
                if runs(states[h.name], service, pins[service]):
                    continue
                pool.renew(h, remote)
                target = {**images, service: pins[service]}
                said = rolling.replace(env, remote, service, target, counts[service])
                trail.add(h.name, f"roll {service}", "changed", said)
                remote.say(f"{said} ({pins[service].rsplit('/', 1)[-1]})")
                done.append((h, service, images))
                images = target
            finals[h.name] = images
    except rolling.RollFailed as exc:
        trail.add(exc.host, f"roll {exc.service}", "failed", str(exc).splitlines()[0])
        undo(env, pool, done, counts, trail)
        for h in hosts:
            tried = {**running_images(env, states[h.name]), **pins}
            failed = dc_replace(entry, images=tried, finished=now(), result="failed")
            write(env, pool.get(h), None, [*states[h.name].history,
                                           dc_replace(failed, id=next_id(states[h.name]))])
        raise StepFailed(f"{entry.kind} {entry.tag} failed and was undone: {exc}; every "
                         "service runs the previous release") from None
    for h in hosts:
        ok = dc_replace(entry, id=next_id(states[h.name]), images=finals[h.name],
                        finished=now())
        write(env, pool.get(h), ok, [*left_behind(states[h.name], entry), ok])


def undo(env: Environment, pool: Pool, done: list[tuple[Host, str, dict[str, str]]],
         counts: dict[str, int], trail: Trail) -> None:
    """Put back, in reverse order, what was rolled (the same mechanism)."""
    for h, service, previous in reversed(done):
        remote = pool.get(h)
        pool.renew(h, remote)
        said = rolling.replace(env, remote, service, previous, counts[service])
        trail.add(h.name, f"undo {service}", "changed", said)
        remote.say(f"rolled back: {said}")


def next_id(current: CoreState) -> int:
    return max((r.id for r in current.history), default=0) + 1


def left_behind(current: CoreState, entry: Release) -> list[Release]:
    """The history, with the release a rollback moves away from marked "rolled back"."""
    if entry.kind != "rollback" or current.release is None:
        return list(current.history)
    return [dc_replace(r, result="rolled back") if r.id == current.release.id else r
            for r in current.history]


def probe_all(env: Environment, pool: Pool, hosts: list[Host]) -> dict[str, CoreState]:
    return {h.name: state.parse(h.name, pool.get(h).run(state.probe(env)).stdout)
            for h in hosts}


def release(env: Environment, pool: Pool, printer: Printer, operator: Operator, trail: Trail,
            tag: str, services: list[str], confirm: Callable[[str], None]) -> None:
    hosts = sorted(env.hosts_with("core"), key=lambda h: h.name)
    states = probe_all(env, pool, hosts)
    refs = default_refs(env, tag, services)
    if all(states[h.name].release is not None and all(
            states[h.name].release.images.get(s, "").split("@")[0] == refs[s]
            and runs(states[h.name], s, states[h.name].release.images[s]) for s in services)
            for h in hosts):
        printer.line("", f"nothing to do: release {tag} already runs on every core host "
                         f"({', '.join(services)})")
        return
    confirm(f"release {tag} of {', '.join(services)}")
    with Mutation(env, pool, hosts, trail, operator, tag=tag):
        pins = pull_everywhere(pool, hosts, refs, by_tag=True)
        for s in services:
            printer.line("", f"{s}: {pins[s].rsplit('/', 1)[-1]}")
        if env.release.before:
            migrate(env, pool, hosts[0], states[hosts[0].name], pins, trail)
        entry = Release(0, tag, {}, "release", tuple(services), now(), "", operator.person)
        roll(env, pool, hosts, states, services, pins, trail, entry)
    printer.line("", f"released {tag}: {', '.join(services)} on {len(hosts)} core host(s)")


def migrate(env: Environment, pool: Pool, host: Host, current: CoreState, pins: dict[str, str],
            trail: Trail) -> None:
    """The one-off migration, with the new image, before any replica changes; its failure
    stops the release with nothing changed."""
    before = env.release.before or ""
    service = f"{before.split()[0].removesuffix('-service')}-service"
    command = before.split(None, 1)[1]
    images = {**running_images(env, current), **pins}
    remote = pool.get(host)
    result = remote.run(cmd.migrate(env, images, service, command), check=False)
    if not result.ok:
        detail = remote.failure(result)
        trail.add(host.name, "migration", "failed", detail.splitlines()[0])
        raise StepFailed(f"the migration hook failed, nothing changed: {detail}")
    trail.add(host.name, "migration", "changed", f"{service}: {command}")
    remote.say(f"migration done: {service}: {command}")


def rollback_target(current: CoreState, to: str | None) -> Release:
    running = current.release
    candidates = [r for r in current.history if r.result == "ok" and r.images
                  and (running is None or r.id != running.id)]
    if to is not None:
        candidates = [r for r in candidates if r.tag == to]
    elif running is not None:
        candidates = [r for r in candidates if r.id < running.id and r.images != running.images]
    if not candidates:
        what = f"successful release {to}" if to else "earlier successful release"
        raise StepFailed(f"{current.host}: the host's history has no {what} (inv releases "
                         "shows it)")
    return max(candidates, key=lambda r: r.id)


def rollback(env: Environment, pool: Pool, printer: Printer, operator: Operator, trail: Trail,
             to: str | None, confirm: Callable[[str], None]) -> None:
    hosts = sorted(env.hosts_with("core"), key=lambda h: h.name)
    states = probe_all(env, pool, hosts)
    target = rollback_target(states[hosts[0].name], to)
    services = [s for s in env.release.order if s in target.images]
    if all(runs(states[h.name], s, target.images[s]) for h in hosts for s in services):
        printer.line("", f"nothing to do: release {target.tag} (#{target.id}) already runs on "
                         "every core host")
        return
    confirm(f"roll back to {target.tag} (release #{target.id}, by digest)")
    with Mutation(env, pool, hosts, trail, operator, tag=target.tag):
        pins = pull_everywhere(pool, hosts, {s: target.images[s] for s in services},
                               by_tag=False)
        entry = Release(0, target.tag, {}, "rollback", tuple(services), now(), "",
                        operator.person)
        roll(env, pool, hosts, states, services, pins, trail, entry)
    printer.line("", f"rolled back to {target.tag} (release #{target.id}) by digest")
