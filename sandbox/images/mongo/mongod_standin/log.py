"""Structured log lines (JSON, like mongod 4.4+), on stdout, and kept for getLog.

Nothing secret is ever passed here: no password, no key, no SCRAM payload.
"""

from __future__ import annotations

import collections
import datetime
import json
import sys
import threading

_lock = threading.Lock()
_recent = collections.deque(maxlen=1024)
_startup_warnings = []
_total = 0


def _emit(
    severity: str, component: str, msg: str, attrs: dict, startup_warning: bool = False
) -> None:
    global _total
    entry = {
        "t": {"$date": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")},
        "s": severity,
        "c": component,
        "ctx": threading.current_thread().name,
        "msg": msg,
    }
    if attrs:
        entry["attr"] = attrs
    if startup_warning:
        entry["tags"] = ["startupWarnings"]
    line = json.dumps(entry, default=str)
    with _lock:
        _total += 1
        _recent.append(line)
        if startup_warning:
            _startup_warnings.append(line)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def info(component: str, msg: str, **attrs) -> None:
    _emit("I", component, msg, attrs)


def warning(component: str, msg: str, **attrs) -> None:
    _emit("W", component, msg, attrs)


def error(component: str, msg: str, **attrs) -> None:
    _emit("E", component, msg, attrs)


def startup_warning(msg: str) -> None:
    _emit("W", "CONTROL", msg, {}, startup_warning=True)


def get_log(name: str) -> tuple[int, list[str]] | None:
    """The lines getLog answers with, or None for an unknown log name."""
    with _lock:
        if name == "global":
            return _total, list(_recent)
        if name == "startupWarnings":
            return len(_startup_warnings), list(_startup_warnings)
    return None
