"""What every task shares: the session (environment, masker, printer), the error handling that
turns failures into one line and an exit code, confirmation, and the flow runner.

Every task follows one order: load and validate all input (exit 2 on anything wrong), dry-run
or confirm, then connect; a mutating one then locks, acts, audits and releases.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from invoke import Context
from invoke.exceptions import Exit

from fabfile import envfile, envsource
from fabfile.aws import inventory
from fabfile.config import Environment, Host, load_environment
from fabfile.errors import BadInput, StepFailed
from fabfile.flow import Pool, print_plan, remotes, run_steps, summary
from fabfile.hosts.setup import check_operator_keys
from fabfile.ops import pins
from fabfile.ops.audit import Trail
from fabfile.ops.guard import Mutation
from fabfile.ops.identity import whoami
from fabfile.remote import Masker, Printer, preflight
from fabfile.steps import MUTATING, STEPS
from fabfile.sync import check_local_secrets

T = TypeVar("T")
HOST_HELP = ("environment name from config/environments.yml, or user@address[:port] "
             "(default: jafar.host from invoke.yaml or INVOKE_JAFAR_HOST)")
DRY_HELP = "print, per host, the exact commands and uploads; connect to nothing"
YES_HELP = "do not ask for confirmation on a protected environment (prod)"
JSON_HELP = "print JSON for scripts and monitors instead of the table"
TIMEOUT_HELP = ("seconds each remote command may take (default 20: a read-only task answers "
                "in seconds, even when a host is stuck)")
READ_TIMEOUT = 20


def target(c: Context, host: str | None) -> str | None:
    """--host, else the configured default (Invoke's config: invoke.yaml, INVOKE_JAFAR_HOST;
    for fab: fabric.yaml, FABRIC_JAFAR_HOST)."""
    if host:
        return host
    jafar = c.config.get("jafar") or {}
    configured = jafar.get("host") if hasattr(jafar, "get") else None
    return str(configured) if configured else None


def environment(c: Context, host: str | None) -> Environment:
    """The environment --host (or the configured default) names, validated; nothing else is
    read yet (a task checks its own arguments with it before the values are loaded, which for
    an environment with a secrets store means asking AWS)."""
    name = target(c, host)
    if not name:
        raise BadInput("--host is required: an environment name (prod, staging, sandbox) "
                       "or user@address[:port]; or set a default with jafar.host in "
                       "invoke.yaml / INVOKE_JAFAR_HOST (fabric.yaml / FABRIC_JAFAR_HOST "
                       "for fab)")
    return load_environment(name)


class Session:
    """What one task invocation knows: the environment, the masker and the printer.

    A task that connects needs a complete, valid env file: its values are what the masker
    hides, and output from a host could otherwise show a secret the masker does not know
    (masking must not fail open). A dry run connects nowhere: it reads the file if there is
    one (a broken one is still refused), and needs none."""

    def __init__(self, c: Context, host: str | None, connects: bool = True,
                 timeout: int | None = None, env: Environment | None = None) -> None:
        self.env: Environment = env or environment(c, host)
        if timeout is not None:  # read-only tasks: short, so a stuck host fails fast
            if not 1 <= timeout <= 3600:
                raise BadInput(f"--timeout must be from 1 to 3600 seconds, got {timeout}")
            self.env = replace(self.env, command_timeout=timeout)
        if connects:  # hosts from EC2 (hosts_from): asked of AWS before any connection
            self.env = inventory.resolve(self.env)
        values = envsource.load(self.env) if connects else envsource.peek(self.env)
        self.masker = Masker(envfile.secrets(values))
        self.printer = Printer(self.masker)

    def gather(self, per_host: Callable[[Host, Pool], list[T]],
               hosts: tuple[Host, ...] | None = None) -> list[T]:
        """A read-only report: what `per_host` finds on every host, one connection each."""
        preflight(self.env)
        found: list[T] = []
        with remotes(self.env, self.printer) as pool:
            try:
                for h in hosts if hosts is not None else self.env.hosts:
                    found += per_host(h, pool)
            finally:
                pool.report()  # a host that failed still counts its round trips
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
            raise Exit("interrupted: the remote command was stopped and the lock released; "
                       "every step is safe to run again", code=130) from None
    return wrapper


def require_mutable(env: Environment) -> None:
    """Ad-hoc targets are read-only unless environments.yml has an `adhoc:` block naming
    their own env file."""
    if env.adhoc and not env.adhoc_mutable:
        raise BadInput(f"{env.hosts[0].ssh.address}: an ad-hoc target is read-only; to change "
                       "one, add an `adhoc:` block with its own env_file to "
                       "config/environments.yml")


def confirm(env: Environment, yes: bool, what: str, always: bool = False) -> None:
    """Protected environments (or `always`) need --yes, or the environment's name typed."""
    if not (env.protected or always) or yes:
        return
    if not sys.stdin.isatty():
        why = f"{env.name} is protected and there" if env.protected else "there"
        raise BadInput(f"{why} is no terminal to confirm {what}; pass --yes")
    answer = input(f"{what} on {env.name} ({len(env.hosts)} hosts). Type '{env.name}' to "
                   "continue: ")
    if answer.strip() != env.name:
        raise BadInput(f"not confirmed: you typed {answer.strip()!r}, not {env.name!r}")


def execute(c: Context, host: str | None, names: list[str], dry_run: bool, yes: bool,
            task: str, args: dict[str, object], resume_hint: bool = False) -> None:
    """Validate everything, then dry-run, or lock, run the named steps in flow order, audit
    and release."""
    session = Session(c, host, connects=not dry_run)
    env = session.env
    steps = [STEPS[n] for n in names]
    if dry_run:
        if env.hosts_from is not None:
            session.printer.line("", f"the hosts are {env.hosts_from.describe()}: a dry run asks "
                                     "nothing of AWS, so they are shown as ec2-<role>, their "
                                     "address <from EC2>")
            env = inventory.placeholders(env)
        print_plan(env, steps, session.printer)
        return
    mutating = [s.name for s in steps if s.name in MUTATING]
    if "env.sync" in mutating:
        check_local_secrets(env)
    if any(s.admin for s in steps):
        check_operator_keys(env)
    if mutating:
        require_mutable(env)
        if {"data.up", "core.up"} & set(mutating):
            pins.require_current(env)
        envfile.refuse_tracked_secrets(extra=secret_paths(env))
    operator = whoami(env) if mutating else None
    preflight(env)
    if mutating:
        confirm(env, yes, ", ".join(mutating))
    rows = []
    trail = Trail(task, args)
    with remotes(env, session.printer) as pool:
        try:
            if operator is None:
                rows = run_steps(env, steps, pool)
                failed_step(rows, session, resume_hint)
            else:
                hosts = sorted({h for s in steps for h in s.hosts(env)}, key=lambda h: h.name)
                with Mutation(env, pool, hosts, trail, operator,
                              admin=any(s.admin for s in steps)):
                    rows = run_steps(env, steps, pool, trail)
                    failed_step(rows, session, resume_hint)
        finally:
            summary(rows, session.printer)
            pool.report()


def secret_paths(env: Environment) -> tuple[Path, ...]:
    """The environment's own secret files: a checkout must not track them."""
    if env.tls_dir is None:
        return (env.env_file,)
    keys = ("tls.key", "tls.crt", "data.key", "data-ca.key")
    return (env.env_file, *(env.tls_dir / k for k in keys))


def failed_step(rows: list[Any], session: Session, resume_hint: bool) -> None:
    failed = [r for r in rows if r.result == "FAILED"]
    if failed:
        hint = f" (after fixing it, resume with --from {failed[0].step})" if resume_hint else ""
        raise StepFailed(session.masker(
            f"{failed[0].step} failed on {failed[0].host}: {failed[0].message}{hint}"))
