"""The pure command builders: exact strings."""

from __future__ import annotations

import subprocess
from dataclasses import replace

import pytest

from fabfile import core_stack
from fabfile.commands import compose, files, replica
from fabfile.remote import become
from tests.conftest import shipped

SINGLE_ENV = ("env JAFAR_REGISTRY=registry:5000/jafar JAFAR_TAG=sandbox COMPOSE_PROFILES= "
              "JAFAR_HEALTH_INTERVAL=1s JAFAR_DB_POOL_SIZE=10 MONGO_MAX_CONNECTIONS=1000 "
              "REDIS_MAXCLIENTS=1000 POSTGRES_MAX_CONNECTIONS=100 MONGO_PIDS_LIMIT=1256 "
              "POSTGRES_PIDS_LIMIT=228")


@pytest.fixture
def sandbox():
    return shipped("sandbox")


@pytest.fixture
def prod():
    return shipped("prod")


def test_compose_single_topology(sandbox):
    assert compose.up(sandbox, "data", 300) == (
        f"cd /opt/jafar && {SINGLE_ENV} docker compose -p jafar-data --env-file .env.ec2 "
        "-f compose/docker-compose.data.yml up --detach --wait --wait-timeout 300")
    assert compose.up(sandbox, "core", 300) == (
        f"cd /opt/jafar && {SINGLE_ENV} docker compose -p jafar-core --env-file .env.ec2 "
        "-f compose/docker-compose.core.yml -f compose/docker-compose.core.single.yml "
        "up --detach --wait --wait-timeout 300")


def test_compose_split_topology_binds_data_to_private_address(prod):
    assert compose.config_check(prod, "data") == (
        "cd /opt/jafar && env JAFAR_REGISTRY=123456789012.dkr.ecr.eu-west-1.amazonaws.com/jafar "
        "JAFAR_TAG=2026.11.0 COMPOSE_PROFILES=grafana JAFAR_HEALTH_INTERVAL=10s "
        "JAFAR_DB_POOL_SIZE=10 MONGO_MAX_CONNECTIONS=1000 REDIS_MAXCLIENTS=1000 "
        "POSTGRES_MAX_CONNECTIONS=100 MONGO_PIDS_LIMIT=1256 POSTGRES_PIDS_LIMIT=228 "
        "AWSLOGS_GROUP=/jafar/prod "
        "AWS_REGION=eu-west-1 DATA_BIND_ADDRESS=10.0.2.10 docker compose -p jafar-data "
        "--env-file .env.ec2 -f compose/docker-compose.data.yml "
        "-f compose/docker-compose.data.split.yml -f compose/docker-compose.data.awslogs.yml "
        "config --quiet")
    # two core hosts: their Alertmanagers cluster
    assert compose.compose_files(prod, "core") == ["compose/docker-compose.core.yml",
                                                   "compose/docker-compose.core.cluster.yml",
                                                   "compose/docker-compose.core.awslogs.yml"]


def test_image_overrides_are_passed_sorted(sandbox):
    env = replace(sandbox, images={"REDIS_IMAGE": "r:1", "NGINX_IMAGE": "n:2"})
    assert compose.suite_variables(env) == {
        "JAFAR_REGISTRY": "registry:5000/jafar", "JAFAR_TAG": "sandbox",
        "COMPOSE_PROFILES": "", "JAFAR_HEALTH_INTERVAL": "1s", "JAFAR_DB_POOL_SIZE": "10",
        "MONGO_MAX_CONNECTIONS": "1000", "REDIS_MAXCLIENTS": "1000",
        "POSTGRES_MAX_CONNECTIONS": "100", "MONGO_PIDS_LIMIT": "1256",
        "POSTGRES_PIDS_LIMIT": "228", "NGINX_IMAGE": "n:2", "REDIS_IMAGE": "r:1"}


def test_pids_limits_follow_the_connection_limits(sandbox):
    env = replace(sandbox, data_limits={"mongo": 2000, "redis": 1000, "postgres": 300},
                  gateway_bind="10.0.1.11")
    variables = compose.suite_variables(env)
    assert (variables["MONGO_PIDS_LIMIT"], variables["POSTGRES_PIDS_LIMIT"]) == ("2256", "428")
    # per host, so in the host's .env.ec2 (sync.secret_items), never on the command line
    assert "GATEWAY_BIND" not in variables


def test_the_gateway_address_is_the_one_named_or_each_hosts_private_one(sandbox):
    host = replace(sandbox.hosts[0], private_address="10.0.1.21")
    assert replace(sandbox, gateway_bind="10.0.1.11").gateway_address(host) == "10.0.1.11"
    assert replace(sandbox, gateway_bind="private").gateway_address(host) == "10.0.1.21"
    assert sandbox.gateway_address(host) is None


def test_deploy_path_is_quoted(sandbox):
    env = replace(sandbox, deploy_path="/opt/ja far")
    assert compose.config_check(env, "data").startswith("cd '/opt/ja far' && env ")


def test_snapshot(sandbox):
    assert compose.snapshot(sandbox, "data") == (
        "docker ps --all --quiet --no-trunc --filter "
        "label=com.docker.compose.project=jafar-data | xargs -r docker inspect --format "
        "'{{.Id}} {{.Name}} {{.State.StartedAt}} {{.State.Status}}'")


def test_write_stdin_is_atomic_and_private():
    assert files.write_stdin("/opt/jafar/.env.ec2", "600") == (
        "umask 077 && mkdir -p /opt/jafar && cat > /opt/jafar/.env.ec2.jafar-tmp && "
        "chmod 600 /opt/jafar/.env.ec2.jafar-tmp && mv -f /opt/jafar/.env.ec2.jafar-tmp "
        "/opt/jafar/.env.ec2")
    assert "chown deploy /x/y.jafar-tmp" in files.write_stdin("/x/y", "600", owner="deploy")


def test_state_probe_takes_paths_as_arguments():
    cmd = files.state(["/opt/jafar/a b", "/opt/jafar/c"])
    assert cmd.startswith("sh -c 'for f in \"$@\"; do ")
    assert cmd.endswith(" state '/opt/jafar/a b' /opt/jafar/c")


def test_extract_bundle():
    assert files.extract_bundle("/opt/jafar") == (
        "umask 022 && mkdir -p /opt/jafar && tar -xz --no-same-owner --no-overwrite-dir "
        "-C /opt/jafar")


def test_init_replica(sandbox):
    assert replica.init_replica(sandbox, 120) == (
        "cd /opt/jafar && ./scripts/init-replica.sh --project jafar-data --timeout 120")


def test_become_wraps_in_sudo_without_prompt():
    assert become("cd /opt/jafar && ls") == "sudo -n sh -c 'cd /opt/jafar && ls'"


def test_the_gateway_address_is_checked_on_the_host(sandbox):
    """core.up reads whether gateway_bind is one of the host's addresses (run here, where
    127.0.0.1 is one and a documentation address is not)."""
    def bind_check(address: str | None) -> str:
        command = core_stack.bind_check(address)
        return subprocess.run(["sh", "-c", command], capture_output=True, text=True,
                              timeout=30).stdout.strip()

    assert bind_check("127.0.0.1") == "present"
    assert bind_check("203.0.113.7") == "absent"
    assert bind_check(None) == "present"


def test_the_health_probe_asks_the_gateway_where_it_publishes():
    from fabfile.commands.health import probe

    last = probe(["jafar-core"], ["api-service"], 3000, "10.0.1.12").splitlines()[-1]
    assert last == ("printf 'G\\t%s\\n' \"$(curl -sk -m 5 -o /dev/null -w '%{http_code}' "
                    "https://10.0.1.12/health)\"")
    assert "https://" not in probe(["jafar-data"], [], 3000, None)
