"""The Invoke tasks: thin wrappers that validate, confirm, then run flow steps.

Every task follows one order: load and validate all input (exit 2 on anything wrong), dry-run
or confirm, then connect. Errors leave as one masked line and a meaningful exit code.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from invoke import Collection, Context, task
from invoke.exceptions import Exit

from fabfile import envfile, hostcheck
from fabfile import health as health_mod
from fabfile import local_sandbox as sandbox
from fabfile.config import Environment, Host, load_environment
from fabfile.errors import BadInput, StepFailed
from fabfile.flow import Pool, Step, print_plan, remotes, run_steps, select, summary
from fabfile.host import HOST_HARDEN, HOST_PREPARE, check_operator_keys
from fabfile.remote import Masker, Printer, preflight
from fabfile.replica import REPLICA_INIT
from fabfile.stacks import CORE_UP, DATA_UP
from fabfile.sync import ENV_SYNC, FILES_SYNC, check_local_secrets
from fabfile.trust import parse_fingerprints
from fabfile.trust import trust as trust_hosts

FLOW: tuple[Step, ...] = (HOST_PREPARE, HOST_HARDEN, ENV_SYNC, FILES_SYNC, DATA_UP,
                          REPLICA_INIT, CORE_UP, health_mod.HEALTH)
STEPS = {s.name: s for s in FLOW}
MUTATING = {"host.prepare", "host.harden", "env.sync", "files.sync", "data.up", "replica.init",
            "core.up"}

T = TypeVar("T")
HOST_HELP = "environment name from config/environments.yml, or user@address[:port]"
DRY_HELP = "print, per host, the exact commands and uploads; connect to nothing"
YES_HELP = "do not ask for confirmation on a protected environment (prod)"


class Session:
    """What one task invocation knows: the environment, the masker and the printer."""

    def __init__(self, target: str | None) -> None:
        if not target:
            raise BadInput("--host is required: an environment name (prod, staging, sandbox) "
                           "or user@address[:port]")
        self.env: Environment = load_environment(target)
        self.masker = Masker(envfile.secret_values(self.env.env_file))
        self.printer = Printer(self.masker)

    def gather(self, per_host: Callable[[Host, Pool], list[T]]) -> list[T]:
        """A read-only report: what `per_host` finds on every host, one connection each."""
        preflight(self.env)
        found: list[T] = []
        with remotes(self.env, self.printer) as pool:
            for h in self.env.hosts:
                found += per_host(h, pool)
        return found


def handled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn BadInput/StepFailed into one line and exit code 2/1 (messages are masked where
    they are made: remote output goes through the Masker before it is put in one)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (BadInput, StepFailed) as exc:
            raise Exit(f"error: {exc}", code=exc.exit_code) from None
        except KeyboardInterrupt:
            raise Exit("interrupted: a remote command may still be running; re-run the step, "
                       "every step is safe to repeat", code=130) from None
    return wrapper


def confirm(env: Environment, yes: bool, what: str) -> None:
    """Protected environments need --yes, or the environment's name typed at a terminal."""
    if not env.protected or yes:
        return
    if not sys.stdin.isatty():
        raise BadInput(f"{env.name} is protected and there is no terminal to confirm {what}; "
                       "pass --yes")
    answer = input(f"{what} on {env.name} ({len(env.hosts)} hosts). Type '{env.name}' to "
                   "continue: ")
    if answer.strip() != env.name:
        raise BadInput(f"not confirmed: you typed {answer.strip()!r}, not {env.name!r}")


def execute(target: str | None, names: list[str], dry_run: bool, yes: bool,
            resume_hint: bool = False) -> None:
    """Validate everything, then dry-run or run the named steps in flow order."""
    session = Session(target)
    env = session.env
    steps = [STEPS[n] for n in names]
    if dry_run:
        print_plan(env, steps, session.printer)
        return
    mutating = [s.name for s in steps if s.name in MUTATING]
    if "env.sync" in mutating:
        check_local_secrets(env)
    if any(s.admin for s in steps):
        check_operator_keys(env)
    if mutating:
        envfile.refuse_tracked_secrets()
    preflight(env)
    if mutating:
        confirm(env, yes, ", ".join(mutating))
    rows = run_steps(env, steps, session.printer)
    summary(rows, session.printer)
    failed = [r for r in rows if r.result == "FAILED"]
    if failed:
        hint = f" (after fixing it, resume with --from {failed[0].step})" if resume_hint else ""
        raise StepFailed(session.masker(
            f"{failed[0].step} failed on {failed[0].host}: {failed[0].message}{hint}"))


def step_task(name: str) -> Callable[..., None]:
    """A task that runs one flow step alone, as in the runbook."""
    step = STEPS[name]

    @task(name=name.split(".")[-1], auto_shortflags=False,
          help={"host": HOST_HELP, "dry_run": DRY_HELP, "yes": YES_HELP})
    @handled
    def one_step(c: Context, host: str | None = None, dry_run: bool = False,
                 yes: bool = False) -> None:
        execute(host, [name], dry_run, yes)

    one_step.__doc__ = f"{step.summary[0].upper()}{step.summary[1:]} (flow step {name})."
    one_step.body.__doc__ = one_step.__doc__
    return one_step


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
    execute(host, select(list(STEPS), start=from_, only=only, skip=skip), dry_run, yes,
            resume_hint=True)


@task(name="health", auto_shortflags=False, help={
    "host": HOST_HELP, "json": "print JSON for scripts and monitors instead of the table"})
@handled
def health(c: Context, host: str | None = None, json: bool = False) -> None:
    """Show docker compose ps and /health of every service; exit 1 if anything is unhealthy."""
    session = Session(host)
    checks = session.gather(lambda h, pool: health_mod.check_host(session.env, h, pool.get(h)))
    text = health_mod.as_json(checks) if json else "\n".join(health_mod.table(checks))
    print(session.masker(text))
    bad = sorted({c.service for c in checks if not c.healthy})
    if bad:
        raise Exit(f"unhealthy: {', '.join(bad)}" if not json else None, code=1)


@task(name="check", auto_shortflags=False, help={
    "host": HOST_HELP, "json": "print JSON for scripts and monitors instead of the table"})
@handled
def host_check(c: Context, host: str | None = None, json: bool = False) -> None:
    """Audit every hardening control (sshd -T, fail2ban, ufw, ports, Docker, sysctl, upgrades)
    read-only; exit 1 if any control fails."""
    session = Session(host)
    env = session.env
    controls = session.gather(lambda h, pool: hostcheck.evaluate(
        env, h, pool.get(h, admin=True).run(hostcheck.probe(env), check=False).stdout))
    print(session.masker(hostcheck.as_json(controls) if json else
                         "\n".join(hostcheck.table(controls))))
    failed = [f"{c.host}: {c.control}" for c in controls if not c.ok]
    if failed:
        raise Exit(None if json else f"{len(failed)} controls failed: {', '.join(failed)}",
                   code=1)


@task(name="check", auto_shortflags=False, help={
    "host": "environment whose env_file to check (default: ./.env.ec2)",
    "file": "path of the env file to check instead"})
@handled
def env_check(c: Context, host: str | None = None, file: str | None = None) -> None:
    """Report missing, empty, unknown or weak keys of an env file (by name, never by value)."""
    from pathlib import Path

    path = Path(file) if file else (load_environment(host).env_file if host else
                                    envfile.ROOT / ".env.ec2")
    envfile.require_valid(path)
    print(f"{path}: ok ({len(envfile.example_keys())} keys, mode 0600)")


@task(name="trust", auto_shortflags=False, help={
    "host": HOST_HELP,
    "fingerprint": "accept only these SHA256 fingerprints (comma separated), no prompt"})
@handled
def host_trust(c: Context, host: str | None = None, fingerprint: str | None = None) -> None:
    """Show each host's SSH key fingerprint and record it in known_hosts once confirmed."""
    accepted = parse_fingerprints(fingerprint)
    session = Session(host)
    if not accepted and not sys.stdin.isatty():
        raise BadInput("no terminal to confirm host keys: pass --fingerprint SHA256:...")
    trust_hosts(session.env, session.printer, accepted,
                lambda prompt: input(prompt).strip() == "yes")


@task(name="up", auto_shortflags=False, help={
    "hosts": "1: one host with both roles; N > 1: a data host and N-1 core hosts"})
@handled
def sandbox_up(c: Context, hosts: int = 1) -> None:
    """Build the images and boot local test hosts that behave like fresh EC2 instances."""
    sandbox.up(hosts, Printer(Masker()))


@task(name="down", auto_shortflags=False)
@handled
def sandbox_down(c: Context) -> None:
    """Remove the sandbox hosts and registry; their volumes and .sandbox/ are kept."""
    sandbox.down(Printer(Masker()))


@task(name="reset", auto_shortflags=False, help={
    "hosts": "how many hosts the new sandbox has (see sandbox.up)"})
@handled
def sandbox_reset(c: Context, hosts: int = 1) -> None:
    """Destroy the sandbox with its volumes, keys and secrets, then bring up a fresh one."""
    say = Printer(Masker())
    sandbox.down(say, purge=True)
    sandbox.up(hosts, say)


@task(name="status", auto_shortflags=False, help={"json": "print JSON instead of a table"})
@handled
def sandbox_status(c: Context, json: bool = False) -> None:
    """List the sandbox's containers with their state and loopback ports."""
    import json as jsonlib

    rows = sandbox.status()
    if json:
        print(jsonlib.dumps(rows, indent=2))
    elif not rows:
        print("no sandbox: run inv sandbox.up")
    else:
        width = max(len(r["name"]) for r in rows)
        for r in rows:
            print(f"{r['name']:<{width}}  {r['state']:<8}  {r['ports']}")


ns = Collection(
    deploy,
    health,
    Collection("env", env_check, step_task("env.sync")),
    Collection("files", step_task("files.sync")),
    Collection("data", step_task("data.up")),
    Collection("replica", step_task("replica.init")),
    Collection("core", step_task("core.up")),
    Collection("host", host_trust, step_task("host.prepare"), step_task("host.harden"),
               host_check),
    Collection("sandbox", sandbox_up, sandbox_down, sandbox_reset, sandbox_status),
)
