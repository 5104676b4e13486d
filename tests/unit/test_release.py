"""Releases: the tag and services given, pinning by digest, the commands of each phase, the
5xx comparison, which release a rollback goes to, and how the history is written."""

from __future__ import annotations

import json

import pytest

from fabfile.commands import compose, release
from fabfile.errors import BadInput, StepFailed
from fabfile.ops import release as ops
from fabfile.ops import rolling, state
from fabfile.ops.state import CoreState, Release
from tests.conftest import shipped
from tests.unit.test_scale import container

DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def sandbox():
    return shipped("sandbox")


@pytest.mark.parametrize("tag", ["v1.4.2", "v2", "2026.11.0", "release_7", "A" * 128])
def test_docker_tags_are_accepted(tag):
    assert ops.parse_tag(tag) == tag


@pytest.mark.parametrize("tag, shown", [
    ("v1;reboot", "'v1;reboot'"), (".v1", "'.v1'"), ("-v1", "'-v1'"), ("v1\n", "'v1\\n'"),
    ("v 1", "'v 1'"), ("vé", "'v\\xe9'"), ("A" * 129, repr("A" * 60)),
])
def test_bad_tags_are_bad_input(tag, shown):
    with pytest.raises(BadInput) as err:
        ops.parse_tag(tag)
    assert str(err.value).startswith(f"release: --tag {shown} is not a Docker tag")


def test_a_tag_is_required():
    with pytest.raises(BadInput, match="--tag is required"):
        ops.parse_tag(None)


def test_services_follow_the_release_order(sandbox):
    assert ops.parse_services(sandbox, None) == [
        "api-service", "auth-service", "wallet-service", "transaction-service",
        "ledger-service", "notification-service", "risk-service"]
    assert ops.parse_services(sandbox, "ledger,api") == ["api-service", "ledger-service"]
    with pytest.raises(BadInput, match="--services: unknown service 'gateway'"):
        ops.parse_services(sandbox, "api,gateway")


def test_pull_pins_by_digest_and_names_failures():
    refs = {"api-service": "registry:5000/jafar/api-service:v2"}
    out = (f"OK\tregistry:5000/jafar/api-service:v2\tother/api@sha256:00 "
           f"registry:5000/jafar/api-service@{DIGEST} \n")
    assert ops.pinned(out, refs) == {"api-service": f"registry:5000/jafar/api-service:v2@{DIGEST}"}
    with pytest.raises(StepFailed, match="no registry digest for"):
        ops.pinned("OK\tregistry:5000/jafar/api-service:v2\t\n", refs)
    assert ops.pull_failures("core-1", "FAIL\tr/api:v9\tmanifest unknown\nOK\tx\ty\n") == [
        "r/api:v9 on core-1: manifest unknown"]


def test_pull_command():
    assert release.pull(["r/a:v2"]) == (
        "sh -c 'rc=0; for ref in \"$@\"; do if err=$(docker pull --quiet \"$ref\" 2>&1 "
        ">/dev/null); then printf \"OK\\t%s\\t%s\\n\" \"$ref\" \"$(docker image inspect "
        "--format '\"'\"'{{range .RepoDigests}}{{.}} {{end}}'\"'\"' \"$ref\")\"; else printf "
        "\"FAIL\\t%s\\t%s\\n\" \"$ref\" \"$(printf %s \"$err\" | tail -n 1)\"; rc=1; fi; done; "
        "exit $rc' pull r/a:v2")


def test_migration_runs_once_with_the_new_image(sandbox):
    images = {"ledger-service": f"registry:5000/jafar/ledger-service:v2@{DIGEST}"}
    command = release.migrate(sandbox, images, "ledger-service", "npm run migrate")
    assert f"JAFAR_IMAGE_LEDGER_SERVICE=registry:5000/jafar/ledger-service:v2@{DIGEST}" in command
    assert command.endswith("run --rm --no-deps -T ledger-service npm run migrate")


def test_gateway_log_and_health_log_commands():
    assert release.gateway_log("jafar-core", 1700000000) == (
        "gw=$(docker ps --quiet --filter label=com.docker.compose.project=jafar-core --filter "
        "label=com.docker.compose.service=gateway --filter status=running | head -n 1); "
        '[ -z "$gw" ] || docker logs --since 1700000000 "$gw" 2>/dev/null')
    assert release.health_log("abc") == (
        "docker inspect --format '{{range .State.Health.Log}}{{.Output}}{{end}}' abc 2>&1 | "
        "tail -n 3; docker logs --tail 5 abc 2>&1")


def test_images_are_pinned_through_compose_variables(sandbox):
    pinned = {"api-service": f"r/api-service:v2@{DIGEST}"}
    assert compose.suite_variables(sandbox, pinned)["JAFAR_IMAGE_API_SERVICE"] == \
        f"r/api-service:v2@{DIGEST}"
    assert "JAFAR_IMAGE_API_SERVICE" not in compose.suite_variables(sandbox)
    assert container("api-service", 1).tag == "v1"
    assert container("api-service", 1).__class__(
        "api-service", 1, "i", "n", "running", "healthy", f"r:5000/j/api-service:v2@{DIGEST}",
        "", {}).tag == "v2"


def log_line(addr: str, status: int) -> str:
    return json.dumps({"upstream_addr": f"{addr}:3000", "upstream_status": str(status),
                       "status": status})


def test_the_5xx_of_new_and_old_replicas_are_compared():
    log = "\n".join([log_line("10.0.0.5", 200), log_line("10.0.0.5", 500),
                     log_line("10.0.0.6", 200), log_line("10.0.0.6", 200), "not json",
                     json.dumps({"upstream_addr": "10.0.0.9:3000, 10.0.0.5:3000",
                                 "upstream_status": "502, 503"})])
    new = rolling.answers(log, {"10.0.0.5"})
    old = rolling.answers(log, {"10.0.0.6"})
    assert (new.total, new.errors, old.total, old.errors) == (3, 2, 2, 0)
    assert rolling.worse(new, old) is True
    assert rolling.worse(rolling.Answers(10, 1), rolling.Answers(10, 1)) is False
    assert rolling.worse(rolling.Answers(0, 0), rolling.Answers(5, 0)) is False


def entry(id_, tag, result="ok", kind="release", digest="1"):
    return Release(id_, tag, {"api-service": f"r/api-service:{tag}@sha256:{digest * 64}"}, kind,
                   ("api-service",), "", "", "alice", result)


def host_state(history, running):
    return CoreState("h1", {}, running, history, [], 0)


def test_rollback_goes_to_the_previous_successful_release():
    history = [entry(1, "v1", kind="initial", digest="1"), entry(2, "v2", digest="2"),
               entry(3, "v3", "failed", digest="3"), entry(4, "v4", digest="4")]
    assert ops.rollback_target(host_state(history, history[3]), None).tag == "v2"
    assert ops.rollback_target(host_state(history, history[3]), "v1").id == 1
    with pytest.raises(StepFailed, match="history has no successful release v3"):
        ops.rollback_target(host_state(history, history[3]), "v3")
    with pytest.raises(StepFailed, match="history has no earlier successful release"):
        ops.rollback_target(host_state(history[:1], history[0]), None)


def test_a_rollback_marks_the_release_it_leaves():
    history = [entry(1, "v1"), entry(2, "v2")]
    current = host_state(history, history[1])
    back = entry(0, "v1", kind="rollback")
    assert [r.result for r in ops.left_behind(current, back)] == ["ok", "rolled back"]
    assert [r.result for r in ops.left_behind(current, entry(0, "v3"))] == ["ok", "ok"]
    assert ops.next_id(current) == 3


def test_release_records_round_trip_through_json():
    r = entry(2, "v2")
    assert Release.from_dict(json.loads(state.encode(r.as_dict()))) == r
    with pytest.raises(StepFailed, match="state/release.json is not a release record"):
        state.parse_release("h1", '{"tag": "v1"}')
    with pytest.raises(StepFailed, match="state/releases.json is not a release history"):
        state.parse_history("h1", "{}")
