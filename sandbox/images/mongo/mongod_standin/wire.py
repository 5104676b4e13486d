"""MongoDB wire protocol framing: OP_MSG, legacy OP_QUERY / OP_REPLY, with pymongo's bson."""

from __future__ import annotations

import itertools
import socket
import ssl
import struct
import threading

import bson
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions

OP_REPLY = 1
OP_QUERY = 2004
OP_COMPRESSED = 2012
OP_MSG = 2013

MSG_CHECKSUM_PRESENT = 1
MSG_MORE_TO_COME = 2

MAX_MESSAGE_SIZE = 48_000_000

# Binary subtypes 3 and 4 stay Binary both ways, so client data round-trips byte for byte,
# with pymongo 3.11 (Debian 12) and 4.x alike.
CODEC = CodecOptions(uuid_representation=UuidRepresentation.UNSPECIFIED)

_HEADER = struct.Struct("<iiii")
_request_ids = itertools.count(1)
_ids_lock = threading.Lock()


class ProtocolError(Exception):
    """The peer sent something that is not a valid message: the connection is closed."""


def next_request_id() -> int:
    with _ids_lock:
        return next(_request_ids) & 0x7FFFFFFF


def encode(doc: dict) -> bytes:
    return bson.encode(doc, codec_options=CODEC)


def decode(data: bytes) -> dict:
    return bson.decode(data, codec_options=CODEC)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise EOFError("connection closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_message(sock: socket.socket) -> tuple[int, int, int, bytes]:
    """Read one message: returns (request_id, response_to, op_code, body bytes)."""
    header = _recv_exactly(sock, 16)
    length, request_id, response_to, op_code = _HEADER.unpack(header)
    if length < 16 or length > MAX_MESSAGE_SIZE:
        raise ProtocolError(f"invalid message length {length}")
    return request_id, response_to, op_code, _recv_exactly(sock, length - 16)


def _cstring(data: bytes, pos: int) -> tuple[str, int]:
    end = data.index(b"\x00", pos)
    return data[pos:end].decode("utf-8"), end + 1


def parse_op_msg(body: bytes) -> tuple[int, dict]:
    """Return (flags, command document with kind-1 sections merged in as lists)."""
    if len(body) < 5:
        raise ProtocolError("OP_MSG too short")
    (flags,) = struct.unpack_from("<I", body, 0)
    end = len(body) - (4 if flags & MSG_CHECKSUM_PRESENT else 0)
    pos = 4
    doc = None
    sequences = []
    while pos < end:
        kind = body[pos]
        pos += 1
        (size,) = struct.unpack_from("<i", body, pos)
        if size < 5 or pos + size > end:
            raise ProtocolError("invalid OP_MSG section size")
        if kind == 0:
            if doc is not None:
                raise ProtocolError("OP_MSG with two body sections")
            doc = decode(body[pos : pos + size])
        elif kind == 1:
            ident, docs_start = _cstring(body, pos + 4)
            docs = bson.decode_all(body[docs_start : pos + size], CODEC)
            sequences.append((ident, docs))
        else:
            raise ProtocolError(f"unknown OP_MSG section kind {kind}")
        pos += size
    if doc is None:
        raise ProtocolError("OP_MSG without a body section")
    for ident, docs in sequences:
        if ident in doc:
            raise ProtocolError(f"duplicate field {ident!r} in OP_MSG body and sequence")
        doc[ident] = docs
    return flags, doc


def parse_op_query(body: bytes) -> tuple[str, dict]:
    """Return (full collection name, query document) of a legacy OP_QUERY."""
    ns, pos = _cstring(body, 4)
    pos += 8  # numberToSkip, numberToReturn
    (size,) = struct.unpack_from("<i", body, pos)
    query = decode(body[pos : pos + size])
    return ns, query


def op_msg(doc: dict, response_to: int = 0, flags: int = 0) -> tuple[int, bytes]:
    payload = struct.pack("<I", flags) + b"\x00" + encode(doc)
    request_id = next_request_id()
    header = _HEADER.pack(16 + len(payload), request_id, response_to, OP_MSG)
    return request_id, header + payload


def op_reply(doc: dict, response_to: int) -> bytes:
    payload = struct.pack("<iqii", 0, 0, 0, 1) + encode(doc)
    header = _HEADER.pack(16 + len(payload), next_request_id(), response_to, OP_REPLY)
    return header + payload


class WireClient:
    """A minimal OP_MSG client, used by a member to talk to the other members; over TLS when
    given a context (the handshake, bounded by ``timeout``, checks the peer's certificate and
    its name against ``host``, as the context says)."""

    def __init__(
        self, host: str, port: int, timeout: float, tls: ssl.SSLContext | None = None
    ) -> None:
        self.address = (host, port)
        self.sock = socket.create_connection(self.address, timeout=timeout)
        if tls is not None:
            try:
                self.sock = tls.wrap_socket(self.sock, server_hostname=host)
            except BaseException:
                self.sock.close()
                raise
        self.sock.settimeout(timeout)

    def command(self, db: str, doc: dict) -> dict:
        doc = dict(doc)
        doc["$db"] = db
        request_id, data = op_msg(doc)
        self.sock.sendall(data)
        _, response_to, op_code, body = read_message(self.sock)
        if op_code != OP_MSG or response_to != request_id:
            raise ProtocolError("unexpected reply from peer")
        return parse_op_msg(body)[1]

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
