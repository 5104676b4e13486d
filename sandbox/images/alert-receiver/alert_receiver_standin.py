"""STAND-IN (sandbox only) for an environment's on-call endpoints: the webhook Alertmanager
pages (`alerting.webhooks`) and the dead-man's switch it pings (`alerting.watchdog`).

It records what it receives so a test can see an alert arrive:
- POST /<name> with an Alertmanager webhook payload (JSON with version "4", status, receiver
  and a list of alerts): kept in memory (the newest 500 per name), answered 200;
  anything else posted is answered 400 and not kept;
- GET /received/<name>: the payloads kept for that name, oldest first, each with
  `received_at` (Unix seconds) added;
- GET /health: 200.
Other paths are 404, other methods 405. Listens on PORT (default 9095).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEEP = 500
MAX_BODY = 1 << 20
NAME = re.compile(r"^/([a-z0-9][a-z0-9-]{0,62})$")
RECEIVED = re.compile(r"^/received/([a-z0-9][a-z0-9-]{0,62})$")

_lock = threading.Lock()
_kept: dict[str, deque[dict]] = defaultdict(lambda: deque(maxlen=KEEP))


def problem(payload: object) -> str | None:
    """Why this is not an Alertmanager webhook payload, or None."""
    if not isinstance(payload, dict):
        return "the body is not a JSON object"
    if payload.get("version") != "4":
        return "version is not \"4\" (Alertmanager's webhook format)"
    if payload.get("status") not in ("firing", "resolved"):
        return "status is neither firing nor resolved"
    alerts = payload.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        return "alerts is not a non-empty list"
    for alert in alerts:
        if not isinstance(alert, dict) or not isinstance(alert.get("labels"), dict) \
                or "alertname" not in alert["labels"]:
            return "an alert has no labels.alertname"
    return None


class Handler(BaseHTTPRequestHandler):
    server_version = "jafar-alert-receiver-standin"

    def answer(self, code: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/health":
            return self.answer(200, {"status": "ok"})
        found = RECEIVED.match(self.path)
        if not found:
            return self.answer(404, {"error": f"no such path {self.path}"})
        with _lock:
            kept = list(_kept.get(found.group(1), ()))
        return self.answer(200, kept)

    def do_POST(self) -> None:  # noqa: N802
        found = NAME.match(self.path)
        if not found:
            return self.answer(404, {"error": f"no such path {self.path}"})
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0 or length > MAX_BODY:
            return self.answer(400, {"error": f"Content-Length must be 1 to {MAX_BODY}"})
        try:
            payload = json.loads(self.rfile.read(length))
        except ValueError:
            return self.answer(400, {"error": "the body is not JSON"})
        why = problem(payload)
        if why:
            return self.answer(400, {"error": why})
        with _lock:
            _kept[found.group(1)].append({**payload, "received_at": time.time()})
        return self.answer(200, {"kept": len(payload["alerts"])})

    def do_PUT(self) -> None:  # noqa: N802
        self.answer(405, {"error": "POST alerts, GET /received/<name>"})

    do_DELETE = do_PATCH = do_PUT

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        print(f"{self.address_string()} {format % args}", flush=True)


def main() -> None:
    server = ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "9095"))), Handler)  # noqa: S104 - a container
    server.serve_forever()


if __name__ == "__main__":
    main()
