"""The secrets namespace: the env file's values in AWS (Secrets Manager or SSM).

pull and push move the values between the store and a local file; age reports how old each
credential is; rotate (fabfile/ops/rotation.py) replaces credentials without a failed request.
Writes to the store are recorded by AWS itself (CloudTrail names the caller, shown here);
changes on the hosts go through env.sync or rotate, which take the lock and are audited.
"""

from __future__ import annotations

import json as json_mod
from pathlib import Path

from invoke import Collection, Context, task
from invoke.exceptions import Exit

from fabfile import envfile
from fabfile.aws import secretstore
from fabfile.aws.client import caller
from fabfile.errors import BadInput
from fabfile.flow import columns, remotes
from fabfile.ops import pins, rotation
from fabfile.ops import secrets as ops
from fabfile.ops.audit import Trail
from fabfile.ops.identity import whoami
from fabfile.remote import Masker, preflight
from fabfile.sync import check_local_secrets
from fabfile.tasks.common import (
    HOST_HELP,
    JSON_HELP,
    YES_HELP,
    Session,
    confirm,
    handled,
    require_mutable,
)


def stored_session(c: Context, host: str | None) -> Session:
    """The environment, which must keep its values in AWS; no store is read yet."""
    session = Session(c, host, connects=False)
    if not session.env.secrets.stored:
        secretstore.store(session.env)  # raises the one-line explanation
    return session


@task(name="pull", auto_shortflags=False, help={
    "host": HOST_HELP, "out": "the file to write (created with mode 0600)",
    "force": "replace --out if it exists"})
@handled
def pull(c: Context, host: str | None = None, out: str | None = None,
         force: bool = False) -> None:
    """Copy the store's values into a local env file (0600), e.g. to edit and push them."""
    path = ops.check_out_path(out, force)
    session = stored_session(c, host)
    print(ops.pull(session.env, path, force))


@task(name="push", auto_shortflags=False, help={
    "host": HOST_HELP, "from_": "the env file whose values to store (checked as env.check "
                                 "checks it)", "yes": YES_HELP + "; push always asks otherwise"})
@handled
def push(c: Context, host: str | None = None, from_: str | None = None,
         yes: bool = False) -> None:
    """Store an env file's values in the environment's secrets store, after showing which
    keys change (never a value) and asking."""
    if not from_ or not from_.strip():
        raise BadInput("--from is required: the env file whose values to store")
    values = envfile.require_valid(Path(from_))
    session = stored_session(c, host)
    env = session.env
    store = secretstore.store(env)
    exists = store.exists()
    before = store.read() if exists else {}
    masker = Masker(envfile.secrets({**before, **values}))
    change = ops.difference(before, values)
    where = env.secrets.describe()
    if change.empty():
        print(f"nothing to do: {where} already holds these {len(values)} values")
        return
    print(masker(f"{where}{'' if exists else ' (new)'}: {change.describe()}"))
    confirm(env, yes, f"write {len(change.added) + len(change.changed) + len(change.removed)} "
                      f"key(s) to {where}", always=True)
    who = caller(env)
    if exists:
        staged = store.stage(values)
        store.commit(staged)
    else:
        store.create(values)
    print(masker(f"{where}: written as {who} (CloudTrail records it); the hosts get it with "
                 f"inv env.sync --host {env.name}"))


@task(name="age", auto_shortflags=False, help={"host": HOST_HELP, "json": JSON_HELP})
@handled
def age(c: Context, host: str | None = None, json: bool = False) -> None:
    """How old each credential in the store is, against rotate_after_days; exit 1 when one is
    overdue (for a monitor)."""
    session = stored_session(c, host)
    env = session.env
    rows = ops.ages(env)
    if json:
        print(json_mod.dumps({"environment": env.name, "policy_days": env.rotate_after_days,
                              "secrets": [r.as_dict() for r in rows]}, indent=2))
    else:
        print("\n".join(columns(("KEY", "AGE", "SINCE", "STATE"), [
            (r.key, f"{'' if r.exact else '>='}{r.days}d", r.since,
             "OVERDUE" if r.overdue else "ok") for r in rows])))
    overdue = [r.key for r in rows if r.overdue]
    if overdue:
        raise Exit(None if json else f"overdue (older than {env.rotate_after_days} days): "
                   f"{', '.join(overdue)}; rotate with inv secrets.rotate KEY --host "
                   f"{env.name}", code=1)


@task(name="rotate", positional=["keys"], auto_shortflags=False, help={
    "keys": "the keys to rotate, comma separated: " + ", ".join(rotation.KINDS),
    "host": HOST_HELP, "all_": "every key that can be rotated", "yes": YES_HELP})
@handled
def rotate(c: Context, keys: str | None = None, host: str | None = None, all_: bool = False,
           yes: bool = False) -> None:
    """New values for credentials, stored (the old version kept), synced and rolled out
    without a failed request, then the old ones revoked; a failure reverts everything."""
    chosen, notes = rotation.parse_keys(keys, all_)
    stored_session(c, host)  # the environment keeps its values in AWS (else: exit 2)
    session = Session(c, host)  # the store's values: the masker knows them from here on
    env = session.env
    require_mutable(env)
    pins.require_current(env)
    check_local_secrets(env)
    operator = whoami(env)
    preflight(env)
    for note in notes:
        session.printer.line("", f"notice: {note}")
    trail = Trail("secrets.rotate", {"keys": ",".join(chosen)})
    with remotes(env, session.printer) as pool:
        try:
            rotation.rotate(env, pool, session.printer, operator, trail, chosen,
                            lambda what: confirm(env, yes, what))
        finally:
            pool.report()


namespace = Collection("secrets", pull, push, age, rotate)
