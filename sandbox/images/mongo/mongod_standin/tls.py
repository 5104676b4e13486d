"""TLS as mongod's ``--tlsMode`` does it, with Python's ``ssl``: ingress and member-to-member.

Ingress: with any mode but ``disabled`` the connection's first byte decides (peeked, not read):
0x16 (a TLS handshake record, the ClientHello) starts a TLS handshake; anything else is a plain
client, served under ``allowTLS``/``preferTLS`` and closed at once under ``requireTLS``, as mongod
closes it ("The server is configured to only allow SSL connections"). The wait for that byte and
the handshake share one deadline (HANDSHAKE_TIMEOUT), in the connection's own thread, so a client
that connects and stays silent, or drips its handshake, holds a --maxConns slot for seconds only.

Egress (member to member, ``preferTLS``/``requireTLS``; ``allowTLS`` members talk plain, as
mongod's do): the peer's certificate is verified against ``--tlsCAFile`` (the system store
without one) and its host name against the address used, unless ``--tlsAllowInvalidHostnames``;
the member presents its own certificate as a client certificate, as mongod does.

Client certificates are never required: the suite's clients present none. mongod requires them
when it has a ``--tlsCAFile`` and no ``--tlsAllowConnectionsWithoutCertificates``; the stand-in
refuses that combination at startup (options.py) instead of silently accepting what mongod would
reject. A certificate a client does present is verified against the CA file, as mongod does.
TLS 1.2 and later only. Nothing read from a PEM file is ever printed.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import time

from . import log

MODES = ("disabled", "allowTLS", "preferTLS", "requireTLS")
EGRESS_MODES = ("preferTLS", "requireTLS")  # modes in which members talk TLS to each other
# Seconds for a client's first byte and the whole TLS handshake; the tests shorten it.
HANDSHAKE_TIMEOUT = float(os.environ.get("STANDIN_TLS_HANDSHAKE_TIMEOUT", "10"))
TLS_HANDSHAKE_RECORD = 0x16  # first byte of a TLS record carrying a ClientHello
SSL_HANDSHAKE_FAILED = 141
ONLY_TLS = "The server is configured to only allow SSL connections"


class TLSConfigError(Exception):
    """A PEM or CA file mongod could not use: it refuses to start (exit 1)."""


# ---- startup: the contexts -------------------------------------------------------------------
def _read_pem(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise TLSConfigError(f"cannot read {what}: {path}: {exc.strerror or exc}") from None


def _encrypted_key() -> bytes:
    """Password callback: an encrypted key would make OpenSSL prompt on the terminal (and hang a
    container); the stand-in has no --tlsCertificateKeyFilePassword, so it refuses instead."""
    raise TLSConfigError("encrypted")


def _load_pair(context: ssl.SSLContext, path: str) -> None:
    """Load the certificate and its key from one PEM file, as mongod wants them."""
    data = _read_pem(path, "certificate file")
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise TLSConfigError(f"cannot read certificate file: {path}: no PEM certificate in it")
    if b"PRIVATE KEY-----" not in data:
        raise TLSConfigError(
            f"cannot read PEM key file: {path}: no private key in it (--tlsCertificateKeyFile "
            "takes one PEM file with the certificate and its private key)"
        )
    try:
        context.load_cert_chain(path, password=_encrypted_key)
    except TLSConfigError:
        raise TLSConfigError(
            f"cannot read PEM key file: {path}: the private key is encrypted "
            "(the stand-in does not implement --tlsCertificateKeyFilePassword)"
        ) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TLSConfigError(
                f"cannot use {path}: its private key does not match its certificate"
            ) from None
        raise TLSConfigError(
            f"cannot use certificate file {path}: not a valid PEM certificate and key "
            f"({exc.reason or exc.library or 'OpenSSL refused it'})"
        ) from None
    except OSError as exc:
        raise TLSConfigError(f"cannot read certificate file: {path}: {exc.strerror}") from None


def _load_ca(context: ssl.SSLContext, path: str) -> None:
    data = _read_pem(path, "CA file")
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise TLSConfigError(f"cannot read CA file: {path}: no PEM certificate in it")
    try:
        context.load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        raise TLSConfigError(
            f"cannot read CA file: {path}: {exc.reason or 'OpenSSL refused it'}"
        ) from None
    except OSError as exc:
        raise TLSConfigError(f"cannot read CA file: {path}: {exc.strerror}") from None


def server_context(pem: str, ca_file: str) -> ssl.SSLContext:
    """The ingress context: our certificate; a client's certificate verified when it sends one
    and a CA file is given (mongod validates nothing without a CA file)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_pair(context, pem)
    if ca_file:
        _load_ca(context, ca_file)
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def client_context(pem: str, ca_file: str, allow_invalid_hostnames: bool) -> ssl.SSLContext:
    """The egress context (member to member): the peer's certificate must verify against the CA
    file (or the system store); its name must match the address used unless told otherwise."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file:
        _load_ca(context, ca_file)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = not allow_invalid_hostnames
    _load_pair(context, pem)  # presented to the peer, as mongod presents its certificate
    return context


# ---- ingress: one accepted connection --------------------------------------------------------
def _refuse(remote: str, conn_id: int, errmsg: str) -> None:
    log.info(
        "NETWORK",
        "Error receiving request from client. Ending connection from remote",
        error={"code": SSL_HANDSHAKE_FAILED, "codeName": "SSLHandshakeFailed", "errmsg": errmsg},
        remote=remote,
        connectionId=conn_id,
    )


def _peek_first_byte(sock: socket.socket, deadline: float) -> int | None:
    """The first byte the client sent (left in the socket), or None if it sent none in time."""
    sock.settimeout(max(0.0, deadline - time.monotonic()))
    try:
        first = sock.recv(1, socket.MSG_PEEK)
    except (TimeoutError, OSError):
        return None
    return first[0] if first else None


def _handshake(tls_sock: ssl.SSLSocket, deadline: float) -> None:
    """Run the server handshake non-blocking so that the whole of it, not each read, is bounded."""
    tls_sock.setblocking(False)
    while True:
        try:
            tls_sock.do_handshake()
            break
        except ssl.SSLWantReadError:
            wait = ([tls_sock], [])
        except ssl.SSLWantWriteError:
            wait = ([], [tls_sock])
        left = deadline - time.monotonic()
        if left <= 0 or not any(select.select(*wait, [], left)):
            raise TimeoutError(f"TLS handshake not complete within {HANDSHAKE_TIMEOUT:g}s")
    tls_sock.setblocking(True)


def accept(
    sock: socket.socket, context: ssl.SSLContext, mode: str, remote: str, conn_id: int
) -> socket.socket | None:
    """The socket to serve this client on (TLS or, when the mode allows it, plain), or None when
    the connection must end (the caller closes ``sock``)."""
    deadline = time.monotonic() + HANDSHAKE_TIMEOUT
    first = _peek_first_byte(sock, deadline)
    if first is None:
        return None  # closed or silent before its first byte (a port probe, say)
    if first != TLS_HANDSHAKE_RECORD:
        if mode == "requireTLS":
            _refuse(remote, conn_id, ONLY_TLS)
            return None
        if mode == "preferTLS":
            log.info(
                "NETWORK",
                "SSL mode is set to 'preferred' and connection to remote is not using SSL.",
                remote=remote,
                connectionId=conn_id,
            )
        sock.settimeout(None)
        return sock
    tls_sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    try:
        _handshake(tls_sock, deadline)
    except ssl.SSLError as exc:  # a bad ClientHello, TLS < 1.2, a client certificate refused
        _refuse(remote, conn_id, f"TLS handshake failed: {exc.reason or exc}")
        tls_sock.close()
        return None
    except OSError as exc:  # TimeoutError (the deadline), the client gone mid-handshake
        _refuse(remote, conn_id, f"TLS handshake failed: {exc or type(exc).__name__}")
        tls_sock.close()
        return None
    log.info(
        "NETWORK",
        "Ingress TLS handshake complete",
        remote=remote,
        connectionId=conn_id,
        protocol=tls_sock.version(),
        clientCertificate=bool(tls_sock.getpeercert()),
    )
    return tls_sock
