"""Entry point: ``python3 -m mongod_standin [mongod options]`` (the ``mongod`` script runs this)."""

from __future__ import annotations

import signal
import socket
import sys
import threading

from . import STANDIN_NAME, VERSION, log, options
from .connection import Connection
from .member import Member
from .store import DBPathError, Store


def _listen(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    infos = socket.getaddrinfo(address, port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind(sockaddr)
    sock.listen(128)
    return sock


def _accept_loop(member: Member, listener: socket.socket, slots: threading.BoundedSemaphore,
                 max_conns: int) -> None:
    while not member.stopping.is_set():
        try:
            sock, address = listener.accept()
        except OSError:
            if member.stopping.is_set():
                return
            continue
        if not slots.acquire(blocking=False):
            # as mongod: the connection is accepted, then closed at once
            log.info(
                "NETWORK",
                "Connection refused because there are too many open connections",
                remote=f"{address[0]}:{address[1]}",
                maxConns=max_conns,
            )
            sock.close()
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Connection(member, sock, address)
        threading.Thread(target=_serve, args=(conn, slots), name=f"conn{conn.id}",
                         daemon=True).start()


def _serve(conn: Connection, slots: threading.BoundedSemaphore) -> None:
    try:
        conn.serve()
    finally:
        slots.release()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        opts = options.parse(argv)
    except options.OptionError as exc:
        sys.stderr.write(f"mongod stand-in: {exc}\n")
        return exc.exit_code
    if opts is None:
        return 0
    store = Store(opts.dbpath)
    try:
        store.open()
    except DBPathError as exc:
        log.error("STORAGE", str(exc))
        sys.stderr.write(f"mongod stand-in: {exc}\n")
        return exc.exit_code
    member = Member(opts, store)
    listeners = []
    try:
        for address in opts.bind_ips:
            listeners.append(_listen(address, opts.port))
    except OSError as exc:
        message = f"Failed to set up listener on {address}:{opts.port}: {exc.strerror or exc}"
        log.error("NETWORK", message)
        sys.stderr.write(f"mongod stand-in: {message}\n")
        return 48
    log.startup_warning(
        f"This is the {STANDIN_NAME}: it imitates mongod {VERSION} for the jafar "
        "sandbox and implements only a subset of commands; any other command "
        "fails with CommandNotFound."
    )
    if not opts.auth:
        log.startup_warning(
            "Access control is not enabled for the database. Read and write access "
            "to data and configuration is unrestricted"
        )
    log.info(
        "CONTROL",
        "mongod stand-in starting",
        version=VERSION,
        port=opts.port,
        bindIp=opts.bind_ips,
        replSet=opts.replset or None,
        auth=opts.auth,
        keyFile=opts.keyfile or None,
        tlsMode=opts.tls_mode,
        dbPath=opts.dbpath,
    )

    done = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("CONTROL", "Received a signal; shutting down", signal=signum)
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    slots = threading.BoundedSemaphore(opts.max_conns)  # --maxConns, across every listener
    for listener in listeners:
        threading.Thread(
            target=_accept_loop,
            args=(member, listener, slots, opts.max_conns),
            name="listener",
            daemon=True,
        ).start()
    if opts.replset:
        threading.Thread(target=member.heartbeat_loop, name="ReplHeartbeat", daemon=True).start()
    log.info("NETWORK", "Waiting for connections", port=opts.port, bindIp=opts.bind_ips)
    while not done.wait(1.0):
        pass
    member.stop()
    for listener in listeners:
        listener.close()
    with store.lock:
        store.save()
    log.info("CONTROL", "Shutdown complete")
    return 0


if __name__ == "__main__":
    sys.exit(main())
