"""Release drills on the shared sandbox, with the stand-in's released tags (v1, v2, broken,
slow, errors): v1 -> v2 of all seven services under load with 0 failed requests and every
acknowledged write stored; the same release again is nothing to do; a missing tag fails
before anything changes; a release whose second service never turns healthy undoes the first
(0 failed requests); a release whose new replicas answer 5xx under traffic is undone; a slow
start is waited for; the migration hook runs once, and its failure stops the release; a
rollback to v1 runs v1's bits by digest even after the v1 tag was moved in the registry.

The broken, errors and slow drills release fewer services than seven (api, wallet): the
mechanism per service is the same, and CI time is kept for one full release and one full
rollback. The sandbox is left on v1, as the deploy left it.
"""

from __future__ import annotations

import json
import subprocess

from tests.conftest import run_inv
from tests.e2e.sandbox_helpers import inner, sandbox_config
from tests.e2e.test_03_day2 import CA, GATEWAY, assert_no_secret, inv, trail_lines
from tests.support.load import Load

PREFIXES = ("/api/", "/auth/", "/wallet/", "/transactions/", "/ledger/", "/notifications/",
            "/risk/")
RATE = 6  # spread over seven routes: /auth/ gets under its own limit of 1 request/s
SERVICES = ("api-service", "auth-service", "wallet-service", "transaction-service",
            "ledger-service", "notification-service", "risk-service")
REGISTRY = "127.0.0.1:5000/jafar"


def versions() -> dict[str, set[str]]:
    """service -> the versions its replicas report in /health."""
    found: dict[str, set[str]] = {}
    for service in SERVICES:
        for cid in inner("ps", "--quiet", "--filter",
                         f"label=com.docker.compose.service={service}").split():
            body = inner("exec", cid, "wget", "-qO-", "http://127.0.0.1:3000/health")
            found.setdefault(service, set()).add(json.loads(body)["version"])
    return found


def counts(prefixes: tuple[str, ...]) -> dict[str, int]:
    import requests

    return {p: requests.get(f"{GATEWAY}{p}records/count", verify=str(CA), timeout=10)
            .json()["count"] for p in prefixes}


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True,
                          timeout=300).stdout


def push_as(source_tag: str, service: str, tag: str) -> None:
    """Make the registry serve `service:source_tag`'s bits as `service:tag`."""
    docker("tag", f"{REGISTRY}/{service}:{source_tag}", f"{REGISTRY}/{service}:{tag}")
    docker("push", "--quiet", f"{REGISTRY}/{service}:{tag}")


def releases() -> list[dict]:
    r = inv("releases", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def running() -> str:
    return next(h["tag"] for h in releases() if h["running"])


def test_release_v1_to_v2_under_load_drops_nothing(deployed):
    assert versions() == {s: {"v1"} for s in SERVICES}
    before = counts(PREFIXES)
    with Load(GATEWAY, str(CA), prefixes=PREFIXES, rate=RATE, max_requests=1500,
              max_seconds=150) as load:
        r = inv("release", "--tag", "v2", timeout=900)
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr
    report = load.report()
    print(report.summary())
    assert report.failed == 0, [f.describe() for f in report.failures]
    after = counts(PREFIXES)
    for prefix in PREFIXES:
        assert load.missing(prefix) == [], prefix
        assert after[prefix] - before[prefix] >= len(report.acknowledged[prefix]) > 0, prefix
    assert versions() == {s: {"v2"} for s in SERVICES}
    history = releases()
    assert (history[0]["tag"], history[0]["result"], history[0]["running"]) == ("v2", "ok", True)
    assert (history[1]["tag"], history[1]["result"], history[1]["running"]) == ("v1", "ok", False)
    assert all("@sha256:" in ref for ref in history[0]["images"].values())
    assert_no_secret(r.stdout + r.stderr)


def test_the_same_release_again_is_nothing_to_do(deployed):
    records = len(trail_lines())
    r = inv("release", "--tag", "v2")
    assert r.returncode == 0 and "nothing to do: release v2 already runs" in r.stdout
    assert len(trail_lines()) == records


def test_a_missing_tag_fails_before_anything_changes(deployed):
    r = inv("release", "--tag", "v9-missing")
    assert r.returncode == 1
    assert "pull failed, nothing changed: registry:5000/jafar/api-service:v9-missing on " \
           "jafar-sandbox-1" in r.stderr
    assert versions() == {s: {"v2"} for s in SERVICES}
    assert running() == "v2"


def test_a_release_that_never_turns_healthy_undoes_itself(deployed):
    # api-service's "mixed" is good (v2's bits), wallet-service's never turns healthy: api
    # rolls, wallet fails, api goes back
    push_as("v2", "api-service", "mixed")
    push_as("broken", "wallet-service", "mixed")
    with Load(GATEWAY, str(CA), prefixes=("/api/", "/wallet/"), rate=6, max_requests=800,
              max_seconds=120) as load:
        r = inv("release", "--tag", "mixed", "--services", "api,wallet", timeout=600)
    report = load.report()
    assert r.returncode == 1, r.stdout[-3000:]
    assert "release mixed failed and was undone: wallet-service on jafar-sandbox-1: new " \
           "replicas not healthy within 45s" in r.stderr
    assert "rolled back: api-service" in r.stdout
    assert report.failed == 0, [f.describe() for f in report.failures]
    assert versions()["api-service"] == {"v2"} and versions()["wallet-service"] == {"v2"}
    latest = releases()
    assert latest[0]["tag"] == "mixed" and latest[0]["result"] == "failed"
    assert running() == "v2"
    record = json.loads(trail_lines()[-1].split("\t")[0])
    assert record["task"] == "release" and record["result"] == "failed"


def test_a_release_failing_under_traffic_is_undone(deployed):
    with Load(GATEWAY, str(CA), prefixes=("/api/",), rate=8, max_requests=400,
              max_seconds=90) as load:
        r = inv("release", "--tag", "errors", "--services", "api", timeout=600)
    assert r.returncode == 1, r.stdout[-3000:]
    assert "api-service on jafar-sandbox-1: the gateway's 5xx rose" in r.stderr
    assert "routed back to the old ones and removed the new" in r.stderr
    assert versions()["api-service"] == {"v2"}
    # only the watch window can have failed requests (that is how the rise is seen)
    assert all(f.status == 500 for f in load.report().failures)


def test_a_slow_start_is_waited_for(deployed):
    r = inv("release", "--tag", "slow", "--services", "api", timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert versions()["api-service"] == {"slow"}


def test_the_migration_hook_runs_once_and_its_failure_stops_the_release(deployed, tmp_path):
    def with_hook(command: str) -> dict[str, str]:
        return sandbox_config(tmp_path, release={"before": command})

    failing = run_inv("release", "--tag", "slow", "--services", "ledger", "--host", "sandbox",
                      env=with_hook("ledger-service python3 -c 'raise SystemExit(3)'"),
                      timeout=600)
    assert failing.returncode == 1
    assert "the migration hook failed, nothing changed" in failing.stderr
    assert versions()["ledger-service"] == {"v2"}
    ok = run_inv("release", "--tag", "slow", "--services", "ledger", "--host", "sandbox",
                 env=with_hook("ledger-service python3 -c 'print(\"migrated\")'"), timeout=600)
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr
    assert "migration done: ledger-service" in ok.stdout
    assert versions()["ledger-service"] == {"slow"}


def test_rollback_returns_to_v1_by_digest_even_after_the_tag_moved(deployed):
    originals = {s: docker("image", "inspect", "--format", "{{.Id}}",
                           f"{REGISTRY}/{s}:v1").strip() for s in SERVICES}
    try:
        for service in SERVICES:  # the v1 tag now points at v2's bits
            push_as("v2", service, "v1")
        r = inv("rollback", "--to", "v1", timeout=900)
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr
    finally:
        for service, image in originals.items():
            docker("tag", image, f"{REGISTRY}/{service}:v1")
            docker("push", "--quiet", f"{REGISTRY}/{service}:v1")
    assert versions() == {s: {"v1"} for s in SERVICES}
    history = releases()
    assert history[0]["kind"] == "rollback" and history[0]["tag"] == "v1"
    assert history[0]["running"] and history[0]["result"] == "ok"
    assert any(h["result"] == "rolled back" for h in history)
    record = json.loads(trail_lines()[-1].split("\t")[0])
    assert record["task"] == "rollback" and record["tag"] == "v1" and record["result"] == "ok"
    records = len(trail_lines())
    again = inv("rollback", "--to", "v1")
    assert "nothing to do: release v1" in again.stdout
    assert len(trail_lines()) == records
