"""The deploy flow: the documented steps, in order, and the runner that applies them per host.

Each step is data: a name, the roles of the hosts it runs on, a pure `plan` (what dry-run
prints: the exact commands and uploads) and an `apply` that reads state, decides and acts.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

from fabfile.config import Environment, Host
from fabfile.errors import BadInput, StepFailed
from fabfile.remote import Printer, Remote


@dataclass(frozen=True)
class Outcome:
    """What a step did on one host: changed or not, and why, in one line."""

    changed: bool
    message: str


@dataclass(frozen=True)
class Step:
    name: str
    roles: tuple[str, ...]  # the step runs on hosts having any of these roles
    summary: str
    plan: Callable[[Environment, Host], list[str]]
    apply: Callable[[Environment, Host, Remote], Outcome]
    admin: bool = False  # connects as host.admin_user with sudo (host preparation steps)

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

    def close(self) -> None:
        for r in self._remotes.values():
            r.close()


def admin_host(env: Environment, host: Host) -> Host:
    """The same instance, reached as the sudo user that host steps need."""
    return replace(host, ssh=replace(host.ssh, user=env.host_setup.admin_user), become=True)


@contextmanager
def remotes(env: Environment, printer: Printer) -> Iterator[Pool]:
    pool = Pool(env, printer)
    try:
        yield pool
    finally:
        pool.close()


def run_steps(env: Environment, steps: list[Step], printer: Printer) -> list[Row]:
    """Apply the steps in order. The first failure stops the flow: later steps depend on it."""
    rows: list[Row] = []
    with remotes(env, printer) as pool:
        for step in steps:
            for host in step.hosts(env):
                remote = pool.get(host, step.admin)
                try:
                    outcome = step.apply(env, host, remote)
                except StepFailed as exc:
                    reason = str(exc).splitlines()[0].removeprefix(f"{host.name}: ")
                    rows.append(Row(step.name, host.name, "FAILED", reason))
                    remote.say(f"{step.name}: FAILED: {exc}")
                    return rows
                rows.append(Row(step.name, host.name, "changed" if outcome.changed else "ok",
                                outcome.message))
                remote.say(f"{step.name}: {outcome.message}")
        printer.line("", f"{pool.round_trips} SSH round trips on {pool.connections} "
                         f"connection(s)")
    return rows


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
