"""One client connection: framing, authentication state, authorization, command dispatch."""

from __future__ import annotations

import ipaddress
import os
from typing import TYPE_CHECKING

from . import (
    collection_commands,  # noqa: F401 - registers its commands in commands.COMMANDS
    commands,
    log,
    roles,
    sessions,
    tls,
    wire,
)
from .errors import CommandError, error_reply

if TYPE_CHECKING:
    import socket

    from .member import Member

# Pseudo-roles of an unauthenticated loopback connection while no user exists (the localhost
# exception): enough to initiate the replica set and create the first user, not to touch data.
LOCALHOST_EXCEPTION_ROLES = [
    {"role": "userAdminAnyDatabase", "db": "admin"},
    {"role": "clusterManager", "db": "admin"},
]
_HANDSHAKE_COMMANDS = {"hello", "isMaster", "ismaster"}
TRACE = os.environ.get("STANDIN_TRACE") == "1"  # log each command's name and field names


class Connection:
    def __init__(self, member: Member, sock: socket.socket, address: str) -> None:
        self.member = member
        self.sock = sock
        self.remote = f"{address[0]}:{address[1]}"
        try:
            self.is_local = ipaddress.ip_address(address[0].split("%")[0]).is_loopback
        except ValueError:
            self.is_local = False
        self.id = next(member.connection_ids)
        self.user = None  # (user, db) once authenticated
        self.user_id = None  # the userId of the user document it authenticated against
        self.conversation = None  # (id, ServerConversation, db, skip_empty_exchange)
        self.next_conversation_id = 1

    # ---- authorization ---------------------------------------------------------------------
    @property
    def auth_enabled(self) -> bool:
        return self.member.opts.auth

    def localhost_exception(self) -> bool:
        return (
            self.auth_enabled
            and self.user is None
            and self.is_local
            and not self.member.has_users()
        )

    def user_roles(self) -> list[dict]:
        if self.user is None:
            return []
        user, db = self.user
        if (user, db) == ("__system", "local"):
            return [{"role": "__system", "db": "admin"}]
        doc = self.member.store.find_user(user, db)
        return list(doc["roles"]) if doc else []

    def effective_roles(self) -> list[dict]:
        if not self.auth_enabled:
            return [{"role": "__system", "db": "admin"}]
        found = self.user_roles()
        if self.localhost_exception():
            found += LOCALHOST_EXCEPTION_ROLES
        return found

    def allows(self, action: str, db: str = None) -> bool:
        """Whether this connection's roles grant ``action`` (on ``db`` when db scoped)."""
        return roles.allows(self.effective_roles(), action, db)

    def require(self, name: str, action: str, db: str = None) -> None:
        if self.allows(action, db):
            return
        if self.user is None and not self.localhost_exception():
            raise CommandError(13, f"Command {name} requires authentication")
        raise CommandError(
            13, f"not authorized on {db or 'admin'} to execute command {{ {name}: ... }}"
        )

    def authenticated(self, user: str, db: str) -> None:
        """Record a successful authentication, and which user document it was (its userId)."""
        self.user = (user, db)
        doc = None if (user, db) == ("__system", "local") else self.member.store.find_user(user, db)
        self.user_id = doc.get("userId") if doc else None

    def refresh_user(self) -> None:
        """As mongod after a user management command invalidates its user cache: a session whose
        user was dropped (or dropped and created again: another userId) is no longer logged in.
        A password change keeps the sessions already authenticated, as in mongod."""
        if self.user is None or self.user == ("__system", "local"):
            return
        with self.member.store.lock:
            doc = self.member.store.find_user(*self.user)
        if doc is None or doc.get("userId") != self.user_id:
            log.info(
                "ACCESS",
                "Removing user from auth session since it no longer exists",
                user=self.user[0],
                db=self.user[1],
                remote=self.remote,
            )
            self.user = None
            self.user_id = None

    def require_authenticated(self, name: str) -> None:
        if self.auth_enabled and self.user is None and not self.localhost_exception():
            raise CommandError(13, f"Command {name} requires authentication")

    # ---- message loop ----------------------------------------------------------------------
    def secure(self) -> bool:
        """Apply --tlsMode to this connection (in its own thread: a slow handshake never holds up
        the accept loop). False when the connection must end (a plain client under requireTLS,
        a failed or timed-out handshake, a client gone before its first byte)."""
        opts = self.member.opts
        if opts.server_tls is None:
            return True
        sock = tls.accept(self.sock, opts.server_tls, opts.tls_mode, self.remote, self.id)
        if sock is None:
            return False
        self.sock = sock
        return True

    def serve(self) -> None:
        log.info("NETWORK", "Connection accepted", remote=self.remote, connectionId=self.id)
        try:
            if not self.secure():
                return
            while not self.member.stopping.is_set():
                request_id, _, op_code, body = wire.read_message(self.sock)
                if op_code == wire.OP_MSG:
                    flags, doc = wire.parse_op_msg(body)
                    reply = self.run(doc)
                    if not flags & wire.MSG_MORE_TO_COME:
                        self.sock.sendall(wire.op_msg(reply, request_id)[1])
                elif op_code == wire.OP_QUERY:
                    ns, query = wire.parse_op_query(body)
                    self.sock.sendall(wire.op_reply(self.run_legacy(ns, query), request_id))
                else:
                    log.warning(
                        "NETWORK",
                        "Unsupported opcode; closing the connection",
                        opCode=op_code,
                        remote=self.remote,
                    )
                    break
        except (EOFError, ConnectionError, TimeoutError):
            pass
        except (wire.ProtocolError, ValueError, IndexError) as exc:
            log.warning(
                "NETWORK", "Bad message; closing the connection", remote=self.remote, error=str(exc)
            )
        except OSError as exc:
            log.warning("NETWORK", "Connection error", remote=self.remote, error=str(exc))
        finally:
            try:
                self.sock.close()
            except OSError:
                pass
            log.info("NETWORK", "Connection ended", remote=self.remote, connectionId=self.id)

    def run_legacy(self, ns: str, query: dict) -> dict:
        if "$query" in query:
            query = query["$query"]
        db, _, coll = ns.partition(".")
        name = next(iter(query), "") if coll == "$cmd" else "find"
        if coll != "$cmd" or name not in _HANDSHAKE_COMMANDS:
            return error_reply(
                352,
                f"Unsupported OP_QUERY command: {name}. The client driver may "
                "require an upgrade. For more details see "
                "https://dochub.mongodb.org/core/legacy-opcode-removal",
            )
        query = dict(query)
        query["$db"] = db
        return self.run(query)

    def run(self, doc: dict) -> dict:
        name = next(iter(doc), "")
        db = doc.get("$db")
        if not isinstance(db, str) or not db:
            return error_reply(40571, "OP_MSG requests require a $db argument")
        if TRACE:  # field names only: values may hold passwords
            log.info(
                "COMMAND",
                "Trace",
                command=name,
                db=db,
                fields=list(doc),
                pipeline=doc.get("pipeline") if name == "aggregate" else None,
                value=doc[name] if name == "getParameter" else None,
            )
        handler = commands.COMMANDS.get(name)
        if handler is not None and ("startTransaction" in doc or "autocommit" in doc):
            return error_reply(238, "the mongod stand-in does not implement transactions")
        if handler is None:
            log.info("COMMAND", "Command not found", command=name, remote=self.remote)
            return error_reply(59, f"no such command: '{name}'")
        try:
            self.refresh_user()
            sessions.check(self, name, doc)  # txnNumber: only on a retryable write, as mongod
            reply = handler(self, db, doc)
        except CommandError as exc:
            if exc.code not in (13, 18, 59):
                log.info(
                    "COMMAND", "Command failed", command=name, code=exc.code, errmsg=exc.errmsg
                )
            return exc.reply()
        except Exception as exc:  # a bug in the stand-in: say so, never answer ok
            log.error("COMMAND", "Stand-in internal error", command=name, error=repr(exc))
            return error_reply(1, f"mongod stand-in internal error in {name}: {type(exc).__name__}")
        reply.setdefault("ok", 1.0)
        return reply
