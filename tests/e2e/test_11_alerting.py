"""Alerts reach someone: the sandbox core host's Prometheus fires, its Alertmanager routes, and
the alert receiver (the stand-in for the on-call endpoints, run by sandbox.up on the sandbox
network) records what arrives. The Watchdog reaches the dead-man's switch; a stopped Redis
pages within its rule's `for` plus a scrape and an evaluation; an alerting change is read by
the running Alertmanager without a restart."""

from __future__ import annotations

import json
import time
import urllib.request

from fabfile.commands.sandbox import RECEIVER_PORT
from tests.conftest import run_inv
from tests.e2e.sandbox_helpers import inner, sandbox_config

RECEIVER = f"http://127.0.0.1:{RECEIVER_PORT}"
REDIS = "jafar-data-redis-1"
# config/prometheus: scrape and evaluation every 15 s; DataStoreDown's `for`; the sandbox's
# group_wait (config/environments.yml)
SCRAPE_S, EVALUATION_S, FOR_S, GROUP_WAIT_S = 15, 15, 60, 1


def received(name: str) -> list[dict]:
    with urllib.request.urlopen(f"{RECEIVER}/received/{name}", timeout=5) as resp:  # noqa: S310
        return json.loads(resp.read())


def alerts_at(name: str, alertname: str, since: float, **labels: str) -> list[dict]:
    """The firing alerts of that name (and labels) the receiver got after `since`."""
    return [a for p in received(name) if p["received_at"] >= since
            for a in p["alerts"] if a["status"] == "firing"
            and a["labels"].get("alertname") == alertname
            and all(a["labels"].get(k) == v for k, v in labels.items())]


def wait_until(what: str, probe, timeout: float, every: float = 1.0):
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / every) + 1):
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            break
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f}s")


def alertmanager() -> str:
    return inner("ps", "--quiet", "--filter", "label=com.docker.compose.service=alertmanager",
                 "--filter", "label=com.docker.compose.project=jafar-core").strip()


def test_the_watchdog_reaches_the_dead_mans_switch(deployed):
    found = wait_until("Watchdog at the receiver's /watchdog",
                       lambda: alerts_at("watchdog", "Watchdog", 0), timeout=120)
    assert found[0]["labels"]["severity"] == "none"
    assert alerts_at("page", "Watchdog", 0) == []  # never to the pager
    status = run_inv("monitor.status", "--host", "sandbox", "--json")
    answer = json.loads(status.stdout)
    assert answer["watchdog_silent"] == [] and "Watchdog" not in {
        a["name"] for a in answer["alerts"]}, answer


def test_an_alerting_change_is_read_by_the_running_alertmanager(deployed, tmp_path):
    container = alertmanager()
    started = inner("inspect", "--format", "{{.State.StartedAt}}", container)
    extra = "http://172.30.99.5:9095/page-two"
    changed = sandbox_config(tmp_path, alerting={
        "webhooks": ["http://172.30.99.5:9095/page", extra]})
    try:
        sync = run_inv("deploy", "--host", "sandbox", "--only", "files.sync", env=changed,
                       timeout=300)
        assert sync.returncode == 0, sync.stdout + sync.stderr
        assert "alertmanager.yml; reloaded alertmanager" in sync.stdout, sync.stdout

        def loaded() -> bool:
            answer = inner("exec", container, "wget", "-q", "-O", "-",
                           "http://127.0.0.1:9093/api/v2/status")
            return extra in json.loads(answer)["config"]["original"]
        wait_until("the new receiver in Alertmanager's loaded config", loaded, timeout=30)
        assert inner("inspect", "--format", "{{.State.StartedAt}}", container) == started
    finally:
        back = run_inv("deploy", "--host", "sandbox", "--only", "files.sync", timeout=300)
        assert back.returncode == 0 and "reloaded alertmanager" in back.stdout, back.stdout


def test_a_stopped_redis_pages_within_its_rules_for(deployed):
    bound = FOR_S + SCRAPE_S + EVALUATION_S + GROUP_WAIT_S + 10  # 10 s: delivery, a busy CI
    stopped = time.time()
    inner("stop", REDIS)
    try:
        found = wait_until("DataStoreDown{dependency=redis} at the receiver's /page",
                           lambda: alerts_at("page", "DataStoreDown", stopped,
                                             dependency="redis"), timeout=bound + 60)
        first = min(p["received_at"] for p in received("page") if p["received_at"] >= stopped
                    and any(a["labels"].get("alertname") == "DataStoreDown"
                            for a in p["alerts"]))
        took = first - stopped
        print(f"alert drill: Redis stopped, DataStoreDown paged after {took:.0f}s "
              f"(bound {bound}s: for {FOR_S}s + scrape + evaluation + group_wait)")
        assert took <= bound, took
        assert found[0]["labels"]["severity"] == "critical"
        status = run_inv("monitor.status", "--host", "sandbox")
        assert status.returncode == 1, status.stdout + status.stderr
        assert "DataStoreDown" in status.stderr and "DataStoreDown" in status.stdout
    finally:
        inner("start", REDIS)
    health = wait_until("health again after Redis is back", lambda: run_inv(
        "health", "--host", "sandbox", timeout=120).returncode == 0, timeout=180, every=5)
    assert health
