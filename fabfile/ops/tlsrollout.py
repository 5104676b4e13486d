"""`inv tls.data`: the data plane's CA and certificate made (or rotated) here, then on every
host and in every container that uses them.

A container sees the secret files it was created with (env.sync replaces a file by renaming
it), so after new files are sent the containers still holding the old ones are replaced:
- first the jafar services on each core host, with the rolling mechanism (new replicas beside
  the old, routed once healthy, the old drained): they get the new CA bundle, which trusts the
  new CA and still the previous one, so they keep talking to the data stores as they are;
- then the data stores, recreated together with their new certificate. This is the one moment
  that is not free: MongoDB, Redis and PostgreSQL restart (seconds), and requests that need a
  store meanwhile fail and are retried by the clients. Rotate in a quiet hour.
Which containers are stale is read from inside them (the digest of the file each one sees), so
a second run, or one after an interrupted run, does exactly what is left.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from fabfile.commands import compose as compose_cmd
from fabfile.commands import tls as cmd
from fabfile.config import Environment, Host
from fabfile.errors import StepFailed
from fabfile.flow import Pool, run_steps
from fabfile.ops import datatls, rolling, state
from fabfile.ops.audit import Trail
from fabfile.ops.guard import Mutation
from fabfile.ops.identity import Operator
from fabfile.ops.release import running_images
from fabfile.ops.scale import containers_now
from fabfile.remote import Printer
from fabfile.services import compose_project
from fabfile.stacks import wait_timeout
from fabfile.stackspec import TLS_FILES, mounts
from fabfile.sync import ENV_SYNC

CORE_FILES = frozenset({"data_ca_crt"})
DATA_FILES = frozenset({"data_ca_crt", "data_tls_crt"})
POLL = 1.0


@dataclass(frozen=True)
class Stale:
    """What still runs with old TLS files: per core host the services, on the data host the
    data services."""

    core: dict[str, list[str]]
    data: list[str]
    running: bool   # any container of either stack runs at all

    def empty(self) -> bool:
        return not self.data and not any(self.core.values())


def wanted_digests(env: Environment) -> dict[str, str]:
    """secret name -> sha256 of the local file it is made from."""
    assert env.tls_dir is not None  # checked before (check_local_secrets)
    return {name: hashlib.sha256((env.tls_dir / TLS_FILES[name][0]).read_bytes()).hexdigest()
            for name in DATA_FILES}


def stale_services(output: str, wanted: dict[str, str]) -> tuple[list[str], bool]:
    """(services with a container whose file differs, whether any line came back)."""
    services: set[str] = set()
    seen = False
    for line in output.splitlines():
        fields = line.split()
        if len(fields) != 4 or fields[2] not in wanted:
            continue
        seen = True
        if fields[3] != wanted[fields[2]]:
            services.add(fields[1])
    return sorted(services), seen


def probe_core(env: Environment) -> str:
    return state.probe(env, {"tls": cmd.mounted(compose_project(env, "core"),
                                                mounts(env, "core", CORE_FILES))})


def probe_data(env: Environment) -> str:
    return cmd.mounted(compose_project(env, "data"), mounts(env, "data", DATA_FILES))


def find_stale(env: Environment, pool: Pool) -> tuple[Stale, dict[str, state.CoreState]]:
    """One round trip per host: which containers run with files other than the local ones."""
    wanted = wanted_digests(env)
    core: dict[str, list[str]] = {}
    states: dict[str, state.CoreState] = {}
    running = False
    for host in env.hosts_with("core"):
        found = state.parse(host.name, pool.get(host).run(probe_core(env)).stdout, ("tls",))
        states[host.name] = found
        core[host.name], seen = stale_services(found.extra["tls"], wanted)
        running = running or seen
    data, seen = stale_services(pool.get(env.data_host).run(probe_data(env)).stdout, wanted)
    return Stale(core, data, running or seen), states


def refuse_unfinished(env: Environment, pool: Pool) -> None:
    """A new rotation drops the oldest CA from the bundle: refuse while containers still run
    with a certificate or bundle older than the local files (the last rollout did not finish)."""
    stale, _ = find_stale(env, pool)
    if not stale.empty():
        where = [f"{h}: {', '.join(s)}" for h, s in sorted(stale.core.items()) if s]
        where += [f"{env.data_host.name}: {', '.join(stale.data)}"] if stale.data else []
        raise StepFailed(f"the last data TLS change is not in place yet ({'; '.join(where)}); "
                         f"finish it with inv tls.data --host {env.name} (without --rotate) "
                         "before rotating again")


def rollout(env: Environment, pool: Pool, printer: Printer, operator: Operator, trail: Trail,
            confirm: Callable[[str], None]) -> None:
    """Send the files, then replace what still uses the old ones (core first, then data)."""
    stale, states = find_stale(env, pool)
    if not stale.running:
        printer.line("", f"no container of {env.name} runs yet: inv deploy sends the files "
                         f"({datatls.describe(env)})")
        return
    if stale.empty():
        printer.line("", f"nothing to do: every container of {env.name} runs with the current "
                         f"files ({datatls.describe(env)})")
        return
    confirm("send the data plane's TLS files and restart what uses old ones")
    hosts = sorted(env.hosts, key=lambda h: h.name)
    with Mutation(env, pool, hosts, trail, operator):
        failed = [r for r in run_steps(env, [ENV_SYNC], pool, trail) if r.result == "FAILED"]
        if failed:
            raise StepFailed(f"env.sync failed on {failed[0].host}: {failed[0].message}")
        stale, states = find_stale(env, pool)
        for host in sorted(env.hosts_with("core"), key=lambda h: h.name):
            roll_core(env, pool, host, states[host.name], stale.core[host.name], trail)
        if stale.data:
            recreate_data(env, pool, stale.data, trail)
            wait_core_healthy(env, pool, printer)
    printer.line("", f"data plane TLS in place on {len(hosts)} host(s): "
                     f"{datatls.describe(env)}")


def roll_core(env: Environment, pool: Pool, host: Host, current: state.CoreState,
              services: list[str], trail: Trail) -> None:
    """Replace each stale service's replicas, without dropping a request."""
    remote = pool.get(host)
    images = running_images(env, current)
    for service in services:
        pool.renew(host, remote)
        said = rolling.replace(env, remote, service, images, current.count(service))
        trail.add(host.name, f"roll {service}", "changed", said)
        remote.say(f"{said} (new data CA bundle)")


def recreate_data(env: Environment, pool: Pool, services: list[str], trail: Trail) -> None:
    host = env.data_host
    remote = pool.get(host)
    pool.renew(host, remote)
    timeout = wait_timeout(env)
    result = remote.run(compose_cmd.recreate(env, "data", services, timeout),
                        timeout=timeout + 60, check=False)
    if not result.ok:
        raise StepFailed(remote.failure(result))
    said = f"recreated {', '.join(services)} with the new certificate; all healthy"
    trail.add(host.name, "data.tls", "changed", said)
    remote.say(said)


def wait_core_healthy(env: Environment, pool: Pool, printer: Printer) -> None:
    """The services reconnect to the restarted stores: wait until every replica is healthy."""
    deadline = time.monotonic() + env.release.health_timeout
    for host in env.hosts_with("core"):
        remote = pool.get(host)
        while True:
            sick = [c.name for c in containers_now(env, remote) if not c.ok]
            if not sick:
                break
            if time.monotonic() > deadline:
                raise StepFailed(f"{host.name}: not healthy {env.release.health_timeout}s after "
                                 f"the data stores restarted: {', '.join(sick)}")
            time.sleep(POLL)
        remote.say("every core container healthy again")

