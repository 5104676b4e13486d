"""Reading the health probe's output."""

from __future__ import annotations

import json

from fabfile.health import as_json, evaluate, table
from fabfile.services import stack_services
from tests.conftest import shipped

ENV = shipped("sandbox")
HOST = ENV.hosts[0]


def probe_output(redis_down: bool = False) -> str:
    lines = []
    for stack in ("data", "core"):
        for s in stack_services(stack, ENV):
            state = "exited" if redis_down and s.name == "redis" else "running"
            health = "unhealthy" if state == "exited" else "healthy"
            lines.append(f"C\t{s.name}\tjafar-{stack}-{s.name}-1\t{state}\t{health}")
            if s.health_port:
                body = {"status": "ok", "checks": {"redis": "ok"}}
                code = "200"
                if redis_down and s.name in ("auth-service", "api-service"):
                    body = {"status": "fail", "checks": {"redis": "connection refused",
                                                         "mongo": "ok"}}
                    code = "503"
                lines.append(f"H\tjafar-{stack}-{s.name}-1\t{json.dumps(body)}\t{code}")
    lines.append("G\t200")
    return "\n".join(lines) + "\n"


def test_all_healthy():
    checks = evaluate(ENV, HOST, probe_output())
    assert len(checks) == 15 and all(c.healthy for c in checks)
    assert {c.service: c.http for c in checks}["gateway"] == "200"
    assert json.loads(as_json(checks))["healthy"] is True


def test_redis_down_names_redis_and_its_dependents():
    checks = evaluate(ENV, HOST, probe_output(redis_down=True))
    bad = {c.service: c.detail for c in checks if not c.healthy}
    assert bad == {
        "redis": "container exited, health unhealthy",
        "auth-service": "/health 503: redis: connection refused",
        "api-service": "/health 503: redis: connection refused",
    }
    rendered = "\n".join(table(checks))
    assert "redis" in rendered and "NO" in rendered


def test_missing_services_and_gateway_failure_are_unhealthy():
    output = "C\tredis\tjafar-data-redis-1\trunning\thealthy\nG\t502\n"
    checks = {c.service: c for c in evaluate(ENV, HOST, output)}
    assert checks["redis"].healthy
    assert checks["mongo-primary"].state == "missing" and not checks["mongo-primary"].healthy
    assert "grafana" not in checks  # not enabled in the sandbox (no compose profile)


def test_gateway_https_health_is_checked():
    out = probe_output().replace("G\t200", "G\t000")
    gw = next(c for c in evaluate(ENV, HOST, out) if c.service == "gateway")
    assert not gw.healthy and gw.detail == "https /health 000"


def test_secrets_are_masked_in_every_form_and_before_any_cut():
    from fabfile.health import Check, as_json, masked
    from fabfile.remote import MASK, Masker

    secret = 'canary"pa\\ss/wörd+0123456789'
    mask = Masker([secret])
    import base64
    import json
    import urllib.parse

    body = (f"x {json.dumps(secret)} {urllib.parse.quote(secret, safe='')} "
            f"{base64.b64encode(secret.encode()).decode()} " + "y" * 100 + secret)
    check = Check("h", "api-service", "c1", "running", "healthy", "503", body, False)
    shown = masked([check], mask, width=60)[0]
    assert secret not in shown.detail and len(shown.detail) <= 60
    out = as_json(masked([check], mask))
    assert "canary" not in out and "pa\\\\ss" not in out
    assert out.count(MASK) >= 4


class ProbeRemote:
    """Answers the health probe with the given outputs, one per call, and counts the calls."""

    def __init__(self, *outputs: str) -> None:
        self.outputs = list(outputs)
        self.calls = 0

    def run(self, command: str):
        from types import SimpleNamespace

        self.calls += 1
        return SimpleNamespace(stdout=self.outputs.pop(0))


def test_the_deploy_gate_probes_again_before_it_fails(monkeypatch):
    import pytest

    from fabfile import health
    from fabfile.errors import StepFailed

    pauses = []
    monkeypatch.setattr(health.time, "sleep", pauses.append)
    slow_once = ProbeRemote(probe_output(redis_down=True), probe_output())
    outcome = health.apply(ENV, HOST, slow_once)
    assert (slow_once.calls, pauses) == (2, [health.PROBE_PAUSE_S])
    assert outcome.message == "all 15 containers healthy on probe 2 of 3 (read-only check)"

    pauses.clear()
    down = ProbeRemote(*[probe_output(redis_down=True)] * 3)
    with pytest.raises(StepFailed) as failed:
        health.apply(ENV, HOST, down)
    assert (down.calls, len(pauses)) == (3, 2)
    assert str(failed.value).startswith(f"{HOST.name}: unhealthy on 3 probes 2s apart: ")
    assert "auth-service (/health 503: redis: connection refused)" in str(failed.value)

    pauses.clear()
    healthy = ProbeRemote(probe_output())
    assert health.apply(ENV, HOST, healthy).message == "all 15 containers healthy (read-only check)"
    assert (healthy.calls, pauses) == (1, [])
