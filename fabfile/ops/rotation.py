"""`inv secrets.rotate`: new credentials, without a failed request, and nothing lost on failure.

For each key a new value (the `secrets` module: 40 letters and digits, safe in Compose, URLs
and shells), then, under the deploy lock:
1. stage the new values in the store (Secrets Manager: AWSPENDING; nothing is current yet);
2. add the new credential beside the old one on its server: Redis gets a second password of
   the default user (by its SHA-256); PostgreSQL and MongoDB get it on the twin of the user the
   services log in as (fabfile/alternating.py); the root and superuser passwords and Grafana's
   are changed directly (no service logs in with them);
3. make the staged values current in the store (the old ones stay as AWSPREVIOUS);
4. env.sync them to every host;
5. roll the services that read them on each core host (new replicas beside the old, routed
   once healthy, the old drained: fabfile/ops/rolling.py);
6. revoke the old credential, then check that each server refuses it.
A failure in 1-5 reverts everything done so far, in reverse (store, hosts' files, the
services already rolled, the credential added) and says what it did. A failure in 6 leaves
the old credential valid, which is safe, and says how to finish.

AUTH_JWT_SECRET is a key set (fabfile/keyset.py): the new key goes first and the one that
signed stays to verify, so no token issued before is refused; its revocation is the key before
that one leaving the set.

MONGO_KEYFILE moves the replica set's members through rolling restarts with a key file that
holds both keys (fabfile/ops/keyfile.py); its revocation is the last restart, with the new key
only.
"""

from __future__ import annotations

import secrets as random
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fabfile import ROOT, alternating, envfile, envsource, keyset
from fabfile.aws import secretstore
from fabfile.commands import credentials as cmd
from fabfile.config import Environment, Host
from fabfile.errors import BadInput, StepFailed
from fabfile.flow import Pool, run_steps
from fabfile.ops import keyfile, rolling, state
from fabfile.ops.audit import Trail
from fabfile.ops.guard import Mutation
from fabfile.ops.identity import Operator
from fabfile.ops.release import running_images
from fabfile.remote import Printer, Remote
from fabfile.stackspec import mounts
from fabfile.sync import ENV_SYNC

ALPHABET = string.ascii_letters + string.digits
LENGTH = 40  # 238 bits
# the key -> how its server takes a new credential
KINDS = {
    "REDIS_PASSWORD": "redis",
    "LEDGER_DB_PASSWORD": "pg-login",
    "MONGO_APP_PASSWORD": "mongo-login",
    "MONGO_LEDGER_PASSWORD": "mongo-login",
    "MONGO_BACKUP_PASSWORD": "mongo-login",
    "MONGO_ROOT_PASSWORD": "mongo-root",
    "POSTGRES_PASSWORD": "pg-super",
    "GRAFANA_ADMIN_PASSWORD": "grafana",
    "AUTH_JWT_SECRET": "jwt",
    "MONGO_KEYFILE": "keyfile",
}
# each user's role and its database (None: MONGO_APP_DB), as scripts/init-mongo.js gives them
MONGO_ROLES = {"MONGO_APP_USER": ("readWrite", None), "MONGO_LEDGER_USER": ("read", None),
               "MONGO_BACKUP_USER": ("backup", "admin")}
JWT_NOTE = (f"{keyset.KEY}: the new key signs, tokens of the previous one stay valid until "
            "they expire; the key before it leaves the set (rotate it again only after the "
            "tokens' lifetime)")


def parse_keys(text: str | None, every: bool) -> tuple[list[str], list[str]]:
    """(the keys to rotate in a stable order, what to tell the operator about them)."""
    if every:
        if text:
            raise BadInput("give keys or --all, not both")
        return list(KINDS), [JWT_NOTE]
    names = [k.strip() for k in (text or "").split(",")]
    if not text or not all(names):
        raise BadInput(f"name the keys to rotate, comma separated ({', '.join(KINDS)}), or "
                       "--all")
    for name in names:
        if name not in KINDS:
            raise BadInput(f"{name[:60]!r} cannot be rotated: choose from {', '.join(KINDS)}")
    if len(set(names)) != len(names):
        raise BadInput("a key is named twice; name each once")
    return [k for k in KINDS if k in names], [JWT_NOTE] if keyset.KEY in names else []


def new_value() -> str:
    return "".join(random.choice(ALPHABET) for _ in range(LENGTH))


def new_values(before: dict[str, str], keys: list[str]) -> dict[str, str]:
    """The values after the rotation: each key a new value; an alternating user's key its
    twin."""
    after = dict(before)
    for key in keys:
        after[key] = keyfile.new_key() if KINDS[key] == "keyfile" else new_value()
        if KINDS[key] == "jwt":
            after[key] = keyset.rotated(before[key], after[key])
        user_key = alternating.USERS.get(key)
        if user_key:
            if len(alternating.base(before[user_key])) > alternating.MAX_BASE:
                raise BadInput(f"{user_key} is too long to alternate with its _clone twin (at "
                               f"most {alternating.MAX_BASE} characters)")
            after[user_key] = alternating.twin(before[user_key])
    return after


@dataclass
class Rotation:
    """What one run changes, and what it has done so far (to undo it)."""

    env: Environment
    keys: list[str]
    before: dict[str, str] = field(repr=False)
    after: dict[str, str] = field(repr=False)
    added: list[str] = field(default_factory=list)     # keys whose new credential exists
    rolled: list[tuple[Host, str]] = field(default_factory=list)
    root: str = field(default="", repr=False)          # MongoDB's root password right now

    def __post_init__(self) -> None:
        self.root = self.before["MONGO_ROOT_PASSWORD"]

    def services(self) -> list[str]:
        """The core services that read a rotated secret, in the release order."""
        names = frozenset(k.lower() for k in self.keys)
        using = set(mounts(self.env, "core", names))
        return [s for s in self.env.release.order if s in using]


# --- one key on its server ---------------------------------------------------------------------

def expect_ok(remote: Remote, command: str, data: bytes, what: str) -> None:
    result = remote.run_with_input(command, data, timeout=120, check=False)
    replies = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    if not result.ok or not replies or any(r != "OK" for r in replies):
        raise StepFailed(remote.printer.mask(f"{what}: redis answered "
                                             f"{(replies or [result.stderr.strip()])[-1][:120]}"))


def mongo(rotation: Rotation, remote: Remote, op: str, user: str, password: str,
          roles: list[dict[str, str]] | None = None) -> str:
    """scripts/mongo-user.js: one change to one user; returns its last line."""
    database = "admin" if user == rotation.before["MONGO_ROOT_USERNAME"] \
        else rotation.before["MONGO_APP_DB"]
    return run_mongosh(rotation.env, remote, cmd.mongo_user(rotation.env, op, user, database,
                                                            roles),
                       "mongo-user.js", rotation.root, {"password": password.encode()})


def run_mongosh(env: Environment, remote: Remote, command: str, script: str, root: str,
                files: dict[str, bytes] | None = None) -> str:
    """A script of scripts/ in mongo-primary, handed the root password, the data CA and
    `files`; returns its last line of output."""
    assert env.tls_dir is not None  # checked before (check_local_secrets)
    handed = {"mongo_root_password": root.encode(),
              "data_ca_crt": (env.tls_dir / "data-ca-bundle.crt").read_bytes(), **(files or {})}
    result = remote.run_with_input(command, cmd.mongo_user_input(
        handed, (ROOT / "scripts" / script).read_text()), timeout=600, check=False)
    if not result.ok:
        raise StepFailed(remote.failure(result))
    return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""


def mongo_roles(rotation: Rotation, user_key: str) -> list[dict[str, str]]:
    role, db = MONGO_ROLES[user_key]
    return [{"role": role, "db": db or rotation.before["MONGO_APP_DB"]}]


def psql(remote: Remote, env: Environment, sql: str) -> None:
    result = remote.run_with_input(cmd.psql(env), sql.encode(), timeout=120, check=False)
    if not result.ok:
        raise StepFailed(remote.failure(result))


def add(rotation: Rotation, remote: Remote, key: str) -> str:
    """Step 2: the new credential beside the old one."""
    env, before, after = rotation.env, rotation.before, rotation.after
    kind = KINDS[key]
    if kind == "redis":
        expect_ok(remote, cmd.redis(env), cmd.redis_add_input(before[key], after[key]),
                  "adding the new Redis password")
        return "redis: new password added beside the old one"
    if kind == "pg-login":
        user = after["LEDGER_DB_USER"]
        psql(remote, env, cmd.login_role_sql(user, alternating.base(user),
                                             before["LEDGER_DB_NAME"],
                                             cmd.scram_verifier(after[key])))
        return f"postgres: role {user} logs in with the new password"
    if kind == "mongo-login":
        user_key = alternating.USERS[key]
        said = mongo(rotation, remote, "ensure", after[user_key], after[key],
                     mongo_roles(rotation, user_key))
        return f"mongo: {said} with the new password"
    if kind == "mongo-root":
        said = mongo(rotation, remote, "password", before["MONGO_ROOT_USERNAME"], after[key])
        rotation.root = after[key]
        return f"mongo: {said} (root)"
    if kind == "pg-super":
        psql(remote, env, cmd.password_sql(before["POSTGRES_USER"], cmd.scram_verifier(after[key])))
        return f"postgres: superuser {before['POSTGRES_USER']} has the new password"
    if kind == "grafana":
        return grafana(rotation, remote, after[key])
    if kind == "keyfile":
        for keys in ((before[key], after[key]), (after[key], before[key])):
            roll_members(rotation, remote, keys)
        return "mongo: every member sends the new key and still accepts the old one"
    if kind == "jwt":
        return "jwt: the new key will sign; the one that signed stays in the set to verify"
    return "no server keeps it: the services read it when they start"


def grafana(rotation: Rotation, remote: Remote, password: str) -> str:
    env = rotation.env
    if "grafana" not in env.compose_profiles:
        return "grafana does not run here (profile off): stored for its first start"
    result = remote.run_with_input(cmd.grafana_admin_password(env), f"{password}\n".encode(),
                                   timeout=120, check=False)
    if not result.ok:
        raise StepFailed(remote.failure(result))
    return "grafana: admin password changed"


def undo(rotation: Rotation, remote: Remote, key: str) -> None:
    """Back to the old credential only (a failed rotation)."""
    env, before, after = rotation.env, rotation.before, rotation.after
    kind = KINDS[key]
    if kind == "redis":
        expect_ok(remote, cmd.redis(env), cmd.redis_keep_only_input(before[key]),
                  "removing the new Redis password")
    elif kind == "pg-login":
        psql(remote, env, cmd.disable_login_sql(after["LEDGER_DB_USER"]))
    elif kind == "mongo-login":
        mongo(rotation, remote, "drop", after[alternating.USERS[key]], "")
    elif kind == "mongo-root":
        mongo(rotation, remote, "password", before["MONGO_ROOT_USERNAME"], before[key])
        rotation.root = before[key]
    elif kind == "pg-super":
        psql(remote, env, cmd.password_sql(before["POSTGRES_USER"],
                                           cmd.scram_verifier(before[key])))
    elif kind == "grafana":
        grafana(rotation, remote, before[key])
    elif kind == "keyfile":  # both accepted first, whatever the members send now
        for keys in ((before[key], after[key]), (before[key],)):
            roll_members(rotation, remote, keys)


def roll_members(rotation: Rotation, remote: Remote, keys: tuple[str, ...]) -> None:
    keyfile.roll(rotation.env, remote, keys, rotation.root,
                 lambda command, script: run_mongosh(rotation.env, remote, command, script,
                                                     rotation.root), remote.say)


def revoke(rotation: Rotation, remote: Remote, key: str) -> str:
    """Step 6: the old credential no longer works, checked with a new login."""
    env, before, after = rotation.env, rotation.before, rotation.after
    kind = KINDS[key]
    if kind == "redis":
        expect_ok(remote, cmd.redis(env), cmd.redis_keep_only_input(after[key]),
                  "revoking the old Redis password")
        answer = remote.run_with_input(cmd.redis_try(env), cmd.redis_try_input(before[key]),
                                       timeout=60, check=False).stdout
        refused("redis", "WRONGPASS" in answer)
        return "redis: the old password is refused"
    if kind == "pg-login":
        psql(remote, env, cmd.disable_login_sql(before["LEDGER_DB_USER"]))
        return pg_refused(rotation, remote, before["LEDGER_DB_USER"], before[key])
    if kind == "pg-super":
        return pg_refused(rotation, remote, before["POSTGRES_USER"], before[key])
    if kind == "mongo-login":
        user = before[alternating.USERS[key]]
        mongo(rotation, remote, "drop", user, "")
        refused("mongo", mongo(rotation, remote, "refused", user, before[key]).endswith(
            " refused"))
        return f"mongo: user {user} dropped, its password refused"
    if kind == "mongo-root":
        user = before["MONGO_ROOT_USERNAME"]
        refused("mongo", mongo(rotation, remote, "refused", user, before[key]).endswith(
            " refused"))
        return "mongo: the old root password is refused"
    if kind == "keyfile":
        roll_members(rotation, remote, (after[key],))
        return "mongo: every member holds the new key only"
    if kind == "jwt":
        gone = len(keyset.dropped(before[key], after[key]))
        return (f"jwt: {gone} older key(s) left the set (their tokens are refused); the "
                "previous key verifies until the next rotation")
    return "nothing to revoke on a server"


def pg_refused(rotation: Rotation, remote: Remote, user: str, password: str) -> str:
    answer = remote.run_with_input(cmd.pg_try(rotation.env, user), f"{password}\n".encode(),
                                   timeout=60, check=False)
    refused("postgres", not answer.ok and "password authentication failed" in answer.stderr)
    return f"postgres: {user}'s old password is refused"


def refused(server: str, ok: bool) -> None:
    if not ok:
        raise StepFailed(f"{server} still accepts the old credential")


# --- the run -----------------------------------------------------------------------------------

def roll(rotation: Rotation, pool: Pool, trail: Trail) -> None:
    """Step 5, on each core host in turn: every service that reads a rotated secret."""
    env = rotation.env
    services = rotation.services()
    for host in sorted(env.hosts_with("core"), key=lambda h: h.name):
        remote = pool.get(host)
        current = state.parse(host.name, remote.run(state.probe(env)).stdout)
        images = running_images(env, current)
        for service in services:
            pool.renew(host, remote)
            said = rolling.replace(env, remote, service, images, current.count(service))
            rotation.rolled.append((host, service))
            trail.add(host.name, f"roll {service}", "changed", said)
            remote.say(f"{said} (rotated credentials)")


def sync(env: Environment, pool: Pool, trail: Trail | None) -> None:
    failed = [r for r in run_steps(env, [ENV_SYNC], pool, trail) if r.result == "FAILED"]
    if failed:
        raise StepFailed(f"env.sync failed on {failed[0].host}: {failed[0].message}")


def rotate(env: Environment, pool: Pool, printer: Printer, operator: Operator, trail: Trail,
           keys: list[str], confirm: Callable[[str], None]) -> None:
    store = secretstore.store(env)
    if store.pending():
        store_pending_discard(store, printer)
    before = envsource.load(env)
    if keyset.KEY in keys:
        refuse_early_jwt(store, before[keyset.KEY])
    after = new_values(before, keys)
    printer.mask.add(envfile.secrets(after))
    confirm(f"rotate {', '.join(keys)}")
    rotation = Rotation(env, keys, before, after)
    data = pool.get(env.data_host)
    hosts = sorted(env.hosts, key=lambda h: h.name)
    with Mutation(env, pool, hosts, trail, operator):
        staged = store.stage(after)
        try:
            for key in keys:
                pool.renew(env.data_host, data)
                rotation.added.append(key)  # first: a key file's roll may stop half way
                said = add(rotation, data, key)
                trail.add(env.data_host.name, f"rotate {key}", "changed", said)
                data.say(said)
            store.commit(staged)
            envsource.use(env, after)
            sync(env, pool, trail)
            roll(rotation, pool, trail)
        except (StepFailed, KeyboardInterrupt) as exc:
            done = revert(rotation, pool, store, staged, trail)
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise StepFailed(f"rotation of {', '.join(keys)} failed: {str(exc).splitlines()[0]}"
                             f"; reverted: {done}") from None
        for key in keys:
            try:
                said = revoke(rotation, data, key)
            except StepFailed as exc:
                raise StepFailed(f"{key}: the new value is in place everywhere, but revoking the "
                                 f"old one failed ({exc}); the old credential still works: run "
                                 f"inv secrets.rotate {key} --host {env.name} again") from None
            trail.add(env.data_host.name, f"revoke {key}", "changed", said)
            data.say(said)
    printer.line("", f"rotated {', '.join(keys)} on {env.name}: stored as the current version "
                     f"of {env.secrets.describe()} (the previous one kept), on every host, "
                     f"{len(rotation.rolled)} service replica set(s) rolled")


def refuse_early_jwt(store: secretstore.Store, value: str, now: datetime | None = None) -> None:
    """A JWT rotation drops the set's previous key: not while tokens it signed may be live."""
    since = secretstore.last_changed(store.history()).get(keyset.KEY, (None, False))[0]
    until = keyset.too_early(value, since, now or datetime.now(UTC))
    if until:
        raise BadInput(f"{keyset.KEY} was rotated less than {keyset.TOKEN_LIFETIME.seconds // 60} "
                       "minutes ago: its previous key may still have signed live tokens; "
                       f"rotate it after {until:%H:%M} UTC")


def store_pending_discard(store: secretstore.Store, printer: Printer) -> None:
    """A staged version left by a rotation that never finished: its credentials were never
    made current; this rotation replaces them (Redis keeps only the new password at the end,
    the twin users get the new one)."""
    printer.line("", "notice: a staged version (AWSPENDING) left by an unfinished rotation was "
                     "found; it is discarded")
    store.discard_pending()


def revert(rotation: Rotation, pool: Pool, store: secretstore.Store,
           staged: secretstore.Staged, trail: Trail) -> str:
    """Undo steps 1-5 in reverse; returns what was undone (and what could not be)."""
    env = rotation.env
    done, failed = [], []

    def attempt(what: str, action: Callable[[], None]) -> None:
        try:
            action()
            done.append(what)
        except (StepFailed, BadInput) as exc:
            failed.append(f"{what} ({str(exc).splitlines()[0]})")

    if staged.committed:
        attempt("the store's previous version made current again", lambda: store.restore(staged))
    else:
        attempt("the staged version dropped", lambda: store.discard(staged))
    envsource.use(env, rotation.before)
    attempt("the hosts' files", lambda: sync(env, pool, None))
    for host, service in reversed(rotation.rolled):
        def back(host: Host = host, service: str = service) -> None:
            remote = pool.get(host)
            current = state.parse(host.name, remote.run(state.probe(env)).stdout)
            rolling.replace(env, remote, service, running_images(env, current),
                            current.count(service))
        attempt(f"{service} on {host.name} rolled back", back)
    data = pool.get(env.data_host)
    for key in reversed(rotation.added):
        attempt(f"the new {key} removed from its server",
                lambda key=key: undo(rotation, data, key))
    for what in done:
        trail.add(env.data_host.name, "rotate: revert", "changed", what)
    for what in failed:
        trail.add(env.data_host.name, "rotate: revert", "failed", what)
    return "; ".join(done) + (f"; NOT undone: {'; '.join(failed)}" if failed else "")
