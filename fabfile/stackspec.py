"""What a host's stacks need from the env file, read from the compose files themselves (so the
set cannot drift): the variables they interpolate, and the secrets they mount with the uids of
the containers that mount them.

A core host on the internet receives only what the core stack reads: never the Mongo root
password, the PostgreSQL superuser password or the replica set keyfile, which only the data
stack uses. Secrets become files under secrets/ readable (ACL) by exactly those uids.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import yaml

from fabfile import ROOT
from fabfile.commands.compose import compose_files
from fabfile.config import Environment, Host
from fabfile.services import BY_NAME, STACKS

VARIABLE = re.compile(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)")
# secret files made from the environment's tls_dir, not from the env file: the file there, and
# whether it is public (a certificate, mode 0444) or private (a key: its containers' uids only)
TLS_FILES = {"gateway_tls_crt": ("tls.crt", True), "gateway_tls_key": ("tls.key", False),
             "data_tls_crt": ("data.crt", True), "data_tls_key": ("data.key", False),
             "data_ca_crt": ("data-ca-bundle.crt", True)}
GATEWAY_TLS = ("gateway_tls_crt", "gateway_tls_key")  # provided by the operator
# keys a role's scripts read from .env.ec2 besides what its compose files interpolate:
# scripts/init-replica.sh, the replica set members and the users it hands to mongo-primary;
# scripts/backup.sh, the backup user
SCRIPT_KEYS = {"data": {"MONGO_HOSTS", "MONGO_APP_USER", "MONGO_LEDGER_USER",
                        "MONGO_BACKUP_USER"}}


@dataclass(frozen=True)
class Needs:
    variables: frozenset[str]               # env file keys interpolated by the compose files
    secrets: dict[str, frozenset[int]]      # secret file name -> uids that must read it

    def key(self, secret: str) -> str:
        return secret.upper()


class _ComposeLoader(yaml.SafeLoader):
    """YAML as Compose writes it: `!override` and `!reset` are read as the plain value."""


def _plain(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> object:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


_ComposeLoader.add_multi_constructor("!", _plain)


@cache
def _read(relative: str) -> tuple[str, dict]:
    text = (ROOT / relative).read_text()
    return text, yaml.load(text, Loader=_ComposeLoader) or {}  # noqa: S506 - a safe loader


def services(env: Environment, relative: str) -> list[tuple[str, dict]]:
    """The services of one compose file that the environment runs (a service of a profile it
    does not enable is left out: a core host without Grafana gets no Grafana password)."""
    found = []
    for name, service in (_read(relative)[1].get("services") or {}).items():
        service = service or {}
        if all(p in env.compose_profiles for p in service.get("profiles") or []):
            found.append((name, service))
    return found


def stack_needs(env: Environment, stack: str) -> Needs:
    variables: set[str] = set()
    secrets: dict[str, set[int]] = {}
    for relative in compose_files(env, stack):
        variables |= set(VARIABLE.findall(_read(relative)[0]))
        for name, service in services(env, relative):
            for secret in service.get("secrets") or []:
                secret_name = secret if isinstance(secret, str) else secret["source"]
                secrets.setdefault(secret_name, set()).add(BY_NAME[name].uid)
    variables |= SCRIPT_KEYS.get(stack, set())
    return Needs(frozenset(variables), {k: frozenset(v) for k, v in secrets.items()})


def host_needs(env: Environment, host: Host) -> Needs:
    """The union over the host's roles."""
    variables: set[str] = set()
    secrets: dict[str, set[int]] = {}
    for stack in STACKS:
        if host.has(stack):
            needs = stack_needs(env, stack)
            variables |= needs.variables
            for name, uids in needs.secrets.items():
                secrets.setdefault(name, set()).update(uids)
    return Needs(frozenset(variables), {k: frozenset(v) for k, v in sorted(secrets.items())})


def mounts(env: Environment, stack: str, secrets: frozenset[str]) -> dict[str, tuple[str, ...]]:
    """Service -> which of `secrets` it mounts, for the stack's services that mount any."""
    found: dict[str, set[str]] = {}
    for relative in compose_files(env, stack):
        for name, service in services(env, relative):
            for secret in service.get("secrets") or []:
                secret_name = secret if isinstance(secret, str) else secret["source"]
                if secret_name in secrets:
                    found.setdefault(name, set()).add(secret_name)
    return {k: tuple(sorted(v)) for k, v in sorted(found.items())}


IMAGE = re.compile(r"\$\{([A-Z]+_IMAGE):-([^}]+)\}")


def infra_images(env: Environment) -> dict[str, tuple[str, str]]:
    """The infrastructure images the environment runs: variable -> (the compose file's default
    reference, the stack). Services of a profile the environment does not enable are left out;
    the jafar services are pinned per release, not here."""
    found: dict[str, tuple[str, str]] = {}
    for stack in STACKS:
        for relative in compose_files(env, stack):
            for _, service in services(env, relative):
                match = IMAGE.fullmatch(str(service.get("image", "")))
                if match:
                    found[match.group(1)] = (match.group(2), stack)
    return dict(sorted(found.items()))
