#!/usr/bin/python3
"""STAND-IN for the real jafar Node.js services, for the sandbox only.

The real services (Express API and microservices) are not available on these machines, so
one small image plays all seven of them; ``SERVICE_NAME`` says which. It serves what the
deploy suite relies on, on port 3000 (``PORT``):

* ``GET /health``: checks the service's dependencies for real, each with a short timeout
  (MongoDB through the replica set with auth: ``ping`` and is-there-a-primary; Redis AUTH +
  PING; PostgreSQL ``SELECT 1`` as LEDGER_DB_USER on LEDGER_DB_NAME). 200
  ``{"status":"ok","checks":{...}}`` or 503 with ``"fail"`` for each failing dependency.
* ``GET /metrics``: Prometheus text format (``http_requests_total``, ``jafar_dependency_up``,
  ``jafar_mongo_primary_up``).
* anything else: 404.

Never writes a secret or a connection string into a response or a log line: failures are
logged as the dependency name and the exception's class only.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TIMEOUT_S = 2.0
METRICS_MAX_AGE_S = 15.0

#: The dependencies of each jafar service (the contract's list).
SERVICES: dict[str, tuple[str, ...]] = {
    "auth-service": ("mongo", "redis"),
    "api-service": ("mongo", "redis"),
    "wallet-service": ("mongo",),
    "transaction-service": ("mongo", "redis"),
    "ledger-service": ("postgres",),
    "notification-service": ("redis",),
    "risk-service": ("mongo", "redis"),
}


def log(msg: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"{stamp} {SERVICE} {msg}", flush=True)


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def check_mongo() -> tuple[bool, bool]:
    """(reachable and authenticated, a primary is there)."""
    import pymongo

    hosts = [h.strip() for h in env("MONGO_HOSTS").split(",") if h.strip()]
    if not hosts:
        raise ValueError("MONGO_HOSTS is empty")
    db = env("MONGO_APP_DB", "jafar")
    client: Any = pymongo.MongoClient(
        hosts,
        replicaSet=env("MONGO_REPLICA_SET", "rs0"),
        username=env("MONGO_APP_USER") or None,
        password=env("MONGO_APP_PASSWORD") or None,
        authSource=env("MONGO_AUTH_SOURCE", db),
        serverSelectionTimeoutMS=int(TIMEOUT_S * 1000),
        connectTimeoutMS=int(TIMEOUT_S * 1000),
        socketTimeoutMS=int(TIMEOUT_S * 1000),
        appname=SERVICE,
    )
    try:
        # the default read preference is primary: this ping needs a primary to answer
        client[db].command("ping")
        return True, client.primary is not None
    finally:
        client.close()


def check_redis() -> None:
    import redis

    client = redis.Redis(
        host=env("REDIS_HOST", "redis"),
        port=int(env("REDIS_PORT", "6379")),
        password=env("REDIS_PASSWORD") or None,
        socket_timeout=TIMEOUT_S,
        socket_connect_timeout=TIMEOUT_S,
    )
    try:
        if not client.ping():
            raise RuntimeError("PING did not answer PONG")
    finally:
        client.close()


def check_postgres() -> None:
    import psycopg2

    conn = psycopg2.connect(
        host=env("POSTGRES_HOST", "postgres-ledger"),
        port=int(env("POSTGRES_PORT", "5432")),
        dbname=env("LEDGER_DB_NAME", "ledger"),
        user=env("LEDGER_DB_USER", "ledger"),
        password=env("LEDGER_DB_PASSWORD"),
        connect_timeout=int(TIMEOUT_S),
        options=f"-c statement_timeout={int(TIMEOUT_S * 1000)}",
        application_name=SERVICE,
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            if cur.fetchone() != (1,):
                raise RuntimeError("SELECT 1 did not return 1")
    finally:
        conn.close()


class State:
    """Counters and the last dependency results, shared by the request threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[str, int] = {}
        self.deps: dict[str, bool] = {}
        self.mongo_primary = False
        self.checked_at = 0.0

    def count(self, status: int) -> None:
        with self.lock:
            key = str(status)
            self.requests[key] = self.requests.get(key, 0) + 1


STATE = State()
POOL = ThreadPoolExecutor(max_workers=8)


def run_checks() -> dict[str, bool]:
    """Check every dependency of this service in parallel; record and return the results."""
    primary = [False]

    def mongo() -> None:
        ok, has_primary = check_mongo()
        primary[0] = has_primary
        if not (ok and has_primary):
            raise RuntimeError("no primary")

    funcs: dict[str, Callable[[], None]] = {
        "mongo": mongo,
        "redis": check_redis,
        "postgres": check_postgres,
    }
    futures = {dep: POOL.submit(funcs[dep]) for dep in DEPENDENCIES}
    results: dict[str, bool] = {}
    for dep, fut in futures.items():
        try:
            fut.result(timeout=TIMEOUT_S * 3)
            results[dep] = True
        except Exception as exc:  # noqa: BLE001 - any failure makes the dependency "fail"
            results[dep] = False
            # class name only: messages may carry host lists or connection details
            log(f"health: {dep} failed ({type(exc).__name__})")
    with STATE.lock:
        STATE.deps = results
        STATE.mongo_primary = primary[0]
        STATE.checked_at = time.monotonic()
    return results


def render_metrics() -> str:
    with STATE.lock:
        stale = time.monotonic() - STATE.checked_at > METRICS_MAX_AGE_S
    if stale:
        run_checks()
    with STATE.lock:
        requests = dict(STATE.requests)
        deps = dict(STATE.deps)
        primary = STATE.mongo_primary
    lines = [
        "# HELP jafar_service_info Which jafar service this stand-in plays.",
        "# TYPE jafar_service_info gauge",
        f'jafar_service_info{{service="{SERVICE}",standin="true"}} 1',
        "# HELP http_requests_total HTTP requests served, by status code.",
        "# TYPE http_requests_total counter",
    ]
    lines += [f'http_requests_total{{status="{s}"}} {n}' for s, n in sorted(requests.items())]
    lines += [
        "# HELP jafar_dependency_up Whether a dependency answered its last check (1) or not (0).",
        "# TYPE jafar_dependency_up gauge",
    ]
    lines += [f'jafar_dependency_up{{dependency="{d}"}} {int(v)}' for d, v in sorted(deps.items())]
    if "mongo" in DEPENDENCIES:
        lines += [
            "# HELP jafar_mongo_primary_up Whether the MongoDB replica set has a primary.",
            "# TYPE jafar_mongo_primary_up gauge",
            f"jafar_mongo_primary_up {int(primary)}",
        ]
    lines += [
        "# HELP process_start_time_seconds Start time of the process since the epoch.",
        "# TYPE process_start_time_seconds gauge",
        f"process_start_time_seconds {START_TIME:.3f}",
    ]
    return "\n".join(lines) + "\n"


class Handler(BaseHTTPRequestHandler):
    server_version = "jafar-service-standin/1"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        if path == "/health":
            results = run_checks()
            ok = all(results.values())
            body = {
                "status": "ok" if ok else "fail",
                "service": SERVICE,
                "checks": {d: "ok" if up else "fail" for d, up in results.items()},
            }
            self.reply(200 if ok else 503, json.dumps(body) + "\n", "application/json")
        elif path == "/metrics":
            self.reply(200, render_metrics(), "text/plain; version=0.0.4; charset=utf-8")
        else:
            self.reply(404, json.dumps({"error": "not found"}) + "\n", "application/json")

    def do_HEAD(self) -> None:  # noqa: N802
        self.reply(405, "", "text/plain")

    def reply(self, status: int, body: str, ctype: str) -> None:
        data = body.encode()
        STATE.count(status)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        # method, path without the query string, status: nothing else
        path = self.path.split("?", 1)[0] if hasattr(self, "path") else "-"
        command = getattr(self, "command", "-")
        status = args[1] if len(args) > 1 else "-"
        log(f'{self.client_address[0]} "{command} {path}" {status}')


SERVICE = env("SERVICE_NAME")
DEPENDENCIES: tuple[str, ...] = SERVICES.get(SERVICE, ())
START_TIME = time.time()


def main() -> int:
    if SERVICE not in SERVICES:
        print(
            f"jafar-service stand-in: SERVICE_NAME must be one of {', '.join(SERVICES)}",
            file=sys.stderr,
        )
        return 2
    port = int(env("PORT", "3000"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    server.daemon_threads = True

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log(
        f"stand-in for the jafar {SERVICE} listening on :{port} (dependencies: "
        f"{', '.join(DEPENDENCIES)})"
    )
    try:
        server.serve_forever()
    except SystemExit:
        log("stopping")
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
