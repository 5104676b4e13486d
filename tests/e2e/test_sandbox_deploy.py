"""End to end: `inv sandbox.reset`, `inv deploy --host sandbox`, health, idempotence, a fault.

Drives everything through the real `inv` commands against the sandbox: test hosts booting
systemd with their own Docker daemon, images pulled from the registry standing in for ECR,
the MongoDB stand-in initiated by the project's own script with the real mongosh.
Resets the sandbox on this machine (its volumes and generated secrets are discarded).
"""

from __future__ import annotations

import json

import pytest
import requests

from tests.conftest import ROOT, run_inv
from tests.e2e.sandbox_helpers import HOST, inner

HTTPS = "https://127.0.0.1:8443"
CA = ROOT / ".sandbox" / "tls" / "tls.crt"
DEPENDENTS_OF_REDIS = {"auth-service", "api-service", "transaction-service",
                       "notification-service", "risk-service"}


def containers() -> dict[str, str]:
    """name -> 'id started-at' of every container on the test host."""
    ids = inner("ps", "--all", "--quiet", "--no-trunc").split()
    out = inner("inspect", "--format", "{{.Name}} {{.Id}} {{.State.StartedAt}}", *ids)
    return {line.split()[0]: " ".join(line.split()[1:]) for line in out.splitlines()}


@pytest.fixture(scope="module")
def deployed():
    reset = run_inv("sandbox.reset", timeout=1800)
    assert reset.returncode == 0, reset.stdout[-3000:] + reset.stderr[-3000:]
    first = run_inv("deploy", "--host", "sandbox", timeout=1500)
    assert first.returncode == 0, first.stdout[-5000:] + first.stderr[-3000:]
    return first


def test_sandbox_up_twice_gives_one_sandbox(deployed):
    again = run_inv("sandbox.up", timeout=900)
    assert again.returncode == 0, again.stderr
    assert f"[{HOST}] already running" in again.stdout
    assert "nothing to push" in again.stdout
    status = json.loads(run_inv("sandbox.status", "--json").stdout)
    assert [r["name"] for r in status] == [HOST, "jafar-sandbox-registry"]


def test_fresh_deploy_brings_everything_up(deployed):
    out = deployed.stdout
    assert "[jafar-sandbox-1] host.prepare: " in out and "created user deploy" in out
    assert "[jafar-sandbox-1] host.harden: " in out and "ufw enabled" in out
    assert "[jafar-sandbox-1] env.sync: uploaded /opt/jafar/.env.ec2 (0600)" in out
    assert "[jafar-sandbox-1] data.up: jafar-data: created or restarted" in out
    assert "[jafar-sandbox-1] replica.init: replica set rs0 initiated" in out
    assert "[jafar-sandbox-1] core.up: jafar-core: created or restarted" in out
    assert "[jafar-sandbox-1] health: all " in out


def test_health_is_all_green(deployed):
    r = run_inv("health", "--host", "sandbox", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["healthy"] is True
    services = {c["service"] for c in report["checks"]}
    assert {"mongo-primary", "redis", "postgres-ledger", "gateway", "api-service"} <= services
    assert all(c["http"] == "200" for c in report["checks"] if c["service"].endswith("-service"))


def test_gateway_answers_https_with_the_sandbox_certificate(deployed):
    resp = requests.get(f"{HTTPS}/health", verify=str(CA), timeout=5)
    assert resp.status_code == 200
    assert resp.headers["Strict-Transport-Security"].startswith("max-age=")
    plain = requests.get("http://127.0.0.1:8080/api/health", allow_redirects=False, timeout=5)
    assert plain.status_code == 301 and plain.headers["Location"].startswith("https://")


def test_secrets_never_reach_the_output(deployed):
    from fabfile import envfile

    secrets = [v for k, v in envfile.parse(ROOT / ".sandbox" / ".env.ec2").items()
               if envfile.CREDENTIAL_KEY.search(k)]
    assert secrets
    for value in secrets:
        assert value not in deployed.stdout + deployed.stderr


def test_second_deploy_changes_nothing(deployed):
    before = containers()
    second = run_inv("deploy", "--host", "sandbox", timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr
    for step in ("host.prepare", "host.harden", "env.sync", "files.sync", "data.up",
                 "replica.init", "core.up"):
        assert f"[{HOST}] {step}: nothing to do" in second.stdout, step
    assert containers() == before


def test_redis_down_is_named_with_its_dependents(deployed):
    inner("stop", "jafar-data-redis-1")
    try:
        r = run_inv("health", "--host", "sandbox")
        assert r.returncode == 1
        assert "unhealthy:" in r.stderr and "redis" in r.stderr
        for service in DEPENDENTS_OF_REDIS:
            assert service in r.stderr, service
        assert "ledger-service" not in r.stderr  # PostgreSQL only: not hurt by Redis
    finally:
        fix = run_inv("data.up", "--host", "sandbox", timeout=600)
    assert fix.returncode == 0, fix.stdout + fix.stderr
    assert "created or restarted jafar-data-redis-1" in fix.stdout
