#!/usr/bin/python3
"""STAND-IN for the real jafar Node.js services, for the sandbox only.

The real services (Express API and microservices) are not available on these machines, so
one small image plays all seven of them; ``SERVICE_NAME`` says which. It serves what the
deploy suite and its end-to-end tests rely on, on port 3000 (``PORT``), one request per
connection (HTTP/1.0):

* ``GET /health``: checks the service's dependencies for real, each with a short timeout
  (MongoDB through the replica set with auth: ``ping`` and is-there-a-primary; Redis AUTH +
  PING; PostgreSQL ``SELECT 1`` as LEDGER_DB_USER on LEDGER_DB_NAME). 200
  ``{"status":"ok","service":...,"version":...,"checks":{...}}`` or 503 with ``"fail"`` for
  each failing dependency. ``version`` is ``JAFAR_VERSION`` (the image's build argument,
  default ``dev``).
* ``GET /metrics``: Prometheus text format (``http_requests_total``,
  ``http_requests_in_flight``, ``jafar_dependency_up``, ``jafar_mongo_primary_up``).
* Under the service's own prefix, the one the nginx gateway routes to it with the URI
  unchanged (``/api/`` api-service, ``/auth/``, ``/wallet/``, ``/transactions/``,
  ``/ledger/``, ``/notifications/``, ``/risk/``; see ``SERVICES``):

  - ``POST <prefix>records`` (optional JSON body, at most 64 KiB: 413 above, 400 when it is
    not JSON) writes ONE record to the service's own store and answers 201
    ``{"id": "<hex uuid>"}`` only after the store acknowledged it:
    MongoDB services insert ``{_id, service, at, body}`` into ``<short>_records`` of
    MONGO_APP_DB with write concern ``{w: "majority", wtimeout: 5000}`` (a write concern
    error is a 503, never a 201); ledger-service writes a double-entry pair (debit +N, credit
    -N, one transaction) into ``ledger_entries`` in PostgreSQL; notification-service adds the
    id to the Redis set ``notification:records``.
  - ``GET <prefix>records/count``: 200 ``{"count": N}`` (ledger: distinct transactions, plus
    ``"balanced"``: whether all amounts sum to zero).
  - ``POST <prefix>records/missing`` with ``{"ids": [...]}`` (at most 5000): 200
    ``{"missing": [...]}``, the ids the store does not have. With it a test proves that every
    acknowledged write was stored.
  - ``POST /auth/token`` (auth-service only) with ``{"sub": "<1-64 printable ASCII
    characters>"}``: 200 ``{"token": "<compact JWS>", "kid": "<kid>", "expires_in": TTL}``, a
    standard HS256 JWT (header ``{"alg": "HS256", "typ": "JWT", "kid": ...}``, claims ``sub``,
    ``iat``, ``exp`` = ``iat`` + ``AUTH_TOKEN_TTL``), signed with the FIRST key of the JWT key
    set (below). Any other body: 400 with a one-line error.
  - ``GET <prefix>me`` (auth-service and api-service: ``/auth/me``, ``/api/me``) with
    ``Authorization: Bearer <token>``: 200 ``{"sub": ..., "kid": ...}`` when the token's
    signature verifies with the key of its ``kid`` in the set and its ``exp`` is in the future;
    otherwise 401 ``{"error": REASON}`` (and ``WWW-Authenticate: Bearer``), REASON one of
    ``missing token`` (no ``Authorization: Bearer`` header, or an empty token), ``malformed
    token`` (not three base64url segments of JSON objects, ``alg`` not exactly ``HS256`` --
    ``none`` included --, no string ``kid``, no string ``sub`` or integer ``exp``), ``unknown
    key`` (no key of that kid in the set), ``bad signature``, ``expired``.
  - the other services have neither route (404, like any unknown path); auth-service or
    api-service started without a key set (no ``AUTH_JWT_SECRET``, an empty or unreadable
    file) still serve everything else, but both of their token routes answer 503 ``{"error":
    "no JWT key set"}``.
  - anything else under the prefix: 404; a known path with the wrong method, and any method
    other than GET and POST: 405. Everything else: 404.

  A store that cannot be reached answers 503 ``{"error": "store unavailable"}``.

The contract for the real services (what the sandbox's tests hold this stand-in to):

* credentials come from files, never from environment variables: ``MONGO_APP_PASSWORD_FILE``,
  ``MONGO_LEDGER_PASSWORD_FILE``, ``REDIS_PASSWORD_FILE``, ``LEDGER_DB_PASSWORD_FILE``,
  ``AUTH_JWT_SECRET_FILE`` name files under /run/secrets (Compose secrets); read them when
  connecting (the last newline is not part of the value), so that ``docker inspect`` and
  every ``docker exec`` see no secret (``NAME`` itself is still read when ``NAME_FILE`` is not
  set, for running a service by hand);
* the JWT key set: ``AUTH_JWT_SECRET`` (mounted for auth-service and api-service only) holds
  one or more keys separated by commas, ``current[,previous]`` (whitespace around each key
  stripped, empty parts ignored). The FIRST key signs, EVERY key verifies, so the deploy suite
  rotates the key without logging anyone out: the new key goes first, the one that signed
  stays to verify the tokens it issued until they expire. A key's id (``kid``, in each token's
  header) is the first 16 hex characters of sha256(key). Unlike the other credentials it is
  read once, at the start: the suite replaces the containers to change it. ``AUTH_TOKEN_TTL``
  is the tokens' lifetime in seconds: an integer from 1 to 86400, 900 when unset or empty;
  anything else and the service refuses to start (one line on stderr, exit 2). Signatures are
  compared in constant time; neither a token nor a key is ever written into a response or a
  log line (the start line names the kids only);

* ``DATA_TLS_CA_FILE`` names the data plane's CA bundle (``/run/secrets/data_ca_crt``): when it
  is set, MongoDB, Redis and PostgreSQL are reached over TLS only, and each server's certificate
  is verified against it, host name included (MongoDB ``tls=true&tlsCAFile=``, Redis
  ``rediss://`` with ``ssl_cert_reqs=required``, PostgreSQL ``sslmode=verify-full``); never
  fall back to a plain connection;
* the routes above under the prefix the gateway gives them;
* a connection pool per process to each store, sized by ``DB_POOL_SIZE`` (default 10), never
  a connection per request; MongoDB writes with ``w: "majority"``;
* SIGTERM: stop accepting connections (the listening socket is closed first, so a new
  connection is refused at once, before any request was sent on it: a gateway that retries
  on errors can send it to another replica), finish every request in flight (its write
  completes and its answer is sent), then exit 0; the log says ``draining N in-flight
  requests`` and ``stopped``. Compose gives 30 s (``stop_grace_period``); the drain waits at
  most 25 s (then exit 1, naming how many requests were abandoned).

Stand-in test hooks (NOT part of the real services' contract):

* request header ``X-Standin-Delay: <seconds>`` (0-10) sleeps that long before the request
  is handled (after its body was read), so a test can have a request in flight on SIGTERM;
* ``JAFAR_STANDIN_MODE``: ``normal`` (default); ``broken`` (serves, but ``/health`` always
  answers 503 with ``{"self": "fail"}``); ``slow:<seconds>`` (``/health`` answers 503 until
  that long after the start, then as normal); ``errors`` (``/health`` as normal, but every
  request under the prefix answers 500: healthy, yet failing under traffic), for deploy tests
  of failed, slow and bad rollouts.

Never writes a secret, a JWT key, a token, a connection string or a request body into a
response or a log line: failures are logged as the dependency name and the exception's class
only, and each request as one line: method, path without the query string, status, duration.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import math
import os
import re
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TIMEOUT_S = 2.0
METRICS_MAX_AGE_S = 15.0
MAX_BODY = 64 * 1024
DISCARD_MAX = 1024 * 1024  # the gateway's client_max_body_size
MAX_IDS = 5000
MAX_DELAY_S = 10.0
DRAIN_S = 25.0
STORE_TIMEOUT_MS = 5000
LEDGER_LOCK_KEY = 7_305_112_001  # pg_advisory_xact_lock key: one creator of the table at a time
JWT_SIGNER = "auth-service"  # serves <prefix>token
JWT_VERIFIERS = ("auth-service", "api-service")  # have the key set mounted, serve <prefix>me
DEFAULT_TOKEN_TTL_S = 900
MAX_TOKEN_TTL_S = 86400
MAX_SUB = 64
MAX_TOKEN = 4096  # a bound on what is decoded: our tokens are about 250 characters


@dataclass(frozen=True)
class Service:
    """What one jafar service depends on, where the gateway routes it, where it writes."""

    dependencies: tuple[str, ...]
    prefix: str
    store: str


#: The dependencies of each jafar service (the contract's list), its gateway prefix (as in
#: config/nginx/nginx.conf) and the store its records go to.
SERVICES: dict[str, Service] = {
    "auth-service": Service(("mongo", "redis"), "/auth/", "mongo"),
    "api-service": Service(("mongo", "redis"), "/api/", "mongo"),
    "wallet-service": Service(("mongo",), "/wallet/", "mongo"),
    "transaction-service": Service(("mongo", "redis"), "/transactions/", "mongo"),
    "ledger-service": Service(("postgres",), "/ledger/", "postgres"),
    "notification-service": Service(("redis",), "/notifications/", "redis"),
    "risk-service": Service(("mongo", "redis"), "/risk/", "mongo"),
}


def log(msg: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"{stamp} {SERVICE} {msg}", flush=True)


def secret(name: str) -> str:
    """A credential: from the file NAME_FILE names (Compose secrets under /run/secrets, so it
    is in no environment variable), else from NAME. The file's last newline is not part of
    it. Read at each use, so a rotated file is picked up by new connections."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read().rstrip("\n")
        except OSError:
            return ""  # counted as a failing dependency, never printed
    return os.environ.get(name, "")


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


# --- health checks: one long-lived client per dependency, apart from the record pools -------
#
# A client made per check cost a TLS handshake and a login (SCRAM, AUTH) every second; a
# long-lived one costs a round trip. It is apart from the record pools, so a full pool never
# makes /health wait. It is rebuilt when its settings change (a rotated credential file), and
# after a failure: a check that failed fast (a connection the server dropped) is tried once
# more on a fresh client, so only a dependency that is really down answers "fail".


class HealthClients:
    """The health checks' clients by dependency, each with the settings it was made with."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held: dict[str, tuple[str, Any, Callable[[Any], None]]] = {}

    def get(self, dep: str, settings: dict[str, Any], make: Callable[[dict[str, Any]], Any],
            close: Callable[[Any], None]) -> Any:
        key = repr(sorted(settings.items()))
        with self.lock:
            held = self.held.get(dep)
            if held and held[0] == key:
                return held[1]
            self.held.pop(dep, None)
        if held:
            held[2](held[1])
        client = make(settings)
        with self.lock:
            other = self.held.get(dep)
            if other and other[0] == key:  # another check made one meanwhile: keep that one
                close(client)
                return other[1]
            self.held[dep] = (key, client, close)
        return client

    def drop(self, dep: str) -> None:
        with self.lock:
            held = self.held.pop(dep, None)
        if held:
            try:
                held[2](held[1])
            except Exception:  # noqa: BLE001 - a broken client is dropped whatever it says
                pass


HEALTH_CLIENTS = HealthClients()


def checked(dep: str, check: Callable[[], Any]) -> Any:
    """``check()`` on the held client; after a fast failure, once more on a fresh one."""
    started = time.monotonic()
    try:
        return check()
    except Exception:
        HEALTH_CLIENTS.drop(dep)
        if time.monotonic() - started > TIMEOUT_S / 2:
            raise  # a server that does not answer is not asked twice
    return check()


def mongo_client_args() -> dict[str, Any]:
    """The replica set, credentials and database every MongoDB client of this process uses."""
    hosts = [h.strip() for h in env("MONGO_HOSTS").split(",") if h.strip()]
    if not hosts:
        raise ValueError("MONGO_HOSTS is empty")
    db = env("MONGO_APP_DB", "jafar")
    return {
        "host": hosts,
        "replicaSet": env("MONGO_REPLICA_SET", "rs0"),
        "username": env("MONGO_APP_USER") or None,
        "password": secret("MONGO_APP_PASSWORD") or None,
        "authSource": env("MONGO_AUTH_SOURCE", db),
        "appname": SERVICE,
        **({"tls": True, "tlsCAFile": DATA_TLS_CA_FILE} if DATA_TLS_CA_FILE else {}),
    }


def check_mongo() -> tuple[bool, bool]:
    """(reachable and authenticated, a primary is there)."""
    import pymongo

    def make(args: dict[str, Any]) -> Any:
        return pymongo.MongoClient(
            **args,
            maxPoolSize=2,
            serverSelectionTimeoutMS=int(TIMEOUT_S * 1000),
            connectTimeoutMS=int(TIMEOUT_S * 1000),
            socketTimeoutMS=int(TIMEOUT_S * 1000),
            waitQueueTimeoutMS=int(TIMEOUT_S * 1000),
        )

    def check() -> tuple[bool, bool]:
        client = HEALTH_CLIENTS.get("mongo", mongo_client_args(), make, lambda c: c.close())
        # the default read preference is primary: this ping needs a primary to answer
        client[env("MONGO_APP_DB", "jafar")].command("ping")
        return True, client.primary is not None

    return checked("mongo", check)


def redis_args() -> dict[str, Any]:
    """Connection settings (a pool's or a client's); over TLS, the server certificate verified
    against the data plane's CA, host name included."""
    args: dict[str, Any] = {
        "host": env("REDIS_HOST", "redis"),
        "port": int(env("REDIS_PORT", "6379")),
        "password": secret("REDIS_PASSWORD") or None,
    }
    if DATA_TLS_CA_FILE:
        import redis

        args.update(connection_class=redis.SSLConnection, ssl_ca_certs=DATA_TLS_CA_FILE,
                    ssl_cert_reqs="required", ssl_check_hostname=True)
    return args


def check_redis() -> None:
    import redis

    def make(args: dict[str, Any]) -> Any:
        pool = redis.ConnectionPool(**args, max_connections=2, socket_timeout=TIMEOUT_S,
                                    socket_connect_timeout=TIMEOUT_S)
        return redis.Redis(connection_pool=pool)

    def check() -> None:
        client = HEALTH_CLIENTS.get("redis", redis_args(), make, lambda c: c.close())
        if not client.ping():
            raise RuntimeError("PING did not answer PONG")

    checked("redis", check)


def postgres_args() -> dict[str, Any]:
    return {
        "host": env("POSTGRES_HOST", "postgres-ledger"),
        "port": int(env("POSTGRES_PORT", "5432")),
        "dbname": env("LEDGER_DB_NAME", "ledger"),
        "user": env("LEDGER_DB_USER", "ledger"),
        "password": secret("LEDGER_DB_PASSWORD"),
        "application_name": SERVICE,
        **({"sslmode": "verify-full", "sslrootcert": DATA_TLS_CA_FILE} if DATA_TLS_CA_FILE
           else {}),
    }


def check_postgres() -> None:
    import psycopg2

    def make(args: dict[str, Any]) -> Any:
        conn = psycopg2.connect(
            **args,
            connect_timeout=int(TIMEOUT_S),
            options=f"-c statement_timeout={int(TIMEOUT_S * 1000)}",
        )
        conn.autocommit = True  # never idle in a transaction between checks
        return conn

    def check() -> None:
        conn = HEALTH_CLIENTS.get("postgres", postgres_args(), make, lambda c: c.close())
        with POSTGRES_HEALTH_LOCK, conn.cursor() as cur:  # one query at a time on it
            cur.execute("SELECT 1")
            if cur.fetchone() != (1,):
                raise RuntimeError("SELECT 1 did not return 1")

    checked("postgres", check)


POSTGRES_HEALTH_LOCK = threading.Lock()


# --- the record stores: ONE pooled client per process, created on first use ----------------


class StoreUnavailable(Exception):
    """The store cannot be reached (or no pooled connection came free in time): 503."""


class MongoRecords:
    """``<short>_records`` in MONGO_APP_DB, through one long-lived, pooled MongoClient."""

    def __init__(self, service: str, pool_size: int) -> None:
        self.collection_name = service.removesuffix("-service") + "_records"
        self.pool_size = pool_size
        self.lock = threading.Lock()
        self.client: Any = None

    def errors(self) -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
        from pymongo import errors

        # WriteConcernError covers wtimeout too; NotMasterError is a ConnectionFailure
        return (errors.ConnectionFailure, errors.ConfigurationError, ValueError), (
            errors.WriteConcernError,
        )

    def collection(self) -> Any:
        import pymongo
        from pymongo.write_concern import WriteConcern

        with self.lock:
            if self.client is None:
                # constructing connects in the background: it never blocks or fails here
                # when MongoDB is down; operations wait serverSelectionTimeoutMS at most
                self.client = pymongo.MongoClient(
                    **mongo_client_args(),
                    maxPoolSize=self.pool_size,
                    minPoolSize=0,
                    serverSelectionTimeoutMS=STORE_TIMEOUT_MS,
                    connectTimeoutMS=3000,
                    socketTimeoutMS=10000,
                    waitQueueTimeoutMS=STORE_TIMEOUT_MS,
                )
            client = self.client
        return client[env("MONGO_APP_DB", "jafar")].get_collection(
            self.collection_name,
            write_concern=WriteConcern(w="majority", wtimeout=STORE_TIMEOUT_MS),
        )

    def insert(self, rid: str, body: Any) -> None:
        from bson.errors import InvalidDocument

        doc = {"_id": rid, "service": SERVICE, "at": datetime.datetime.now(datetime.UTC)}
        try:
            self.collection().insert_one({**doc, "body": body})
        except (InvalidDocument, OverflowError):  # "$" keys, integers beyond 64 bits...
            raise BadRequest("the body cannot be stored as a document") from None

    def count(self) -> dict[str, Any]:
        return {"count": self.collection().count_documents({})}

    def missing(self, ids: list[str]) -> list[str]:
        coll = self.collection()
        found: set[str] = set()
        for start in range(0, len(ids), 500):  # bounded replies (no projection in the stand-in)
            for doc in coll.find({"_id": {"$in": ids[start : start + 500]}}):
                found.add(doc["_id"])
        return [i for i in ids if i not in found]

    def close(self) -> None:
        with self.lock:
            if self.client is not None:
                self.client.close()
                self.client = None


LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_entries (
    id bigserial PRIMARY KEY,
    txn_id text NOT NULL,
    account text NOT NULL,
    direction text NOT NULL CHECK (direction IN ('debit', 'credit')),
    amount_cents bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS ledger_entries_txn_id_idx ON ledger_entries (txn_id);
"""
DEBIT_ACCOUNT = "standin:cash"
CREDIT_ACCOUNT = "standin:deposits"
DEFAULT_AMOUNT_CENTS = 100


class LedgerRecords:
    """Double-entry pairs in ``ledger_entries`` (the role's own schema: unqualified names land
    first on its search_path), through a small ThreadedConnectionPool made on first use, so
    the service starts, and retries, while PostgreSQL is not up yet."""

    def __init__(self, pool_size: int) -> None:
        self.pool_size = pool_size
        self.slots = threading.BoundedSemaphore(pool_size)  # wait for a connection, do not fail
        self.lock = threading.Lock()
        self.pool: Any = None
        self.schema_ready = False

    def errors(self) -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
        import psycopg2
        import psycopg2.pool

        return (psycopg2.OperationalError, psycopg2.InterfaceError, psycopg2.pool.PoolError), ()

    def _pool(self) -> Any:
        import psycopg2.pool

        with self.lock:
            if self.pool is None:
                # minconn idle connections are kept for reuse; raises when PostgreSQL is down
                self.pool = psycopg2.pool.ThreadedConnectionPool(
                    min(2, self.pool_size),
                    self.pool_size,
                    **postgres_args(),
                    connect_timeout=3,
                    options="-c statement_timeout=10000",
                )
            return self.pool

    def _ensure_schema(self, conn: Any) -> None:
        if self.schema_ready:
            return
        with conn, conn.cursor() as cur:
            # replicas start together: serialise CREATE ... IF NOT EXISTS (it races otherwise)
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (LEDGER_LOCK_KEY,))
            cur.execute(LEDGER_SCHEMA)
        self.schema_ready = True

    def _run(self, work: Callable[[Any], Any]) -> Any:
        if not self.slots.acquire(timeout=STORE_TIMEOUT_MS / 1000):
            raise StoreUnavailable("no pooled connection came free")
        try:
            pool = self._pool()
            conn = pool.getconn()
            broken = True
            try:
                self._ensure_schema(conn)
                with conn:  # one transaction: commit on success, roll back on an exception
                    result = work(conn)
                broken = False
                return result
            finally:
                pool.putconn(conn, close=broken)
        finally:
            self.slots.release()

    def insert(self, rid: str, body: Any) -> None:
        amount = DEFAULT_AMOUNT_CENTS
        if isinstance(body, dict) and "amount_cents" in body:
            amount = body["amount_cents"]
            if not (isinstance(amount, int) and not isinstance(amount, bool)) or not (
                0 < amount <= 10**12
            ):
                raise BadRequest("amount_cents must be an integer from 1 to 10^12")

        def work(conn: Any) -> None:
            with conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO ledger_entries (txn_id, account, direction, amount_cents) "
                    "VALUES (%s, %s, 'debit', %s), (%s, %s, 'credit', %s)",
                    (rid, DEBIT_ACCOUNT, amount, rid, CREDIT_ACCOUNT, -amount),
                )

        self._run(work)

    def count(self) -> dict[str, Any]:
        def work(conn: Any) -> tuple[int, int]:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT count(DISTINCT txn_id), coalesce(sum(amount_cents), 0) "
                    "FROM ledger_entries"
                )
                return cur.fetchone()

        txns, total = self._run(work)
        return {"count": int(txns), "balanced": int(total) == 0}

    def missing(self, ids: list[str]) -> list[str]:
        def work(conn: Any) -> set[str]:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT DISTINCT txn_id FROM ledger_entries WHERE txn_id = ANY(%s)", (ids,)
                )
                return {row[0] for row in cur.fetchall()}

        found = self._run(work)
        return [i for i in ids if i not in found]

    def close(self) -> None:
        with self.lock:
            if self.pool is not None:
                self.pool.closeall()
                self.pool = None


class RedisRecords:
    """The set ``notification:records`` (Redis persists it in its AOF), through one blocking
    connection pool."""

    KEY = "notification:records"

    def __init__(self, pool_size: int) -> None:
        self.pool_size = pool_size
        self.lock = threading.Lock()
        self.client: Any = None

    def errors(self) -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
        from redis import exceptions

        return (exceptions.ConnectionError, exceptions.TimeoutError), ()

    def _client(self) -> Any:
        import redis

        with self.lock:
            if self.client is None:
                pool = redis.BlockingConnectionPool(
                    **redis_args(),
                    max_connections=self.pool_size,
                    timeout=STORE_TIMEOUT_MS / 1000,
                    socket_timeout=10,
                    socket_connect_timeout=3,
                )
                self.client = redis.Redis(connection_pool=pool)
            return self.client

    def insert(self, rid: str, body: Any) -> None:
        self._client().sadd(self.KEY, rid)

    def count(self) -> dict[str, Any]:
        return {"count": int(self._client().scard(self.KEY))}

    def missing(self, ids: list[str]) -> list[str]:
        if not ids:
            return []
        present = self._client().smismember(self.KEY, ids)
        return [i for i, there in zip(ids, present, strict=True) if not int(there)]

    def close(self) -> None:
        with self.lock:
            if self.client is not None:
                self.client.connection_pool.disconnect()
                self.client = None


# --- state, checks, metrics -------------------------------------------------------------------


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


def health() -> tuple[int, dict[str, Any]]:
    """(status, body) of GET /health, honouring JAFAR_STANDIN_MODE."""
    body: dict[str, Any] = {"service": SERVICE, "version": VERSION}
    if MODE == "broken":
        return 503, {"status": "fail", **body, "checks": {"self": "fail"}}
    if MODE == "slow" and time.monotonic() < SLOW_UNTIL:
        return 503, {"status": "starting", **body, "checks": {"self": "starting"}}
    results = run_checks()
    ok = all(results.values())
    checks = {d: "ok" if up else "fail" for d, up in results.items()}
    return (200 if ok else 503), {"status": "ok" if ok else "fail", **body, "checks": checks}


def render_metrics(in_flight: int) -> str:
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
        f'jafar_service_info{{service="{SERVICE}",standin="true",version="{VERSION}"}} 1',
        "# HELP http_requests_total HTTP requests served, by status code.",
        "# TYPE http_requests_total counter",
    ]
    lines += [f'http_requests_total{{status="{s}"}} {n}' for s, n in sorted(requests.items())]
    lines += [
        "# HELP http_requests_in_flight Connections being served (this request included).",
        "# TYPE http_requests_in_flight gauge",
        f"http_requests_in_flight {in_flight}",
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


# --- HTTP ---------------------------------------------------------------------------------


class BadRequest(Exception):
    """A request the stand-in refuses with a 4xx and a short JSON error."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def parse_json(data: bytes) -> Any:
    if not data:
        return None
    try:
        return json.loads(data.decode("utf-8"))
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        raise BadRequest("invalid JSON") from None


def printable(text: str) -> str:
    """A request path as it may appear in a log line: printable, bounded."""
    return "".join(c if c.isprintable() else "?" for c in text[:200])


#: (status, body, content type, extra headers): what a route answers; sent in one place.
Response = tuple[int, str, str, dict[str, str]]
JSON = "application/json"


def json_response(
    status: int, doc: dict[str, Any], extra: dict[str, str] | None = None
) -> Response:
    return status, json.dumps(doc) + "\n", JSON, extra or {}


NOT_ALLOWED = json_response(405, {"error": "method not allowed"}, {"Allow": "GET, POST"})


class Handler(BaseHTTPRequestHandler):
    server_version = "jafar-service-standin/1"
    sys_version = ""
    timeout = 15  # a connection that sends nothing does not hold its thread (or a drain)
    server: Server

    # -- plumbing: one log line per request, statuses counted, errors in JSON --------------
    def handle_one_request(self) -> None:
        self.started = time.monotonic()
        self.status: int | None = None
        try:
            super().handle_one_request()
        finally:
            if self.status is not None:
                path = printable(getattr(self, "path", "-").split("?", 1)[0])
                command = getattr(self, "command", None) or "-"
                ms = (time.monotonic() - self.started) * 1000
                log(f'"{command} {path}" {self.status} {ms:.1f}ms')

    def send_response(self, code: int, message: str | None = None) -> None:
        self.status = code
        STATE.count(code)
        super().send_response(code, message)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server's own errors (bad request line...): JSON, never an echo of the request
        if code == HTTPStatus.NOT_IMPLEMENTED:  # a method it has no do_X for: 405 here
            return self.send(NOT_ALLOWED)
        self.close_connection = True
        try:
            phrase = HTTPStatus(code).phrase.lower()
        except ValueError:
            phrase = "error"
        self.send(json_response(code, {"error": phrase}))

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # handle_one_request logs each request once, without query string or messages

    def send(self, response: Response) -> None:
        status, body, ctype, extra = response
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    # -- methods --------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self.dispatch("POST")

    def method_not_allowed(self) -> None:
        self.send(NOT_ALLOWED)

    do_HEAD = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_TRACE = method_not_allowed

    def dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        try:
            data = self.read_body() if method == "POST" else b""
            self.standin_delay()
            response = self.route(method, path, data)
        except BadRequest as exc:
            self.close_connection = True
            response = json_response(exc.status, {"error": str(exc)})
        except Exception as exc:  # noqa: BLE001 - one answer per request, whatever failed
            status, message = store_error(exc)
            # the class only: driver messages may carry host lists or connection strings
            log(f'"{method} {printable(path)}" failed ({type(exc).__name__})')
            response = json_response(status, {"error": message})
        self.send(response)

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise BadRequest("a Content-Length is required", 411)
        raw = self.headers.get("Content-Length", "0").strip() or "0"
        if not raw.isdigit():
            raise BadRequest("bad Content-Length")
        length = int(raw)
        if length > MAX_BODY:
            if length <= DISCARD_MAX:
                # read it anyway: closing with unread data sends a reset, and the client
                # would see that instead of the 413
                left = length
                while left > 0 and (chunk := self.rfile.read(min(left, MAX_BODY))):
                    left -= len(chunk)
            raise BadRequest(f"body larger than {MAX_BODY} bytes", 413)
        return self.rfile.read(length)

    def standin_delay(self) -> None:
        """Stand-in test hook: X-Standin-Delay: <seconds> keeps the request in flight."""
        raw = self.headers.get("X-Standin-Delay")
        if raw is None:
            return
        try:
            delay = float(raw)
        except ValueError:
            delay = math.nan
        if not 0 <= delay <= MAX_DELAY_S:  # NaN fails this too
            raise BadRequest(f"X-Standin-Delay must be 0 to {MAX_DELAY_S:g} seconds")
        time.sleep(delay)

    def route(self, method: str, path: str, data: bytes) -> Response:
        if path in ("/health", "/metrics") and method != "GET":
            return NOT_ALLOWED
        if path == "/health":
            return json_response(*health())
        if path == "/metrics":
            metrics = render_metrics(self.server.in_flight())
            return 200, metrics, "text/plain; version=0.0.4; charset=utf-8", {}
        rest = path.removeprefix(SPEC.prefix) if path.startswith(SPEC.prefix) else None
        if MODE == "errors" and rest is not None:
            return json_response(500, {"error": "stand-in in errors mode"})
        routes: dict[str | None, tuple[str, Callable[[bytes], Response]]] = {
            "records": ("POST", post_record),
            "records/count": ("GET", get_count),
            "records/missing": ("POST", post_missing),
        }
        if SERVICE == JWT_SIGNER:
            routes["token"] = ("POST", post_token)
        if SERVICE in JWT_VERIFIERS:
            routes["me"] = ("GET", lambda data: get_me(self.headers.get("Authorization")))
        if rest not in routes:
            return json_response(404, {"error": "not found"})
        wanted, handler = routes[rest]
        return handler(data) if method == wanted else NOT_ALLOWED


# --- the records API ----------------------------------------------------------------------


def post_record(data: bytes) -> Response:
    body = parse_json(data)
    rid = uuid.uuid4().hex
    STORE.insert(rid, body)  # returns once the store acknowledged the write
    return json_response(201, {"id": rid})


def get_count(data: bytes) -> Response:
    return json_response(200, STORE.count())


def post_missing(data: bytes) -> Response:
    doc = parse_json(data)
    ids = doc.get("ids") if isinstance(doc, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise BadRequest('the body must be {"ids": [string, ...]}')
    if len(ids) > MAX_IDS:
        raise BadRequest(f"at most {MAX_IDS} ids per request")
    ids = list(dict.fromkeys(ids))
    return json_response(200, {"missing": STORE.missing(ids) if ids else []})


# --- the JWT key set: auth-service signs with the first key, every key verifies ---------------


class TokenRefused(Exception):
    """A bearer token GET <prefix>me does not accept: 401 with this short reason."""


B64URL = re.compile(r"[A-Za-z0-9_-]+")  # one base64url segment, no padding
SUB_RULE = 'the body must be {"sub": "<1 to 64 printable ASCII characters>"}'
NO_KEY_SET = json_response(503, {"error": "no JWT key set"})


def kid_of(key: str) -> str:
    """A key's id, in the token's header: it names the key without revealing it."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def key_set(raw: str) -> dict[str, bytes]:
    """``current[,previous]`` -> kid: key, the signing key first (a key given twice once)."""
    keys: dict[str, bytes] = {}
    for part in raw.split(","):
        if part.strip():
            keys.setdefault(kid_of(part.strip()), part.strip().encode("utf-8"))
    return keys


def parse_ttl(raw: str) -> int:
    """AUTH_TOKEN_TTL -> seconds; ValueError unless an integer from 1 to MAX_TOKEN_TTL_S."""
    raw = raw.strip() or str(DEFAULT_TOKEN_TTL_S)
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 6):
        raise ValueError("AUTH_TOKEN_TTL is not an integer")
    if not 1 <= int(raw) <= MAX_TOKEN_TTL_S:
        raise ValueError("AUTH_TOKEN_TTL is out of range")
    return int(raw)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(doc: dict[str, Any]) -> str:
    return b64url(json.dumps(doc, separators=(",", ":")).encode("utf-8"))


def signature(key: bytes, signing_input: str) -> str:
    """HS256 of ``header.claims``, base64url: what the third segment must be."""
    return b64url(hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest())


def issue(sub: str, now: int) -> tuple[str, str]:
    """(compact JWS, kid): a token for ``sub`` signed with the first key of the set."""
    kid, key = next(iter(KEYS.items()))
    header = b64url_json({"alg": "HS256", "typ": "JWT", "kid": kid})
    claims = b64url_json({"sub": sub, "iat": now, "exp": now + TOKEN_TTL})
    return f"{header}.{claims}.{signature(key, f'{header}.{claims}')}", kid


def decoded_object(segment: str) -> dict[str, Any]:
    """A header or claims segment as a JSON object; anything else makes a malformed token."""
    if not B64URL.fullmatch(segment):
        raise TokenRefused("malformed token")
    try:
        doc = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, RecursionError):  # binascii.Error, JSONDecodeError, UnicodeDecodeError
        raise TokenRefused("malformed token") from None
    if not isinstance(doc, dict):
        raise TokenRefused("malformed token")
    return doc


def verify(token: str, now: float) -> tuple[str, str]:
    """(sub, kid) of a token a key of the set signed and that has not expired.

    Only HS256 is accepted (never ``none``, never an algorithm the token picks), the key is
    the one its kid names, and the signature is compared in constant time before any claim is
    believed.
    """
    parts = token.split(".")
    if len(token) > MAX_TOKEN or len(parts) != 3 or not B64URL.fullmatch(parts[2]):
        raise TokenRefused("malformed token")
    header, claims = decoded_object(parts[0]), decoded_object(parts[1])
    kid = header.get("kid")
    if header.get("alg") != "HS256" or not isinstance(kid, str):
        raise TokenRefused("malformed token")
    key = KEYS.get(kid)
    if key is None:
        raise TokenRefused("unknown key")
    if not hmac.compare_digest(signature(key, f"{parts[0]}.{parts[1]}"), parts[2]):
        raise TokenRefused("bad signature")
    sub, exp = claims.get("sub"), claims.get("exp")
    if not isinstance(sub, str) or not isinstance(exp, int) or isinstance(exp, bool):
        raise TokenRefused("malformed token")
    if exp <= now:
        raise TokenRefused("expired")
    return sub, kid


def bearer(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenRefused("missing token")
    return token.strip()


def post_token(data: bytes) -> Response:
    if not KEYS:
        return NO_KEY_SET
    body = parse_json(data)
    sub = body.get("sub") if isinstance(body, dict) else None
    if not (isinstance(sub, str) and 1 <= len(sub) <= MAX_SUB
            and all(" " <= c <= "~" for c in sub)):
        raise BadRequest(SUB_RULE)
    token, kid = issue(sub, int(time.time()))
    return json_response(200, {"token": token, "kid": kid, "expires_in": TOKEN_TTL})


def get_me(authorization: str | None) -> Response:
    if not KEYS:
        return NO_KEY_SET
    try:
        sub, kid = verify(bearer(authorization), time.time())
    except TokenRefused as exc:
        return json_response(401, {"error": str(exc)}, {"WWW-Authenticate": "Bearer"})
    return json_response(200, {"sub": sub, "kid": kid})


def describe_keys() -> str:
    """The start line's word on the key set: its kids, never a key."""
    signer = SERVICE == JWT_SIGNER
    if not KEYS:
        routes = f"{SPEC.prefix}token and {SPEC.prefix}me" if signer else f"{SPEC.prefix}me"
        return f"no JWT key set (AUTH_JWT_SECRET empty or unreadable): 503 on {routes}"
    signs = f", signing with {next(iter(KEYS))}, tokens live {TOKEN_TTL}s" if signer else ""
    return f"JWT key set: {len(KEYS)} key(s), kids {', '.join(KEYS)}{signs}"


def store_error(exc: BaseException) -> tuple[int, str]:
    """(status, message) for an exception raised while a request used the store."""
    unavailable, not_acknowledged = STORE.errors()
    if isinstance(exc, not_acknowledged):
        return 503, "write not acknowledged by a majority"
    if isinstance(exc, unavailable + (StoreUnavailable,)):
        return 503, "store unavailable"
    return 500, "internal error"


class Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its request threads, so SIGTERM can drain them."""

    daemon_threads = True  # a request still running after the drain bound must not block exit
    block_on_close = False  # drain() joins, with a bound
    request_queue_size = 128  # listen backlog (socketserver's default is 5)

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, Handler)
        self.workers: set[threading.Thread] = set()
        self.workers_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(target=self._serve, args=(request, client_address), daemon=True)
        with self.workers_lock:
            self.workers.add(thread)
        thread.start()

    def _serve(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self.workers_lock:
                self.workers.discard(threading.current_thread())

    def handle_error(self, request: Any, client_address: Any) -> None:
        # e.g. the client went away before its answer was written: the class, no traceback
        log(f"connection error ({type(sys.exc_info()[1]).__name__})")

    def in_flight(self) -> int:
        with self.workers_lock:
            return len(self.workers)

    def stop_accepting(self) -> None:
        """Refuse new connections now, then end serve_forever(). Called from another thread.

        shutdown(2) first: it takes the socket out of LISTEN at once (new connections are
        refused) and wakes serve_forever's poll; close() alone would leave it listening while
        the poll still holds it.
        """
        try:
            self.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.socket.close()
        self.shutdown()

    def drain(self, bound: float) -> int:
        """Wait for every request thread, at most ``bound`` seconds; return how many are left."""
        deadline = time.monotonic() + bound
        with self.workers_lock:
            pending = list(self.workers)
        for thread in pending:
            thread.join(max(0.0, deadline - time.monotonic()))
        return sum(t.is_alive() for t in pending)


def parse_mode(raw: str) -> tuple[str, float]:
    """JAFAR_STANDIN_MODE -> (mode, seconds); ValueError names what is accepted."""
    raw = raw.strip() or "normal"
    if raw in ("normal", "broken", "errors"):
        return raw, 0.0
    if raw.startswith("slow:"):
        seconds = float(raw.removeprefix("slow:"))
        if math.isfinite(seconds) and seconds >= 0:
            return "slow", seconds
    raise ValueError("JAFAR_STANDIN_MODE must be normal, broken, errors or slow:<seconds>")


def make_store(service: str, spec: Service, pool_size: int) -> Any:
    if spec.store == "mongo":
        return MongoRecords(service, pool_size)
    if spec.store == "postgres":
        return LedgerRecords(pool_size)
    return RedisRecords(pool_size)


SERVICE = env("SERVICE_NAME")
DATA_TLS_CA_FILE = env("DATA_TLS_CA_FILE")  # set: every data store is reached over TLS only
SPEC: Service = SERVICES.get(SERVICE, Service((), "/", "redis"))
DEPENDENCIES: tuple[str, ...] = SPEC.dependencies
VERSION = env("JAFAR_VERSION", "dev") or "dev"
START_TIME = time.time()
MODE = "normal"
SLOW_UNTIL = 0.0
STORE: Any = None
KEYS: dict[str, bytes] = {}  # the JWT key set, kid -> key, the signing key first
TOKEN_TTL = DEFAULT_TOKEN_TTL_S


def main() -> int:
    global MODE, SLOW_UNTIL, STORE, KEYS, TOKEN_TTL
    if SERVICE not in SERVICES:
        print(
            f"jafar-service stand-in: SERVICE_NAME must be one of {', '.join(SERVICES)}",
            file=sys.stderr,
        )
        return 2
    try:
        mode, seconds = parse_mode(env("JAFAR_STANDIN_MODE", "normal"))
    except ValueError:
        print(
            "jafar-service stand-in: JAFAR_STANDIN_MODE must be normal, broken, errors or "
            "slow:<seconds>",
            file=sys.stderr,
        )
        return 2
    pool_size = env("DB_POOL_SIZE", "10").strip() or "10"
    if not pool_size.isdigit() or int(pool_size) < 1:
        print("jafar-service stand-in: DB_POOL_SIZE must be a positive integer", file=sys.stderr)
        return 2
    try:
        TOKEN_TTL = parse_ttl(env("AUTH_TOKEN_TTL"))
    except ValueError:
        print(
            f"jafar-service stand-in: AUTH_TOKEN_TTL must be an integer from 1 to "
            f"{MAX_TOKEN_TTL_S} (seconds)",
            file=sys.stderr,
        )
        return 2
    if SERVICE in JWT_VERIFIERS:
        KEYS = key_set(secret("AUTH_JWT_SECRET"))  # once: the suite replaces the container
    MODE, SLOW_UNTIL = mode, time.monotonic() + seconds
    STORE = make_store(SERVICE, SPEC, int(pool_size))
    port = int(env("PORT", "3000"))
    server = Server(("0.0.0.0", port))
    stopping = threading.Event()

    def begin_stop(name: str) -> None:
        log(f"{name}: refusing new connections")
        server.stop_accepting()

    def on_signal(signum: int, frame: object) -> None:
        # never block or raise here: the main thread is inside serve_forever(), which only
        # another thread can end
        if not stopping.is_set():
            stopping.set()
            name = signal.Signals(signum).name
            threading.Thread(target=begin_stop, args=(name,), daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log(
        f"stand-in for the jafar {SERVICE} {VERSION} listening on :{port} (prefix "
        f"{SPEC.prefix}, records in {SPEC.store}, pool size {pool_size}, mode {mode}; "
        f"dependencies: {', '.join(DEPENDENCIES)})"
    )
    if SERVICE in JWT_VERIFIERS:
        log(describe_keys())
    try:
        server.serve_forever(poll_interval=0.2)
    except (OSError, ValueError):
        if not stopping.is_set():  # a signal before the loop started closes the socket early
            raise
    log(f"draining {server.in_flight()} in-flight requests")
    left = server.drain(DRAIN_S)
    STORE.close()
    POOL.shutdown(wait=False)
    if left:
        log(f"stopped: {left} requests still running after {DRAIN_S:.0f}s were abandoned")
        return 1
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
