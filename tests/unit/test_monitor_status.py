"""monitor.status: the command sent to a core host, and reading Prometheus' answers."""

from __future__ import annotations

import json

import pytest

from fabfile.commands.monitor import prometheus_query
from fabfile.errors import StepFailed
from fabfile.monitor.status import as_json, check_host, merged, parse, problems, table
from fabfile.remote import Result
from tests.conftest import shipped

ENV = shipped("sandbox")
HOST = ENV.hosts[0]


def test_the_query_asks_prometheus_inside_its_container():
    assert prometheus_query("jafar-core") == "\n".join([
        "c=$(docker ps --quiet --filter label=com.docker.compose.project=jafar-core --filter "
        "label=com.docker.compose.service=prometheus | head -n 1)",
        '[ -n "$c" ] || { echo "no running prometheus container" >&2; exit 3; }',
        'out=$(docker exec "$c" wget -q -O - '
        "'http://127.0.0.1:9090/api/v1/targets?state=active') || exit 1",
        "printf 'T\\t%s\\n' \"$(printf '%s' \"$out\" | tr -d '\\n')\"",
        'out=$(docker exec "$c" wget -q -O - http://127.0.0.1:9090/api/v1/alerts) '
        "|| exit 1",
        "printf 'A\\t%s\\n' \"$(printf '%s' \"$out\" | tr -d '\\n')\"",
    ])


def answers(targets: list[dict], alerts: list[dict]) -> str:
    t = {"status": "success", "data": {"activeTargets": targets, "droppedTargets": []}}
    a = {"status": "success", "data": {"alerts": alerts}}
    return f"T\t{json.dumps(t)}\nA\t{json.dumps(a)}\n"


def target(job: str, instance: str, health: str = "up", service: str | None = None,
           error: str = "") -> dict:
    labels = {"job": job, "instance": instance, **({"service": service} if service else {})}
    return {"labels": labels, "health": health, "lastError": error, "scrapeUrl": "x"}


def alert(name: str, state: str, severity: str = "critical", **labels: str) -> dict:
    return {"labels": {"alertname": name, "severity": severity, **labels}, "state": state,
            "activeAt": "2026-12-02T10:00:00.123Z", "value": "0e+00"}


WATCHDOG = alert("Watchdog", "firing", "none")
ALL_UP = answers([target("prometheus", "127.0.0.1:9090"),
                  target("jafar", "172.20.0.5:3000", service="api-service"),
                  target("node", "host.docker.internal:9100")], [WATCHDOG])
WATCHDOG_LINE = ("watchdog: firing (the rules are evaluated; the dead-man's switch sees whether "
                 "its notifications arrive)")


def test_all_up_and_quiet():
    status = parse(HOST, ALL_UP)
    assert (len(status.targets), status.down, status.firing) == (3, [], [])
    assert table(status) == ["targets: 3, 0 down", "alerts: 0 firing, 0 pending", WATCHDOG_LINE]
    assert json.loads(as_json(status))["ok"] is True
    assert problems(status) == []


def test_a_prometheus_without_its_watchdog_is_a_problem():
    quiet = answers([target("prometheus", "127.0.0.1:9090")], [])
    status = parse(HOST, quiet)
    assert status.silent == [HOST.name] and status.firing == []
    assert table(status)[-1].startswith(f"watchdog: NOT firing on {HOST.name}: Prometheus")
    assert problems(status) == [f"no Watchdog on {HOST.name}"]
    assert json.loads(as_json(status))["ok"] is False
    pending = parse(HOST, answers([], [alert("Watchdog", "pending", "none")]))
    assert pending.silent == [HOST.name] and pending.alerts == []


def test_a_target_not_scraped_yet_is_not_down():
    fresh = answers([target("jafar", "172.20.0.9:3000", "unknown", service="api-service"),
                        target("node", "host.docker.internal:9100")], [WATCHDOG])
    status = parse(HOST, fresh)
    assert status.down == [] and json.loads(as_json(status))["ok"] is True
    assert table(status)[0] == "targets: 2, 0 down"


def test_a_target_down_and_an_alert_firing_come_first():
    out = answers(
        [target("jafar", "172.20.0.5:3000", service="api-service"),
         target("node", "host.docker.internal:9100", "down", error="connection refused")],
        [alert("DiskSpaceLow", "pending", "warning", mountpoint="/"),
         alert("ServiceDown", "firing", service="api-service", instance="172.20.0.5:3000"),
         WATCHDOG])
    status = parse(HOST, out)
    assert [t.instance for t in status.down] == ["host.docker.internal:9100"]
    assert [(a.name, a.state, a.subject) for a in status.alerts] == [
        ("ServiceDown", "firing", "api-service"), ("DiskSpaceLow", "pending", "/")]
    lines = table(status)
    assert lines[0] == "targets: 2, 1 down"
    assert lines[2].split() == [HOST.name, "node", "host.docker.internal:9100", "-", "down",
                                "connection", "refused"]
    assert lines[3] == "alerts: 1 firing, 1 pending"
    assert lines[5].split() == [HOST.name, "ServiceDown", "critical", "firing",
                                "2026-12-02T10:00:00", "api-service"]
    assert json.loads(as_json(status))["ok"] is False
    assert problems(status) == ["1 target(s) down", "firing: ServiceDown"]


def test_answers_that_are_not_prometheus_are_failures_not_silence():
    with pytest.raises(StepFailed, match="no answer from Prometheus' API"):
        parse(HOST, "")
    with pytest.raises(StepFailed, match="not JSON"):
        parse(HOST, "T\t<html>\nA\t{}\n")
    err = json.dumps({"status": "error", "error": "bad query"})
    with pytest.raises(StepFailed, match=r"answered an error \(bad query\)"):
        parse(HOST, f"T\t{err}\nA\t{err}\n")


class OneAnswer:
    def __init__(self, exited: int, stdout: str = "") -> None:
        self.result = Result("c", stdout, "", exited)

    def run(self, command: str, check: bool = True) -> Result:
        assert check is False
        return self.result


def test_no_prometheus_and_a_failed_api_are_named():
    with pytest.raises(StepFailed, match="no running Prometheus container"):
        check_host(ENV, HOST, OneAnswer(3))
    with pytest.raises(StepFailed, match=r"did not answer \(exit 1\)"):
        check_host(ENV, HOST, OneAnswer(1))
    assert check_host(ENV, HOST, OneAnswer(0, ALL_UP)).down == []


def test_several_core_hosts_are_merged():
    a, b = parse(HOST, ALL_UP), parse(HOST, ALL_UP)
    assert len(merged([a, b]).targets) == 6
    silent = parse(HOST, answers([], []))
    assert merged([a, silent]).silent == [HOST.name]
