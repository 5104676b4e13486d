"""The root namespace: deploy, health, and the day-2 commands scale, ps and logs."""

from __future__ import annotations

import threading

from invoke import Context, task
from invoke.exceptions import Exit

from fabfile import health as health_mod
from fabfile.config import Host
from fabfile.errors import BadInput, StepFailed
from fabfile.flow import remotes, select
from fabfile.ops import pins, report
from fabfile.ops import scale as scale_ops
from fabfile.ops.audit import Trail
from fabfile.ops.identity import whoami
from fabfile.remote import preflight
from fabfile.steps import STEPS
from fabfile.tasks.common import (
    DRY_HELP,
    HOST_HELP,
    JSON_HELP,
    READ_TIMEOUT,
    TIMEOUT_HELP,
    YES_HELP,
    Session,
    confirm,
    environment,
    execute,
    handled,
    require_mutable,
)


@task(auto_shortflags=False, help={
    "host": HOST_HELP, "dry_run": DRY_HELP, "yes": YES_HELP,
    "from_": "start at this step (e.g. data.up) and run the rest of the flow",
    "only": "run only these steps, comma separated (e.g. env.sync,core.up)",
    "skip": "leave out these steps, comma separated",
})
@handled
def deploy(c: Context, host: str | None = None, dry_run: bool = False, from_: str | None = None,
           only: str | None = None, skip: str | None = None, yes: bool = False) -> None:
    """Run the documented flow: host.prepare, host.harden, env.sync, files.sync, data.up,
    replica.init, core.up, health."""
    names = select(list(STEPS), start=from_, only=only, skip=skip)
    args = {k: v for k, v in (("from", from_), ("only", only), ("skip", skip)) if v}
    execute(c, host, names, dry_run, yes, "deploy", args, resume_hint=True)


@task(name="health", auto_shortflags=False,
      help={"host": HOST_HELP, "json": JSON_HELP, "timeout": TIMEOUT_HELP})
@handled
def health(c: Context, host: str | None = None, json: bool = False,
           timeout: int = READ_TIMEOUT) -> None:
    """Show docker compose ps and /health of every service; exit 1 if anything is unhealthy."""
    session = Session(c, host, timeout=timeout)
    checks = health_mod.masked(session.gather(
        lambda h, pool: health_mod.check_host(session.env, h, pool.get(h))), session.masker)
    text = health_mod.as_json(checks) if json else "\n".join(health_mod.table(checks))
    print(session.masker(text))
    bad = sorted({c.service for c in checks if not c.healthy})
    if bad:
        raise Exit(f"unhealthy: {', '.join(bad)}" if not json else None, code=1)


@task(auto_shortflags=False, positional=["spec"], help={
    "spec": "SERVICE=COUNT[,SERVICE=COUNT]: api, auth, wallet, transaction, ledger, "
            "notification, risk (or the full names); COUNT per core host, or default",
    "host": HOST_HELP, "yes": YES_HELP,
    "allow_zero": "allow a count of 0 (takes the service out of the gateway: asks to confirm)",
})
@handled
def scale(c: Context, spec: str | None = None, host: str | None = None,
          allow_zero: bool = False, yes: bool = False) -> None:
    """Set the replicas of jafar services per core host, without dropping a request; the
    count is kept by later deploys (inv scale api=3,wallet=2 --host prod)."""
    env = environment(c, host)
    wanted = scale_ops.parse_spec(spec or "", env.max_replicas)
    zero = [n for n, count in wanted.items() if count == 0]
    if zero and not allow_zero:
        raise BadInput(f"scale: {', '.join(zero)} = 0 takes it out of the gateway (its route "
                       "answers 503); add --allow-zero to mean it")
    require_mutable(env)
    pins.require_current(env)
    session = Session(c, host, env=env)
    operator = whoami(env)
    preflight(env)
    trail = Trail("scale", {"spec": spec, "allow_zero": allow_zero})

    def ask(what: str) -> None:
        confirm(env, yes, what + (" (takes " + ", ".join(zero) + " out of the gateway)"
                                  if zero else ""), always=bool(zero))

    with remotes(env, session.printer) as pool:
        try:
            scale_ops.run(env, pool, session.printer, wanted, operator, trail, ask)
        finally:
            pool.report()


@task(name="ps", auto_shortflags=False,
      help={"host": HOST_HELP, "json": JSON_HELP, "timeout": TIMEOUT_HELP})
@handled
def ps(c: Context, host: str | None = None, json: bool = False,
       timeout: int = READ_TIMEOUT) -> None:
    """Every container of both stacks per host (replica, state, health, tag, uptime) and each
    service's running count against the wanted one; exit 1 on a mismatch."""
    session = Session(c, host, timeout=timeout)
    env = session.env
    found = session.gather(lambda h, pool: [report.evaluate(
        env, h, pool.get(h).run(report.probe(env, h)).stdout)])
    replicas = [r for rs, _ in found for r in rs]
    counts = [n for _, ns in found for n in ns]
    text = report.as_json(replicas, counts) if json else "\n".join(report.table(replicas, counts))
    print(session.masker(text))
    off = [f"{n.host}: {n.service} {n.running}/{n.wanted}" for n in counts if not n.ok]
    if off:
        raise Exit(None if json else f"replica counts differ: {', '.join(off)}", code=1)


@task(auto_shortflags=False, positional=["service"], help={
    "service": "a service of either stack, e.g. api-service, gateway, redis",
    "host": HOST_HELP,
    "since": "only lines newer than this: 10m, 2h, 30s, or 2026-11-29T10:15:00Z",
    "tail": "lines per container to start with (default 200), or all",
    "follow": "keep streaming new lines until Ctrl-C",
    "timeout": TIMEOUT_HELP + "; not with --follow",
})
@handled
def logs(c: Context, service: str | None = None, host: str | None = None,
         since: str | None = None, tail: str = "200", follow: bool = False,
         timeout: int = READ_TIMEOUT) -> None:
    """The logs of one service (all its replicas), prefixed by host, secrets masked."""
    svc = report.log_service(service or "")
    since, tail = report.log_options(since, tail)
    session = Session(c, host, timeout=timeout)
    env = session.env
    hosts = [h for h in env.hosts if h.has(svc.stack)]
    preflight(env)
    command = report.logs_command(env, svc, since, tail, follow)
    errors: list[StepFailed] = []
    with remotes(env, session.printer) as pool:
        def stream(h: Host) -> None:
            remote = pool.get(h)
            try:
                remote.run(command, timeout=7 * 86400 if follow else None,
                           on_line=remote.say)
            except StepFailed as exc:
                errors.append(exc)

        workers = [threading.Thread(target=stream, args=(h,), daemon=True) for h in hosts]
        try:
            for w in workers:
                w.start()
            for w in workers:
                while w.is_alive():
                    w.join(0.2)
        except KeyboardInterrupt:
            for h in hosts:
                pool.get(h).interrupt()
            raise
        finally:
            pool.report()
    if errors:
        raise errors[0]
