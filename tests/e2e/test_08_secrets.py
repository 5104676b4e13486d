"""The env file's values from AWS Secrets Manager, on the shared sandbox, with moto (the AWS
stand-in, in server mode on loopback) answering real boto3 calls.

The sandbox environment, with `aws: {endpoint_url: moto}` and `secrets: {manager:
jafar/sandbox}` added, is given the sandbox's own values in the store; then:
- env.sync builds each host's files from the store in memory: a value changed in the store lands
  on the host, and no plaintext copy appears on this machine;
- a rotation of the Redis, ledger (PostgreSQL) and MongoDB application passwords and of the
  JWT key under load fails no request and loses no acknowledged write; afterwards each server
  refuses the old value, a token issued before is still accepted (the key set), the store
  keeps the old values as AWSPREVIOUS, the services are healthy and the audit trail names the
  rotation but holds no value;
- a fault injected half way (a host whose secret file cannot be replaced) reverts everything.
At the end the sandbox's local env file gets the rotated values (secrets.pull), so the shared
sandbox stays consistent for the drills after this one."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
import requests

from fabfile import keyset
from fabfile.alternating import twin
from fabfile.aws.network import tcp
from tests.conftest import ROOT, run_inv
from tests.e2e.sandbox_helpers import inner, on_host, sandbox_config
from tests.e2e.test_03_day2 import CA, GATEWAY
from tests.e2e.test_06_data_tls import service_failures
from tests.support import moto_server
from tests.support.load import Load

LOCAL = ROOT / ".sandbox" / ".env.ec2"
SECRET = "jafar/sandbox"
PREFIXES = ("/api/", "/ledger/", "/notifications/")   # MongoDB, PostgreSQL, Redis
# (MONGO_BACKUP_PASSWORD: no service reads it; test_10_backup's mongodump then logs in as the
# twin user with the new password)
ROTATED = ("REDIS_PASSWORD", "LEDGER_DB_PASSWORD", "MONGO_APP_PASSWORD", "MONGO_BACKUP_PASSWORD",
           "AUTH_JWT_SECRET")
ALARM_TOPIC = "arn:aws:sns:eu-west-1:123456789012:jafar-sandbox-alarms"


@pytest.fixture(scope="module")
def store(deployed, tmp_path_factory):
    """moto, and an environments file whose sandbox keeps its values in it."""
    with moto_server.running() as endpoint:
        config = sandbox_config(
            tmp_path_factory.mktemp("aws"),
            aws={"region": "eu-west-1", "endpoint_url": endpoint, "alarm_topic": ALARM_TOPIC},
            secrets={"manager": SECRET})
        extra = {**moto_server.CREDENTIALS, **config}
        pushed = run_inv("secrets.push", "--host", "sandbox", "--from", str(LOCAL), "--yes",
                         env=extra)
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
        yield endpoint, extra
        pulled = run_inv("secrets.pull", "--host", "sandbox", "--out", str(LOCAL), "--force",
                         env=extra)
        assert pulled.returncode == 0, pulled.stdout + pulled.stderr


def inv(extra: dict[str, str], *args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return run_inv(*args, "--host", "sandbox", env=extra, timeout=timeout)


def current(endpoint: str) -> dict[str, str]:
    sm = moto_server.client(endpoint, "secretsmanager")
    return json.loads(sm.get_secret_value(SecretId=SECRET, VersionStage="AWSCURRENT")
                      ["SecretString"])


def previous(endpoint: str) -> dict[str, str]:
    sm = moto_server.client(endpoint, "secretsmanager")
    return json.loads(sm.get_secret_value(SecretId=SECRET, VersionStage="AWSPREVIOUS")
                      ["SecretString"])


def put(endpoint: str, values: dict[str, str]) -> None:
    moto_server.client(endpoint, "secretsmanager").put_secret_value(
        SecretId=SECRET, SecretString=json.dumps(values))


def kid(key: str) -> str:
    """The stand-in's key id: the first 16 hex characters of the key's SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def token() -> dict[str, str]:
    """A token from auth-service, through the gateway."""
    answer = requests.post(f"{GATEWAY}/auth/token", json={"sub": "e2e-user"}, verify=str(CA),
                           timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def me(signed: str) -> tuple[int, dict[str, str]]:
    """What api-service makes of a token, through the gateway."""
    answer = requests.get(f"{GATEWAY}/api/me", headers={"Authorization": f"Bearer {signed}"},
                          verify=str(CA), timeout=10)
    return answer.status_code, answer.json()


def host_file(name: str) -> str:
    return on_host("cat", f"/opt/jafar/secrets/{name}").stdout


def files_holding(value: str, *folders: Path) -> list[str]:
    found = subprocess.run(["grep", "-rlsF", "--exclude-dir=.venv", "--exclude-dir=.git", value,
                            *map(str, folders)], capture_output=True, text=True, timeout=300)
    return found.stdout.split()


def container(service: str) -> str:
    return inner("ps", "--quiet", "--filter", f"label=com.docker.compose.service={service}"
                 ).split()[0]


def redis_answer(password: str) -> str:
    """AUTH as the default user, from inside the redis container (password on stdin)."""
    return subprocess.run(
        ["docker", "exec", "-i", "jafar-sandbox-1", "docker", "exec", "-i", container("redis"),
         "redis-cli", "--no-auth-warning", "--tls", "--cacert", "/run/secrets/data_ca_crt",
         "-h", "127.0.0.1", "-p", "6379"], input=f"AUTH {password}\n", capture_output=True,
        text=True, timeout=60).stdout.strip()


def postgres_login(user: str, password: str) -> bool:
    proc = subprocess.run(
        ["docker", "exec", "-i", "jafar-sandbox-1", "docker", "exec", "-i",
         container("postgres-ledger"), "sh", "-c", 'IFS= read -r PGPASSWORD; export PGPASSWORD; '
         'exec psql "host=127.0.0.1 sslmode=require dbname=ledger user=$1" -Atc "select 1"',
         "login", user], input=f"{password}\n", capture_output=True, text=True, timeout=60)
    return proc.returncode == 0


def mongo_login(user: str, password: str) -> bool:
    """mongosh's own prompt-less login: the password reaches it on stdin, through a file."""
    script = ("const fs = require('fs'); const pw = fs.readFileSync('/dev/stdin', 'utf8')"
              ".trim(); try { db.getSiblingDB('jafar').auth(process.env.U, pw); print('in'); }"
              " catch (e) { print('refused'); }")
    proc = subprocess.run(
        ["docker", "exec", "-i", "jafar-sandbox-1", "docker", "exec", "-i", "-e", f"U={user}",
         "-e", "HOME=/tmp", container("mongo-primary"), "mongosh", "--quiet", "--norc", "--tls",
         "--tlsCAFile", "/run/secrets/data_ca_crt", "--host", "localhost", "--eval", script],
        input=password, capture_output=True, text=True, timeout=120)
    return proc.stdout.strip().splitlines()[-1:] == ["in"]


def test_env_sync_takes_the_values_from_the_store_and_writes_no_local_copy(store):
    endpoint, extra = store
    same = inv(extra, "env.sync")
    assert same.returncode == 0 and "nothing to do" in same.stdout, same.stdout + same.stderr
    values = current(endpoint)
    canary = "storecanary" + "7f3e91b2c4d5a6e8f0"
    # the superuser's password is read at PostgreSQL's first start only: no service notices
    put(endpoint, {**values, "POSTGRES_PASSWORD": canary})
    try:
        changed = inv(extra, "env.sync")
        assert changed.returncode == 0, changed.stdout + changed.stderr
        assert "secrets/postgres_password (0440)" in changed.stdout
        assert canary not in changed.stdout + changed.stderr
        assert host_file("postgres_password") == canary
        assert files_holding(canary, ROOT, Path("/tmp")) == []
    finally:
        put(endpoint, values)
        assert inv(extra, "env.sync").returncode == 0
    assert host_file("postgres_password") == values["POSTGRES_PASSWORD"]


def test_a_rotation_under_load_fails_no_request_and_revokes_the_old_values(store):
    endpoint, extra = store
    before = current(endpoint)
    issued = token()
    assert issued["kid"] == kid(keyset.keys(before["AUTH_JWT_SECRET"])[0])
    with Load(GATEWAY, str(CA), prefixes=PREFIXES, rate=6, max_requests=2000,
              max_seconds=420) as load:
        r = inv(extra, "secrets.rotate", ",".join(ROTATED), "--yes")
        assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-2000:]
    report = load.report()
    print(report.summary())
    assert report.failed == 0, ([f.describe() for f in report.failures] + service_failures()
                                + r.stdout.splitlines()[-40:])
    for prefix in PREFIXES:
        assert load.missing(prefix) == [], prefix
    after = current(endpoint)
    for key in ROTATED:
        assert after[key] != before[key] and len(after[key]) >= 32
        for value in (after[key], before[key], *keyset.keys(after[key])):
            assert value not in r.stdout + r.stderr, key
    # the JWT key set: a new key signs, the token issued before the rotation is still good
    new_key, kept = keyset.keys(after["AUTH_JWT_SECRET"])
    assert kept == keyset.keys(before["AUTH_JWT_SECRET"])[0]
    assert me(issued["token"]) == (200, {"sub": "e2e-user", "kid": kid(kept)})
    fresh = token()
    assert fresh["kid"] == kid(new_key)
    assert me(fresh["token"]) == (200, {"sub": "e2e-user", "kid": kid(new_key)})
    # at once again, it would drop the key that signed `issued`: refused, nothing changed
    again = inv(extra, "secrets.rotate", "AUTH_JWT_SECRET", "--yes")
    assert again.returncode == 2, again.stdout[-2000:] + again.stderr
    assert "AUTH_JWT_SECRET was rotated less than 15 minutes ago" in again.stderr
    assert current(endpoint) == after
    assert me(issued["token"])[0] == 200
    assert previous(endpoint) == before  # the old version kept as AWSPREVIOUS
    assert after["LEDGER_DB_USER"] == twin(before["LEDGER_DB_USER"])   # alternating users
    assert after["MONGO_APP_USER"] == twin(before["MONGO_APP_USER"])
    assert host_file("redis_password") == after["REDIS_PASSWORD"]
    # each server: the old value refused, the new one accepted
    assert redis_answer(before["REDIS_PASSWORD"]).startswith("WRONGPASS")
    assert redis_answer(after["REDIS_PASSWORD"]) == "OK"
    assert not postgres_login(before["LEDGER_DB_USER"], before["LEDGER_DB_PASSWORD"])
    assert postgres_login(after["LEDGER_DB_USER"], after["LEDGER_DB_PASSWORD"])
    assert not mongo_login(before["MONGO_APP_USER"], before["MONGO_APP_PASSWORD"])
    assert mongo_login(after["MONGO_APP_USER"], after["MONGO_APP_PASSWORD"])
    assert "redis: the old password is refused" in r.stdout
    health = inv(extra, "health")
    assert health.returncode == 0, health.stdout + health.stderr
    trail = inv(extra, "audit.show", "--json")
    assert trail.returncode == 0 and "secrets.rotate" in trail.stdout
    for value in (*[before[k] for k in ROTATED], *[after[k] for k in ROTATED], new_key, kept):
        assert value not in trail.stdout
    assert "LEDGER_DB_ROLE=jafar_ledger" in on_host("cat", "/opt/jafar/.env.ec2").stdout


def test_a_failure_half_way_reverts_everything(store):
    endpoint, extra = store
    before = current(endpoint)
    on_host("chattr", "+i", "/opt/jafar/secrets/redis_password")
    try:
        r = inv(extra, "secrets.rotate", "REDIS_PASSWORD", "--yes")
    finally:
        on_host("chattr", "-i", "/opt/jafar/secrets/redis_password")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "rotation of REDIS_PASSWORD failed: env.sync failed" in r.stderr
    assert "reverted: the store's previous version made current again" in r.stderr
    assert "the new REDIS_PASSWORD removed from its server" in r.stderr
    assert "NOT undone" not in r.stderr
    assert current(endpoint) == before
    assert redis_answer(before["REDIS_PASSWORD"]) == "OK"
    sm = moto_server.client(endpoint, "secretsmanager")
    versions = sm.list_secret_version_ids(SecretId=SECRET, IncludeDeprecated=True)["Versions"]
    tried = {json.loads(sm.get_secret_value(SecretId=SECRET, VersionId=v["VersionId"])
                        ["SecretString"])["REDIS_PASSWORD"] for v in versions}
    for value in tried - {before["REDIS_PASSWORD"]}:
        assert redis_answer(value).startswith("WRONGPASS")  # no leftover password
    assert host_file("redis_password") == before["REDIS_PASSWORD"]
    health = inv(extra, "health")
    assert health.returncode == 0, health.stdout + health.stderr


def test_monitor_alarms_puts_them_under_the_lock_audited_and_then_has_nothing_to_do(store):
    """The sandbox host as an EC2 instance of moto's: its alarms are put, the audit trail of
    the real host records it, and a second run has nothing to do."""
    endpoint, extra = store
    iid = moto_server.client(endpoint, "ec2").run_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="t3.micro",
        TagSpecifications=[{"ResourceType": "instance", "Tags": [
            {"Key": "jafar-env", "Value": "sandbox"}, {"Key": "Name", "Value": "sandbox-1"}]}],
    )["Instances"][0]["InstanceId"]
    first = inv(extra, "monitor.alarms", "--yes")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "done: 3 put, 0 deleted, 0 kept" in first.stdout
    alarms = moto_server.client(endpoint, "cloudwatch").describe_alarms()["MetricAlarms"]
    assert sorted(a["AlarmName"] for a in alarms) == [
        f"jafar-sandbox-{iid}-cpu-credits", f"jafar-sandbox-{iid}-status-check",
        f"jafar-sandbox-{iid}-system-check"]
    trail = json.loads(inv(extra, "audit.show", "--json", "--since", "10m").stdout)
    records = [r for r in trail if r["task"] == "monitor.alarms"]
    assert [(r["result"], r["args"], [e["result"] for e in r["steps"]]) for r in records] == [
        ("ok", {"put": 3, "delete": 0}, ["changed"])], records
    lock = inv(extra, "lock.status", "--json")
    assert lock.returncode == 0 and '"held": false' in lock.stdout.replace("False", "false"), \
        lock.stdout
    again = inv(extra, "monitor.alarms", "--yes")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"nothing to do: the 3 alarm(s) of sandbox are as wanted, to {ALARM_TOPIC}" in (
        again.stdout)


def test_aws_fix_revokes_a_rule_under_the_lock_audited_and_then_has_nothing_to_do(
        store, tmp_path):
    """moto's VPC of the network audit (tests/aws/test_network.py) with one offending rule;
    the sandbox host stands for the environment's hosts: the deploy lock is taken on it, the
    rule is revoked, its audit trail records the change, and a second run has nothing to do."""
    from tests.aws.test_network import SSH_CIDR, allow, build

    endpoint, _ = store
    layout = build(endpoint)
    allow(endpoint, layout.core_sg, tcp(3000, "0.0.0.0/0"))
    extra = {**moto_server.CREDENTIALS, **sandbox_config(
        tmp_path, host={"ssh_cidr": SSH_CIDR},
        aws={"region": "eu-west-1", "endpoint_url": endpoint,
             "instance_tags": {"jafar-env": "test"},
             "alb": {"name": "jafar-test", "target_group": "jafar-test-core"}})}
    first = inv(extra, "aws.fix", "--yes")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert f"  revoke {layout.core_sg}: tcp 3000 from 0.0.0.0/0" in first.stdout.splitlines()
    group = moto_server.client(endpoint, "ec2").describe_security_groups(
        GroupIds=[layout.core_sg])["SecurityGroups"][0]
    assert 3000 not in [p.get("FromPort") for p in group["IpPermissions"]]
    trail = json.loads(inv(extra, "audit.show", "--json", "--since", "10m").stdout)
    records = [r for r in trail if r["task"] == "aws.fix"]
    assert [(r["result"], [e["result"] for e in r["steps"]]) for r in records] == [
        ("ok", ["changed"])], records
    again = inv(extra, "aws.fix", "--yes")
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.startswith("nothing to do: the security groups of sandbox"), again.stdout


def test_the_gateway_and_service_logs_hold_no_credential_or_query_string(deployed):
    """Canaries in a query string, an Authorization header, a cookie and a form body, sent
    through the gateway: neither its access log nor any service's log shows one."""
    import requests

    canaries = {"query": "qcanary" + "81d2e6f0a9b3c5", "bearer": "bcanary" + "5c0e7a9d2f41b8",
                "cookie": "ccanary" + "3f9a1d7e5b2c06", "body": "fcanary" + "e4b6d8a0c2f193"}
    session = requests.Session()
    session.trust_env = False  # no proxy nor CA bundle from the environment: loopback only
    session.verify = str(CA)
    for prefix in ("/api/", "/auth/", "/ledger/"):
        session.get(f"{GATEWAY}{prefix}records/count", params={"token": canaries["query"]},
                    headers={"Authorization": f"Bearer {canaries['bearer']}",
                             "Cookie": f"session={canaries['cookie']}"}, timeout=10)
        session.post(f"{GATEWAY}{prefix}records?api_key={canaries['query']}",
                     data={"password": canaries["body"]}, timeout=10)
    logs = ""
    for cid in inner("ps", "--quiet", "--filter", "label=com.docker.compose.project=jafar-core"
                     ).split():
        out = subprocess.run(["docker", "exec", "jafar-sandbox-1", "docker", "logs", "--since",
                              "5m", cid], capture_output=True, text=True, timeout=60)
        logs += out.stdout + out.stderr
    assert "records/count" in logs  # the requests were logged ...
    for where, value in canaries.items():
        assert value not in logs, where  # ... without what they carried
