"""Persistent state of one stand-in member, kept in --dbpath as one BSON file written atomically.

Layout of the state document:
    replset:  {config: <replica set config or None>, me: "host:port" or None}
    repl:     {epoch: str, seq: int}   identifies the replicated part's version
    users:    [user documents, with SCRAM credentials, never a password]
    data:     {db: {collection: [documents]}}
    sessions: {"<lsid id>:<uid>": {txnNumber, executed: [[first, last] stmtId ranges], lastUse}}
              the retryable writes' table (sessions.py); absent from older state files
    catalog:  {db: {collection: {uuid, options, indexes}}}  (catalog.py); absent from older
              state files
"""

from __future__ import annotations

import fcntl
import os
import threading
import uuid

from . import wire

STATE_FILE = "standin-state.bson"
LOCK_FILE = "mongod.lock"


class DBPathError(Exception):
    def __init__(self, message: str, exit_code: int = 100) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Store:
    def __init__(self, dbpath: str) -> None:
        self.dbpath = dbpath
        self.path = os.path.join(dbpath, STATE_FILE)
        self.lock = threading.RLock()
        self._lock_handle = None
        self.state = None

    def open(self) -> None:
        if not os.path.isdir(self.dbpath):
            raise DBPathError(
                f"NonExistentPath: Data directory {self.dbpath} not found. Create the missing "
                "directory or specify another path using the --dbpath command line option."
            )
        lock_path = os.path.join(self.dbpath, LOCK_FILE)
        try:
            handle = open(lock_path, "a+")  # noqa: SIM115 - held for the process lifetime
        except OSError as exc:
            raise DBPathError(
                f"Unable to create/open the lock file: {lock_path} ({exc.strerror}). "
                "Is a mongod instance already running?"
            ) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise DBPathError(
                f"DBPathInUse: Unable to lock the lock file: {lock_path}. Another "
                f"mongod instance is already running on the {self.dbpath} directory"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock_handle = handle
        if os.path.exists(self.path):
            with open(self.path, "rb") as f:
                self.state = wire.decode(f.read())
        else:
            self.state = {
                "standin_format": 1,
                "replset": {"config": None, "me": None},
                "repl": {"epoch": uuid.uuid4().hex, "seq": 0},
                "users": [],
                "data": {},
                "sessions": {},
                "catalog": {},
            }

    def save(self) -> None:
        """Write the whole state atomically: temp file, fsync, rename, fsync the directory."""
        with self.lock:
            data = wire.encode(self.state)
            tmp = self.path + ".tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            dfd = os.open(self.dbpath, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    # users -----------------------------------------------------------------------------
    def find_user(self, user: str, db: str) -> dict | None:
        for doc in self.state["users"]:
            if doc["user"] == user and doc["db"] == db:
                return doc
        return None

    def has_users(self) -> bool:
        return bool(self.state["users"])

    def bump_repl(self) -> None:
        """Mark a change of the replicated part (users, data)."""
        self.state["repl"]["seq"] += 1

    def repl_version(self) -> list:
        return [self.state["repl"]["epoch"], self.state["repl"]["seq"]]
