"""The deploy lock: one run changes an environment at a time.

Every mutating task takes the lock on each of its hosts, in sorted order, before it changes
anything, and releases it at the end, also on failure or Ctrl-C. A run that finds the lock held
is refused at once, naming the holder; a holder that looks dead (its process is gone from this
machine, or it has not renewed within `lock_ttl`) is called stale, with the command that clears
it. Backups take a lock of their own name, so a backup never blocks an incident deploy.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import sys
import time
from dataclasses import dataclass

from fabfile.commands import lock as cmd
from fabfile.config import Environment, Host
from fabfile.errors import StepFailed
from fabfile.ops.identity import Operator
from fabfile.remote import Remote

DEPLOY = "deploy"


class LockHeld(StepFailed):
    """Another run holds the lock (exit 1): nothing was changed."""


@dataclass(frozen=True)
class Tail:
    """The host's audit trail when the lock was taken: the last line's hash and the count."""

    last: str   # sha256 hex, or 64 zeros for an empty trail
    count: int


ZERO = "0" * 64


def command_line() -> str:
    """How this run was started, as the holder shows it (`inv scale api=3 --host prod`)."""
    program = os.path.basename(sys.argv[0]) if sys.argv else "inv"
    program = "fab" if "fab" in program else "inv"
    return shlex.join([program, *sys.argv[1:]])[:300]


def holder(operator: Operator, command: str) -> dict[str, object]:
    return {"person": operator.person, "user": operator.user, "machine": operator.machine,
            "pid": operator.pid, "command": command,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ago(seconds: int) -> str:
    seconds = max(seconds, 0)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


@dataclass(frozen=True)
class Held:
    """A lock found on a host: who holds it and whether they look dead."""

    host: str
    info: dict[str, object]
    now: int
    renewed: int

    def stale_reason(self, ttl: int, machine: str) -> str | None:
        pid = self.info.get("pid")
        if self.info.get("machine") == machine and isinstance(pid, int) and not pid_alive(pid):
            return f"pid {pid} no longer runs on {machine}"
        if self.now - self.renewed > ttl:
            return f"not renewed for {ago(self.now - self.renewed)} (lock_ttl {ago(ttl)})"
        return None

    def describe(self) -> str:
        i = self.info
        if not i:
            return f"the lock on {self.host} is held (its holder is still writing its details)"
        return (f"held by {i.get('person')} (user {i.get('user')} on {i.get('machine')}, pid "
                f"{i.get('pid')}, `{i.get('command')}`) since {i.get('started')}, last renewed "
                f"{ago(self.now - self.renewed)} ago")


def parse_status(host: str, output: str) -> Held | None:
    """`HELD now renewed` + holder JSON -> Held; `FREE now` or `ACQUIRED now` -> None."""
    lines = output.splitlines()
    if not lines or not lines[0].startswith("HELD "):
        return None
    _, now, renewed = (lines[0].split() + ["0", "0"])[:3]
    try:
        info = json.loads(lines[1]) if len(lines) > 1 and lines[1].strip() else {}
    except ValueError:
        info = {}
    return Held(host, info if isinstance(info, dict) else {}, int(now), int(renewed or 0))


def parse_tail(output: str) -> Tail:
    for line in output.splitlines():
        if line.startswith("AUDIT "):
            _, last, count = line.split()
            return Tail(ZERO if last == "-" else last, int(count))
    return Tail(ZERO, 0)


def refusal(env: Environment, held: Held, machine: str, name: str = DEPLOY) -> str:
    what = "deploy lock" if name == DEPLOY else f"{name} lock"
    stale = held.stale_reason(env.lock_ttl, machine)
    if stale:
        release = f"inv lock.release --host {env.name}" + (
            "" if name == DEPLOY else f" --name {name}")
        return (f"{held.host}: the {what} is STALE: {held.describe()}; {stale}. If that run "
                f"is really gone, clear it with: {release}")
    return (f"{held.host}: refused: the {what} is {held.describe()}; wait for it to finish "
            f"(inv lock.status --host {env.name})")


class Lock:
    """This run's hold on a set of hosts."""

    def __init__(self, env: Environment, operator: Operator, name: str = DEPLOY) -> None:
        self.env = env
        self.operator = operator
        self.name = name
        self.token = secrets.token_hex(16)
        self.held: dict[str, Remote] = {}   # host name -> the remote that took it
        self.tails: dict[str, Tail] = {}

    def acquire(self, targets: list[tuple[Host, Remote]], command: str) -> None:
        """Take the lock on every host, in sorted order; if one is held, give back those taken
        and refuse (LockHeld), nothing changed."""
        info = json.dumps(holder(self.operator, command), sort_keys=True).encode()
        for host, remote in sorted(targets, key=lambda t: t[0].name):
            out = remote.run_with_input(cmd.acquire(self.env.deploy_path, self.name,
                                                    self.token), info).stdout
            held = parse_status(host.name, out)
            if held is not None:
                self.release_all()
                raise LockHeld(refusal(self.env, held, self.operator.machine, self.name))
            self.held[host.name] = remote
            self.tails[host.name] = parse_tail(out)

    def renewal(self, host: Host) -> str:
        """The prologue that renews the lock in a round trip the step makes anyway."""
        if host.name not in self.held:
            return ""
        return cmd.renew(self.env.deploy_path, self.name, self.token)

    def release_command(self) -> str:
        return cmd.release(self.env.deploy_path, self.name, self.token)

    def release_all(self) -> None:
        for _, remote in sorted(self.held.items()):
            try:
                remote.run(self.release_command(), timeout=30)
            except StepFailed as exc:
                remote.say(f"could not release the lock: {exc}")
        self.held.clear()
