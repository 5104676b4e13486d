"""End to end: `inv sandbox.reset`, `inv deploy --host sandbox`, health, idempotence, a fault.

Drives everything through the real `inv` commands against the sandbox: test hosts booting
systemd with their own Docker daemon, images pulled from the registry standing in for ECR,
the MongoDB stand-in initiated by the project's own script with the real mongosh.
The deploy is the session's shared one (tests/e2e/conftest.py).
"""

from __future__ import annotations

import json

import pytest
import requests

from tests.conftest import ROOT, run_inv
from tests.e2e.sandbox_helpers import HOST, inner, on_host

HTTPS = "https://127.0.0.1:8443"
CA = ROOT / ".sandbox" / "tls" / "tls.crt"
DEPENDENTS_OF_REDIS = {"auth-service", "api-service", "transaction-service",
                       "notification-service", "risk-service"}


def containers() -> dict[str, str]:
    """name -> 'id started-at' of every container on the test host."""
    ids = inner("ps", "--all", "--quiet", "--no-trunc").split()
    out = inner("inspect", "--format", "{{.Name}} {{.Id}} {{.State.StartedAt}}", *ids)
    return {line.split()[0]: " ".join(line.split()[1:]) for line in out.splitlines()}


def test_sandbox_up_twice_gives_one_sandbox(deployed):
    again = run_inv("sandbox.up", timeout=900)
    assert again.returncode == 0, again.stderr
    assert f"[{HOST}] already running" in again.stdout
    assert "[jafar-sandbox-alert-receiver] already running" in again.stdout
    assert "nothing to push" in again.stdout
    status = json.loads(run_inv("sandbox.status", "--json").stdout)
    assert [r["name"] for r in status] == [HOST, "jafar-sandbox-alert-receiver",
                                           "jafar-sandbox-registry"]


def test_fresh_deploy_brings_everything_up(deployed):
    out = deployed.stdout
    assert "[jafar-sandbox-1] host.prepare: " in out and "created user deploy" in out
    assert "[jafar-sandbox-1] host.harden: " in out and "ufw enabled" in out
    assert "[jafar-sandbox-1] env.sync: uploaded .env.ec2 (0600), secrets/" in out
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


def test_no_secret_in_docker_inspect_config_files_or_any_command_line(deployed):
    """Secrets are files under /run/secrets: not in any container's environment (docker
    inspect), not in the engine's stored container configs (and so not in a volume snapshot),
    not in the host's .env.ec2, and on no command line during the fresh deploy."""
    from fabfile import envfile

    secrets = [v for k, v in envfile.parse(ROOT / ".sandbox" / ".env.ec2").items()
               if envfile.CREDENTIAL_KEY.search(k)]
    ids = inner("ps", "--all", "--quiet").split()
    inspected = inner("inspect", *ids)
    configs = on_host("sh", "-c", "cat /var/lib/docker/containers/*/config.v2.json").stdout
    settings = on_host("cat", "/opt/jafar/.env.ec2").stdout
    assert len(ids) == 15 and '"/run/secrets/' in inspected
    snapshots = deployed.ps_snapshots
    assert len(snapshots) > 20 and any("mongod" in snap for snap in snapshots)
    for value in secrets:
        assert value not in inspected and value not in configs and value not in settings
        assert not [snap for snap in snapshots if value in snap]
    readers = on_host("getfacl", "-cp", "/opt/jafar/secrets/mongo_keyfile").stdout.split()
    assert readers == ["user::r--", "user:999:r--", "group::---", "mask::r--", "other::---"]


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


def test_the_gateway_answers_only_its_own_names_with_few_capabilities(deployed):
    """Real requests to the sandbox gateway: a Host it does not serve is closed without an
    answer (except /health), credentials in the URL and percent-encoded parameter names are
    refused, a client's X-Forwarded-For is not believed (only trusted_proxies'), and nginx
    runs with every capability dropped but the five it needs."""
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{HTTPS}/api/records/count", headers={"Host": "evil.example"},
                     verify=str(CA), timeout=5)
    assert requests.get(f"{HTTPS}/health", headers={"Host": "10.1.2.3"}, verify=str(CA),
                        timeout=5).status_code == 200
    for query in ("access_token=x", "acc%65ss_token=x"):
        r = requests.get(f"{HTTPS}/api/records/count?{query}", verify=str(CA), timeout=5)
        assert r.status_code == 400, query
    requests.get(f"{HTTPS}/api/records/count", headers={
        "X-Forwarded-For": "203.0.113.99", "X-Request-ID": "req-e2e-xff-0001"},
        verify=str(CA), timeout=5)
    log = inner("logs", "--since", "2m", "jafar-core-gateway-1")
    entry = next(json.loads(line) for line in log.splitlines()
                 if "req-e2e-xff-0001" in line and line.startswith("{"))
    assert entry["remote_addr"] != "203.0.113.99"
    caps = inner("inspect", "--format", "{{.HostConfig.CapDrop}} {{.HostConfig.CapAdd}}",
                 "jafar-core-gateway-1").strip()
    assert caps == "[ALL] [CAP_CHOWN CAP_KILL CAP_NET_BIND_SERVICE CAP_SETGID CAP_SETUID]"
