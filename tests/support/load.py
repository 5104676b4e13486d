"""A bounded load generator for the sandbox's gateway (end-to-end tests).

It proves that a deploy, a scale-out or a replica replacement loses no request: while it runs,
every answer must be a 2xx, in time, and every record a POST got acknowledged (its 201 id)
must be in the service's store afterwards (``missing()``).

    with Load("https://127.0.0.1:8443", ".sandbox/tls/tls.crt") as load:
        ...                                   # scale, replace, redeploy
    report = load.report()
    assert report.failed == 0, report.summary()
    assert load.missing("/api/") == []

It talks to the jafar services' records API (see
sandbox/images/jafar-service/jafar_service_standin.py): ``POST <prefix>records`` (a JSON body
with a sequence number) alternating with ``GET <prefix>records/count`` across the prefixes,
at a fixed rate, from a small pool of workers, so that a slow answer does not lower the rate;
a start never waits in a queue, so the rate is never exceeded either (the gateway limits a
client address to 20 requests/s, and /auth/ to 1 request/s: keep at or below 10 in all, and
under 1 on /auth/). It stops by itself after
``max_requests`` requests or ``max_seconds`` seconds, whichever comes first.

A failure is any answer that is not a 2xx, any connection error or timeout, and any answer
slower than ``slow_after`` seconds (failed even when it succeeds in the end; its id still
counts as acknowledged, since the store has it).

Every request uses a NEW connection (``Connection: close``, no pooled keep-alive). The gateway's
reload (``nginx -s reload``, done when the routing changes) closes its idle keep-alive
connections; a client that reuses one at that moment gets a reset, which is a property of HTTP
keep-alive and not of the routing this measures. Clients such as the AWS ALB retry those on a
new connection; a load generator that counted them would report failures the real path
never shows.

Only loopback is ever asked (127.0.0.1, ::1, localhost): any other host is a ValueError.
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from urllib.parse import urlsplit

import requests

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
MAX_RATE = 10.0  # requests/s: half the gateway's per-address limit (20 r/s)
MAX_FAILURES_KEPT = 50
MISSING_CHUNK = 1000  # ids per POST <prefix>records/missing (the services take 5000 at most)
HEADERS = {"Connection": "close", "User-Agent": "jafar-load-test/1"}


@dataclass(frozen=True)
class Failure:
    """One failed request: enough to find it in the gateway's and the services' logs."""

    at: float  # seconds from the start of the run to the start of this request
    method: str
    path: str
    status: int | None  # the HTTP status, None when no answer came
    error: str  # "HTTP 502", "ConnectionError", "slow: 6.2 s"...
    seconds: float  # how long the request took

    def describe(self) -> str:
        return f"+{self.at:.2f}s {self.method} {self.path}: {self.error} ({self.seconds:.2f}s)"


@dataclass
class Report:
    """The outcome so far; once the run ended, ``sent == ok + failed``."""

    sent: int
    ok: int
    failed: int
    by_status: Counter[str]  # "200", "201", "502"..., or an exception's class name
    failures: list[Failure]  # the first MAX_FAILURES_KEPT
    acknowledged: dict[str, list[str]]  # prefix -> ids of the records a 201 acknowledged
    duration: float  # seconds, from the start to the last answer (or now)
    starts: list[float] = field(default_factory=list)  # each request's start, from the start

    def summary(self) -> str:
        """One line for a test's output or assertion message."""
        span = self.starts[-1] - self.starts[0] if len(self.starts) > 1 else 0.0
        rate = (len(self.starts) - 1) / span if span > 0 else 0.0  # starts per second
        statuses = " ".join(f"{k}={v}" for k, v in sorted(self.by_status.items())) or "-"
        acked = " ".join(f"{p}={len(ids)}" for p, ids in self.acknowledged.items())
        line = (
            f"load: {self.sent} sent, {self.ok} ok, {self.failed} failed in "
            f"{self.duration:.1f}s (at {rate:.1f}/s); statuses {statuses}; acknowledged {acked}"
        )
        if self.failures:
            line += f"; first failure {self.failures[0].describe()}"
        return line


def check_loopback(base_url: str) -> str:
    """The base URL without a trailing slash; ValueError unless it is http(s) on loopback."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"load: {base_url!r} is not an http(s) URL")
    if parts.hostname not in LOOPBACK_HOSTS:
        raise ValueError(
            f"load: refusing {parts.hostname!r}: only loopback (127.0.0.1, ::1, localhost)"
        )
    return base_url.rstrip("/")


class Load:
    """Requests at a fixed rate in a background thread; see the module's docstring."""

    def __init__(
        self,
        base_url: str,
        ca_file: str | None = None,
        prefixes: tuple[str, ...] = ("/api/",),
        rate: float = 8.0,
        max_requests: int = 1500,
        max_seconds: float = 150.0,
        slow_after: float = 5.0,
        post_share: float = 0.5,
        *,
        workers: int = 16,
        timeout: float = 30.0,
    ) -> None:
        self.base_url = check_loopback(base_url)
        if not 0 < rate <= MAX_RATE:
            raise ValueError(f"load: rate must be above 0 and at most {MAX_RATE:g} requests/s")
        if not prefixes or any(not (p.startswith("/") and p.endswith("/")) for p in prefixes):
            raise ValueError("load: prefixes must look like /api/")
        if max_requests < 1 or max_seconds <= 0 or slow_after <= 0 or workers < 1:
            raise ValueError("load: max_requests, max_seconds, slow_after, workers must be > 0")
        if not 0 <= post_share <= 1:
            raise ValueError("load: post_share must be from 0 to 1")
        # None: the default CA bundle; a file: the sandbox's self-signed certificate
        self.verify: str | bool = ca_file or True
        self.prefixes = tuple(prefixes)
        self.rate = rate
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.slow_after = slow_after
        self.post_share = post_share
        self.timeout = timeout
        self._workers = workers
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._slots = threading.BoundedSemaphore(workers)
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._t0 = 0.0
        self._t_end: float | None = None
        self._sent = 0
        self._ok = 0
        self._failed = 0
        self._by_status: Counter[str] = Counter()
        self._failures: list[Failure] = []
        self._acknowledged: dict[str, list[str]] = {p: [] for p in self.prefixes}
        self._starts: list[float] = []

    # -- running ----------------------------------------------------------------------------
    def start(self) -> Load:
        if self._thread is not None:
            raise RuntimeError("load: already started")
        self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="load")
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._schedule, name="load-scheduler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Report:
        """End the run now (no new request) and wait for the answers in flight."""
        self._stop.set()
        self.wait()
        return self.report()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the run ended by itself (a cap) and every answer is in; False on timeout."""
        if self._thread is None:
            raise RuntimeError("load: not started")
        self._thread.join(timeout)
        if self._thread.is_alive():
            return False
        assert self._pool is not None
        self._pool.shutdown(wait=True)  # each request is bounded by self.timeout
        with self._lock:
            if self._t_end is None:
                self._t_end = time.monotonic()
        return True

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _ended(self) -> bool:
        return self._stop.is_set() or time.monotonic() - self._t0 >= self.max_seconds

    def _schedule(self) -> None:
        """Start request after request, at least 1/rate s apart, never queued behind a busy
        pool (a queued start would go out in a burst later)."""
        interval = 1.0 / self.rate
        deadline = self._t0 + self.max_seconds
        next_at = self._t0
        for seq in range(self.max_requests):
            while True:  # until the start time, or the end of the run
                now = time.monotonic()
                if self._stop.is_set() or next_at >= deadline or now >= deadline:
                    return
                if now >= next_at:
                    break
                self._stop.wait(next_at - now)
            while not self._slots.acquire(timeout=0.05):  # a free worker
                if self._ended():
                    return
            if self._ended():
                self._slots.release()
                return
            started = time.monotonic()
            method, prefix = self._plan(seq)
            with self._lock:
                self._sent += 1
                self._starts.append(started - self._t0)
            assert self._pool is not None
            self._pool.submit(self._one, seq, method, prefix, started)
            next_at = started + interval

    def _plan(self, seq: int) -> tuple[str, str]:
        """Round robin over the prefixes; per prefix, POSTs spread evenly at post_share."""
        prefix = self.prefixes[seq % len(self.prefixes)]
        k = seq // len(self.prefixes)  # this prefix's k-th request
        post = math.ceil((k + 1) * self.post_share) > math.ceil(k * self.post_share)
        return ("POST" if post else "GET"), prefix

    def _one(self, seq: int, method: str, prefix: str, started: float) -> None:
        path = prefix + ("records" if method == "POST" else "records/count")
        try:
            self._request(seq, method, prefix, path, started)
        finally:
            self._slots.release()

    def _request(self, seq: int, method: str, prefix: str, path: str, started: float) -> None:
        try:
            with requests.Session() as session:  # a new connection for each request
                session.trust_env = False  # no proxy from the environment: loopback only
                resp = session.request(
                    method,
                    self.base_url + path,
                    json={"seq": seq} if method == "POST" else None,
                    headers=HEADERS,
                    verify=self.verify,
                    timeout=self.timeout,
                    allow_redirects=False,
                )
        except Exception as exc:  # requests' errors, and anything else: a failed request
            self._record(started, method, prefix, path, None, type(exc).__name__, None)
            return
        elapsed = time.monotonic() - started
        rid = None
        error = None
        if not 200 <= resp.status_code < 300:
            error = f"HTTP {resp.status_code}"
        elif method == "POST" and resp.status_code == 201:
            rid = _record_id(resp)
            if rid is None:
                error = "201 without an id"
        if error is None and elapsed > self.slow_after:
            error = f"slow: {elapsed:.1f}s"
        self._record(started, method, prefix, path, resp.status_code, error, rid)

    def _record(
        self,
        started: float,
        method: str,
        prefix: str,
        path: str,
        status: int | None,
        error: str | None,
        rid: str | None,
    ) -> None:
        seconds = time.monotonic() - started
        with self._lock:
            self._by_status[str(status) if status is not None else str(error)] += 1
            if rid is not None:
                self._acknowledged[prefix].append(rid)
            if error is None:
                self._ok += 1
                return
            self._failed += 1
            if len(self._failures) < MAX_FAILURES_KEPT:
                at = started - self._t0
                self._failures.append(Failure(at, method, path, status, error, seconds))

    # -- results ----------------------------------------------------------------------------
    def report(self) -> Report:
        with self._lock:
            end = self._t_end if self._t_end is not None else time.monotonic()
            return Report(
                sent=self._sent,
                ok=self._ok,
                failed=self._failed,
                by_status=Counter(self._by_status),
                failures=list(self._failures),
                acknowledged={p: list(ids) for p, ids in self._acknowledged.items()},
                duration=(end - self._t0) if self._t0 else 0.0,
                starts=list(self._starts),
            )

    def summary(self) -> str:
        return self.report().summary()

    def missing(self, prefix: str, ids: list[str] | None = None) -> list[str]:
        """The acknowledged ids (or ``ids``) that the service behind ``prefix`` does not have,
        asked in chunks of POST <prefix>records/missing. Raises RuntimeError on a bad answer."""
        if ids is None:
            with self._lock:
                ids = list(self._acknowledged.get(prefix, []))
        missing: list[str] = []
        path = prefix + "records/missing"
        for start in range(0, len(ids), MISSING_CHUNK):
            chunk = ids[start : start + MISSING_CHUNK]
            with requests.Session() as session:
                session.trust_env = False
                resp = session.post(
                    self.base_url + path,
                    json={"ids": chunk},
                    headers=HEADERS,
                    verify=self.verify,
                    timeout=self.timeout,
                    allow_redirects=False,
                )
            if resp.status_code != 200:
                raise RuntimeError(f"load: POST {path}: HTTP {resp.status_code}")
            try:
                missing += list(resp.json()["missing"])
            except (ValueError, KeyError, TypeError):
                raise RuntimeError(f"load: POST {path}: no list of missing ids") from None
        return missing


def _record_id(resp: requests.Response) -> str | None:
    try:
        rid = resp.json()["id"]
    except (ValueError, KeyError, TypeError):
        return None
    return rid if isinstance(rid, str) and rid else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.load",
        description="Bounded load on the sandbox's gateway; exit 1 on any failed request.",
    )
    parser.add_argument("--url", required=True, help="e.g. https://127.0.0.1:8443 (loopback)")
    parser.add_argument("--ca", default=None, help="CA file, e.g. .sandbox/tls/tls.crt")
    parser.add_argument("--prefix", action="append", help="repeatable; default /api/")
    parser.add_argument("--seconds", type=float, default=20.0, help="time cap (default 20)")
    parser.add_argument("--rate", type=float, default=8.0, help=f"requests/s, at most {MAX_RATE:g}")
    parser.add_argument("--max-requests", type=int, default=1500)
    parser.add_argument("--slow-after", type=float, default=5.0)
    parser.add_argument("--post-share", type=float, default=0.5)
    parser.add_argument(
        "--check-stored",
        action="store_true",
        help="afterwards, ask each prefix's records/missing for the acknowledged ids",
    )
    args = parser.parse_args(argv)
    try:
        load = Load(
            args.url,
            args.ca,
            prefixes=tuple(args.prefix or ["/api/"]),
            rate=args.rate,
            max_requests=args.max_requests,
            max_seconds=args.seconds,
            slow_after=args.slow_after,
            post_share=args.post_share,
        )
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    load.start()
    try:
        load.wait()
    except KeyboardInterrupt:
        load.stop()
    report = load.report()
    print(report.summary())
    for failure in report.failures:
        print(f"  {failure.describe()}")
    lost = 0
    if args.check_stored:
        for prefix in load.prefixes:
            gone = load.missing(prefix)
            lost += len(gone)
            acked = len(report.acknowledged[prefix])
            print(f"  {prefix}: {acked} acknowledged, {len(gone)} missing from the store")
    return 1 if report.failed or lost else 0


if __name__ == "__main__":
    sys.exit(main())
