"""Rotating the replica set's key file (MONGO_KEYFILE) without taking the set down.

mongod reads a key file that holds several keys (a YAML list): it authenticates to the other
members with the first and accepts any. So the members move in three rolling restarts, each
member restarted alone while the others keep the set up (the PRIMARY last, after it stepped
down and another member took over):
1. `[old, new]`: every member still sends the old key and now accepts the new one;
2. `[new, old]`: restarted members send the new key, which every member accepts;
3. `[new]` (the rotation's revocation): the old key is accepted nowhere.
A restart reads the host's file again (a container's secret file is bind-mounted at start).
Undo (a failed rotation) is the same roll back to `[old]`.

The sandbox's MongoDB stand-in has no elections, so a step-down cannot move its PRIMARY: this
sequence is shown by unit tests (exact commands, in order), not by a sandbox drill.
"""

from __future__ import annotations

import base64
import secrets as random
from collections.abc import Callable

from fabfile.commands import compose as compose_cmd
from fabfile.commands import credentials as cmd
from fabfile.commands.files import write_stdin
from fabfile.config import Environment
from fabfile.errors import StepFailed
from fabfile.remote import Remote
from fabfile.services import SERVICES
from fabfile.stacks import wait_timeout

MEMBERS = {"27017": "mongo-primary", "27018": "mongo-secondary", "27019": "mongo-arbiter"}
MONGO_UID = next(s.uid for s in SERVICES if s.name == "mongo-primary")  # the key's one reader


def new_key() -> str:
    """A key as `openssl rand -base64 756` makes one: 1008 base64 characters."""
    return base64.b64encode(random.token_bytes(756)).decode()


def content(*keys: str) -> bytes:
    """The key file: one key as the env file has it, several as mongod's YAML list."""
    return keys[0].encode() if len(keys) == 1 else "".join(f"- {k}\n" for k in keys).encode()


def service_of(member: str) -> str:
    """The compose service of a member address (`mongo-secondary:27018`, `10.0.2.10:27018`)."""
    port = member.rsplit(":", 1)[-1]
    if port not in MEMBERS:
        raise StepFailed(f"replica set member {member} is not one of the data stack's services")
    return MEMBERS[port]


def member_script(env: Environment, op: str) -> str:
    return cmd.mongosh(env, {"JAFAR_OP": op, "JAFAR_TIMEOUT": "120"})


def roll(env: Environment, remote: Remote, keys: tuple[str, ...], root: str,
         run_script: Callable[[str, str], str], say: Callable[[str], None]) -> None:
    """One rolling restart with the key file holding `keys`; `run_script(command, script)`
    runs a scripts/ file in mongo-primary (handed the root password) and returns its last
    line."""
    path = f"{env.deploy_path}/secrets/mongo_keyfile"
    reader = env.host_setup.host_uid(MONGO_UID)
    remote.run_with_input(write_stdin(path, "400", readers=(reader,)), content(*keys), timeout=60)
    primary = run_script(member_script(env, "primary"), "mongo-member.js").split()[-1]
    order = [s for s in ("mongo-arbiter", "mongo-secondary", "mongo-primary")
             if s != service_of(primary)] + [service_of(primary)]
    for service in order:
        if service == service_of(primary):
            now = run_script(member_script(env, "stepdown"), "mongo-member.js").split()[-1]
            say(f"{primary} stepped down; {now} is PRIMARY")
        timeout = wait_timeout(env)
        remote.run(compose_cmd.compose(env, "data", "restart", service), timeout=timeout)
        remote.run(compose_cmd.compose(env, "data", "up", "--detach", "--no-recreate",
                                       "--no-deps", "--wait", "--wait-timeout", str(timeout),
                                       service), timeout=timeout + 60)
        said = run_script(member_script(env, "healthy"), "mongo-member.js")
        say(f"{service} restarted with {len(keys)} key(s); {said}")
