"""The monitor namespace: what Prometheus sees (status, read over SSH), and the CloudWatch
alarms for what it cannot see (alarms: shown, asked, then put under the deploy lock of every
host, with a signed audit record on each)."""

from __future__ import annotations

from invoke import Collection, Context, task
from invoke.exceptions import Exit

from fabfile.aws import alarms as alarms_mod
from fabfile.aws.client import settings
from fabfile.errors import StepFailed
from fabfile.flow import remotes
from fabfile.monitor import alerting
from fabfile.monitor import status as status_mod
from fabfile.ops.audit import Trail
from fabfile.ops.guard import Mutation
from fabfile.ops.identity import whoami
from fabfile.remote import preflight
from fabfile.tasks.common import (
    HOST_HELP,
    JSON_HELP,
    READ_TIMEOUT,
    TIMEOUT_HELP,
    Session,
    confirm,
    handled,
    require_mutable,
)


@task(name="status", auto_shortflags=False,
      help={"host": HOST_HELP, "json": JSON_HELP, "timeout": TIMEOUT_HELP})
@handled
def monitor_status(c: Context, host: str | None = None, json: bool = False,
                   timeout: int = READ_TIMEOUT) -> None:
    """Scrape targets down and alerts firing or pending, from every core host's Prometheus
    (through the SSH connection, no port opened); exit 1 when a target is down, an alert
    fires, or a Prometheus fires no Watchdog (it evaluates no rules)."""
    session = Session(c, host, timeout=timeout)
    core = tuple(h for h in session.env.hosts if h.has("core"))
    found = status_mod.merged(session.gather(
        lambda h, pool: [status_mod.check_host(session.env, h, pool.get(h))], core))
    text = status_mod.as_json(found) if json else "\n".join(
        status_mod.table(found) + [f"note: {n}" for n in alerting.unrouted(session.env)])
    print(session.masker(text))
    problems = status_mod.problems(found)
    if problems:
        raise Exit(None if json else "; ".join(problems), code=1)


@task(name="alarms", auto_shortflags=False, help={
    "host": HOST_HELP,
    "dry_run": "print what would be put or deleted (read from AWS); no host is contacted",
    "yes": "do not ask before changing the alarms"})
@handled
def monitor_alarms(c: Context, host: str | None = None, dry_run: bool = False,
                   yes: bool = False) -> None:
    """Create or correct the CloudWatch alarms of every instance of the environment (EC2
    status checks; CPU credits on burstable types) to aws.alarm_topic; delete those of
    instances that are gone. A second run has nothing to do."""
    session = Session(c, host, connects=False)
    arn = alarms_mod.topic(session.env)  # no aws: block or no topic -> exit 2, nothing asked
    require_mutable(session.env)
    operator = None
    if not dry_run:  # it will connect to the hosts (lock, audit): a complete env file
        session = Session(c, host)
        operator = whoami(session.env)
        preflight(session.env)
    env = session.env
    wanted = alarms_mod.wanted(env)
    shown = alarms_mod.plan(wanted, alarms_mod.existing(env), arn)
    if not (shown.put or shown.delete):
        print(f"nothing to do: the {shown.kept} alarm(s) of {env.name} are as wanted, to {arn}")
        return
    print("\n".join([f"monitor.alarms on {env.name} ({settings(env).region}), to {arn}:",
                     *(f"  {line}" for line in shown.lines())]))
    if operator is None:
        print("dry run: nothing changed")
        return
    confirm(env, yes, f"put {len(shown.put)} and delete {len(shown.delete)} CloudWatch alarm(s)")
    trail = Trail("monitor.alarms", {"put": len(shown.put), "delete": len(shown.delete)})
    hosts = sorted(env.hosts, key=lambda h: h.name)
    with remotes(env, session.printer) as pool:
        try:
            with Mutation(env, pool, list(hosts), trail, operator):
                again = alarms_mod.plan(alarms_mod.wanted(env), alarms_mod.existing(env), arn)
                if again != shown:
                    raise StepFailed("the alarms or the instances changed since the plan was "
                                     "shown; nothing was changed: run inv monitor.alarms "
                                     f"--host {env.name} again")
                try:
                    alarms_mod.apply(env, shown, arn)
                except StepFailed as exc:
                    for h in hosts:
                        trail.add(h.name, "monitor.alarms", "failed", str(exc))
                    raise
                for h in hosts:
                    trail.add(h.name, "monitor.alarms", "changed",
                              f"put {len(shown.put)}, deleted {len(shown.delete)}")
        finally:
            pool.report()
    print(f"done: {len(shown.put)} put, {len(shown.delete)} deleted, {shown.kept} kept")


namespace = Collection("monitor", monitor_status, monitor_alarms)
