"""The deploy flow: the documented steps, in order, and the runner that applies them per host.

Each step is data: a name, the roles of the hosts it runs on, a pure `plan` (what dry-run
prints: the exact commands and uploads) and an `apply` that reads state, decides and acts.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from fabfile.config import Environment, Host
from fabfile.errors import BadInput, StepFailed
from fabfile.remote import Printer, Remote

if TYPE_CHECKING:
    from fabfile.ops.audit import Trail


@dataclass(frozen=True)
class Outcome:
    """What a step did on one host: changed or not, and why, in one line."""

    changed: bool
    message: str


Apply = Callable[[Environment, Host, "Remote"], Outcome]


@dataclass(frozen=True)
class Step:
    name: str
    roles: tuple[str, ...]  # the step runs on hosts having any of these roles
    summary: str
    plan: Callable[[Environment, Host], list[str]]
    apply: Apply | None = None
    admin: bool = False  # connects as host.admin_user with sudo (host preparation steps)
    # reads every host of the step first and returns the apply to use (a step that needs the
    # whole fleet's state, such as core.up's merged scale counts)
    prepare: Callable[[Environment, Pool], Apply] | None = None
    # the hosts are independent (nothing on one waits for another, and serving does not
    # depend on the step): it runs on all of them at once, as Ansible's forks do
    parallel: bool = False

    def hosts(self, env: Environment) -> tuple[Host, ...]:
        return tuple(h for h in env.hosts if any(h.has(r) for r in self.roles))


@dataclass
class Row:
    step: str
    host: str
    result: str  # "changed", "ok" (nothing to do), "FAILED"
    message: str


def select(names: list[str], start: str | None = None, only: str | None = None,
           skip: str | None = None) -> list[str]:
    """The steps to run, in flow order. Unknown names are BadInput listing the valid ones."""
    def parse(flag: str, value: str | None) -> list[str]:
        if value is None:
            return []
        picked = [v.strip() for v in value.split(",") if v.strip()]
        if not picked:
            raise BadInput(f"--{flag} is empty; give step names from: {', '.join(names)}")
        for v in picked:
            if v not in names:
                raise BadInput(f"--{flag}: unknown step {v!r}; steps are: {', '.join(names)}")
        return picked

    chosen = list(names)
    if only is not None and start is not None:
        raise BadInput("--only and --from do not mix; use one of them")
    if start is not None:
        picked = parse("from", start)
        if len(picked) != 1:
            raise BadInput("--from takes one step name")
        chosen = names[names.index(picked[0]):]
    if only is not None:
        wanted = parse("only", only)
        chosen = [n for n in names if n in wanted]
    dropped = parse("skip", skip)
    chosen = [n for n in chosen if n not in dropped]
    if not chosen:
        raise BadInput("no step left to run after --skip; check the step names")
    return chosen


def print_plan(env: Environment, steps: list[Step], printer: Printer) -> None:
    """Dry-run: per host and in order, the exact commands and uploads. No connection."""
    printer.line("", f"dry run for {env.name}: nothing is contacted or changed")
    for step in steps:
        for host in step.hosts(env):
            printer.line(host.name, f"{step.name}: {step.summary}")
            for line in step.plan(env, host):
                printer.line(host.name, textwrap.indent(line, "  "))


class Pool:
    """One connection per host (and per user) for the whole run, opened on first use."""

    def __init__(self, env: Environment, printer: Printer) -> None:
        self.env = env
        self.printer = printer
        self._remotes: dict[tuple[str, bool], Remote] = {}
        # set while a lock is held: the prologue that renews it on a host (see ops/guard)
        self.renewal: Callable[[Host], str] | None = None

    def renew(self, host: Host, remote: Remote) -> None:
        """The next command on `remote` also renews the lock (no extra round trip)."""
        if self.renewal is not None:
            remote.prologue = self.renewal(host)

    def get(self, host: Host, admin: bool = False) -> Remote:
        key = (host.name, admin)
        if key not in self._remotes:
            target = admin_host(self.env, host) if admin else host
            self._remotes[key] = Remote(self.env, target, self.printer)
        return self._remotes[key]

    @property
    def connections(self) -> int:
        return len(self._remotes)

    @property
    def round_trips(self) -> int:
        return sum(r.round_trips for r in self._remotes.values())

    def report(self) -> None:
        """Every run that connects ends with its cost in round trips (on stderr, so that
        --json output stays one document)."""
        if self._remotes:
            sys.stdout.flush()
            print(f"{self.round_trips} SSH round trips on {self.connections} connection(s)",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        for r in self._remotes.values():
            r.close()


def admin_host(env: Environment, host: Host) -> Host:
    """The same instance, reached as the sudo user that host steps need (with its own key when
    host.admin_key names one: the deploy key then cannot become root)."""
    key = env.host_setup.admin_key or host.ssh.key
    return replace(host, ssh=replace(host.ssh, user=env.host_setup.admin_user, key=key),
                   become=True)


@contextmanager
def remotes(env: Environment, printer: Printer) -> Iterator[Pool]:
    pool = Pool(env, printer)
    try:
        yield pool
    finally:
        pool.close()


def run_steps(env: Environment, steps: list[Step], pool: Pool,
              trail: Trail | None = None) -> list[Row]:
    """Apply the steps in order. The first failure stops the flow: later steps depend on it.
    Each step's first command on a host also renews the lock (when one is held)."""
    rows: list[Row] = []

    def record(row: Row) -> None:
        rows.append(row)
        if trail is not None:
            trail.add(row.host, row.step, row.result.lower(), row.message)

    for step in steps:
        try:
            apply = step.prepare(env, pool) if step.prepare else step.apply
        except StepFailed as exc:
            for host in step.hosts(env):
                record(Row(step.name, host.name, "FAILED", str(exc).splitlines()[0]))
            pool.printer.line("", f"{step.name}: FAILED: {exc}")
            return rows
        assert apply is not None, f"step {step.name} has neither apply nor prepare"
        hosts = step.hosts(env)
        if step.parallel and len(hosts) > 1:
            outcomes = in_parallel(env, step, apply, pool, hosts)
        else:
            outcomes = []
            for host in hosts:  # one by one: the first failure stops the rest
                pool.renew(host, pool.get(host, step.admin))
                outcomes.append(attempt(env, step, apply, pool, host))
                if isinstance(outcomes[-1], StepFailed):
                    break
        for host, outcome in zip(hosts, outcomes, strict=False):
            if isinstance(outcome, StepFailed):
                reason = str(outcome).splitlines()[0].removeprefix(f"{host.name}: ")
                record(Row(step.name, host.name, "FAILED", reason))
            else:
                record(Row(step.name, host.name, "changed" if outcome.changed else "ok",
                           outcome.message))
        if any(isinstance(o, StepFailed) for o in outcomes):
            return rows
    return rows


def attempt(env: Environment, step: Step, apply: Apply, pool: Pool,
            host: Host) -> Outcome | StepFailed:
    """The step on one host, said as it ends; a failure is returned, not raised."""
    remote = pool.get(host, step.admin)
    try:
        outcome = apply(env, host, remote)
    except StepFailed as exc:
        remote.say(f"{step.name}: FAILED: {exc}")
        return exc
    remote.say(f"{step.name}: {outcome.message}")
    return outcome


def in_parallel(env: Environment, step: Step, apply: Apply, pool: Pool,
                hosts: tuple[Host, ...]) -> list[Outcome | StepFailed]:
    """The step on every host at once; each host finishes (a failure on one does not cut
    another's script short), and the outcomes come back in host order."""
    for host in hosts:  # connections and lock renewals from this thread, as one by one
        pool.renew(host, pool.get(host, step.admin))
    with ThreadPoolExecutor(max_workers=len(hosts)) as workers:
        return list(workers.map(lambda h: attempt(env, step, apply, pool, h), hosts))


def columns(heads: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """Aligned text columns; the last one (free text) is not padded."""
    widths = [max(len(r[i]) for r in [heads, *rows]) for i in range(len(heads) - 1)]
    return ["  ".join(f"{v:<{w}}" for v, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
            for r in [heads, *rows]]


def summary(rows: list[Row], printer: Printer) -> None:
    """The closing table: one line per step and host."""
    if not rows:
        return
    printer.line("", "")
    for line in columns(("STEP", "HOST", "RESULT", "DETAIL"),
                        [(r.step, r.host, r.result, r.message) for r in rows]):
        printer.line("", line)
