"""Who is acting: the person behind the SSH key, named by the operators' public key files.

Every operator has one file, `config/operators/<person>.pub` (one or more keys, one per line),
listed per environment in `host.operator_keys`. The key the suite connects with must be in
exactly one person's file: the lock names that person, and audit records are signed with that
key, so a key found in two files (a shared key) cannot act.
"""

from __future__ import annotations

import getpass
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import paramiko

from fabfile.config import Environment
from fabfile.errors import BadInput
from fabfile.remote import fingerprint

PERSON = re.compile(r"[a-z][a-z0-9._-]{0,63}")
NAMESPACE = "jafar-audit"  # the SSHSIG namespace of audit records


@dataclass(frozen=True)
class PublicKey:
    kind: str       # ssh-ed25519, ssh-rsa, ...
    blob: str       # base64
    person: str
    source: Path


@dataclass(frozen=True)
class Operator:
    person: str
    user: str          # the local account
    machine: str       # this machine's host name
    pid: int
    key: Path          # the private key that connects and signs
    fingerprint: str   # SHA256:... of that key


def operator_keys(env: Environment) -> list[PublicKey]:
    """Every public key of the environment's operators, with the person it belongs to."""
    keys = []
    for path in env.host_setup.operator_keys:
        person = path.name.removesuffix(".pub")
        if not path.name.endswith(".pub") or not PERSON.fullmatch(person):
            raise BadInput(f"operator key file {path.name!r} must be named <person>.pub, the "
                           "person in lowercase letters, digits, '.', '_' or '-'")
        if not path.is_file():
            raise BadInput(f"operator key {path} does not exist; fix host.operator_keys of "
                           f"{env.name}")
        for line in path.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 2 and not line.lstrip().startswith("#"):
                keys.append(PublicKey(fields[0], fields[1], person, path))
    return keys


def owners(env: Environment) -> dict[str, set[str]]:
    """Key blob -> the persons whose files hold it."""
    found: dict[str, set[str]] = {}
    for k in operator_keys(env):
        found.setdefault(k.blob, set()).add(k.person)
    return found


def whoami(env: Environment) -> Operator:
    """The person acting, from the key the hosts are reached with. BadInput (before any
    connection) when that key belongs to nobody or to several people."""
    paths = {h.ssh.key for h in env.hosts}
    if len(paths) != 1:
        raise BadInput(f"environment {env.name}: the hosts use different SSH keys "
                       f"({', '.join(sorted(map(str, paths)))}); use one key per operator")
    path = paths.pop()
    try:
        key = paramiko.PKey.from_path(path)
    except (OSError, paramiko.SSHException) as exc:
        raise BadInput(f"SSH key {path} cannot be read ({type(exc).__name__}); set 'key:' "
                       f"for the hosts of {env.name}") from None
    persons = owners(env).get(key.get_base64(), set())
    if not persons:
        raise BadInput(f"the key {path} ({fingerprint(key)}) is in none of the operator key "
                       f"files of {env.name}; add its .pub as config/operators/<you>.pub")
    if len(persons) > 1:
        raise BadInput(f"the key {path} ({fingerprint(key)}) is shared by "
                       f"{', '.join(sorted(persons))}: a shared key cannot act or sign; give "
                       "each person their own key")
    return Operator(person=persons.pop(), user=getpass.getuser(), machine=socket.gethostname(),
                    pid=os.getpid(), key=path, fingerprint=fingerprint(key))


def allowed_signers(env: Environment) -> str:
    """OpenSSH's allowed_signers file: who may sign audit records, with which keys."""
    return "".join(f'{k.person} namespaces="{NAMESPACE}" {k.kind} {k.blob}\n'
                   for k in operator_keys(env))
