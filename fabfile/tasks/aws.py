"""The aws namespace: the network audit (check, read-only) and its security-group fix.

check reads AWS only (no host is contacted, no env file needed); fix changes security-group
rules only, after showing the plan and asking, under the deploy lock of every host, and leaves
a signed audit record on each (AWS itself records the calls in CloudTrail).
"""

from __future__ import annotations

from invoke import Collection, Context, task
from invoke.exceptions import Exit

from fabfile.aws import network, offsite
from fabfile.aws.client import settings
from fabfile.errors import StepFailed
from fabfile.flow import remotes
from fabfile.ops.audit import Trail
from fabfile.ops.guard import Mutation
from fabfile.ops.identity import whoami
from fabfile.remote import preflight
from fabfile.tasks.common import (
    HOST_HELP,
    JSON_HELP,
    Session,
    confirm,
    handled,
    require_mutable,
)

FIX_DRY_HELP = "print the plan (read from AWS) and change nothing; no host is contacted"
FIX_YES_HELP = "do not ask before changing the rules (aws.fix always asks otherwise)"


@task(name="check", auto_shortflags=False, help={"host": HOST_HELP, "json": JSON_HELP})
@handled
def check(c: Context, host: str | None = None, json: bool = False) -> None:
    """Audit the environment's network in AWS (security groups, data subnet, IMDSv2, EBS
    encryption, termination protection, ALB, GuardDuty, CloudTrail) and, with backup_s3, the
    backup bucket (versioning, Object Lock, SSE-KMS, public access): PASS or FAIL with a
    one-line fix each; exit 1 when one fails (for a monitor). Read-only."""
    session = Session(c, host, connects=False)
    env = session.env
    want = network.policy(env)  # no aws: block -> exit 2, before AWS is asked
    facts = network.gather(env)
    checks = network.evaluate(want, facts)
    if env.backup_s3:  # where the offsite copies go: locked, encrypted, never public
        checks += offsite.bucket_checks(env)
    print(session.masker(network.as_json(want, facts, checks) if json
                         else "\n".join(network.table(want, facts, checks))))
    failed = [f"{x.check} {x.subject}" for x in checks if not x.ok]
    if failed:
        raise Exit(None if json else f"{len(failed)} checks failed: {', '.join(failed)}",
                   code=1)


@task(name="fix", auto_shortflags=False, help={
    "host": HOST_HELP, "dry_run": FIX_DRY_HELP, "yes": FIX_YES_HELP})
@handled
def fix(c: Context, host: str | None = None, dry_run: bool = False,
        yes: bool = False) -> None:
    """Correct the security-group rules aws.check fails on: add the allowed rules first, then
    revoke the offending ones (22 from ssh_cidr is never revoked); shown, confirmed, locked
    and audited. Nothing else is changed."""
    session = Session(c, host, connects=False)
    want = network.policy(session.env)  # no aws: block -> exit 2, before anything is read
    require_mutable(session.env)
    operator = None
    if not dry_run:  # it will connect to the hosts: a complete env file for the masker
        session = Session(c, host)
        operator = whoami(session.env)
        preflight(session.env)
    env = session.env
    facts = network.gather(env)
    shown = network.plan(want, facts)
    if not shown.changes:
        print(session.masker(network.nothing_to_do(want, facts, shown,
                                                   network.evaluate(want, facts))))
        return
    print(session.masker("\n".join([f"aws.fix on {env.name} ({settings(env).region}), in this "
                                     "order:", *(f"  {line}" for line in shown.lines())])))
    if operator is None:
        print("dry run: nothing changed")
        return
    confirm(env, yes, f"change {len(shown.changes)} security-group rule(s)", always=True)
    trail = Trail("aws.fix", {"changes": len(shown.changes)})
    hosts = sorted(env.hosts, key=lambda h: h.name)
    with remotes(env, session.printer) as pool:
        try:
            with Mutation(env, pool, list(hosts), trail, operator):
                again = network.plan(want, network.gather(env))  # under the lock: the same?
                if again.changes != shown.changes:
                    raise StepFailed("the security groups changed since the plan was shown; "
                                     f"nothing was changed: run inv aws.fix --host {env.name} "
                                     "again")

                def done(change: network.Change, changed: bool) -> None:
                    for h in hosts:
                        trail.add(h.name, "aws.fix", "changed" if changed else "ok",
                                  change.describe())
                    print(session.masker(f"  {change.describe()}: "
                                         f"{'done' if changed else 'already so'}"))

                try:
                    network.apply(env, shown.changes, done)
                except StepFailed as exc:
                    for h in hosts:
                        trail.add(h.name, "aws.fix", "failed", str(exc))
                    raise
        finally:
            pool.report()
    after = [x for x in network.evaluate(want, network.gather(env))
             if x.check in network.SG_CHECKS]
    print(session.masker("\n".join(f"{x.check} {x.subject}: {'PASS' if x.ok else 'FAIL'}"
                                    for x in after)))


namespace = Collection("aws", check, fix)
