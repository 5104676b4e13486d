"""Environments, hosts and roles: load config/environments.yml and validate every value.

Everything is checked here, before any connection, so a typo costs one clear line and exit
code 2 instead of a half-applied deploy. Errors name the file, the key and the fix.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fabfile import ROOT
from fabfile.errors import BadInput

DEFAULT_CONFIG = ROOT / "config" / "environments.yml"
ROLES = ("data", "core")
TOPOLOGIES = ("single", "split")
LOG_DRIVERS = ("json-file", "awslogs")
IMAGE_VARIABLES = (
    "NGINX_IMAGE",
    "MONGO_IMAGE",
    "REDIS_IMAGE",
    "POSTGRES_IMAGE",
    "PROMETHEUS_IMAGE",
    "GRAFANA_IMAGE",
)
PROFILES = ("grafana",)

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:@-]*$")
_REGISTRY = re.compile(r"^[a-z0-9][a-z0-9._:/-]*[a-z0-9]$")
_LOG_GROUP = re.compile(r"^[A-Za-z0-9_/.#-]{1,512}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_ADHOC = re.compile(r"^(?P<user>[^@\s]+)@(?P<address>[^:\s]+)(:(?P<port>[^:\s]+))?$")

ENV_KEYS = {
    "description", "protected", "project", "deploy_path", "registry", "tag", "topology",
    "private_cidr", "env_file", "tls_dir", "known_hosts", "become", "connect_timeout",
    "command_timeout", "compose_profiles", "images", "log_driver", "bastion", "hosts",
    "overlay", "awslogs_group", "aws_region", "host",
}
HOST_SETUP_KEYS = {"admin_user", "deploy_user", "operator_keys", "ssh_cidr", "docker_source",
                   "compose_plugin", "insecure_registries", "shared_kernel", "sshd_extra"}
DOCKER_SOURCES = ("docker-apt", "debian")
HOST_KEYS = {"name", "address", "user", "port", "key", "roles", "private_address", "become"}
BASTION_KEYS = {"address", "user", "port", "key"}


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom to open an SSH connection."""

    address: str
    user: str
    port: int
    key: Path


@dataclass(frozen=True)
class Host:
    """One EC2 instance of an environment."""

    name: str
    ssh: Endpoint
    roles: tuple[str, ...]
    private_address: str | None = None
    become: bool = False

    def has(self, role: str) -> bool:
        return role in self.roles


@dataclass(frozen=True)
class HostSetup:
    """How host.prepare and host.harden shape an instance (the `host:` block)."""

    admin_user: str = "ubuntu"           # the AMI's sudo user: host steps connect as it
    deploy_user: str = "deploy"          # owns the deploy path, in the docker group
    operator_keys: tuple[Path, ...] = ()  # public keys allowed to log in as deploy_user
    ssh_cidr: str = "0.0.0.0/0"          # where SSH may come from
    docker_source: str = "docker-apt"    # Docker's apt repository, or Debian's docker.io
    compose_plugin: Path | None = None   # local Compose v2 binary for docker_source: debian
    insecure_registries: tuple[str, ...] = ()
    shared_kernel: bool = False          # test hosts sharing a kernel: no kernel sysctls,
                                         # auditd or clock sync (they would change the machine)
    sshd_extra: tuple[str, ...] = ()     # site-specific sshd lines, validated with sshd -t


@dataclass(frozen=True)
class Environment:
    """A deploy target: its hosts and everything the stacks need to know about it."""

    name: str
    hosts: tuple[Host, ...]
    registry: str
    tag: str
    project: str = "jafar"
    deploy_path: str = "/opt/jafar"
    topology: str = "single"
    protected: bool = False
    description: str = ""
    private_cidr: str | None = None
    env_file: Path = ROOT / ".env.ec2"
    tls_dir: Path | None = None
    known_hosts: Path = ROOT / "config" / "known_hosts"
    connect_timeout: int = 10
    command_timeout: int = 600
    compose_profiles: tuple[str, ...] = ()
    images: dict[str, str] = field(default_factory=dict)
    log_driver: str = "json-file"
    awslogs_group: str | None = None
    aws_region: str | None = None
    bastion: Endpoint | None = None
    host_setup: HostSetup = field(default_factory=HostSetup)

    def hosts_with(self, role: str) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.has(role))

    @property
    def data_host(self) -> Host:
        return self.hosts_with("data")[0]


class _Checker:
    """Reads one YAML mapping and reports the first problem as file: key: message."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, message: str) -> BadInput:
        return BadInput(f"{self.source}: {key}: {message}")

    def mapping(self, value: Any, key: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a mapping, got {_show(value)}")
        unknown = sorted(set(map(str, value)) - allowed)
        if unknown:
            raise self.fail(f"{key}.{unknown[0]}",
                            f"unknown key; allowed keys are: {', '.join(sorted(allowed))}")
        return value

    def string(self, value: Any, key: str, pattern: re.Pattern[str] | None = None,
               hint: str = "") -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"must be a non-empty string, got {_show(value)}")
        if pattern is not None and not pattern.match(value):
            raise self.fail(key, f"invalid value {value!r}{'; ' + hint if hint else ''}")
        return value

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {_show(value)}")
        return value

    def integer(self, value: Any, key: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(key, f"must be an integer from {low} to {high}, got {_show(value)}")
        return value

    def choice(self, value: Any, key: str, choices: tuple[str, ...]) -> str:
        if value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}, got {_show(value)}")
        return value

    def address(self, value: Any, key: str) -> str:
        text = self.string(value, key)
        try:
            ipaddress.ip_address(text)
            return text
        except ValueError:
            pass
        if not _HOSTNAME.match(text):
            raise self.fail(key, f"{text!r} is neither an IP address nor a host name")
        return text

    def path(self, value: Any, key: str) -> Path:
        return resolve_path(self.string(value, key))


def _show(value: Any) -> str:
    return "nothing" if value is None else repr(value)


def resolve_path(text: str) -> Path:
    """Config paths: `~` expands to the home folder, relative paths start at the project root."""
    path = Path(os.path.expanduser(text))
    return path if path.is_absolute() else ROOT / path


def config_path() -> Path:
    """The environments file: $JAFAR_ENVIRONMENTS if set (tests, other checkouts), else ours."""
    return Path(os.environ.get("JAFAR_ENVIRONMENTS") or DEFAULT_CONFIG)


def load_document(path: Path | None = None, require_environments: bool = True) -> dict[str, Any]:
    """Parse the YAML file; any read or syntax error is BadInput naming file and line."""
    path = path or config_path()
    shown = _display(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise BadInput(f"{shown}: cannot read it ({exc.strerror}); "
                       "create it from the shipped config/environments.yml") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise BadInput(f"{shown}: malformed YAML at {where}: {problem}; fix the syntax") from None
    if not require_environments:
        return doc if isinstance(doc, dict) else {}
    if not isinstance(doc, dict) or not isinstance(doc.get("environments"), dict):
        raise BadInput(f"{shown}: environments: missing; the file needs a top-level "
                       "'environments:' mapping of environment names")
    return doc


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def load_environment(target: str, path: Path | None = None) -> Environment:
    """Resolve `--host`: an environment name, or `user@address[:port]` for one ad-hoc host."""
    path = path or config_path()
    doc = load_document(path)
    check = _Checker(_display(path))
    defaults = check.mapping(doc.get("defaults") or {}, "defaults", ENV_KEYS - {"hosts"})
    adhoc = _ADHOC.match(target)
    if adhoc:
        return _adhoc_environment(check, target, adhoc, defaults)
    envs = doc["environments"]
    if target not in envs:
        raise BadInput(f"unknown environment {target!r}: choose one of "
                       f"{', '.join(sorted(map(str, envs)))} (from {_display(path)}), "
                       "or give user@address[:port]")
    raw = check.mapping(envs[target] or {}, f"environments.{target}", ENV_KEYS)
    if raw.get("overlay"):
        raw = {**raw, **_overlay(check.path(raw["overlay"], f"environments.{target}.overlay"))}
    return _environment(check, target, {**defaults, **raw}, f"environments.{target}")


def _overlay(path: Path) -> dict[str, Any]:
    """Keys written by a tool (the sandbox) that override the environment's, if the file exists."""
    if not path.is_file():
        return {}
    doc = load_document(path, require_environments=False)
    return _Checker(_display(path)).mapping(doc, "overlay", ENV_KEYS - {"overlay"})


def environment_names(path: Path | None = None) -> list[str]:
    return sorted(map(str, load_document(path)["environments"]))


def _adhoc_environment(check: _Checker, target: str, match: re.Match[str],
                       defaults: dict[str, Any]) -> Environment:
    port: Any = match["port"] or 22
    if isinstance(port, str):
        if not port.isdigit():
            raise BadInput(f"--host {target}: port {port!r} is not a number; "
                           "use user@address[:port] with a port from 1 to 65535")
        port = int(port)
    raw = {
        **defaults,
        "hosts": [{"name": re.sub(r"[^a-z0-9_-]", "-", match["address"].lower()),
                   "address": match["address"],
                   "user": match["user"], "port": port, "roles": list(ROLES)}],
        "topology": "single",
    }
    return _environment(check, "adhoc", raw, f"--host {target}")


def _environment(check: _Checker, name: str, raw: dict[str, Any], key: str) -> Environment:
    if not _NAME.match(name):
        raise check.fail(key, "environment names are lowercase letters, digits, '-' and '_'")
    for required in ("registry", "tag", "hosts"):
        if raw.get(required) in (None, "", []):
            raise check.fail(f"{key}.{required}", "missing; set it here or under defaults")
    topology = check.choice(raw.get("topology", "single"), f"{key}.topology", TOPOLOGIES)
    bastion = None
    if raw.get("bastion") is not None:
        b = check.mapping(raw["bastion"], f"{key}.bastion", BASTION_KEYS)
        bastion = _endpoint(check, b, f"{key}.bastion", raw)
    if not isinstance(raw["hosts"], list):
        raise check.fail(f"{key}.hosts", "must be a list of hosts")
    hosts = tuple(_host(check, h, f"{key}.hosts[{i}]", raw) for i, h in enumerate(raw["hosts"]))
    names = [h.name for h in hosts]
    for n in names:
        if names.count(n) > 1:
            raise check.fail(f"{key}.hosts", f"host name {n!r} is used twice; names must differ")
    _check_topology(check, key, topology, hosts)
    private_cidr = None
    if raw.get("private_cidr") is not None:
        private_cidr = _cidr(check, raw["private_cidr"], f"{key}.private_cidr")
    profiles = raw.get("compose_profiles") or []
    if not isinstance(profiles, list):
        raise check.fail(f"{key}.compose_profiles", "must be a list")
    for i, p in enumerate(profiles):
        check.choice(p, f"{key}.compose_profiles[{i}]", PROFILES)
    images = check.mapping(raw.get("images") or {}, f"{key}.images", set(IMAGE_VARIABLES))
    log_driver = check.choice(raw.get("log_driver", "json-file"), f"{key}.log_driver", LOG_DRIVERS)
    awslogs = {}
    if log_driver == "awslogs":
        for k in ("awslogs_group", "aws_region"):
            if not raw.get(k):
                raise check.fail(f"{key}.{k}", "missing; log_driver awslogs needs awslogs_group "
                                 "and aws_region")
        awslogs = {"awslogs_group": check.string(raw["awslogs_group"], f"{key}.awslogs_group",
                                                 _LOG_GROUP, "CloudWatch log group names are "
                                                 "letters, digits and _ - / . #"),
                   "aws_region": check.string(raw["aws_region"], f"{key}.aws_region", _REGION,
                                              "use a region such as eu-west-1")}
    for var, ref in images.items():
        check.string(ref, f"{key}.images.{var}", _IMAGE, "use an image reference like "
                     "registry.example/nginx:1.27.3")
    setup = _host_setup(check, raw.get("host") or {}, f"{key}.host")
    return Environment(
        host_setup=setup,
        name=name,
        hosts=hosts,
        registry=check.string(raw["registry"], f"{key}.registry", _REGISTRY,
                              "use host[:port]/path, e.g. 123.dkr.ecr.REGION.amazonaws.com/jafar"),
        tag=check.string(str(raw["tag"]), f"{key}.tag", _TAG,
                         "tags are letters, digits, '_', '.', '-' (max 128)"),
        project=check.string(raw.get("project", "jafar"), f"{key}.project", _NAME,
                             "compose project names are lowercase letters, digits, '-', '_'"),
        deploy_path=_deploy_path(check, raw.get("deploy_path", "/opt/jafar"), f"{key}.deploy_path"),
        topology=topology,
        protected=check.boolean(raw.get("protected", False), f"{key}.protected"),
        description=str(raw.get("description", "")),
        private_cidr=private_cidr,
        env_file=check.path(raw.get("env_file", ".env.ec2"), f"{key}.env_file"),
        tls_dir=check.path(raw["tls_dir"], f"{key}.tls_dir") if raw.get("tls_dir") else None,
        known_hosts=check.path(raw.get("known_hosts", "config/known_hosts"), f"{key}.known_hosts"),
        connect_timeout=check.integer(raw.get("connect_timeout", 10),
                                      f"{key}.connect_timeout", 1, 300),
        command_timeout=check.integer(raw.get("command_timeout", 600),
                                      f"{key}.command_timeout", 1, 7200),
        compose_profiles=tuple(profiles),
        images=dict(images),
        log_driver=log_driver,
        **awslogs,
        bastion=bastion,
    )


def _cidr(check: _Checker, value: Any, key: str) -> str:
    text = check.string(value, key)
    try:
        ipaddress.ip_network(text)
    except ValueError:
        raise check.fail(key, f"{text!r} is not a CIDR such as 10.0.0.0/16") from None
    return text


def _host_setup(check: _Checker, value: Any, key: str) -> HostSetup:
    raw = check.mapping(value, key, HOST_SETUP_KEYS)
    lists = {}
    for k in ("operator_keys", "insecure_registries", "sshd_extra"):
        items = raw.get(k) or []
        if not isinstance(items, list):
            raise check.fail(f"{key}.{k}", "must be a list")
        lists[k] = [check.string(v, f"{key}.{k}[{i}]") for i, v in enumerate(items)]
    for i, line in enumerate(lists["sshd_extra"]):
        if "\n" in line or not re.match(r"^[A-Za-z]+ \S", line):
            raise check.fail(f"{key}.sshd_extra[{i}]", "one sshd_config line: Keyword value")
    for i, reg in enumerate(lists["insecure_registries"]):
        check.string(reg, f"{key}.insecure_registries[{i}]", _REGISTRY, "use host:port")
    source = check.choice(raw.get("docker_source", "docker-apt"), f"{key}.docker_source",
                          DOCKER_SOURCES)
    plugin = raw.get("compose_plugin")
    return HostSetup(
        admin_user=check.string(raw.get("admin_user", "ubuntu"), f"{key}.admin_user", _USER,
                                "use the AMI's sudo user, e.g. ubuntu"),
        deploy_user=check.string(raw.get("deploy_user", "deploy"), f"{key}.deploy_user", _USER,
                                 "use a Unix user name such as deploy"),
        operator_keys=tuple(resolve_path(k) for k in lists["operator_keys"]),
        ssh_cidr=_cidr(check, raw.get("ssh_cidr", "0.0.0.0/0"), f"{key}.ssh_cidr"),
        docker_source=source,
        compose_plugin=check.path(plugin, f"{key}.compose_plugin") if plugin else None,
        insecure_registries=tuple(lists["insecure_registries"]),
        shared_kernel=check.boolean(raw.get("shared_kernel", False), f"{key}.shared_kernel"),
        sshd_extra=tuple(lists["sshd_extra"]),
    )


def _deploy_path(check: _Checker, value: Any, key: str) -> str:
    text = check.string(value, key)
    if not text.startswith("/") or ".." in text.split("/") or not re.match(r"^[\w./-]+$", text):
        raise check.fail(key, f"must be an absolute path without '..', got {text!r}")
    return text.rstrip("/") or "/"


def _endpoint(check: _Checker, raw: dict[str, Any], key: str, env: dict[str, Any]) -> Endpoint:
    return Endpoint(
        address=check.address(raw.get("address"), f"{key}.address"),
        user=check.string(raw.get("user", "ubuntu"), f"{key}.user", _USER,
                          "use a Unix user name such as ubuntu or deploy"),
        port=check.integer(raw.get("port", 22), f"{key}.port", 1, 65535),
        key=check.path(raw.get("key", env.get("key", "~/.ssh/id_ed25519")), f"{key}.key"),
    )


def _host(check: _Checker, value: Any, key: str, env: dict[str, Any]) -> Host:
    raw = check.mapping(value, key, HOST_KEYS)
    roles = raw.get("roles")
    if not isinstance(roles, list) or not roles:
        raise check.fail(f"{key}.roles", f"must be a non-empty list of {', '.join(ROLES)}")
    for i, role in enumerate(roles):
        check.choice(role, f"{key}.roles[{i}]", ROLES)
    private = raw.get("private_address")
    return Host(
        name=check.string(raw.get("name"), f"{key}.name", _NAME,
                          "host names are lowercase letters, digits, '-' and '_'"),
        ssh=_endpoint(check, raw, key, env),
        roles=tuple(r for r in ROLES if r in roles),
        private_address=check.address(private, f"{key}.private_address") if private else None,
        become=check.boolean(raw.get("become", env.get("become", False)), f"{key}.become"),
    )


def _check_topology(check: _Checker, key: str, topology: str, hosts: tuple[Host, ...]) -> None:
    data = [h for h in hosts if h.has("data")]
    core = [h for h in hosts if h.has("core")]
    if len(data) != 1:
        raise check.fail(f"{key}.hosts", f"needs exactly one host with role data, found "
                         f"{len(data)}; the replica set, Redis and PostgreSQL run on one host")
    if not core:
        raise check.fail(f"{key}.hosts", "needs at least one host with role core")
    if topology == "single" and (len(hosts) != 1 or not data[0].has("core")):
        raise check.fail(f"{key}.topology", "single means one host with roles [data, core]; "
                         "use topology: split for a separate data host")
    if topology == "split":
        if data[0].has("core"):
            raise check.fail(f"{key}.topology", f"split keeps data alone: host {data[0].name} "
                             "must have only the data role")
        if not data[0].private_address:
            raise check.fail(f"{key}.hosts", f"split topology: data host {data[0].name} needs "
                             "private_address (its data ports bind to it and nothing else)")
