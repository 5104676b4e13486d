"""Retryable writes: the stand-in's counterpart of mongod's config.transactions.

A write command that carries ``lsid`` and ``txnNumber`` (and no ``autocommit``: not a
multi-document transaction) is a *retryable write*. Drivers resend it, with the same lsid and
txnNumber, after a network error, not knowing whether the first attempt was applied. As mongod
does, the stand-in remembers for each session the highest txnNumber it has seen and which
statements of that txnNumber were executed (statement *i* of a batch has stmtId *i*, or
``stmtId + i``, or ``stmtIds[i]``). A retried statement is not executed again: it counts as done
in ``n`` and is listed in ``retriedStmtIds``; a statement that was not executed (it failed, or
was never reached) is executed now. As in mongod the retry's documents are not compared with
the first attempt's: a txnNumber reused for another batch skips the statements already executed
under it (and says so in ``retriedStmtIds``). A txnNumber lower than the session's highest:
``TransactionTooOld`` (225), as mongod.

A session is the lsid's ``id`` together with the user it is used by (mongod's ``uid``: SHA-256
of ``user@db``, of the empty string without authentication), so one user cannot retry into
another's session.

The table lives in the state document (``sessions``), so it is saved in the same atomic write
as the documents it describes and survives a restart with them, and it travels with the
documents in the replication snapshot. It is bounded: a session unused for
``SESSION_LIFETIME`` (logicalSessionTimeoutMinutes, 30 min) is forgotten, as mongod reaps an
expired session's record, and at most ``MAX_SESSIONS`` are kept (the least recently used goes
first; that cap is the stand-in's own). A retry in a forgotten session is executed again, as in
mongod once a session's record has been reaped. A session's entry holds its executed stmtIds as
merged ranges, so it grows with the failures inside one batch, not with its size.
"""

from __future__ import annotations

import bisect
import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bson import Int64
from bson.binary import Binary

from .errors import CommandError, bson_type_name, not_implemented

if TYPE_CHECKING:
    from .connection import Connection
    from .store import Store

# The retryable write commands of mongod that the stand-in implements (mongod's list also has
# update, delete, findAndModify and bulkWrite, which the stand-in does not implement at all).
RETRYABLE_WRITE_COMMANDS = frozenset({"insert"})
SESSION_LIFETIME = 30 * 60.0  # seconds: hello's logicalSessionTimeoutMinutes
MAX_SESSIONS = 10_000


@dataclass(frozen=True)
class RetryableWrite:
    key: str  # "<lsid id as hex>:<uid as hex>": the table's key
    txn_number: int
    label: str  # the session as mongod's messages print it


def _parse(conn: Connection, name: str, doc: dict) -> RetryableWrite | None:
    """The retryable write this command is, or None; raises as mongod refuses session fields."""
    if "txnNumber" not in doc or "autocommit" in doc:
        return None  # not a retryable write (transactions are refused before this)
    if conn.auth_enabled and conn.user is None:
        # As mongod: an unauthenticated client's session fields are ignored (with the localhost
        # exception, or for a command that then fails for want of authentication).
        return None
    txn_number = doc["txnNumber"]
    if not isinstance(txn_number, Int64):
        raise CommandError(
            14,
            "BSON field 'OperationSessionInfo.txnNumber' is the wrong type "
            f"'{bson_type_name(txn_number)}', expected type 'long'",
        )
    lsid = doc.get("lsid")
    if lsid is None:
        raise CommandError(72, "Transaction number requires a session ID to also be specified")
    if not isinstance(lsid, dict):
        raise CommandError(
            14,
            "BSON field 'OperationSessionInfo.lsid' is the wrong type "
            f"'{bson_type_name(lsid)}', expected type 'object'",
        )
    if "id" not in lsid:
        raise CommandError(
            40414, "BSON field 'OperationSessionInfo.lsid.id' is missing but a required field"
        )
    lsid_id = lsid["id"]
    if isinstance(lsid_id, uuid.UUID):
        lsid_id = Binary(lsid_id.bytes, 4)
    if not (isinstance(lsid_id, Binary) and lsid_id.subtype == 4 and len(lsid_id) == 16):
        raise CommandError(
            14, "BSON field 'OperationSessionInfo.lsid.id' is the wrong type, expected a UUID"
        )
    if set(lsid) - {"id", "uid"}:
        raise not_implemented("internal sessions (lsid fields other than id and uid)")
    user = f"{conn.user[0]}@{conn.user[1]}" if conn.user else ""
    uid = hashlib.sha256(user.encode("utf-8")).digest()
    if "uid" in lsid and not (isinstance(lsid["uid"], bytes) and bytes(lsid["uid"]) == uid):
        raise CommandError(13, "Unauthorized to set user digest in LogicalSessionId id")
    if not conn.member.opts.replset:
        raise CommandError(
            20, "Transaction numbers are only allowed on a replica set member or mongos"
        )
    if txn_number < 0:
        raise CommandError(72, "Transaction number cannot be negative")
    if name not in RETRYABLE_WRITE_COMMANDS:
        raise CommandError(
            50768,
            "txnNumber may only be provided for multi-document transactions and retryable "
            f"write commands. autocommit:false was not provided, and {name} is not a retryable "
            "write command.",
        )
    session_uuid = uuid.UUID(bytes=bytes(lsid_id))
    return RetryableWrite(
        key=f"{session_uuid.hex}:{uid.hex()}",
        txn_number=int(txn_number),
        label=f'{{ id: UUID("{session_uuid}"), uid: BinData(0, {uid.hex().upper()}) }}',
    )


def check(conn: Connection, name: str, doc: dict) -> None:
    """Refuse the session fields of any command as mongod does, before it runs."""
    _parse(conn, name, doc)


def retryable_write(conn: Connection, name: str, doc: dict) -> RetryableWrite | None:
    return _parse(conn, name, doc)


def statement_ids(doc: dict, count: int) -> list[int]:
    """The stmtIds of a batch's statements: stmtIds, or stmtId (default 0) counting up."""
    if "stmtIds" in doc:
        ids = doc["stmtIds"]
        if not isinstance(ids, list) or any(
            not isinstance(i, int) or isinstance(i, bool) for i in ids
        ):
            raise CommandError(14, "stmtIds must be an array of integers")
        if len(ids) != count:
            raise CommandError(2, "Number of statement ids must match the number of batch entries")
        return [int(i) for i in ids]
    first = doc.get("stmtId", 0)
    if not isinstance(first, int) or isinstance(first, bool):
        raise CommandError(14, "stmtId must be an integer")
    return [int(first) + i for i in range(count)]


class Transaction:
    """One session's current retryable write (its txnNumber), seen under the store's lock."""

    def __init__(self, entry: dict) -> None:
        self.entry = entry

    def executed(self, stmt_id: int) -> bool:
        ranges = self.entry["executed"]
        i = bisect.bisect_right(ranges, stmt_id, key=lambda r: r[0])
        return i > 0 and ranges[i - 1][1] >= stmt_id

    def record(self, stmt_id: int) -> None:
        """Mark stmt_id executed (kept as sorted, merged [first, last] ranges)."""
        ranges = self.entry["executed"]
        i = bisect.bisect_right(ranges, stmt_id, key=lambda r: r[0])
        if i > 0 and ranges[i - 1][1] >= stmt_id - 1:
            before = ranges[i - 1]
            before[1] = max(before[1], stmt_id)
            if i < len(ranges) and ranges[i][0] <= before[1] + 1:
                before[1] = max(before[1], ranges[i][1])
                del ranges[i]
        elif i < len(ranges) and ranges[i][0] == stmt_id + 1:
            ranges[i][0] = stmt_id
        else:
            ranges.insert(i, [stmt_id, stmt_id])


def begin(store: Store, write: RetryableWrite) -> Transaction:
    """Start or continue the session's retryable write ``write.txn_number``. Call with
    ``store.lock`` held, and keep it until the statements are executed and recorded."""
    table = store.state.setdefault("sessions", {})
    now = time.time()
    entry = table.pop(write.key, None)
    if entry is not None and now - entry["lastUse"] > SESSION_LIFETIME:
        entry = None  # expired: forgotten, as mongod reaps an expired session's record
    if entry is not None and entry["txnNumber"] > write.txn_number:
        table[write.key] = entry  # back in its place; a refused command is no use
        raise CommandError(
            225,
            f"Retryable write with txnNumber {write.txn_number} is prohibited on session "
            f"{write.label} because a newer retryable write with txnNumber "
            f"{entry['txnNumber']} has already started on this session.",
        )
    if entry is None or entry["txnNumber"] < write.txn_number:
        entry = {"txnNumber": Int64(write.txn_number), "executed": []}
    entry["lastUse"] = now
    table[write.key] = entry  # last: the table is in least recently used order
    _prune(table, now)
    return Transaction(entry)


def _prune(table: dict, now: float) -> None:
    """Forget the sessions beyond MAX_SESSIONS and the expired ones, oldest first (the table is
    in order of last use, so the first one that stays ends the walk)."""
    while table:
        oldest = next(iter(table))
        if len(table) <= MAX_SESSIONS and now - table[oldest]["lastUse"] <= SESSION_LIFETIME:
            return
        del table[oldest]
