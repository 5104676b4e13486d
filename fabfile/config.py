"""Environments, hosts and roles: load config/environments.yml and validate every value.

Everything is checked here, before any connection, so a typo costs one clear line and exit
code 2 instead of a half-applied deploy. Errors name the file, the key and the fix.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509

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
    "ALERTMANAGER_IMAGE",
    "GRAFANA_IMAGE",
)
PROFILES = ("grafana",)

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:@-]*$")
_PINNED = re.compile(r"^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}$")
ECR_HOST = re.compile(r"[0-9]{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
_REGISTRY = re.compile(r"^[a-z0-9][a-z0-9._:/-]*[a-z0-9]$")
_LOG_GROUP = re.compile(r"^[A-Za-z0-9_/.#-]{1,512}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_PROFILE = re.compile(r"[A-Za-z0-9_.@+-]{1,64}")
_ENDPOINT = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?/?")
_SECRET_ID = re.compile(r"[A-Za-z0-9/_+=.@-]{1,512}")
_SNS_ARN = re.compile(r"arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}")
_KMS_ARN = re.compile(r"arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:(key|alias)/[A-Za-z0-9/_-]+")
RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827,
                  2192, 2557, 2922, 3288, 3653)
_TAG_TEXT = re.compile(r"[A-Za-z0-9 +=._:/@-]{1,128}")
_ELB_NAME = re.compile(r"[A-Za-z0-9](-?[A-Za-z0-9]){0,31}")
_SSM_PATH = re.compile(r"(/[A-Za-z0-9_.-]+)+/?")
_ADHOC = re.compile(r"(?P<user>[^@]*)@(?P<address>[^:@]*)(:(?P<port>[^:@]*))?")
ADHOC_NEEDS = ("an ad-hoc target is user@address[:port]: a Unix user, an IP address or host "
               "name, and a port from 1 to 65535 (default 22)")

ENV_KEYS = {
    "description", "protected", "project", "deploy_path", "registry", "tag", "topology",
    "private_cidr", "env_file", "tls_dir", "known_hosts", "become", "connect_timeout",
    "command_timeout", "compose_profiles", "images", "log_driver", "bastion", "hosts",
    "overlay", "awslogs_group", "aws_region", "host", "replicas", "max_replicas", "lock_ttl",
    "pool_size", "data_limits", "health_interval", "release", "gateway", "pins", "gateway_bind",
    "aws", "secrets", "rotate_after_days", "awslogs_retention_days", "awslogs_kms_key",
    "hosts_from", "backup_at", "backup_keep", "backup_max_size", "alerting", "backup_snapshots",
    "backup_s3",
}
BACKUP_S3_KEYS = {"bucket", "prefix", "kms_key", "age_recipient", "age_identity"}
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_S3_PREFIX = re.compile(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*")
_KMS_KEY = re.compile(r"alias/[A-Za-z0-9/_-]{1,250}|[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}|"
                      + _KMS_ARN.pattern)
_AGE_RECIPIENT = re.compile(r"age1[02-9ac-hj-np-z]{58}")
ALERTING_KEYS = {"webhooks", "sns_topic", "email", "watchdog", "group_wait"}
EMAIL_KEYS = {"to", "from", "smarthost"}
# no user:password@, no query (where tokens hide); the path may not carry one either (README)
_ALERT_URL = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?")
_MAILBOX = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
_SMARTHOST = re.compile(r"[A-Za-z0-9.-]+:[0-9]{1,5}")
HOSTS_FROM_KEYS = {"tags", "role_tag", "address", "user", "port", "key", "become"}
ADDRESS_KINDS = {"private_ip": "PrivateIpAddress", "public_ip": "PublicIpAddress",
                 "private_dns": "PrivateDnsName", "public_dns": "PublicDnsName"}
AWS_KEYS = {"region", "profile", "endpoint_url", "instance_tags", "role_tag", "alb",
            "alarm_topic"}
ALB_KEYS = {"name", "target_group"}
SECRET_SOURCES = ("manager", "ssm")
GATEWAY_KEYS = {"server_names", "trusted_proxies"}
RELEASE_KEYS = {"before", "order", "health_timeout", "watch"}
JAFAR_SHORT = ("api", "auth", "wallet", "transaction", "ledger", "notification", "risk")
DATA_LIMIT_KEYS = ("mongo", "redis", "postgres")
DEFAULT_DATA_LIMITS = {"mongo": 1000, "redis": 1000, "postgres": 100}
_INTERVAL = re.compile(r"^[1-9][0-9]{0,2}s$")
_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
_SIZE = re.compile(r"^([1-9][0-9]{0,5})(MiB|GiB|TiB)$")
SIZE_UNITS = {"MiB": 1024 ** 2, "GiB": 1024 ** 3, "TiB": 1024 ** 4}
HOST_SETUP_KEYS = {"admin_user", "deploy_user", "operator_keys", "ssh_cidr", "docker_source",
                   "compose_plugin", "insecure_registries", "shared_kernel", "userns_remap",
                   "sshd_extra", "admin_key", "log_forward"}
LOG_FORWARD_KEYS = {"target", "name", "ca"}
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
class LogForward:
    """The central log collector the hosts send their auth and audit events to."""

    address: str      # host name or IP address of the collector
    port: int         # its syslog-over-TLS port (6514 by convention)
    name: str         # the name its certificate must carry
    ca: Path          # the CA that signed its certificate


# userns-remap (host.userns_remap): the daemon's remap user and its subordinate id range, fixed
# so that every host maps alike and the suite knows offline whom a secret's ACL names. 231072
# follows the ranges useradd hands the first two login users (100000 and 165536).
USERNS_USER = "jafar-remap"
USERNS_BASE = 231072
USERNS_SIZE = 65536

PRIVATE_BIND = "private"  # gateway_bind: every core host publishes on its private_address


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
    admin_key: Path | None = None        # the admin user's own key (default: the host's key)
    log_forward: LogForward | None = None  # where auth and audit events go (syslog over TLS)
    userns_remap: bool = False           # containers' uids mapped to an unprivileged host range
                                         # (fresh hosts only: the daemon gets a new storage root)

    def host_uid(self, uid: int) -> int:
        """The host uid a container's uid runs as: whom a secret's ACL must name."""
        return USERNS_BASE + uid if self.userns_remap else uid


@dataclass(frozen=True)
class GatewaySettings:
    """What the gateway serves (the `gateway:` block)."""

    server_names: tuple[str, ...] = ()     # host names answered; others are closed (444)
    trusted_proxies: tuple[str, ...] = ()  # CIDRs whose X-Forwarded-For is believed (the LB)


@dataclass(frozen=True)
class ReleaseSettings:
    """How `inv release` and `inv rollback` roll (the `release:` block)."""

    before: str | None = None          # one-off migration: "SERVICE command ...", new image
    order: tuple[str, ...] = ()        # full service names; default: the gateway's order
    health_timeout: int = 120          # seconds new replicas may take to turn healthy
    watch: int = 10                    # seconds old and new both serve while 5xx are counted


@dataclass(frozen=True)
class AlertingSettings:
    """Where Alertmanager sends what Prometheus fires (the `alerting:` block). The URLs are in
    git: endpoints that take no credentials in the URL (an internal relay, the dead-man's
    switch's ping address); SNS authenticates with the core host's instance role."""

    webhooks: tuple[str, ...] = ()   # critical and warning alerts are POSTed to each
    sns_topic: str | None = None     # critical alerts are published here (pager fan-out)
    email_to: tuple[str, ...] = ()   # warnings (and critical ones) by e-mail ...
    email_from: str | None = None
    smarthost: str | None = None     # ... through this SMTP relay (host:port, STARTTLS)
    watchdog: str | None = None      # the always-firing Watchdog is POSTed here every minute
    group_wait: str = "30s"          # how long the first alert of a group waits for others

    @property
    def pages(self) -> bool:
        return bool(self.webhooks or self.sns_topic or self.email_to)


@dataclass(frozen=True)
class BackupS3:
    """Where the encrypted copies of the backup sets go (the `backup_s3:` block): a bucket with
    Object Lock, SSE-KMS with this key, and age encryption to this recipient before a byte
    leaves the data host. The recipient is a public key; its identity (the private key) is a
    Secrets Manager secret that only `inv backup.fetch` reads, never the hosts."""

    bucket: str
    prefix: str
    kms_key: str          # alias/NAME, a key id or a key ARN
    age_recipient: str    # age1...
    age_identity: str     # the Secrets Manager secret holding AGE-SECRET-KEY-1...

    def url(self, backup_id: str = "") -> str:
        return f"s3://{self.bucket}/{self.prefix}/" + (f"{backup_id}/" if backup_id else "")


@dataclass(frozen=True)
class AwsSettings:
    """How to reach AWS (the `aws:` block). Credentials come from boto3's own chain (instance
    role, SSO, AWS_PROFILE...), never from this file; `endpoint_url` is for the sandbox and the
    tests only (moto, the AWS stand-in)."""

    region: str
    profile: str | None = None
    endpoint_url: str | None = None
    # the tags that mark the environment's EC2 instances (default jafar-env: <environment>)
    # and the tag that gives each its role (data or core)
    instance_tags: dict[str, str] = field(default_factory=dict)
    role_tag: str = "jafar-role"
    alb: AlbSettings | None = None
    alarm_topic: str | None = None  # the SNS topic (ARN) CloudWatch alarms notify


@dataclass(frozen=True)
class AlbSettings:
    """The Application Load Balancer in front of the core hosts' gateways."""

    name: str           # the load balancer's name
    target_group: str   # the target group whose targets are the core hosts


@dataclass(frozen=True)
class SecretSource:
    """Where the env file's values live (the `secrets:` block): the local env file, one Secrets
    Manager secret holding a JSON object, or an SSM Parameter Store path of SecureStrings."""

    kind: str = "file"            # "file", "manager" or "ssm"
    name: str | None = None       # the secret's name, or the parameter path (ending in /)

    @property
    def stored(self) -> bool:
        return self.kind != "file"

    def describe(self) -> str:
        return {"manager": f"Secrets Manager secret {self.name}",
                "ssm": f"SSM parameters under {self.name}"}.get(self.kind, "the local env file")


@dataclass(frozen=True)
class HostsFrom:
    """The hosts as EC2 knows them (`hosts_from:`), like Ansible's aws_ec2 inventory: the
    running instances with these tags, each one's role from a tag, so that the instances of an
    Auto Scaling group are found. Read through boto3 when a task connects (fabfile/aws/
    inventory.py); a dry run reads nothing and says so."""

    tags: dict[str, str]
    role_tag: str = "jafar-role"
    address: str = "private_ip"      # which of the instance's addresses SSH goes to
    user: str = "deploy"
    port: int = 22
    key: Path = ROOT / "none"
    become: bool = False

    def describe(self) -> str:
        tags = ", ".join(f"{k}={v}" for k, v in sorted(self.tags.items()))
        return (f"the running EC2 instances tagged {tags} (role from the tag {self.role_tag}, "
                f"SSH to the {self.address.replace('_', ' ')})")


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
    pins_file: Path = ROOT / "config" / "pins" / "none.yml"  # inv images.pin writes it
    pins: dict[str, str] = field(default_factory=dict)  # IMAGE_VARIABLE -> repo:tag@sha256:...
    log_driver: str = "json-file"
    awslogs_group: str | None = None
    awslogs_retention_days: int = 30   # CloudWatch keeps the logs this long
    awslogs_kms_key: str | None = None  # the KMS key (ARN) that encrypts them
    aws: AwsSettings | None = None
    secrets: SecretSource = field(default_factory=SecretSource)
    rotate_after_days: int = 90        # secrets.age: older than this is overdue
    bastion: Endpoint | None = None
    host_setup: HostSetup = field(default_factory=HostSetup)
    replicas: int = 1                  # replicas of each jafar service per core host (default)
    max_replicas: int = 10             # the most `inv scale` accepts per service and core host
    lock_ttl: int = 600                # seconds without renewal after which a lock is stale
    backup_at: str = "02:30"           # UTC time of the daily backup (inv backup.schedule)
    backup_keep: tuple[int, int, int] = (7, 4, 12)  # sets kept: newest per day, week, month
    backup_max_bytes: int = 20 * 1024 ** 3  # the sets on the data host at most (backup_max_size)
    backup_snapshots: bool = False     # also an EBS snapshot of each data volume (AWS)
    backup_s3: BackupS3 | None = None  # encrypted copies of the sets in S3 (offsite)
    pool_size: int = 10                # connections each service replica may open per store
    data_limits: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_DATA_LIMITS))
    health_interval: str = "10s"       # Docker health check interval of the core services
    release: ReleaseSettings = field(default_factory=ReleaseSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    alerting: AlertingSettings = field(default_factory=AlertingSettings)
    gateway_bind: str | None = None    # an address, or "private": where 80/443 are published
    hosts_from: HostsFrom | None = None  # the hosts come from EC2 (hosts is empty until then)
    adhoc: bool = False                # --host user@address[:port]
    adhoc_mutable: bool = False        # ... and environments.yml has an `adhoc:` block

    def hosts_with(self, role: str) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.has(role))

    def gateway_address(self, host: Host) -> str | None:
        """The address this core host's gateway publishes 80/443 on (None: all of them)."""
        if self.gateway_bind == PRIVATE_BIND:
            return host.private_address
        return self.gateway_bind

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
            shown = unknown[0] if unknown[0].isascii() else ascii(unknown[0])
            raise self.fail(f"{key}.{shown[:60]}",
                            f"unknown key; allowed keys are: {', '.join(sorted(allowed))}")
        return value

    def string(self, value: Any, key: str, pattern: re.Pattern[str] | None = None,
               hint: str = "") -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"must be a non-empty string, got {_show(value)}")
        if pattern is not None and not pattern.fullmatch(value):
            raise self.fail(key, f"invalid value {_short(value)}{'; ' + hint if hint else ''}")
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
        if not _HOSTNAME.fullmatch(text):
            raise self.fail(key, f"{_short(text)} is neither an IP address nor a host name")
        return text

    def path(self, value: Any, key: str) -> Path:
        return resolve_path(self.string(value, key))


def _is_ipv4(text: str) -> bool:
    """gateway_bind's addresses: Compose's `ADDRESS:80:80` would need brackets for IPv6, and
    an EC2 private address is IPv4."""
    return _is_ip(text) and ":" not in text


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _show(value: Any) -> str:
    return "nothing" if value is None else _short(value)


def _short(value: Any) -> str:
    """A bad value as an error message shows it: escaped when not plain ASCII (a Cyrillic о
    must not read as o), and at most 60 characters."""
    if isinstance(value, str) and len(value) > 60:
        value = value[:60]  # a 50 MB scalar is not copied whole to be cut
    text = ascii(value) if isinstance(value, str) and not value.isascii() else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def resolve_path(text: str) -> Path:
    """Config paths: `~` expands to the home folder, relative paths start at the project root."""
    path = Path(os.path.expanduser(text))
    return path if path.is_absolute() else ROOT / path


def config_path() -> Path:
    """The environments file: $JAFAR_ENVIRONMENTS if set (tests, other checkouts), else ours."""
    return Path(os.environ.get("JAFAR_ENVIRONMENTS") or DEFAULT_CONFIG)


MAX_CONFIG_BYTES = 1024 * 1024
MAX_DEPTH = 32
TOP_LEVEL_KEYS = {"defaults", "environments", "adhoc"}


def load_document(path: Path | None = None, require_environments: bool = True) -> Any:
    """Parse the YAML file; any read, encoding or syntax error is BadInput naming file and line.

    Hostile or broken files fail fast and in one line: more than 1 MB, not UTF-8, nested
    deeper than 32, or using anchors and aliases (a "billion laughs" would expand them) are
    refused before the YAML is composed."""
    path = path or config_path()
    shown = _display(path)
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise BadInput(f"{shown}: {size} bytes, more than {MAX_CONFIG_BYTES}: not an "
                           "environments file")
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise BadInput(f"{shown}: cannot read it ({exc.strerror}); "
                       "create it from the shipped config/environments.yml") from None
    except UnicodeDecodeError as exc:
        raise BadInput(f"{shown}: byte {exc.start} is not UTF-8 text; save the file as "
                       "UTF-8") from None
    try:
        _check_structure(text, shown)
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise BadInput(f"{shown}: malformed YAML at {where}: {problem}; fix the syntax") from None
    except (RecursionError, MemoryError):
        raise BadInput(f"{shown}: too deeply nested or too large to read") from None
    if not require_environments:  # the caller checks the shape and names the file's key
        return doc if doc is not None else {}
    if not isinstance(doc, dict) or not isinstance(doc.get("environments"), dict):
        raise BadInput(f"{shown}: environments: missing; the file needs a top-level "
                       "'environments:' mapping of environment names")
    unknown = sorted(set(map(str, doc)) - TOP_LEVEL_KEYS)
    if unknown:
        raise BadInput(f"{shown}: {_short(unknown[0])}: unknown top-level key; allowed keys "
                       f"are: {', '.join(sorted(TOP_LEVEL_KEYS))}")
    return doc


def _check_structure(text: str, shown: str) -> None:
    """Walk the YAML events (no recursion): refuse anchors, aliases and deep nesting."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            line = event.start_mark.line + 1
            raise BadInput(f"{shown}: line {line}: anchors and aliases (& and *) are not "
                           "allowed; write the values out")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise BadInput(f"{shown}: line {event.start_mark.line + 1}: nested deeper "
                               f"than {MAX_DEPTH} levels; not an environments file")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


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
    if "@" in target:
        return _adhoc_environment(check, target, defaults, doc)
    envs = doc["environments"]
    if target not in envs:
        raise BadInput(f"unknown environment {_short(target)}: choose one of "
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


def _adhoc_environment(check: _Checker, target: str, defaults: dict[str, Any],
                       doc: dict[str, Any]) -> Environment:
    """One host with both roles. Its address, port and user are checked first; an address
    that belongs to a protected environment is refused (it would bypass the confirmation and
    the topology); without an `adhoc:` block (its own env file) it is read-only."""
    shown = f"--host {_short(target)}"
    match = _ADHOC.fullmatch(target)
    if match is None:
        raise BadInput(f"{shown}: {ADHOC_NEEDS}")
    user, address, port_text = match["user"], match["address"], match["port"]
    if not _USER.fullmatch(user):
        raise BadInput(f"{shown}: the user {_short(user)} is not a Unix user name; "
                       f"{ADHOC_NEEDS}")
    if port_text is not None and not (port_text.isascii() and port_text.isdigit()
                                      and 1 <= int(port_text) <= 65535):
        raise BadInput(f"{shown}: the port {_short(port_text)} is not a number from 1 to "
                       f"65535; {ADHOC_NEEDS}")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        if not (address.isascii() and _HOSTNAME.fullmatch(address)):
            raise BadInput(f"{shown}: {_short(address)} is neither an IP address nor a host "
                           f"name; {ADHOC_NEEDS}") from None
    _refuse_protected_address(doc, address, shown)
    block = doc.get("adhoc")
    settings = check.mapping(block, "adhoc", ENV_KEYS - {"hosts", "overlay", "protected"}) \
        if block is not None else {}
    if block is not None:
        _refuse_shared_env_file(check, doc, defaults, settings)
    raw = {
        **defaults,
        **settings,
        "hosts": [{"name": re.sub(r"[^a-z0-9_-]", "-", address.lower()), "address": address,
                   "user": user, "port": int(port_text or 22), "roles": list(ROLES)}],
        "topology": "single",
    }
    env = _environment(check, "adhoc", raw, shown)
    return replace(env, adhoc=True, adhoc_mutable=block is not None)


def _refuse_protected_address(doc: dict[str, Any], address: str, shown: str) -> None:
    for name, raw in (doc.get("environments") or {}).items():
        if not isinstance(raw, dict) or not raw.get("protected"):
            continue
        hosts = raw.get("hosts") if isinstance(raw.get("hosts"), list) else []
        named = [(h.get("name"), h.get(k)) for h in hosts if isinstance(h, dict)
                 for k in ("address", "private_address")]
        bastion = raw.get("bastion") if isinstance(raw.get("bastion"), dict) else {}
        named.append(("its bastion", bastion.get("address")))
        for host, value in named:
            if value == address:
                raise BadInput(f"{shown}: {address} is {host} of the protected environment "
                               f"{name}; use --host {name} (it asks for confirmation and "
                               "knows the topology)")


def _refuse_shared_env_file(check: _Checker, doc: dict[str, Any], defaults: dict[str, Any],
                            settings: dict[str, Any]) -> None:
    """An ad-hoc target never uses a named environment's secrets."""
    own = check.path(settings.get("env_file") or defaults.get("env_file", ".env.ec2"),
                     "adhoc.env_file")
    for name, raw in (doc.get("environments") or {}).items():
        other = (raw or {}).get("env_file") or defaults.get("env_file", ".env.ec2")
        if isinstance(other, str) and resolve_path(other) == own:
            raise BadInput(f"{check.source}: adhoc.env_file is the env file of environment "
                           f"{name}; give ad-hoc targets their own")


def _environment(check: _Checker, name: str, raw: dict[str, Any], key: str) -> Environment:
    if not _NAME.fullmatch(name):
        raise check.fail(key, "environment names are lowercase letters, digits, '-' and '_'")
    for required in ("registry", "tag") + (() if raw.get("hosts_from") else ("hosts",)):
        if raw.get(required) in (None, "", []):
            where = ("an ad-hoc target takes it from defaults: or the adhoc: block of "
                     "config/environments.yml" if name == "adhoc" else
                     "set it here or under defaults")
            raise check.fail(f"{key}.{required}", f"missing; {where}")
    if raw.get("hosts_from") and raw.get("hosts"):
        raise check.fail(f"{key}.hosts_from", "give hosts or hosts_from, not both")
    topology = check.choice(raw.get("topology", "single"), f"{key}.topology", TOPOLOGIES)
    bastion = None
    if raw.get("bastion") is not None:
        b = check.mapping(raw["bastion"], f"{key}.bastion", BASTION_KEYS)
        bastion = _endpoint(check, b, f"{key}.bastion", raw)
    hosts_from = None
    if raw.get("hosts_from"):
        hosts_from = _hosts_from(check, raw["hosts_from"], f"{key}.hosts_from", raw, name)
        hosts: tuple[Host, ...] = ()
    else:
        if not isinstance(raw["hosts"], list):
            raise check.fail(f"{key}.hosts", "must be a list of hosts")
        hosts = tuple(_host(check, h, f"{key}.hosts[{i}]", raw)
                      for i, h in enumerate(raw["hosts"]))
        check_hosts(check, key, topology, hosts)
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
    aws = _aws(check, raw, key, name)
    if aws is None and ECR_HOST.fullmatch(str(raw["registry"]).split("/", 1)[0]):
        raise check.fail(f"{key}.aws", "missing; the registry is ECR, whose login token comes "
                         "from AWS: add aws: {region: eu-west-1}")
    awslogs = {}
    if log_driver == "awslogs":
        if not raw.get("awslogs_group"):
            raise check.fail(f"{key}.awslogs_group", "missing; log_driver awslogs needs "
                             "awslogs_group and an aws: block with the region")
        if aws is None:
            raise check.fail(f"{key}.aws", "missing; log_driver awslogs needs the region: "
                             "aws: {region: eu-west-1}")
        retention = raw.get("awslogs_retention_days", 30)
        if isinstance(retention, bool) or retention not in RETENTION_DAYS:
            raise check.fail(f"{key}.awslogs_retention_days", f"must be one of CloudWatch's "
                             f"retentions ({', '.join(map(str, RETENTION_DAYS))}), got "
                             f"{_show(retention)}")
        kms_key = raw.get("awslogs_kms_key")
        awslogs = {"awslogs_group": check.string(raw["awslogs_group"], f"{key}.awslogs_group",
                                                 _LOG_GROUP, "CloudWatch log group names are "
                                                 "letters, digits and _ - / . #"),
                   "awslogs_retention_days": retention,
                   "awslogs_kms_key": check.string(kms_key, f"{key}.awslogs_kms_key", _KMS_ARN,
                                                   "a KMS key ARN, arn:aws:kms:REGION:ACCOUNT:"
                                                   "key/ID") if kms_key is not None else None}
    for var, ref in images.items():
        check.string(ref, f"{key}.images.{var}", _IMAGE, "use an image reference like "
                     "registry.example/nginx:1.27.3")
    setup = _host_setup(check, raw.get("host") or {}, f"{key}.host")
    gateway_bind = _gateway_bind(check, raw.get("gateway_bind"), f"{key}.gateway_bind", hosts)
    pins_file = (check.path(raw["pins"], f"{key}.pins") if raw.get("pins")
                 else ROOT / "config" / "pins" / f"{name}.yml")
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
        pins_file=pins_file,
        pins=_pins(pins_file),
        log_driver=log_driver,
        gateway_bind=gateway_bind,
        **awslogs,
        aws=aws,
        hosts_from=hosts_from,
        secrets=_secrets(check, raw.get("secrets"), f"{key}.secrets", aws),
        alerting=_alerting(check, raw.get("alerting"), f"{key}.alerting",
                           protected=bool(raw.get("protected"))),
        backup_snapshots=_backup_snapshots(check, raw, key, aws),
        backup_s3=_backup_s3(check, raw.get("backup_s3"), f"{key}.backup_s3", aws),
        rotate_after_days=check.integer(raw.get("rotate_after_days", 90),
                                        f"{key}.rotate_after_days", 1, 3650),
        bastion=bastion,
        **_operations(check, raw, key, adhoc=name == "adhoc"),
    )


TAG_HINT = "tag keys and values are letters, digits, spaces and + - = . _ : / @"


def _aws(check: _Checker, raw: dict[str, Any], key: str, name: str) -> AwsSettings | None:
    """The `aws:` block; the old `aws_region:` key is still read, with a notice to move it."""
    block = raw.get("aws")
    if block is None and raw.get("aws_region") is not None:
        block = {"region": raw["aws_region"]}
        print(f"notice: {check.source}: {key}.aws_region is read, but move it to "
              f"aws: {{region: {_short(raw['aws_region'])}}}", file=sys.stderr)
    if block is None:
        return None
    aws = check.mapping(block, f"{key}.aws", AWS_KEYS)
    region = check.string(aws.get("region"), f"{key}.aws.region", _REGION,
                          "use a region such as eu-west-1")
    if region not in known_regions():
        raise check.fail(f"{key}.aws.region", f"unknown region {_short(region)}; use one of "
                         "AWS's regions, such as eu-west-1")
    profile = aws.get("profile")
    endpoint = aws.get("endpoint_url")
    raw_tags = aws.get("instance_tags")
    if raw_tags is not None and (not isinstance(raw_tags, dict) or not raw_tags):
        raise check.fail(f"{key}.aws.instance_tags", "must be a mapping of tag: value, e.g. "
                         "{jafar-env: prod}")
    tags = {check.string(str(k), f"{key}.aws.instance_tags", _TAG_TEXT, TAG_HINT):
            check.string(v, f"{key}.aws.instance_tags.{k}", _TAG_TEXT, TAG_HINT)
            for k, v in (raw_tags or {"jafar-env": name}).items()}
    alb = None
    if aws.get("alb") is not None:
        raw_alb = check.mapping(aws["alb"], f"{key}.aws.alb", ALB_KEYS)
        alb = AlbSettings(*(check.string(raw_alb.get(k), f"{key}.aws.alb.{k}", _ELB_NAME,
                                         "a load balancer or target group name: letters, "
                                         "digits and '-', at most 32")
                            for k in ("name", "target_group")))
    return AwsSettings(
        region=region,
        profile=check.string(profile, f"{key}.aws.profile", _PROFILE,
                             "a profile name of ~/.aws/config") if profile is not None else None,
        endpoint_url=check.string(endpoint, f"{key}.aws.endpoint_url", _ENDPOINT,
                                  "http(s)://host[:port]; only the sandbox and the tests set "
                                  "it") if endpoint is not None else None,
        instance_tags=dict(tags),
        role_tag=check.string(aws.get("role_tag", "jafar-role"), f"{key}.aws.role_tag",
                              _TAG_TEXT, TAG_HINT),
        alb=alb,
        alarm_topic=check.string(aws["alarm_topic"], f"{key}.aws.alarm_topic", _SNS_ARN,
                                 "an SNS topic ARN, arn:aws:sns:REGION:ACCOUNT:NAME")
        if aws.get("alarm_topic") is not None else None)


def known_regions() -> frozenset[str]:
    """Every region botocore knows, in every partition (offline: its endpoints file)."""
    import boto3  # only environments with an aws: block pay for the import

    session = boto3.session.Session()
    return frozenset(r for p in session.get_available_partitions()
                     for r in session.get_available_regions("ec2", partition_name=p))


def _secrets(check: _Checker, value: Any, key: str, aws: AwsSettings | None) -> SecretSource:
    if value is None:
        return SecretSource()
    raw = check.mapping(value, key, set(SECRET_SOURCES))
    if len(raw) != 1:
        raise check.fail(key, "name one store: {manager: SECRET_NAME} (Secrets Manager) or "
                         "{ssm: /PATH/} (Parameter Store); leave it out for the local env file")
    kind, name = next(iter(raw.items()))
    if aws is None:
        raise check.fail(f"{key}.{kind}", "needs an aws: block with the region, e.g. "
                         "aws: {region: eu-west-1}")
    if kind == "manager":
        return SecretSource("manager", check.string(name, f"{key}.manager", _SECRET_ID,
                                                    "a Secrets Manager secret name such as "
                                                    "jafar/prod"))
    path = check.string(name, f"{key}.ssm", _SSM_PATH, "a parameter path such as /jafar/prod/")
    return SecretSource("ssm", path.rstrip("/") + "/")


def _gateway_bind(check: _Checker, value: Any, key: str, hosts: tuple[Host, ...]) -> str | None:
    """One IP address of the one core host, or `private`: each core host's private_address
    (on EC2 the address the load balancer reaches: the public IP is not on the instance's
    interface)."""
    if value is None:
        return None
    text = check.string(value, key)
    core = [h for h in hosts if "core" in h.roles]
    if text == PRIVATE_BIND:
        for h in core:
            if not h.private_address or not _is_ipv4(h.private_address):
                raise check.fail(key, f"is private, but core host {h.name} has no IPv4 "
                                 "private_address; give it one")
        return text
    if not _is_ipv4(text):
        raise check.fail(key, f"{_short(text)} is not an IPv4 address; use the core host's "
                         "private address, e.g. 10.0.1.11, or private")
    if len(core) != 1:
        raise check.fail(key, f"names one address, but there are {len(core)} core hosts; "
                         "write private (each core host's private_address) or leave it out")
    return text


def _pins(path: Path) -> dict[str, str]:
    """The environment's image pins ({} when it has none): IMAGE_VARIABLE -> a reference by
    digest. A malformed file is refused by key; its content is never shown."""
    if not path.is_file():
        return {}
    check = _Checker(_display(path))
    doc = load_document(path, require_environments=False)  # capped, no aliases, one line
    pins = check.mapping(doc, "pins", set(IMAGE_VARIABLES))
    for var, ref in pins.items():
        check.string(ref, var, _PINNED, "must be repo:tag@sha256:<64 hex digits>; regenerate "
                     "it with inv images.pin")
    return dict(pins)


def _operations(check: _Checker, raw: dict[str, Any], key: str, adhoc: bool) -> dict[str, Any]:
    """Day-2 settings: replica counts, the lock's time to live, connection budgets."""
    max_replicas = check.integer(raw.get("max_replicas", 10), f"{key}.max_replicas", 1, 100)
    limits = check.mapping(raw.get("data_limits") or {}, f"{key}.data_limits",
                           set(DATA_LIMIT_KEYS))
    return {
        "max_replicas": max_replicas,
        "replicas": check.integer(raw.get("replicas", 1), f"{key}.replicas", 1, max_replicas),
        "lock_ttl": check.integer(raw.get("lock_ttl", 600), f"{key}.lock_ttl", 60, 86400),
        "backup_keep": _keep(check, raw.get("backup_keep") or {}, f"{key}.backup_keep"),
        "backup_max_bytes": _size(check.string(raw.get("backup_max_size", "20GiB"),
                                               f"{key}.backup_max_size", _SIZE,
                                               "a size like 20GiB (MiB, GiB or TiB)")),
        "backup_at": check.string(_clock(raw.get("backup_at", "02:30")), f"{key}.backup_at",
                                  _CLOCK, "a UTC time like 02:30 (00:00 to 23:59)"),
        "pool_size": check.integer(raw.get("pool_size", 10), f"{key}.pool_size", 1, 1000),
        "data_limits": {k: check.integer(limits.get(k, DEFAULT_DATA_LIMITS[k]),
                                         f"{key}.data_limits.{k}", 10, 100000)
                        for k in DATA_LIMIT_KEYS},
        "health_interval": check.string(raw.get("health_interval", "10s"),
                                        f"{key}.health_interval", _INTERVAL,
                                        "seconds like 10s (1s to 999s)"),
        "release": _release(check, raw.get("release") or {}, f"{key}.release"),
        "gateway": _gateway(check, raw.get("gateway"), f"{key}.gateway", required=not adhoc),
    }


def _backup_snapshots(check: _Checker, raw: dict[str, Any], key: str,
                      aws: AwsSettings | None) -> bool:
    wanted = check.boolean(raw.get("backup_snapshots", False), f"{key}.backup_snapshots")
    if wanted and aws is None:
        raise check.fail(f"{key}.backup_snapshots", "needs an aws: block (the region; the data "
                         "instance is found by aws.instance_tags and its role tag)")
    return wanted


def _backup_s3(check: _Checker, value: Any, key: str,
               aws: AwsSettings | None) -> BackupS3 | None:
    """backup_s3: every field is required (an offsite copy without its key or lock is not
    one a bank can rely on)."""
    if value is None:
        return None
    raw = check.mapping(value, key, BACKUP_S3_KEYS)
    missing = sorted(BACKUP_S3_KEYS - set(raw))
    if missing:
        raise check.fail(key, f"needs {', '.join(missing)} (README, Backups offsite)")
    if aws is None:
        raise check.fail(key, "needs an aws: block (the region of the bucket)")
    return BackupS3(
        bucket=check.string(raw["bucket"], f"{key}.bucket", _BUCKET,
                            "an S3 bucket name (3 to 63 lowercase letters, digits, . and -)"),
        prefix=check.string(raw["prefix"], f"{key}.prefix", _S3_PREFIX,
                            "a key prefix like prod or jafar/prod (no leading or trailing /)"),
        kms_key=check.string(raw["kms_key"], f"{key}.kms_key", _KMS_KEY,
                             "a KMS key: alias/NAME, a key id or a key ARN"),
        age_recipient=_recipient(check, raw["age_recipient"], f"{key}.age_recipient"),
        age_identity=check.string(raw["age_identity"], f"{key}.age_identity", _SECRET_ID,
                                  "the name of the Secrets Manager secret that holds the age "
                                  "identity, e.g. jafar/prod/backup-age"),
    )


def _recipient(check: _Checker, value: Any, key: str) -> str:
    """An age public key. Never shown when wrong: the private key pasted here by mistake
    must not end up in a terminal's scrollback."""
    if not isinstance(value, str) or not _AGE_RECIPIENT.fullmatch(value):
        what = ("an age identity (a private key): put its public key here (age-keygen -y) and "
                "the identity in Secrets Manager" if isinstance(value, str)
                and value.strip().upper().startswith("AGE-SECRET-KEY") else
                "not an age public key, age1... (age-keygen -y prints it)")
        raise check.fail(key, f"is {what}; the value is not shown")
    return value


def _alerting(check: _Checker, value: Any, key: str, protected: bool) -> AlertingSettings:
    """alerting: receivers of Alertmanager. A protected environment must page someone and
    have its dead-man's switch: silence there must never be mistaken for health."""
    raw = check.mapping(value or {}, key, ALERTING_KEYS)
    hint = ("an http(s) URL without user, password or query (e.g. "
            "https://oncall.internal.example/alertmanager)")

    def url(value: Any, where: str) -> str:
        if not isinstance(value, str) or not _ALERT_URL.fullmatch(value):
            # not shown: a URL may carry a token
            raise check.fail(where, f"must be {hint} (the value is not shown)")
        return value

    webhooks = raw.get("webhooks") or []
    if not isinstance(webhooks, list):
        raise check.fail(f"{key}.webhooks", "must be a list of URLs")

    email = check.mapping(raw.get("email") or {}, f"{key}.email", EMAIL_KEYS)
    if email and set(email) != EMAIL_KEYS:
        raise check.fail(f"{key}.email", "needs to, from and smarthost (host:port)")
    to = email.get("to") or []
    to = [to] if isinstance(to, str) else to
    if not isinstance(to, list):
        raise check.fail(f"{key}.email.to", "must be an address or a list of addresses")
    settings = AlertingSettings(
        webhooks=tuple(url(u, f"{key}.webhooks[{i}]") for i, u in enumerate(webhooks)),
        sns_topic=(check.string(raw["sns_topic"], f"{key}.sns_topic", _SNS_ARN,
                                "an SNS topic ARN, arn:aws:sns:REGION:ACCOUNT:NAME")
                   if raw.get("sns_topic") else None),
        email_to=tuple(check.string(a, f"{key}.email.to[{i}]", _MAILBOX, "an e-mail address")
                       for i, a in enumerate(to)),
        email_from=(check.string(email["from"], f"{key}.email.from", _MAILBOX,
                                 "an e-mail address") if email else None),
        smarthost=(check.string(email["smarthost"], f"{key}.email.smarthost", _SMARTHOST,
                                "the SMTP relay as host:port, e.g. smtp.internal.example:587")
                   if email else None),
        watchdog=url(raw["watchdog"], f"{key}.watchdog") if raw.get("watchdog") else None,
        group_wait=check.string(raw.get("group_wait", "30s"), f"{key}.group_wait", _INTERVAL,
                                "seconds like 30s (1s to 999s)"),
    )
    if protected and not (settings.pages and settings.watchdog):
        raise check.fail(key, "a protected environment needs receivers that page someone "
                         "(webhooks, sns_topic or email) and a watchdog URL (the dead-man's "
                         "switch); see README, Alerts")
    return settings


KEEP_PERIODS = ("daily", "weekly", "monthly")


def _keep(check: _Checker, value: Any, key: str) -> tuple[int, int, int]:
    """backup_keep: {daily: 7, weekly: 4, monthly: 12} (each 0 to 1000; the newest set is
    always kept)."""
    raw = check.mapping(value, key, set(KEEP_PERIODS))
    daily, weekly, monthly = (check.integer(raw.get(p, d), f"{key}.{p}", 0, 1000)
                              for p, d in zip(KEEP_PERIODS, (7, 4, 12), strict=True))
    return daily, weekly, monthly


def _size(text: str) -> int:
    """20GiB -> bytes (the text matched _SIZE already)."""
    return int(text[:-3]) * SIZE_UNITS[text[-3:]]


def _clock(value: Any) -> Any:
    """YAML 1.1 reads an unquoted 02:30 as the base-60 number 150: take it back as a time."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
        return f"{value // 60:02d}:{value % 60:02d}"
    return value


def _gateway(check: _Checker, value: Any, key: str, required: bool) -> GatewaySettings:
    """Named environments must say which host names the gateway serves (any other is closed);
    an ad-hoc target may leave it out (then only /health answers)."""
    if value is None and not required:
        return GatewaySettings()
    raw = check.mapping(value if value is not None else {}, key, GATEWAY_KEYS)
    names = raw.get("server_names")
    if not isinstance(names, list) or not names:
        raise check.fail(f"{key}.server_names", "list the host names the gateway answers, "
                         "e.g. [api.bank.example] (requests for any other are closed)")
    proxies = raw.get("trusted_proxies") or []
    if not isinstance(proxies, list):
        raise check.fail(f"{key}.trusted_proxies", "must be a list of CIDRs (the load balancer)")
    return GatewaySettings(
        server_names=tuple(check.address(n, f"{key}.server_names[{i}]")
                           for i, n in enumerate(names)),
        trusted_proxies=tuple(_cidr(check, c, f"{key}.trusted_proxies[{i}]")
                              for i, c in enumerate(proxies)))


def _release(check: _Checker, value: Any, key: str) -> ReleaseSettings:
    raw = check.mapping(value, key, RELEASE_KEYS)
    order = raw.get("order") or list(JAFAR_SHORT)
    if not isinstance(order, list) or sorted(order) != sorted(JAFAR_SHORT):
        raise check.fail(f"{key}.order", "must list each of the seven services once: "
                         f"{', '.join(JAFAR_SHORT)}")
    before = raw.get("before")
    if before is not None:
        text = check.string(before, f"{key}.before")
        service = text.split()[0].removesuffix("-service")
        if service not in JAFAR_SHORT or len(text.split()) < 2 or "\n" in text:
            raise check.fail(f"{key}.before", "one line: SERVICE COMMAND..., e.g. "
                             "\"ledger-service npm run migrate\"")
    return ReleaseSettings(
        before=before,
        order=tuple(f"{s}-service" for s in order),
        health_timeout=check.integer(raw.get("health_timeout", 120), f"{key}.health_timeout",
                                     10, 3600),
        watch=check.integer(raw.get("watch", 10), f"{key}.watch", 0, 600),
    )


def _cidr(check: _Checker, value: Any, key: str) -> str:
    text = check.string(value, key)
    try:
        ipaddress.ip_network(text)
    except ValueError:
        raise check.fail(key, f"{_short(text)} is not a CIDR such as 10.0.0.0/16") from None
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
        if not re.fullmatch(r"[A-Za-z]+ [^\n]*\S", line):
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
        userns_remap=check.boolean(raw.get("userns_remap", False), f"{key}.userns_remap"),
        sshd_extra=tuple(lists["sshd_extra"]),
        admin_key=check.path(raw["admin_key"], f"{key}.admin_key") if raw.get("admin_key")
        else None,
        log_forward=_log_forward(check, raw["log_forward"], f"{key}.log_forward")
        if raw.get("log_forward") is not None else None,
    )


def _log_forward(check: _Checker, value: Any, key: str) -> LogForward:
    raw = check.mapping(value, key, LOG_FORWARD_KEYS)
    for k in LOG_FORWARD_KEYS:
        if not raw.get(k):
            raise check.fail(f"{key}.{k}", "missing; log_forward needs target (host:port), name "
                             "(the collector certificate's name) and ca (its CA file)")
    address, _, port = check.string(raw["target"], f"{key}.target").rpartition(":")
    if not address or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise check.fail(f"{key}.target", "use host:port, e.g. logs.internal:6514")
    name = check.string(raw["name"], f"{key}.name")
    if not _HOSTNAME.fullmatch(name):
        raise check.fail(f"{key}.name", f"{_short(name)} is not a host name")
    ca = check.path(raw["ca"], f"{key}.ca")
    if not ca.is_file():
        raise check.fail(f"{key}.ca", f"{ca} does not exist; give the collector's CA file")
    try:
        x509.load_pem_x509_certificate(ca.read_bytes())
    except (OSError, ValueError):
        raise check.fail(f"{key}.ca", f"{ca} is not a PEM certificate; give the collector's "
                         "CA certificate") from None
    return LogForward(address=check.address(address, f"{key}.target"), port=int(port),
                      name=name, ca=ca)


def _deploy_path(check: _Checker, value: Any, key: str) -> str:
    """A folder of its own under /opt or /srv: host.prepare gives it to the deploy user."""
    text = check.string(value, key).rstrip("/")
    if not re.fullmatch(r"/(opt|srv)(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)+", text) or any(
            part in (".", "..") for part in text.split("/")):
        raise check.fail(key, f"must be a dedicated folder under /opt or /srv, such as "
                         f"/opt/jafar, got {_short(text)}")
    return text


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


def check_hosts(check: _Checker, key: str, topology: str, hosts: tuple[Host, ...]) -> None:
    """Names unique, and the topology's rules (also for the hosts EC2 gave)."""
    names = [h.name for h in hosts]
    for n in names:
        if names.count(n) > 1:
            raise check.fail(f"{key}.hosts", f"host name {n!r} is used twice; names must differ")
    _check_topology(check, key, topology, hosts)


def _hosts_from(check: _Checker, value: Any, key: str, env: dict[str, Any],
                name: str) -> HostsFrom:
    raw = check.mapping(value, key, HOSTS_FROM_KEYS)
    aws = env.get("aws") if isinstance(env.get("aws"), dict) else {}
    tags = raw.get("tags", aws.get("instance_tags") or {"jafar-env": name})
    if not isinstance(tags, dict) or not tags:
        raise check.fail(f"{key}.tags", "must be a mapping of tag: value, e.g. {jafar-env: prod}")
    if not env.get("aws"):
        raise check.fail(key, "needs an aws: block with the region: the hosts come from EC2")
    return HostsFrom(
        tags={check.string(str(k), f"{key}.tags", _TAG_TEXT, TAG_HINT):
              check.string(v, f"{key}.tags.{k}", _TAG_TEXT, TAG_HINT) for k, v in tags.items()},
        role_tag=check.string(raw.get("role_tag", aws.get("role_tag", "jafar-role")),
                              f"{key}.role_tag", _TAG_TEXT, TAG_HINT),
        address=check.choice(raw.get("address", "private_ip"), f"{key}.address",
                             tuple(ADDRESS_KINDS)),
        user=check.string(raw.get("user", "deploy"), f"{key}.user", _USER,
                          "use a Unix user name such as deploy"),
        port=check.integer(raw.get("port", 22), f"{key}.port", 1, 65535),
        key=check.path(raw.get("key", env.get("key", "~/.ssh/id_ed25519")), f"{key}.key"),
        become=check.boolean(raw.get("become", env.get("become", False)), f"{key}.become"),
    )


def hosts_checker(env: Environment) -> _Checker:
    """Problems in the hosts EC2 gave, reported like those of the config file."""
    assert env.hosts_from is not None
    return _Checker(env.hosts_from.describe())


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
        for h in core:
            if not h.private_address and not _is_ip(h.ssh.address):
                raise check.fail(f"{key}.hosts", f"split topology: core host {h.name} needs "
                                 "private_address (the data ports accept only the core hosts' "
                                 "addresses)")
