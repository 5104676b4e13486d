"""tests.support.load against a local HTTP server on 127.0.0.1 (no sandbox needed).

The server plays a jafar service's records API and, on demand, answers 500, answers late or
drops the connection without an answer.
"""

from __future__ import annotations

import json
import re
import shutil
import ssl
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support import load as load_mod
from tests.support.load import Load


class Backend(ThreadingHTTPServer):
    """A records API on 127.0.0.1. ``plan`` gives the behaviour of the request whose sequence
    number (a POST's ``seq``) is n ("ok", "500", "drop", "delay:<s>"), not of the n-th to
    arrive: concurrent requests may arrive in any order. Any other request gets ``default``."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.plan: dict[int, str] = {}
        self.default = "ok"
        self.arrivals: list[tuple[str, str, str]] = []  # method, path, Connection header
        self.connections = 0
        self.stored: dict[str, set[str]] = {}  # prefix -> ids
        self.answered: set[str] = set()  # ids sent in a 201

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def behaviour(self, method: str, path: str, connection: str, seq: int | None) -> str:
        with self.lock:
            self.arrivals.append((method, path, connection))
            return self.default if seq is None else self.plan.get(seq, self.default)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive would be possible: the client must not use it
    server: Backend

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def answer(self, status: int, doc: object) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        self.serve("GET", b"")

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", "0"))
        self.serve("POST", self.rfile.read(length))

    def serve(self, method: str, body: bytes) -> None:
        srv = self.server
        seq = json.loads(body).get("seq") if body else None
        what = srv.behaviour(method, self.path, self.headers.get("Connection", ""), seq)
        if what == "drop":
            self.close_connection = True
            return  # no answer at all: the client sees the connection closed
        if what == "500":
            return self.answer(500, {"error": "boom"})
        if what.startswith("delay:"):
            time.sleep(float(what.removeprefix("delay:")))
        prefix, _, rest = self.path.rpartition("/records")
        prefix += "/"
        with srv.lock:
            stored = srv.stored.setdefault(prefix, set())
            if method == "POST" and rest == "":
                assert "seq" in json.loads(body)
                rid = uuid.uuid4().hex
                stored.add(rid)
                srv.answered.add(rid)
                return self.answer(201, {"id": rid})
            if method == "GET" and rest == "/count":
                return self.answer(200, {"count": len(stored)})
            if method == "POST" and rest == "/missing":
                ids = json.loads(body)["ids"]
                return self.answer(200, {"missing": [i for i in ids if i not in stored]})
        self.answer(404, {"error": "not found"})


@pytest.fixture
def backend() -> Iterator[Backend]:
    srv = Backend()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def test_counts_and_classifies_failures(backend: Backend) -> None:
    # requests 2 and 4 (POSTs) fail outright; request 6 (a POST) succeeds, but too late
    # (generous margins: the fast tests share the machine with the end-to-end drills)
    backend.plan = {2: "500", 4: "drop", 6: "delay:2.5"}
    load = Load(backend.url, None, rate=10, max_requests=10, slow_after=1.5)
    load.start()
    assert load.wait(timeout=20)
    report = load.report()
    assert (report.sent, report.ok, report.failed) == (10, 7, 3)
    assert report.sent == report.ok + report.failed
    assert report.by_status == {"200": 5, "201": 3, "500": 1, "ConnectionError": 1}
    errors = {(f.method, f.path, f.status, f.error.split(":")[0]) for f in report.failures}
    assert errors == {
        ("POST", "/api/records", 500, "HTTP 500"),
        ("POST", "/api/records", None, "ConnectionError"),
        ("POST", "/api/records", 201, "slow"),
    }
    slow = next(f for f in report.failures if f.error.startswith("slow"))
    assert slow.seconds >= 2.5
    assert 0.5 <= slow.at < 2.5  # the 7th start (0.6 s at 10 requests/s), not its end (3.1 s)
    # alternating POST and GET, each on a new connection that asks to be closed
    assert [m for m, _, _ in backend.arrivals] == ["POST", "GET"] * 5
    assert {p for _, p, _ in backend.arrivals} == {"/api/records", "/api/records/count"}
    assert {c for _, _, c in backend.arrivals} == {"close"}
    assert backend.connections == len(backend.arrivals) == 10
    # acknowledged: every 201, the slow one included (the store has it)
    assert set(report.acknowledged["/api/"]) == backend.answered
    assert len(backend.answered) == 3
    assert "10 sent, 7 ok, 3 failed" in report.summary()
    # the third request's start: 0.2 s on schedule, later when the machine is busy (the
    # schedule never runs ahead)
    first = re.search(r"first failure \+(\d+\.\d+)s POST /api/records: HTTP 500",
                      report.summary())
    assert first and float(first.group(1)) >= 0.19, report.summary()


def test_rate_is_kept_and_never_exceeded_and_time_caps_the_run(backend: Backend) -> None:
    backend.default = "delay:1.0"  # slow answers (but not failures) must not lower the rate
    load = Load(backend.url, None, rate=10, max_requests=1500, max_seconds=1.5, slow_after=2)
    start = time.monotonic()
    load.start()
    assert load.wait(timeout=10)  # it ended by itself
    elapsed = time.monotonic() - start
    report = load.report()
    # about rate x seconds (15), never above; a client waiting for each answer would send 2.
    # The lower bound leaves room for a starved CI machine that wakes the sender late.
    assert 6 <= report.sent <= 15, report.summary()
    assert report.failed == 0
    assert report.ok == report.sent
    assert elapsed < 1.5 + 1.0 + 2.5  # the cap plus the last answer, not rate x answers
    starts = report.starts
    assert starts[-1] < 1.5
    # never more than `rate` starts in any window of one second
    assert all(starts[i + 10] - starts[i] >= 1.0 - 1e-6 for i in range(len(starts) - 10))


def test_request_count_caps_the_run(backend: Backend) -> None:
    load = Load(backend.url, None, rate=10, max_requests=5, max_seconds=60)
    load.start()
    assert load.wait(timeout=10)
    report = load.report()
    assert (report.sent, report.ok, report.failed) == (5, 5, 0)
    assert report.duration < 5  # 0.4 s at this rate; far from the 60 s time cap
    assert len(backend.arrivals) == 5


def test_stop_ends_the_run_and_waits_for_answers(backend: Backend) -> None:
    backend.default = "delay:0.3"
    start = time.monotonic()
    with Load(backend.url, None, rate=10, max_seconds=60) as load:
        time.sleep(0.45)
    stopped = time.monotonic() - start
    report = load.report()  # after stop(): every answer is in
    assert 1 <= report.sent <= stopped * 10 + 1  # it stopped sending when told
    assert report.sent == report.ok + report.failed == len(backend.arrivals)


def test_prefixes_ids_and_missing(backend: Backend) -> None:
    load = Load(backend.url, None, prefixes=("/api/", "/wallet/"), rate=10, max_requests=8)
    load.start()
    assert load.wait(timeout=5)
    report = load.report()
    assert report.failed == 0, report.summary()
    # round robin over the prefixes; each prefix alternates POST and GET (the plan; requests
    # run concurrently, so on a loaded machine they may arrive in another order)
    assert [load._plan(i) for i in range(8)] == [
        ("POST", "/api/"),
        ("POST", "/wallet/"),
        ("GET", "/api/"),
        ("GET", "/wallet/"),
    ] * 2
    assert Counter((m, p) for m, p, _ in backend.arrivals) == {
        ("POST", "/api/records"): 2,
        ("POST", "/wallet/records"): 2,
        ("GET", "/api/records/count"): 2,
        ("GET", "/wallet/records/count"): 2,
    }
    for prefix in ("/api/", "/wallet/"):
        assert len(report.acknowledged[prefix]) == 2
        assert set(report.acknowledged[prefix]) == backend.stored[prefix]
        assert load.missing(prefix) == []
    lost = report.acknowledged["/wallet/"][0]
    backend.stored["/wallet/"].discard(lost)
    assert load.missing("/wallet/") == [lost]
    # many ids: asked in chunks the services accept
    before = len(backend.arrivals)
    ids = [f"x{i}" for i in range(2500)]
    assert load.missing("/api/", ids) == ids
    assert len(backend.arrivals) - before == 3


def test_missing_raises_on_a_bad_answer(backend: Backend) -> None:
    backend.default = "500"
    load = Load(backend.url, None)
    with pytest.raises(RuntimeError, match="HTTP 500"):
        load.missing("/api/", ["a"])


def test_post_share() -> None:
    load = Load("http://127.0.0.1:1", None, post_share=0.25)
    assert [load._plan(i)[0] for i in range(8)] == ["POST", "GET", "GET", "GET"] * 2
    assert {Load("http://127.0.0.1:1", None, post_share=0)._plan(i)[0] for i in range(5)} == {
        "GET"
    }


@pytest.mark.parametrize(
    "url",
    [
        "https://10.0.0.5:8443",
        "https://example.com",
        "https://127.0.0.1.example.com:8443",
        "https://user@192.168.1.1",
        "ftp://127.0.0.1/",
        "127.0.0.1:8443",
    ],
)
def test_refuses_anything_but_loopback(url: str) -> None:
    with pytest.raises(ValueError):
        Load(url, None)


@pytest.mark.parametrize(
    "url", ["https://127.0.0.1:8443", "http://localhost:3000/", "https://[::1]:8443"]
)
def test_accepts_loopback(url: str) -> None:
    assert Load(url, None).base_url == url.rstrip("/")


@pytest.mark.parametrize("kwargs", [{"rate": 11}, {"rate": 0}, {"prefixes": ("api",)}])
def test_refuses_bad_settings(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Load("https://127.0.0.1:8443", None, **kwargs)


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl on this machine")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def test_tls_with_the_sandbox_style_ca_file(backend: Backend, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    backend.socket = context.wrap_socket(backend.socket, server_side=True)
    url = backend.url.replace("http://", "https://")
    trusted = Load(url, str(cert), rate=10, max_requests=2)
    trusted.start()
    assert trusted.wait(timeout=5)
    assert trusted.report().ok == 2, trusted.summary()
    # without the CA file: default verification, which refuses the self-signed certificate
    untrusted = Load(url, None, rate=10, max_requests=1)
    untrusted.start()
    assert untrusted.wait(timeout=5)
    assert untrusted.report().by_status == {"SSLError": 1}


def test_cli_prints_the_summary_and_exits_1_on_a_failure(
    backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    # a count cap, not a time cap: exactly 4 requests however slow this machine is
    argv = ["--url", backend.url, "--prefix", "/api/", "--seconds", "10", "--rate", "10",
            "--max-requests", "4"]
    assert load_mod.main([*argv, "--check-stored"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("load: 4 sent, 4 ok, 0 failed")
    assert "/api/: 2 acknowledged, 0 missing from the store" in out
    backend.default = "500"
    assert load_mod.main(argv) == 1
    out = capsys.readouterr().out
    assert "0 ok, 4 failed" in out
    assert "POST /api/records: HTTP 500" in out
    assert load_mod.main(["--url", "https://10.1.1.1", "--seconds", "1"]) == 2
