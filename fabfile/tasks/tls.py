"""The tls namespace: the data plane's private CA (TLS between the services and the stores)."""

from __future__ import annotations

from invoke import Collection, Context, task

from fabfile import envfile
from fabfile.errors import BadInput
from fabfile.flow import remotes
from fabfile.ops import datatls, pins, tlsrollout
from fabfile.ops.audit import Trail
from fabfile.ops.identity import whoami
from fabfile.remote import preflight
from fabfile.sync import check_local_secrets
from fabfile.tasks.common import (
    HOST_HELP,
    YES_HELP,
    Session,
    confirm,
    handled,
    require_mutable,
    secret_paths,
)


@task(name="data", auto_shortflags=False, help={
    "host": HOST_HELP, "yes": YES_HELP,
    "rotate": "replace the CA and the certificate now (the previous CA stays trusted until "
              "the next rotation); default: create what is missing, renew what expires within "
              f"{datatls.RENEW_BEFORE_DAYS} days",
})
@handled
def data(c: Context, host: str | None = None, rotate: bool = False, yes: bool = False) -> None:
    """Make the data plane's CA and certificate (in tls_dir; the CA key never leaves this
    machine), then put them on every host and in every container that uses them."""
    session = Session(c, host)
    env = session.env
    require_mutable(env)
    pins.require_current(env)
    envfile.refuse_tracked_secrets(extra=secret_paths(env))  # the CA key must not be in git
    if env.tls_dir is None:
        raise BadInput(f"environment {env.name} has no tls_dir: set it to the private folder "
                       "that holds the gateway's pair; the data plane's CA is kept there too")
    if rotate:
        confirm(env, yes, "rotate the data plane's CA and certificate")
    operator = whoami(env)
    preflight(env)
    trail = Trail("tls.data", {"rotate": rotate})
    with remotes(env, session.printer) as pool:
        try:
            if rotate and datatls.problem(env) is None:
                tlsrollout.refuse_unfinished(env, pool)
            for made in datatls.ensure(env, rotate):
                session.printer.line("", f"{env.tls_dir}: {made}")
            check_local_secrets(env)
            tlsrollout.rollout(env, pool, session.printer, operator, trail,
                               lambda what: None if rotate else confirm(env, yes, what))
        finally:
            pool.report()


namespace = Collection("tls", data)
