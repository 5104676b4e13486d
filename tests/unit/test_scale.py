"""inv scale: the spec, the room check, which replicas go, the counts kept on the hosts."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fabfile.commands import compose
from fabfile.errors import BadInput, StepFailed
from fabfile.ops import scale, state
from fabfile.ops.inventory import Container
from tests.conftest import shipped


@pytest.fixture
def sandbox():
    return shipped("sandbox")


@pytest.fixture
def prod():
    return shipped("prod")


@pytest.mark.parametrize("spec, expected", [
    ("api=3", {"api-service": 3}),
    ("api=3,wallet=2", {"api-service": 3, "wallet-service": 2}),
    ("ledger-service=1,risk=default", {"ledger-service": 1, "risk-service": None}),
    ("notification=10", {"notification-service": 10}),
    ("api=0", {"api-service": 0}),
])
def test_spec(spec, expected):
    assert scale.parse_spec(spec, 10) == expected


@pytest.mark.parametrize("spec, message", [
    ("api=abc", "scale: 'api=abc': the count must be a whole number from 1 to 10, or default"),
    ("api=-1", "scale: 'api=-1': the count must be a whole number from 1 to 10, or default"),
    ("api=1000000", "scale: api=1000000 is out of range; counts are 1 to 10 (max_replicas), "
                    "or 0 with --allow-zero"),
    ("api=11", "scale: api=11 is out of range"),
    ("mongo-primary=2", "scale: mongo-primary does not scale (only the seven jafar services "
                        "do); services: api, auth, wallet, transaction, ledger, notification, "
                        "risk"),
    ("gateway=2", "scale: gateway does not scale"),
    ("nosuch=2", "scale: unknown service 'nosuch'; services: api, auth"),
    ("api=3,api=4", "scale: api is given twice; give each service once"),
    ("api=3,api-service=4", "scale: api is given twice"),
    ("api = 3", "scale: 'api = 3' is not SERVICE=COUNT; use SERVICE=COUNT[,SERVICE=COUNT]"),
    ("", "scale: nothing to scale; use SERVICE=COUNT"),
    ("  ", "scale: nothing to scale"),
    ("api=3,", "scale: '' is not SERVICE=COUNT"),
    ("apі=3", r"scale: 'ap\u0456=3' is not SERVICE=COUNT"),
    ("api=3;reboot", "scale: 'api=3;reboot': the count must be a whole number"),
])
def test_bad_spec(spec, message):
    with pytest.raises(BadInput) as err:
        scale.parse_spec(spec, 10)
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


def counts(**changed):
    base = {s: 1 for s in ("api-service", "auth-service", "wallet-service",
                           "transaction-service", "ledger-service", "notification-service",
                           "risk-service")}
    return {**base, **changed}


def test_capacity_fits_on_the_sandbox(sandbox):
    assert scale.capacity(sandbox, "h", counts(**{"api-service": 10}), 24 * 1024 * 1024, 1) == []


def test_capacity_memory_counts_the_release_doubling(sandbox):
    # single topology: data (6656) + gateway 256 + prometheus 1024 + alertmanager 256 = 8192
    # MiB fixed; seven services at 1 = 3584; api at 3 adds 1024 and doubles 1536 on a release
    need = 8192 + 3584 + 1024 + 1536
    memory_kb = int(need / 0.9 * 1024) - 1024
    problems = scale.capacity(sandbox, "h1", counts(**{"api-service": 3}), memory_kb, 1)
    assert problems == [f"memory on h1: the containers' limits need {need} MiB with a "
                        f"release's doubling of the largest service (1536 MiB), but "
                        f"{int(memory_kb / 1024 * 0.9)} MiB is usable (90 % of "
                        f"{memory_kb // 1024} MiB)"]
    assert scale.capacity(sandbox, "h1", counts(**{"api-service": 3}), memory_kb + 2048, 1) == []


def test_capacity_postgres_connections_name_the_limit(sandbox):
    problems = scale.capacity(sandbox, "h", counts(**{"ledger-service": 10}), 10**9, 1)
    assert problems == ["postgres connections: (ledger 10) replicas x 1 core host(s) x pool 10 "
                        "= 100, plus 10 reserved, exceeds data_limits.postgres = 100"]
    assert scale.capacity(sandbox, "h", counts(**{"ledger-service": 9}), 10**9, 1) == []


def test_capacity_counts_every_core_host(prod):
    problems = scale.capacity(prod, "h", counts(**{"ledger-service": 5}), 10**9, 2)
    assert problems and problems[0].startswith("postgres connections: (ledger 5) replicas x 2 "
                                               "core host(s) x pool 10 = 100")
    def mongo(limit):
        env = replace(prod, data_limits={"mongo": limit, "redis": 1000, "postgres": 1000})
        return scale.capacity(env, "h", counts(), 10**9, 2)

    assert mongo(130) == []
    assert mongo(129) == ["mongo connections: (api 1 + auth 1 + wallet 1 + transaction 1 + "
                          "ledger 1 + risk 1) replicas x 2 core host(s) x pool 10 = 120, plus 10 "
                          "reserved, exceeds data_limits.mongo = 129"]


def container(service, number, health="healthy", state_="running", ip=None):
    return Container(service, number, f"id-{service}-{number}", f"jafar-core-{service}-{number}",
                     state_, health, "registry:5000/jafar/x:v1", "2026-11-29T03:00:00Z",
                     {"jafar-core_services": ip or f"172.20.0.{number + 10}"})


def test_victims_are_the_highest_replica_numbers():
    cs = [container("api-service", n) for n in (4, 1, 2)] + [container("wallet-service", 9)]
    assert [c.number for c in scale.victims(cs, "api-service", 1)] == [2, 4]
    assert scale.victims(cs, "api-service", 3) == []


def test_target_overrides():
    assert scale.target_overrides({"api-service": 3, "risk-service": 2},
                                  {"api-service": None, "wallet-service": 2}) == {
        "risk-service": 2, "wallet-service": 2}


def test_merge_takes_the_highest_and_says_so():
    merged, notes = state.merge({"core-1": {"api-service": 3}, "core-2": {"api-service": 2},
                                 "core-3": {}})
    assert merged == {"api-service": 3}
    assert notes == ["core hosts disagree on api-service (core-1: 3, core-2: 2, core-3: "
                     "default); using 3"]
    assert state.merge({"a": {"api-service": 2}, "b": {"api-service": 2}}) == (
        {"api-service": 2}, [])


def test_wanted_uses_the_default_without_an_override(sandbox):
    env = replace(sandbox, replicas=2)
    want = state.wanted(env, {"api-service": 5})
    assert want["api-service"] == 5 and want["wallet-service"] == 2 and len(want) == 7


@pytest.mark.parametrize("text", ["nope", '["api-service"]', '{"gateway": 2}',
                                  '{"api-service": "3"}', '{"api-service": -1}'])
def test_a_scale_file_the_suite_cannot_read_fails(text):
    with pytest.raises(StepFailed, match="h1: state/scale.json"):
        state.parse_overrides("h1", text)


def test_scale_up_and_remove_commands(sandbox):
    assert compose.scale_up(sandbox, "api-service", 3, 120).endswith(
        "-f compose/docker-compose.core.yml -f compose/docker-compose.core.single.yml up "
        "--detach --no-recreate --no-deps --wait --wait-timeout 120 --scale api-service=3 "
        "api-service")
    assert compose.remove(["a1", "b2"], 30) == ("docker stop --time 30 a1 b2 && docker rm a1 b2")
    assert compose.up(sandbox, "core", 60, {"api-service": 3, "risk-service": 1}).endswith(
        "up --detach --wait --wait-timeout 60 --scale api-service=3 --scale risk-service=1")


def test_state_encoding_is_stable():
    assert state.encode({"wallet-service": 2, "api-service": 3}) == (
        b'{\n  "api-service": 3,\n  "wallet-service": 2\n}\n')
    assert state.write_command(shipped("sandbox")) == (
        "umask 077 && mkdir -p /opt/jafar/state && cat > /opt/jafar/state/scale.json.jafar-tmp "
        "&& chmod 644 /opt/jafar/state/scale.json.jafar-tmp && mv -f "
        "/opt/jafar/state/scale.json.jafar-tmp /opt/jafar/state/scale.json")


def test_probe_is_parsed(sandbox):
    out = ("=== scale\n{\"api-service\": 3}\n=== release\nnull\n=== history\n[]\n"
           "=== containers\n"
           "api-service\t1\tabc\t/jafar-core-api-service-1\trunning\thealthy\treg/jafar/api-service"
           ":v1\t2026-11-29T03:00:00.123456789Z\t"
           "jafar-core_services=172.20.0.5 jafar-data=1.2.3.4 \n"
           "=== memory\n24000000\n")
    st = state.parse("h", out)
    assert st.overrides == {"api-service": 3} and st.memory_kb == 24000000
    assert st.release is None and st.history == [] and st.images == {}
    assert st.count("api-service") == 1 and st.containers[0].tag == "v1"
    assert st.containers[0].address("jafar-core_services") == "172.20.0.5"
