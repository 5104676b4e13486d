"""The data plane over TLS, on the shared sandbox: from a service's container each data store
refuses a plain connection and one whose certificate check fails, and serves TLS verified with
the data CA; `inv tls.data` with nothing to do says so; a rotation under load rolls the services
without failing a request on their account, restarts the stores once (the only failures: one
short window), loses no acknowledged write, and a second run finds nothing left to do."""

from __future__ import annotations

import json
import subprocess

from tests.e2e.sandbox_helpers import HOST, inner
from tests.e2e.test_03_day2 import CA, GATEWAY, inv
from tests.support.load import Load

PREFIXES = ("/api/", "/wallet/", "/ledger/")  # MongoDB, MongoDB + Redis, PostgreSQL

# Runs inside a service's container (its Python has the three clients, and its secrets): the
# stores named on its command line.
PROBE = r"""
import json, os, ssl, sys
CA = "/run/secrets/data_ca_crt"
SYSTEM = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
pw = lambda n: open(f"/run/secrets/{n}").read().rstrip("\n")
out = {}

def attempt(name, how, fn):
    try:
        fn()
        out.setdefault(name, {})[how] = "ok"
    except Exception as exc:
        out.setdefault(name, {})[how] = "refused: " + type(exc).__name__

import redis, psycopg2, pymongo
def r(**kw):
    redis.Redis(host="redis", port=6379, password=pw("redis_password"), socket_timeout=3,
                socket_connect_timeout=3, **kw).ping()
def p(**kw):
    psycopg2.connect(host="postgres-ledger", dbname=os.environ["LEDGER_DB_NAME"],
                     user=os.environ["LEDGER_DB_USER"],
                     password=pw("ledger_db_password"), connect_timeout=3, **kw).close()
def m(**kw):
    pymongo.MongoClient("mongo-primary", 27017, directConnection=True,
                        serverSelectionTimeoutMS=2500, **kw).admin.command("ping")
WAYS = {
    "redis": (r, {}, dict(ssl=True, ssl_ca_certs=CA, ssl_cert_reqs="required"),
              dict(ssl=True, ssl_ca_certs=SYSTEM, ssl_cert_reqs="required")),
    "postgres": (p, dict(sslmode="disable"), dict(sslmode="verify-full", sslrootcert=CA),
                 dict(sslmode="verify-full", sslrootcert=SYSTEM)),
    "mongo": (m, {}, dict(tls=True, tlsCAFile=CA), dict(tls=True, tlsCAFile=SYSTEM)),
}
for store in sys.argv[1:]:
    fn, plain, tls, other = WAYS[store]
    for how, kw in (("plain", plain), ("tls", tls), ("other-ca", other)):
        attempt(store, how, lambda: fn(**kw))
print(json.dumps(out, sort_keys=True))
"""


def probe() -> dict[str, dict[str, str]]:
    """api-service holds the Redis password, ledger-service the ledger's."""
    found = {}
    for service, stores in (("api-service", ("redis", "mongo")), ("ledger-service", ("postgres",))):
        cid = inner("ps", "--quiet", "--filter", f"label=com.docker.compose.service={service}")
        out = inner("exec", cid.split()[0], "python3", "-c", PROBE, *stores, timeout=120)
        found.update(json.loads(out.strip().splitlines()[-1]))
    return found


def assert_tls_only(found: dict[str, dict[str, str]]) -> None:
    for store in ("redis", "postgres", "mongo"):
        assert found[store]["tls"] == "ok", (store, found)
        assert found[store]["plain"].startswith("refused"), (store, found)
        assert found[store]["other-ca"].startswith("refused"), (store, found)


def service_failures() -> list[str]:
    """The services' own lines for failed requests (they log the exception's class only)."""
    lines = []
    for cid in inner("ps", "--quiet", "--filter", "label=com.docker.compose.project=jafar-core"
                     ).split():
        logs = subprocess.run(["docker", "exec", HOST, "docker", "logs", "--since", "10m", cid],
                              capture_output=True, text=True, timeout=60)
        lines += [line for line in (logs.stdout + logs.stderr).splitlines() if "failed (" in line]
    return lines


def mounted_certificate() -> str:
    redis = inner("ps", "--quiet", "--filter", "label=com.docker.compose.service=redis")
    return inner("exec", redis.split()[0], "sha256sum", "/run/secrets/data_tls_crt").split()[0]


def test_each_data_store_serves_only_verified_tls(deployed):
    assert_tls_only(probe())


def test_tls_data_with_nothing_to_do_says_so(deployed):
    r = inv("tls.data")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "nothing to do: every container of sandbox runs with the current files" in r.stdout
    assert "2 SSH round trips on 1 connection(s)" in r.stderr


def test_a_rotation_under_load_loses_no_write(deployed):
    before = mounted_certificate()
    with Load(GATEWAY, str(CA), prefixes=PREFIXES, rate=6, max_requests=1500,
              max_seconds=240) as load:
        r = inv("tls.data", "--rotate", "--yes", timeout=900)
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    report = load.report()
    print(report.summary())
    for prefix in PREFIXES:
        assert load.missing(prefix) == [], prefix
    assert "new data CA (the previous one stays trusted until the next rotation)" in r.stdout
    for service in ("api-service", "wallet-service", "ledger-service"):
        assert f"{service}: 1 new replica(s) healthy and routed, 1 old drained" in r.stdout
    assert "recreated mongo-arbiter, mongo-primary, mongo-secondary, postgres-ledger, redis" \
        in r.stdout
    # The services rolled without a failure; the stores restarted once: any failed request
    # falls in one window of seconds, answered by the gateway (503: store unavailable) or
    # answered well but late (a majority write waiting for the restarting secondary).
    if report.failures:
        window = max(f.at for f in report.failures) - min(f.at for f in report.failures)
        assert window < 30, [f.describe() for f in report.failures]
        assert all(f.status in (502, 503) or f.error.startswith("slow")
                   for f in report.failures), \
            [f.describe() for f in report.failures] + service_failures()
    assert mounted_certificate() != before
    assert_tls_only(probe())
    again = inv("tls.data")
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout
