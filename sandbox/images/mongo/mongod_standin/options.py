"""The mongod command line the stand-in accepts, and the keyfile checks real mongod makes."""

from __future__ import annotations

import os
import re
import ssl
import stat
import sys
from dataclasses import dataclass, field

from . import STANDIN_NAME, VERSION, tls

USAGE = f"""\
mongod ({STANDIN_NAME}) {VERSION}
Options the stand-in accepts (any other option is an error):
  --replSet NAME        replica set name
  --keyFile PATH        replica set key file (implies --auth); must not be readable by group/others
  --auth                require authentication
  --bind_ip A[,B...]    addresses to listen on (default 127.0.0.1)
  --bind_ip_all         listen on all IPv4 addresses
  --port N              port (default 27017)
  --dbpath PATH         data directory (default /data/db); must exist
  --maxConns N          refuse connections beyond N open ones (default 1000000)
  --tlsMode MODE        disabled (default), allowTLS, preferTLS or requireTLS
  --tlsCertificateKeyFile PATH   one PEM file: the server certificate and its private key
  --tlsCAFile PATH      CA certificates: verifies the other members (and client certificates)
  --tlsAllowConnectionsWithoutCertificates   clients need no certificate (needed with --tlsCAFile)
  --tlsAllowInvalidHostnames   do not check the other members' host names
  --version, --help
"""

_KEY_CHARS = re.compile(r"^[A-Za-z0-9+/=]*$")


class OptionError(Exception):
    """Bad command line or key file: mongod refuses to start."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Options:
    port: int = 27017
    bind_ips: list = field(default_factory=lambda: ["127.0.0.1"])
    replset: str = ""
    keyfile: str = ""
    key: str = ""
    auth: bool = False
    dbpath: str = "/data/db"
    max_conns: int = 1000000
    tls_mode: str = "disabled"
    tls_pem: str = ""
    tls_ca_file: str = ""
    tls_allow_no_certificate: bool = False
    tls_allow_invalid_hostnames: bool = False
    server_tls: ssl.SSLContext | None = None  # ingress, unless tlsMode is disabled
    client_tls: ssl.SSLContext | None = None  # member to member, under preferTLS/requireTLS


_WITH_VALUE = {
    "--replSet",
    "--keyFile",
    "--bind_ip",
    "--port",
    "--dbpath",
    "--maxConns",
    "--tlsMode",
    "--tlsCertificateKeyFile",
    "--tlsCAFile",
}
_FLAGS = {
    "--auth",
    "--bind_ip_all",
    "--version",
    "--help",
    "--tlsAllowConnectionsWithoutCertificates",
    "--tlsAllowInvalidHostnames",
}


def parse(argv: list[str] | None) -> Options | None:
    """Parse mongod's argv (without the program name).

    Returns Options, or None after --version/--help.
    """
    opts = Options()
    seen = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name in _FLAGS and not eq:
            seen[name] = True
        elif name in _WITH_VALUE:
            if not eq:
                if i + 1 >= len(argv):
                    raise OptionError(
                        "Error parsing command line: the required argument for option "
                        f"'{name}' is missing"
                    )
                i += 1
                value = argv[i]
            seen[name] = value
        else:
            raise OptionError(
                f"Error parsing command line: unrecognised option '{arg}' "
                f"(the {STANDIN_NAME} accepts only: {' '.join(sorted(_WITH_VALUE | _FLAGS))})"
            )
        i += 1
    if seen.get("--help"):
        sys.stdout.write(USAGE)
        return None
    if seen.get("--version"):
        sys.stdout.write(
            f"db version v{VERSION}\n{STANDIN_NAME}: imitates mongod {VERSION}; it is not MongoDB\n"
        )
        return None
    if "--port" in seen:
        try:
            opts.port = int(seen["--port"])
        except ValueError:
            raise OptionError(
                f"Error parsing command line: bad value for --port: {seen['--port']!r}"
            ) from None
        if not 0 < opts.port < 65536:
            raise OptionError(f"Error parsing command line: port out of range: {opts.port}")
    if "--bind_ip" in seen and seen.get("--bind_ip_all"):
        raise OptionError(
            "Error parsing command line: --bind_ip and --bind_ip_all are mutually exclusive"
        )
    if seen.get("--bind_ip_all"):
        opts.bind_ips = ["0.0.0.0"]
    elif "--bind_ip" in seen:
        opts.bind_ips = [a.strip() for a in seen["--bind_ip"].split(",") if a.strip()]
        if not opts.bind_ips:
            raise OptionError("Error parsing command line: --bind_ip is empty")
    if "--replSet" in seen:
        opts.replset = seen["--replSet"].split("/", 1)[0]
        if not opts.replset:
            raise OptionError("Error parsing command line: --replSet is empty")
    if "--maxConns" in seen:
        try:
            opts.max_conns = int(seen["--maxConns"])
        except ValueError:
            raise OptionError(
                f"Error parsing command line: bad value for --maxConns: {seen['--maxConns']!r}"
            ) from None
        if opts.max_conns < 1:
            raise OptionError("Error parsing command line: --maxConns must be at least 1")
    opts.dbpath = seen.get("--dbpath", opts.dbpath)
    opts.auth = bool(seen.get("--auth"))
    if "--keyFile" in seen:
        opts.keyfile = seen["--keyFile"]
        opts.key = read_keyfile(opts.keyfile)
        opts.auth = True  # keyFile implies security.authorization
    _parse_tls(opts, seen)
    return opts


def _parse_tls(opts: Options, seen: dict) -> None:
    """The --tls* options, checked as mongod checks them (exit 2), then the PEM and CA files
    loaded (exit 1: mongod cannot start without a usable certificate)."""
    opts.tls_mode = seen.get("--tlsMode", "disabled")
    if opts.tls_mode not in tls.MODES:
        raise OptionError(
            f"Error parsing command line: unsupported value for tlsMode {opts.tls_mode} "
            f"(one of {', '.join(tls.MODES)})"
        )
    opts.tls_pem = seen.get("--tlsCertificateKeyFile", "")
    opts.tls_ca_file = seen.get("--tlsCAFile", "")
    opts.tls_allow_no_certificate = bool(seen.get("--tlsAllowConnectionsWithoutCertificates"))
    opts.tls_allow_invalid_hostnames = bool(seen.get("--tlsAllowInvalidHostnames"))
    if opts.tls_mode == "disabled":
        if opts.tls_pem or opts.tls_ca_file or opts.tls_allow_no_certificate:
            raise OptionError(
                "need to enable TLS via the sslMode/tlsMode flag when using TLS configuration "
                "parameters"
            )
        return
    if not opts.tls_pem:
        raise OptionError("need tlsCertificateKeyFile or certificateSelector when TLS is enabled")
    if opts.tls_ca_file and not opts.tls_allow_no_certificate:
        # mongod would then reject every client without a certificate; the stand-in does not
        # implement client certificates, so it refuses to start rather than serve them anyway.
        raise OptionError(
            "with --tlsCAFile mongod requires client certificates, which the mongod stand-in "
            "does not implement: add --tlsAllowConnectionsWithoutCertificates"
        )
    try:
        opts.server_tls = tls.server_context(opts.tls_pem, opts.tls_ca_file)
        if opts.tls_mode in tls.EGRESS_MODES:
            opts.client_tls = tls.client_context(
                opts.tls_pem, opts.tls_ca_file, opts.tls_allow_invalid_hostnames
            )
    except tls.TLSConfigError as exc:
        raise OptionError(str(exc), 1) from None


def read_keyfile(path: str) -> str:
    """Read and check a key file the way mongod does; returns the key (whitespace removed)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise OptionError(f"Error reading file {path}: {exc.strerror}", 1) from None
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise OptionError(f"permissions on {path} are too open", 1)
    try:
        with open(path, encoding="utf-8", errors="strict") as handle:
            raw = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise OptionError(f"Error reading file {path}: {exc}", 1) from None
    key = "".join(raw.split())
    if not key:
        raise OptionError(f"Security key file {path} is empty (no key characters)", 1)
    if not _KEY_CHARS.match(key):
        # The offending character is not printed: it is part of a secret file.
        raise OptionError(
            f"invalid char in key file {path} (only base64 characters are allowed)", 1
        )
    if len(key) < 6:
        raise OptionError(f"security key in {path} is too short (less than 6 characters)", 1)
    if len(key) > 1024:
        raise OptionError(f"security key in {path} is too long (more than 1024 characters)", 1)
    return key
