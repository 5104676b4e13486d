"""Lock, then act, then audit: the frame of every mutating task.

    with Mutation(env, pool, hosts, trail, operator) as m:
        ... act, m.trail.add(...) ...

takes the deploy lock on each host (sorted), lets the steps renew it, and at the end, also on
failure or Ctrl-C (after the remote command was stopped), appends one signed audit record per
host that changed or failed and releases the lock, both in one round trip per host.
"""

from __future__ import annotations

from types import TracebackType

from fabfile.config import Environment, Host
from fabfile.errors import StepFailed
from fabfile.flow import Pool
from fabfile.ops import audit
from fabfile.ops.identity import Operator
from fabfile.ops.lock import DEPLOY, Lock, command_line
from fabfile.remote import Remote


class Mutation:
    def __init__(self, env: Environment, pool: Pool, hosts: list[Host], trail: audit.Trail,
                 operator: Operator, *, admin: bool = False, tag: str | None = None,
                 name: str = DEPLOY) -> None:
        self.env = env
        self.pool = pool
        self.hosts = sorted(hosts, key=lambda h: h.name)
        self.trail = trail
        self.operator = operator
        self.admin = admin  # take the lock as the admin user (runs with host steps)
        self.tag = tag or env.tag
        self.lock = Lock(env, operator, name)

    def __enter__(self) -> Mutation:
        self.lock.acquire([(h, self.pool.get(h, self.admin)) for h in self.hosts],
                          command_line())
        self.pool.renewal = self.lock.renewal
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is KeyboardInterrupt:
            self.trail.result = "interrupted"
        elif kind is not None:
            self.trail.result = "failed"
        self.pool.renewal = None
        self.finish()

    def finish(self) -> None:
        """Per host: the signed record (if worth one) and the release, in one round trip."""
        for name, remote in sorted(self.lock.held.items()):
            try:
                if self.trail.worth_recording(name):
                    try:
                        self.record(name, remote)
                        continue
                    except StepFailed as exc:  # e.g. the record could not be signed
                        remote.say(f"audit record not written ({exc})")
                remote.run(self.lock.release_command(), timeout=30)
            except StepFailed as exc:
                remote.say(f"could not release the lock ({exc}); the next run will report "
                           "it as stale")
        self.lock.held.clear()

    def record(self, host: str, remote: Remote) -> None:
        audit.append(self.env, host, remote, self.operator, self.trail, self.tag,
                     self.lock.tails[host], self.lock.release_command())
