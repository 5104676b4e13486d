"""SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802 / 7677) as MongoDB uses them: credentials,
the server side of a conversation, and a client used between members (keyfile auth)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Callable

try:  # pymongo 3.x and 4.x both ship it
    from pymongo.saslprep import saslprep
except ImportError:  # pragma: no cover - only without pymongo's package next to bson

    def saslprep(data: bytes, prohibit_unassigned_code_points: bool = True) -> str:
        return data


MECHANISMS = ("SCRAM-SHA-1", "SCRAM-SHA-256")
_PARAMS = {
    # mechanism: (hash name, salt length, iteration count), the values mongod 7.0 uses
    "SCRAM-SHA-1": ("sha1", 16, 10000),
    "SCRAM-SHA-256": ("sha256", 28, 15000),
}


class ScramError(Exception):
    """The conversation cannot go on; the client gets AuthenticationFailed."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _hmac(name: str, key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg, name).digest()


def password_digest(user: str, password: str) -> str:
    """MongoDB's "digested" password, md5("user:mongo:password") in hex: what SCRAM-SHA-1
    hashes (mongod's createPasswordDigest; a client that digests sends this as pwd)."""
    return hashlib.md5(f"{user}:mongo:{password}".encode()).hexdigest()


def _prepared_password(mechanism: str, user: str, password: str, digested: bool = False) -> bytes:
    if mechanism == "SCRAM-SHA-1":
        return (password if digested else password_digest(user, password)).encode()
    return saslprep(password).encode("utf-8")


def make_credentials(
    mechanism: str,
    user: str,
    password: str,
    salt: bytes | None = None,
    iterations: int | None = None,
    digested: bool = False,
) -> dict:
    """Return the stored credentials for one mechanism: the password itself is not kept.

    ``digested``: for SCRAM-SHA-1 only, ``password`` is already the digest (password_digest),
    as a client sends it with ``digestPassword: false``.
    """
    if digested and mechanism != "SCRAM-SHA-1":
        raise ValueError(f"{mechanism} needs the password itself, not a digest")
    name, salt_len, default_iterations = _PARAMS[mechanism]
    salt = salt if salt is not None else os.urandom(salt_len)
    iterations = iterations or default_iterations
    salted = hashlib.pbkdf2_hmac(
        name, _prepared_password(mechanism, user, password, digested), salt, iterations
    )
    client_key = _hmac(name, salted, b"Client Key")
    return {
        "iterationCount": iterations,
        "salt": _b64(salt),
        "storedKey": _b64(hashlib.new(name, client_key).digest()),
        "serverKey": _b64(_hmac(name, salted, b"Server Key")),
    }


def _parse_attrs(message: str) -> dict[str, str]:
    attrs = {}
    for part in message.split(","):
        if len(part) < 2 or part[1] != "=":
            raise ScramError("malformed SCRAM message")
        attrs[part[0]] = part[2:]
    return attrs


def _unescape_user(name: str) -> str:
    return name.replace("=2C", ",").replace("=3D", "=")


def _escape_user(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


class ServerConversation:
    """One SCRAM conversation on the server side.

    ``lookup(user)`` returns the user's stored credentials for this mechanism, or None.
    """

    def __init__(self, mechanism: str, lookup: Callable) -> None:
        if mechanism not in _PARAMS:
            raise ScramError(f"unsupported mechanism {mechanism}")
        self.mechanism = mechanism
        self.hash_name = _PARAMS[mechanism][0]
        self.lookup = lookup
        self.user = None
        self.step = 0
        self.done = False

    def start(self, payload: bytes) -> bytes:
        """client-first -> server-first."""
        message = payload.decode("utf-8")
        if not message.startswith("n,"):
            raise ScramError("channel binding is not supported")
        gs2_end = message.index(",", 2) + 1
        self.client_first_bare = message[gs2_end:]
        attrs = _parse_attrs(self.client_first_bare)
        if "n" not in attrs or "r" not in attrs:
            raise ScramError("client-first message lacks n or r")
        self.user = _unescape_user(attrs["n"])
        creds = self.lookup(self.user)
        if creds is None:
            raise ScramError("no such user")
        self.creds = creds
        self.nonce = attrs["r"] + _b64(os.urandom(24))
        self.server_first = f"r={self.nonce},s={creds['salt']},i={creds['iterationCount']}"
        self.step = 1
        return self.server_first.encode("utf-8")

    def proceed(self, payload: bytes) -> bytes:
        """client-final -> server-final (step 1), then the empty exchange (step 2)."""
        if self.step == 2:
            self.done = True
            return b""
        if self.step != 1:
            raise ScramError("unexpected SCRAM step")
        message = payload.decode("utf-8")
        attrs = _parse_attrs(message)
        if attrs.get("r") != self.nonce or "p" not in attrs or "c" not in attrs:
            raise ScramError("nonce mismatch or missing proof")
        without_proof = message[: message.rindex(",p=")]
        auth_message = ",".join([self.client_first_bare, self.server_first, without_proof]).encode()
        stored_key = base64.b64decode(self.creds["storedKey"])
        server_key = base64.b64decode(self.creds["serverKey"])
        signature = _hmac(self.hash_name, stored_key, auth_message)
        proof = base64.b64decode(attrs["p"])
        if len(proof) != len(signature):
            raise ScramError("bad proof")
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(hashlib.new(self.hash_name, client_key).digest(), stored_key):
            raise ScramError("bad proof")
        self.step = 2
        return ("v=" + _b64(_hmac(self.hash_name, server_key, auth_message))).encode("utf-8")


def client_authenticate(
    command: Callable, user: str, db: str, password: str, mechanism: str = "SCRAM-SHA-256"
) -> None:
    """Authenticate over ``command(db, doc) -> reply`` (a WireClient); raises ScramError."""
    name = _PARAMS[mechanism][0]
    client_nonce = _b64(os.urandom(24))
    first_bare = f"n={_escape_user(user)},r={client_nonce}"
    reply = command(
        db,
        {
            "saslStart": 1,
            "mechanism": mechanism,
            "payload": ("n,," + first_bare).encode(),
            "options": {"skipEmptyExchange": True},
        },
    )
    if not reply.get("ok"):
        raise ScramError(reply.get("errmsg", "saslStart failed"))
    server_first = bytes(reply["payload"]).decode()
    attrs = _parse_attrs(server_first)
    if not attrs.get("r", "").startswith(client_nonce):
        raise ScramError("server nonce does not extend the client nonce")
    salted = hashlib.pbkdf2_hmac(
        name,
        _prepared_password(mechanism, user, password),
        base64.b64decode(attrs["s"]),
        int(attrs["i"]),
    )
    client_key = _hmac(name, salted, b"Client Key")
    without_proof = f"c=biws,r={attrs['r']}"
    auth_message = ",".join([first_bare, server_first, without_proof]).encode()
    signature = _hmac(name, hashlib.new(name, client_key).digest(), auth_message)
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    reply = command(
        db,
        {
            "saslContinue": 1,
            "conversationId": reply["conversationId"],
            "payload": f"{without_proof},p={_b64(proof)}".encode(),
        },
    )
    if not reply.get("ok"):
        raise ScramError(reply.get("errmsg", "saslContinue failed"))
    expected = "v=" + _b64(_hmac(name, _hmac(name, salted, b"Server Key"), auth_message))
    if bytes(reply["payload"]).decode() != expected:
        raise ScramError("server signature mismatch")
    while not reply.get("done"):
        reply = command(
            db, {"saslContinue": 1, "conversationId": reply["conversationId"], "payload": b""}
        )
        if not reply.get("ok"):
            raise ScramError(reply.get("errmsg", "saslContinue failed"))
