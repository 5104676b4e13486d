"""The host namespace: prepare and harden (flow steps), check (read-only audit), trust."""

from __future__ import annotations

import sys

from invoke import Collection, Context, task
from invoke.exceptions import Exit

from fabfile.errors import BadInput
from fabfile.hosts import check as hostcheck
from fabfile.hosts.trust import parse_fingerprints
from fabfile.hosts.trust import trust as trust_hosts
from fabfile.tasks.common import (
    HOST_HELP,
    JSON_HELP,
    READ_TIMEOUT,
    TIMEOUT_HELP,
    Session,
    handled,
)
from fabfile.tasks.steps import step_task


@task(name="check", auto_shortflags=False,
      help={"host": HOST_HELP, "json": JSON_HELP, "timeout": TIMEOUT_HELP})
@handled
def host_check(c: Context, host: str | None = None, json: bool = False,
               timeout: int = READ_TIMEOUT) -> None:
    """Audit every hardening control (sshd -T, fail2ban, ufw, ports, Docker, sysctl, upgrades,
    the CIS baseline) read-only; exit 1 if any control fails."""
    session = Session(c, host, timeout=timeout)
    env = session.env
    controls = session.gather(lambda h, pool: hostcheck.evaluate(
        env, h, pool.get(h, admin=True).run(hostcheck.probe(env), check=False).stdout))
    print(session.masker(hostcheck.as_json(controls) if json else
                         "\n".join(hostcheck.table(controls, session.masker))))
    failed = [f"{c.host}: {c.control}" for c in controls if not c.ok]
    if failed:
        raise Exit(None if json else f"{len(failed)} controls failed: {', '.join(failed)}",
                   code=1)


@task(name="trust", auto_shortflags=False, help={
    "host": HOST_HELP,
    "fingerprint": "accept only these SHA256 fingerprints (comma separated), no prompt"})
@handled
def host_trust(c: Context, host: str | None = None, fingerprint: str | None = None) -> None:
    """Show each host's SSH key fingerprint and record it in known_hosts once confirmed."""
    accepted = parse_fingerprints(fingerprint)
    session = Session(c, host)
    if not accepted and not sys.stdin.isatty():
        raise BadInput("no terminal to confirm host keys: pass --fingerprint SHA256:...")
    trust_hosts(session.env, session.printer, accepted,
                lambda prompt: input(prompt).strip() == "yes")


namespace = Collection("host", host_trust, step_task("host.prepare"),
                       step_task("host.harden"), host_check)
