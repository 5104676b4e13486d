"""The sandbox S3 stand-in's server: moto's WSGI application (what `moto_server` serves) on
werkzeug's threaded server over TLS, changed in one thing: every connection ends with a TLS
close_notify before the socket closes.

Why: werkzeug answers every request with `Connection: close`, then closes the TCP socket
without a TLS shutdown (Python's SSLSocket.shutdown drops the TLS layer without a word).
pgBackRest 2.45 reads a `Connection: close` response whose Content-Length is 0 (moto's answer
to a PUT) until EOF, and OpenSSL 3 takes a close without close_notify for a truncation attack:
`TLS error [1:167772454] unexpected eof while reading`, retried until the 60 s I/O timeout, so
stanza-create failed on its first PUT (archive.info) under plain `moto_server --ssl-cert`.
AWS S3 ends its TLS sessions properly; so does this server now.
"""

from __future__ import annotations

import argparse
import os
import signal
import ssl
import sys
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import ThreadedWSGIServer

CLOSE_TIMEOUT = 5.0  # seconds a connection's TLS shutdown may take (a vanished client)


class TLSClosingServer(ThreadedWSGIServer):
    def shutdown_request(self, request: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            try:
                request.settimeout(CLOSE_TIMEOUT)
                request.unwrap()  # sends close_notify, reads the client's if it sends one
            except (OSError, ValueError):
                pass  # the client closed first, or the handshake never finished
        super().shutdown_request(request)


def _stop(signum: int, frame: Any) -> None:
    sys.exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=443)
    parser.add_argument("--ssl-cert", required=True)
    parser.add_argument("--ssl-key", required=True)
    args = parser.parse_args(argv)

    os.environ.setdefault("MOTO_PORT", str(args.port))  # moto builds its own URLs with it
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.ssl_cert, args.ssl_key)

    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True  # as moto_server: errors come back as AWS-style error responses
    server = TLSClosingServer(
        args.host, args.port, app, handler=MotoRequestHandler, ssl_context=ctx
    )
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(f"s3 stand-in (moto) serving HTTPS on {args.host}:{args.port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
