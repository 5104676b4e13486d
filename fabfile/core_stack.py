"""core.up: the core stack at its declared state, running the release recorded on the host,
with the scaled counts kept and the gateway routing only to healthy replicas.

Before touching any host, one round trip per core host reads the compose check, the recorded
state (scale overrides, release) and the containers; the overrides of all core hosts are
merged (the highest count wins, disagreements are reported) so that every host runs, and
records, the same counts. Then per host: replicas beyond the wanted count are drained and
stopped, `up --wait` runs with `--scale` for every service (compose would otherwise go back to
one) and the recorded release's images (a deploy never changes the running version: only
`inv release` and `inv rollback` do; the config's `tag:` is for a host without a release), and
the gateway's upstream list is rewritten from what is healthy. A host's first core.up records
the release it started (tag and digests), so that it can be rolled back to.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable

from fabfile.aws import logs
from fabfile.commands import compose as cmd
from fabfile.commands import release as release_cmd
from fabfile.commands import routing as routing_cmd
from fabfile.config import Environment, Host
from fabfile.errors import StepFailed
from fabfile.flow import Outcome, Pool, Step
from fabfile.ops import registry, release, routing, scale, state
from fabfile.ops.state import CoreState, Release
from fabfile.remote import Remote
from fabfile.services import JAFAR, compose_project
from fabfile.stacks import GRACE, wait_timeout
from fabfile.sync import wire

EXTRA = ("config", "routes", "bind")


def probe(env: Environment, host: Host) -> str:
    """The compose check, the recorded state, the containers, whether routes exist."""
    return state.probe(env, {
        "config": f"{cmd.config_check(env, 'core')} && echo rc=0 || echo rc=$?",
        "routes": f"test -f {routing_cmd.gateway_file(env.deploy_path)} && echo present "
                  "|| echo absent",
        "bind": bind_check(env.gateway_address(host)),
    })


def bind_check(address: str | None) -> str:
    """`present` when the gateway's address is one of this host's (or not set): otherwise
    the gateway could not publish its ports."""
    if not address:
        return "echo present"
    return (f"ip -o addr show | grep -qF {shlex.quote(f' {address}/')} && echo present "
            "|| echo absent")


def plan(env: Environment, host: Host) -> list[str]:
    return [f"$ {wire(host, c)}" for c in (
        probe(env, host),
        cmd.up(env, "core", wait_timeout(env), {s.name: env.replicas for s in JAFAR}),
    )] + ["(--scale: the counts recorded on the core hosts; JAFAR_IMAGE_*: the release recorded "
          "on the host, if any; replicas beyond the counts are drained first; then the "
          "gateway's upstream list is rewritten on stdin via:)",
          f"$ {wire(host, routing_apply(env))}"]


def routing_apply(env: Environment) -> str:
    return routing_cmd.apply(env.deploy_path, compose_project(env, "core"),
                             routing.DRAIN_SECONDS)


def prepare(env: Environment, pool: Pool) -> Callable[[Environment, Host, Remote], Outcome]:
    """Read every core host first (one round trip each), then apply with the merged counts."""
    logs.prepare(env, lambda change: pool.printer.line("aws", change))
    found: dict[str, CoreState] = {}
    for host in env.hosts_with("core"):
        remote = pool.get(host)
        pool.renew(host, remote)
        current = state.parse(host.name, remote.run(probe(env, host)).stdout, EXTRA)
        config = current.extra["config"]
        if not config.rstrip().endswith("rc=0"):
            detail = "\n  ".join(config.strip().splitlines()[-5:])
            raise StepFailed(pool.printer.mask(f"{host.name}: docker compose config of the "
                                               f"core stack failed:\n  {detail}"))
        if current.extra["bind"].strip() != "present":
            raise StepFailed(f"{host.name}: gateway_bind {env.gateway_address(host)} is not an "
                             "address of this host (see `ip -o addr`); set it to the host's "
                             "private address; nothing was changed")
        found[host.name] = current
    merged, notes = state.merge({h: s.overrides for h, s in found.items()})

    def apply(env: Environment, host: Host, remote: Remote) -> Outcome:
        return apply_host(env, remote, found[host.name], merged, notes)
    return apply


def apply_host(env: Environment, remote: Remote, before: CoreState, merged: dict[str, int],
               notes: list[str]) -> Outcome:
    counts = state.wanted(env, merged)
    registry.login(env, remote)  # compose may pull what the host does not have yet
    first = None if before.release else first_release(env, remote)
    images = first.images if first else before.images
    done: list[str] = []
    containers = before.containers
    if before.extra["routes"].strip() != "present":
        routing.refresh(env, remote, containers)
    for s in JAFAR:
        removed = scale.scale_down(env, remote, containers, s.name, counts[s.name])
        if removed:
            done.append(f"drained and stopped {', '.join(removed)}")
            containers = [c for c in containers if c.name not in removed]
    if before.overrides != merged:
        remote.run_with_input(state.write_command(env), state.encode(merged))
        done.append("recorded the scale overrides of the other core hosts")
    up = remote.run(cmd.up(env, "core", wait_timeout(env), counts, images),
                    timeout=wait_timeout(env) + GRACE, check=False)
    if not up.ok:
        ps = remote.run(cmd.compose(env, "core", "ps", "--all", images=images), check=False)
        raise StepFailed(remote.failure(up) + "\n" + ps.stdout.strip())
    after = scale.containers_now(env, remote)
    old = {(c.id, c.started) for c in before.containers}
    touched = sorted(c.name for c in after if (c.id, c.started) not in old)
    if touched:
        done.append(f"created or restarted {', '.join(touched)}; all healthy")
    routed = routing.refresh(env, remote, after)
    if routed.outcome == "RELOADED" and not touched:
        done.append("gateway now routes to the healthy replicas")
    if first is not None:
        release.write(env, remote, first, [first])
        done.append(f"recorded release {first.tag} (its images by digest) as running")
        running = f"running release {first.tag}"
    else:
        running = f"running release {before.release.tag} (recorded on the host)"
        if before.release.tag != env.tag:
            running += (f"; the config's tag {env.tag} is not deployed by core.up: use "
                        f"inv release --tag {env.tag}")
    kept = state.describe(env, counts, merged, len(env.hosts_with("core")))
    extra = "; ".join([running, *notes, *kept])
    project = compose_project(env, "core")
    if not done:
        return Outcome(False, f"nothing to do: all {len(after)} containers of {project} "
                              f"already up to date and healthy; {extra}")
    return Outcome(True, f"{project}: {'; '.join(done)}; {extra}")


def first_release(env: Environment, remote: Remote) -> Release:
    """A host's first core.up runs the config's tag, pulled and pinned by digest first (so
    that the containers run exactly what is recorded, and a later core.up recreates nothing)."""
    refs = release.default_refs(env, env.tag, [s.name for s in JAFAR])
    pull = remote.run(release_cmd.pull(list(refs.values())), check=False)
    failed = release.pull_failures(remote.host.name, pull.stdout)
    if failed or not pull.ok:
        raise StepFailed(remote.printer.mask(f"pull failed: {'; '.join(failed) or pull.stderr}"))
    at = release.now()
    return Release(1, env.tag, release.pinned(pull.stdout, refs), "initial", tuple(refs), at,
                   at, "core.up", "ok")


CORE_UP = Step("core.up", ("core",), "start the core stack and wait until healthy", plan,
               prepare=prepare)
