"""The compose files, checked by the real Compose v2 (`docker compose config`), in both
topologies, with a .env.ec2 made from .env.ec2.example."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from static_helpers import (
    COMPOSE,
    CREDENTIAL,
    DATA_SERVICES,
    JAFAR_SERVICES,
    REGISTRY,
    ROOT,
    SUITE_VARIABLES,
    TAG,
    compose_json,
    compose_run,
    example_values,
)

DATA_SINGLE = ["docker-compose.data.yml"]
DATA_SPLIT = ["docker-compose.data.yml", "docker-compose.data.split.yml"]
CORE_SPLIT = ["docker-compose.core.yml"]
CORE_SINGLE = ["docker-compose.core.yml", "docker-compose.core.single.yml"]
CORE_CLUSTER = ["docker-compose.core.yml", "docker-compose.core.cluster.yml"]
CLUSTER = {"ALERTMANAGER_CLUSTER_LISTEN": "0.0.0.0:9094",
           "ALERTMANAGER_CLUSTER_ADDRESS": "10.0.1.11",
           "ALERTMANAGER_PEERS": "10.0.1.12:9094,10.0.1.13:9094"}
BIND = "10.0.2.10"

# (name, files, extra environment) for every way the suite runs the stacks.
STACKS = [
    ("data-single", DATA_SINGLE, {}),
    ("data-split", DATA_SPLIT, {"DATA_BIND_ADDRESS": BIND}),
    ("core-split", CORE_SPLIT, {"COMPOSE_PROFILES": "grafana"}),
    ("core-split-cluster", CORE_CLUSTER, {"COMPOSE_PROFILES": "grafana", **CLUSTER}),
    ("core-single", CORE_SINGLE, {"COMPOSE_PROFILES": "grafana"}),
    ("core-single-no-grafana", CORE_SINGLE, {}),
]
STACK_IDS = [s[0] for s in STACKS]


@pytest.fixture(scope="module")
def models(env_file: Path) -> dict[str, dict]:
    return {name: compose_json(env_file, files, **extra) for name, files, extra in STACKS}


@pytest.mark.parametrize(("name", "files", "extra"), STACKS, ids=STACK_IDS)
def test_config_is_valid(env_file: Path, name: str, files: list[str], extra: dict[str, str]):
    proc = compose_run(env_file, files, ["config", "--quiet"], **extra)
    assert proc.returncode == 0, f"{name}: {proc.stderr}"


def test_split_without_bind_address_fails(env_file: Path):
    for value in (None, ""):
        extra = {} if value is None else {"DATA_BIND_ADDRESS": value}
        proc = compose_run(env_file, DATA_SPLIT, ["config", "--quiet"], **extra)
        assert proc.returncode != 0, f"split config passed with DATA_BIND_ADDRESS={value!r}"
        assert "DATA_BIND_ADDRESS" in proc.stderr


def test_missing_setting_fails_with_its_name(tmp_path: Path, env_values: dict[str, str]):
    """A required key missing from .env.ec2 stops every compose command, naming the key."""
    for files, key in ((DATA_SINGLE, "MONGO_ROOT_USERNAME"), (CORE_SPLIT, "REDIS_HOST")):
        path = tmp_path / f"{key}.env"
        path.write_text("".join(f"{k}={v}\n" for k, v in env_values.items() if k != key))
        proc = compose_run(path, files, ["config", "--quiet"])
        assert proc.returncode != 0
        assert key in proc.stderr


def test_stacks_run_services_of_the_contract(models: dict[str, dict]):
    assert sorted(models["data-single"]["services"]) == sorted(DATA_SERVICES)
    assert sorted(models["core-split"]["services"]) == sorted(
        [*JAFAR_SERVICES, "gateway", "prometheus", "alertmanager", "grafana"])
    assert "grafana" not in models["core-single-no-grafana"]["services"]


def test_only_gateway_publishes_and_only_80_443(models: dict[str, dict]):
    for name in ("core-split", "core-single"):
        for service, spec in models[name]["services"].items():
            ports = spec.get("ports") or []
            if service != "gateway":
                assert not ports, f"{name}: {service} publishes {ports}"
                continue
            published = sorted((int(p["published"]), p["target"]) for p in ports)
            assert published == [(80, 80), (443, 443)], f"{name}: gateway publishes {ports}"
    assert all(not s.get("ports") for s in models["data-single"]["services"].values()), \
        "single topology: the data stack must publish nothing"


def test_split_data_ports_bind_only_the_private_address(models: dict[str, dict]):
    expected = {"mongo-primary": 27017, "mongo-secondary": 27018, "mongo-arbiter": 27019,
                "redis": 6379, "postgres-ledger": 5432}
    for service, spec in models["data-split"]["services"].items():
        ports = spec.get("ports") or []
        assert len(ports) == 1, f"{service}: {ports}"
        port = ports[0]
        assert port.get("host_ip") == BIND, f"{service} binds {port.get('host_ip')!r}"
        assert port["host_ip"] not in ("", "0.0.0.0", "::")
        assert port["target"] == expected[service]
        assert int(port["published"]) == port["target"], "replica set members need 1:1 ports"


@pytest.mark.parametrize("name", STACK_IDS)
def test_every_service_is_hardened(models: dict[str, dict], name: str):
    for service, spec in models[name]["services"].items():
        where = f"{name}/{service}"
        check = spec.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{where}: no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), f"{where}: {check['test']}"
        assert spec.get("restart") == "unless-stopped", f"{where}: restart"
        memory = (((spec.get("deploy") or {}).get("resources") or {}).get("limits")
                  or {}).get("memory")
        assert memory and int(memory) > 0, f"{where}: no memory limit"
        logging = spec.get("logging") or {}
        assert logging.get("driver") == "json-file", f"{where}: logging {logging}"
        assert {"max-size", "max-file"} <= set(logging.get("options") or {}), \
            f"{where}: no log rotation"
        assert "no-new-privileges:true" in (spec.get("security_opt") or []), \
            f"{where}: no no-new-privileges"
        assert spec.get("read_only") is True, f"{where}: root file system is writable"
        assert spec.get("tmpfs"), f"{where}: read-only root without a tmpfs"


@pytest.mark.parametrize("files", [CORE_SPLIT + ["docker-compose.core.awslogs.yml"],
                                   DATA_SPLIT + ["docker-compose.data.awslogs.yml"]])
def test_awslogs_override_replaces_json_file_logging(env_file: Path, files: list[str]):
    """The awslogs file replaces (not merges) the rotation options, for every service."""
    model = compose_json(env_file, files, DATA_BIND_ADDRESS=BIND, AWSLOGS_GROUP="/jafar/prod",
                         AWS_REGION="eu-west-1", COMPOSE_PROFILES="grafana")
    for name, spec in model["services"].items():
        assert spec["logging"] == {"driver": "awslogs", "options": {
            "awslogs-group": "/jafar/prod", "awslogs-region": "eu-west-1",
            "tag": "{{.Name}}"}}, name


def test_awslogs_without_group_fails(env_file: Path):
    proc = compose_run(env_file, CORE_SPLIT + ["docker-compose.core.awslogs.yml"],
                       ["config", "-q"], AWS_REGION="eu-west-1")
    assert proc.returncode != 0 and "AWSLOGS_GROUP" in proc.stderr


def test_default_logging_is_rotated_json_file(env_file: Path):
    model = compose_json(env_file, CORE_SINGLE)
    for name, spec in model["services"].items():
        assert spec["logging"] == {"driver": "json-file",
                                   "options": {"max-size": "10m", "max-file": "5"}}, name


def test_logging_is_written_once_per_file():
    for path in COMPOSE.glob("docker-compose.*.yml"):
        if path.name.endswith(".awslogs.yml"):
            continue  # the override file: its own x-awslogs block, once
        text = path.read_text()
        assert text.count("max-size:") <= 1, f"{path.name}: logging options repeated"
        if "logging:" in text:
            assert "x-logging: &logging" in text, f"{path.name}: logging not from x-logging"


def test_jafar_services_scale(models: dict[str, dict]):
    """No container_name, no host port, the image from the registry and tag."""
    for name in ("core-split", "core-single"):
        services = models[name]["services"]
        for service in JAFAR_SERVICES:
            spec = services[service]
            assert "container_name" not in spec, f"{service} has a container_name"
            assert not spec.get("ports"), f"{service} has host ports"
            assert spec["image"] == f"{REGISTRY}/{service}:{TAG}"


def test_official_images_are_pinned_and_overridable(env_file: Path, models: dict[str, dict]):
    defaults = {"gateway": "nginx:1.27.3", "prometheus": "prom/prometheus:v2.55.1",
                "grafana": "grafana/grafana:11.3.1", "mongo-primary": "mongo:7.0.16",
                "mongo-secondary": "mongo:7.0.16", "mongo-arbiter": "mongo:7.0.16",
                "redis": "redis:7.2.7", "postgres-ledger": "postgres:15.10"}
    images = {**{s: v["image"] for s, v in models["core-split"]["services"].items()},
              **{s: v["image"] for s, v in models["data-single"]["services"].items()}}
    for service, image in defaults.items():
        assert images[service] == image
    data = compose_json(env_file, DATA_SINGLE, MONGO_IMAGE="reg.example/mongo:x",
                        REDIS_IMAGE="reg.example/redis:x", POSTGRES_IMAGE="reg.example/pg:x")
    assert data["services"]["mongo-arbiter"]["image"] == "reg.example/mongo:x"
    assert data["services"]["redis"]["image"] == "reg.example/redis:x"
    assert data["services"]["postgres-ledger"]["image"] == "reg.example/pg:x"
    core = compose_json(env_file, CORE_SPLIT, NGINX_IMAGE="reg.example/nginx:x",
                        PROMETHEUS_IMAGE="reg.example/prom:x", GRAFANA_IMAGE="reg.example/gf:x",
                        COMPOSE_PROFILES="grafana")
    assert core["services"]["gateway"]["image"] == "reg.example/nginx:x"
    assert core["services"]["prometheus"]["image"] == "reg.example/prom:x"
    assert core["services"]["grafana"]["image"] == "reg.example/gf:x"


def test_networks(models: dict[str, dict]):
    data = models["data-single"]
    assert data["networks"]["data"]["name"] == "jafar-data"
    assert data["networks"]["data"].get("internal") is True
    assert not models["data-split"]["networks"]["data"].get("internal"), \
        "split: Docker publishes no port of an internal network"
    for service, spec in data["services"].items():
        assert set(spec["networks"]) == {"data"}, f"{service}: {spec['networks']}"
    for name, with_data in (("core-split", False), ("core-single", True)):
        core = models[name]
        assert set(core["services"]["gateway"]["networks"]) == {"edge", "services"}
        assert set(core["services"]["prometheus"]["networks"]) == {"services"}
        for service in JAFAR_SERVICES:
            wanted = {"services", "data"} if with_data else {"services"}
            assert set(core["services"][service]["networks"]) == wanted, f"{name}/{service}"
    external = models["core-single"]["networks"]["data"]
    assert external.get("external") is True and external["name"] == "jafar-data"


def test_data_lives_in_named_volumes(models: dict[str, dict]):
    wanted = {"mongo-primary": {"/data/db", "/data/configdb"},
              "mongo-secondary": {"/data/db", "/data/configdb"},
              "mongo-arbiter": {"/data/db", "/data/configdb"},
              "redis": {"/data"}, "postgres-ledger": {"/var/lib/postgresql/data"}}
    model = models["data-single"]
    for service, targets in wanted.items():
        named = {v["target"] for v in model["services"][service].get("volumes") or []
                 if v["type"] == "volume" and v.get("source") in model["volumes"]}
        assert targets <= named, f"{service}: {targets - named} not in a named volume"


def test_a_stores_volume_in_the_catalogue_is_its_data_volume(models: dict[str, dict]):
    """What a restore empties (services.py's `volumes`) is every volume the store keeps."""
    from fabfile.services import SERVICES

    model = models["data-single"]
    stores = [s for s in SERVICES if s.volumes]
    assert {s.name for s in stores} == {"redis", "postgres-ledger", "mongo-primary",
                                        "mongo-secondary", "mongo-arbiter"}
    for s in stores:
        sources = {v.get("source") for v in model["services"][s.name]["volumes"]
                   if v["type"] == "volume"}
        assert sources == set(s.volumes), s.name


def test_depends_on_waits_for_health(models: dict[str, dict]):
    core = models["core-split"]["services"]
    gateway = core["gateway"]["depends_on"]
    assert set(gateway) == set(JAFAR_SERVICES)
    assert {d["condition"] for d in gateway.values()} == {"service_healthy"}
    assert core["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"


def test_each_container_gets_only_its_secrets(models: dict[str, dict]):
    """Least privilege: the gateway and Prometheus see no secret; the replica set key and the
    superuser passwords never reach a service. Secrets are files (Compose secrets): no
    container has a credential in its environment, only *_FILE paths."""
    services = {**models["core-split"]["services"], **models["data-single"]["services"]}

    def mounted(service: str) -> set[str]:
        return {s["source"] for s in services[service].get("secrets") or []}

    assert mounted("gateway") == {"gateway_tls_crt", "gateway_tls_key"}
    assert not mounted("prometheus")
    for secret, allowed in {
        "mongo_keyfile": {"mongo-primary", "mongo-secondary", "mongo-arbiter"},
        "mongo_root_password": {"mongo-primary"},
        "postgres_password": {"postgres-ledger"},
        "auth_jwt_secret": {"auth-service", "api-service"},
        "ledger_db_password": {"ledger-service", "postgres-ledger"},
        "grafana_admin_password": {"grafana"},
    }.items():
        holders = {s for s in services if secret in mounted(s)}
        assert holders == allowed, f"{secret} reaches {sorted(holders)}"
    for name, spec in services.items():
        for key, value in (spec.get("environment") or {}).items():
            if CREDENTIAL.search(key):
                assert key.endswith("_FILE") and str(value).startswith("/run/secrets/"), \
                    f"{name}: {key} is a credential in the environment"


def test_no_credential_is_interpolated_from_the_env_file():
    """Credentials never pass through `--env-file` interpolation: they are secret files."""
    for path in COMPOSE.glob("docker-compose.*.yml"):
        for match in re.finditer(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", path.read_text()):
            assert not CREDENTIAL.search(match.group(1)), f"{path.name}: ${{{match.group(1)}}}"


def test_the_mongo_image_gets_no_root_user_variable(models: dict[str, dict]):
    """The official mongo entrypoint passes MONGO_INITDB_ROOT_PASSWORD(_FILE)'s value to
    `jq --arg` (visible in ps): the root user is created by init-replica.sh instead."""
    for service in ("mongo-primary", "mongo-secondary", "mongo-arbiter"):
        env = models["data-single"]["services"][service].get("environment") or {}
        assert not [k for k in env if k.startswith("MONGO_INITDB_ROOT")], service


def test_every_secret_has_a_file_under_the_deploy_path(models: dict[str, dict]):
    for name, model in models.items():
        used = {s["source"] for spec in model["services"].values()
                for s in spec.get("secrets") or []}
        defined = model.get("secrets") or {}
        assert used <= set(defined), name
        for secret, spec in defined.items():
            assert spec["file"].endswith(f"/secrets/{secret}"), (name, secret)


def test_no_secret_on_a_command_line(models: dict[str, dict], env_values: dict[str, str]):
    """No secret value in any command, entrypoint or healthcheck (they are visible in ps)."""
    secrets = [v for k, v in env_values.items() if CREDENTIAL.search(k)]
    for name, model in models.items():
        for service, spec in model["services"].items():
            argv = " ".join([*(spec.get("command") or []), *(spec.get("entrypoint") or []),
                             *((spec.get("healthcheck") or {}).get("test") or [])])
            leaked = [s for s in secrets if s in argv]
            assert not leaked, f"{name}/{service}: a secret is on a command line"


def test_env_example_covers_every_variable():
    """Every variable the stacks read is in .env.ec2.example or set by the suite, and every
    key of the example is read by a stack or a script."""
    example = set(example_values())
    assert not example & SUITE_VARIABLES, "suite-provided variables belong in environments.yml"
    texts = {p.name: p.read_text() for p in COMPOSE.glob("docker-compose.*.yml")}
    used: set[str] = set()
    optional: set[str] = set()
    for text in texts.values():
        for match in re.finditer(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)(:?[-?])?", text):
            (optional if match.group(2) in (":-", "-") else used).add(match.group(1))
    unknown = used - example - SUITE_VARIABLES
    assert not unknown, f"read by compose but not in .env.ec2.example: {sorted(unknown)}"
    scripts = (ROOT / "scripts" / "init-replica.sh").read_text()
    secrets = {m.group(1).upper() for text in texts.values()
               for m in re.finditer(r"\.\./secrets/([a-z_]+)", text)}
    unused = {k for k in example if k not in used | secrets and k not in scripts}
    assert not unused, f"keys of .env.ec2.example nothing reads: {sorted(unused)}"
    from fabfile.alternating import DERIVED

    assert optional <= SUITE_VARIABLES | {"JAFAR_DATA_NETWORK", *DERIVED}, sorted(optional)


def test_the_suite_sets_exactly_the_variables_the_stacks_expect_from_it():
    from fabfile.commands.compose import suite_variables
    from fabfile.config import load_environment

    env = load_environment("prod", ROOT / "config" / "environments.yml")
    assert set(suite_variables(env)) <= SUITE_VARIABLES


def test_the_catalogue_matches_the_compose_files():
    """fabfile/services.py is the one place that knows the services: its memory limits and
    the stores each service uses must be what the compose files say."""
    from fabfile.services import SERVICES

    stacks = {name: yaml.safe_load((COMPOSE / f"docker-compose.{name}.yml").read_text())
              for name in ("data", "core")}
    for service in SERVICES:
        spec = stacks[service.stack]["services"][service.name]
        limit = spec["deploy"]["resources"]["limits"]["memory"]
        assert limit == f"{service.memory_mb}m" or limit == f"{service.memory_mb // 1024}g", \
            service.name
        env = spec.get("environment") or {}
        uses = {store for store, key in (("mongo", "MONGO_HOSTS"), ("redis", "REDIS_HOST"),
                                         ("postgres", "POSTGRES_HOST")) if key in env}
        assert uses == set(service.uses), service.name


def test_env_example_has_no_real_secret():
    for key, value in example_values().items():
        if CREDENTIAL.search(key):
            assert value == "", f"{key} must be empty in the example"


def test_every_container_has_memory_pids_and_cpu_limits(env_file: Path):
    """CIS Docker 5.10, 5.11, 5.28: memory, CPU shares and a PIDs limit on every service;
    MongoDB's and PostgreSQL's PIDs follow their connection limits (set by the suite)."""
    core = compose_json(env_file, CORE_SINGLE, COMPOSE_PROFILES="grafana")
    data = compose_json(env_file, DATA_SPLIT, DATA_BIND_ADDRESS=BIND, MONGO_PIDS_LIMIT="2256",
                        POSTGRES_PIDS_LIMIT="428")
    shares = {}
    for name, spec in {**core["services"], **data["services"]}.items():
        limits = spec["deploy"]["resources"]["limits"]
        assert limits["memory"] and int(limits["pids"]) > 0, name
        shares[name] = spec["cpu_shares"]
    assert data["services"]["mongo-primary"]["deploy"]["resources"]["limits"]["pids"] == 2256
    assert data["services"]["postgres-ledger"]["deploy"]["resources"]["limits"]["pids"] == 428
    assert shares["gateway"] == shares["postgres-ledger"] == 1024
    assert shares["api-service"] == 512 and shares["prometheus"] == shares["grafana"] == 256


def test_the_gateway_publishes_on_one_address_when_told(env_file: Path):
    def published(**extra: str) -> set[tuple[str, str]]:
        ports = compose_json(env_file, CORE_SINGLE, **extra)["services"]["gateway"]["ports"]
        return {(p.get("host_ip", "*"), p["published"]) for p in ports}

    assert published() == {("*", "80"), ("*", "443")}
    assert published(GATEWAY_BIND="10.0.1.11") == {("10.0.1.11", "80"), ("10.0.1.11", "443")}


def test_clustered_alertmanagers_gossip_on_the_private_address_only(env_file: Path, tmp_path):
    """Two core hosts or more: 9094 tcp and udp published on this host's private address only,
    and the entry point turns ALERTMANAGER_PEERS into one --cluster.peer each (run here with
    a stand-in `alertmanager` that prints its arguments)."""
    am = compose_json(env_file, CORE_CLUSTER, **CLUSTER)["services"]["alertmanager"]
    assert {(p["host_ip"], p["published"], p["protocol"]) for p in am["ports"]} == {
        ("10.0.1.11", "9094", "tcp"), ("10.0.1.11", "9094", "udp")}
    assert "--cluster.listen-address=0.0.0.0:9094" in am["command"]
    fake = tmp_path / "alertmanager"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    entrypoint = [a.replace("$$", "$") for a in am["entrypoint"]]  # what the container runs
    out = subprocess.run([*entrypoint, *am["command"]], capture_output=True, text=True,
                         env={"PATH": f"{tmp_path}:/usr/bin:/bin", **am["environment"]},
                         timeout=10, check=True).stdout.splitlines()
    assert out[:len(am["command"])] == am["command"]
    assert out[len(am["command"]):] == [
        "--cluster.peer=10.0.1.12:9094", "--cluster.peer=10.0.1.13:9094",
        "--cluster.advertise-address=10.0.1.11:9094"]
    single = compose_json(env_file, CORE_SINGLE)["services"]["alertmanager"]
    assert "--cluster.listen-address=" in single["command"] and "ports" not in single
