"""Cursors: results that do not fit one batch stay on the member for getMore, as in mongod.

A first batch holds ``batchSize`` documents (find's default: 101, as mongod), a getMore batch
``batchSize`` or as many as fit; no batch is larger than 16 MiB of documents (a document
bigger than that still goes alone), so a reply never exceeds what a driver accepts. The rest
stays in a cursor with a random non-zero id, owned by the user who opened it (another user's
getMore or killCursors: 13 Unauthorized) and bound to its namespace. A cursor is gone when it
is exhausted, killed (killCursors, or endSessions of its session), idle for 10 minutes
(mongod's cursorTimeoutMillis), or its collection was dropped (getMore: 175 QueryPlanKilled,
as mongod). Cursors live in memory only, per member: a restart forgets them (43
CursorNotFound afterwards, as after a mongod restart).

The documents of a cursor are those that matched when it was opened (the stand-in has no
update or delete, so they cannot change under it; a drop is detected).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bson import Int64

from . import wire
from .errors import CommandError

if TYPE_CHECKING:
    from .connection import Connection

DEFAULT_FIRST_BATCH = 101
MAX_BATCH_BYTES = 16 * 1024 * 1024
CURSOR_TIMEOUT = 600.0  # seconds: mongod's cursorTimeoutMillis default
MAX_CURSORS = 10_000  # the stand-in's own cap: the least recently used go first


@dataclass
class Cursor:
    id: int
    ns: str
    docs: list
    position: int
    owner: tuple | None  # (user, db) of who opened it; None without authentication
    lsid: object  # the session's lsid id (a UUID Binary), or None
    alive: Callable[[], bool]  # False once the collection it reads was dropped
    last_used: float = field(default_factory=time.monotonic)


class CursorRegistry:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cursors: dict[int, Cursor] = {}

    def _expire(self, now: float) -> None:
        for cid in [c.id for c in self.cursors.values() if now - c.last_used > CURSOR_TIMEOUT]:
            del self.cursors[cid]
        while len(self.cursors) > MAX_CURSORS:
            oldest = min(self.cursors.values(), key=lambda c: c.last_used)
            del self.cursors[oldest.id]

    def open(self, ns: str, docs: list, position: int, owner: tuple | None, lsid: object,
             alive: Callable[[], bool]) -> int:
        with self.lock:
            now = time.monotonic()
            self._expire(now)
            cid = 0
            while cid == 0 or cid in self.cursors:
                cid = secrets.randbits(62)
            self.cursors[cid] = Cursor(cid, ns, docs, position, owner, lsid, alive, now)
            return cid

    def get(self, cid: int) -> Cursor | None:
        with self.lock:
            self._expire(time.monotonic())
            return self.cursors.get(cid)

    def close(self, cid: int) -> bool:
        with self.lock:
            return self.cursors.pop(cid, None) is not None

    def close_sessions(self, lsids: list) -> None:
        with self.lock:
            for cid in [c.id for c in self.cursors.values() if c.lsid is not None
                        and c.lsid in lsids]:
                del self.cursors[cid]


def take_batch(docs: list, position: int, batch_size: int | None) -> tuple[list, int]:
    """Documents from ``position``: at most ``batch_size`` (None: no count limit) and at most
    16 MiB (at least one); returns (batch, new position)."""
    batch: list = []
    size = 0
    while position < len(docs) and (batch_size is None or len(batch) < batch_size):
        doc_size = len(wire.encode(docs[position]))
        if batch and size + doc_size > MAX_BATCH_BYTES:
            break
        batch.append(docs[position])
        size += doc_size
        position += 1
    return batch, position


def batch_size_of(value: object, name: str, default: int | None) -> int | None:
    """A batchSize field: a non-negative number (0: no document in the first batch)."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CommandError(
            14, f"BSON field '{name}.batchSize' is the wrong type, expected a number"
        )
    if value < 0:
        raise CommandError(51024, f"BSON field 'batchSize' value must be >= 0, actual value "
                                  f"'{int(value)}'")
    return int(value)


def reply(cid: int, ns: str, batch: list, first: bool) -> dict:
    key = "firstBatch" if first else "nextBatch"
    return {"cursor": {key: batch, "id": Int64(cid), "ns": ns}}


def session_id(doc: dict) -> object:
    lsid = doc.get("lsid")
    return lsid.get("id") if isinstance(lsid, dict) else None


def first_reply(conn: Connection, doc: dict, ns: str, docs: list, batch_size: int | None,
                alive: Callable[[], bool], single_batch: bool = False) -> dict:
    """The reply of a command that opens a cursor (find, aggregate, listIndexes...): the first
    batch, and a cursor for the rest unless everything fit (or singleBatch)."""
    batch, position = take_batch(docs, 0, batch_size)
    cid = 0
    if position < len(docs) and not single_batch:
        cid = conn.member.cursors.open(ns, docs, position, conn.user, session_id(doc), alive)
    return reply(cid, ns, batch, first=True)
