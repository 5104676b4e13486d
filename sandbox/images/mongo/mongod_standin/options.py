"""The mongod command line the stand-in accepts, and the keyfile checks real mongod makes."""

from __future__ import annotations

import os
import re
import stat
import sys
from dataclasses import dataclass, field

from . import STANDIN_NAME, VERSION

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


_WITH_VALUE = {"--replSet", "--keyFile", "--bind_ip", "--port", "--dbpath"}
_FLAGS = {"--auth", "--bind_ip_all", "--version", "--help"}


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
    opts.dbpath = seen.get("--dbpath", opts.dbpath)
    opts.auth = bool(seen.get("--auth"))
    if "--keyFile" in seen:
        opts.keyfile = seen["--keyFile"]
        opts.key = read_keyfile(opts.keyfile)
        opts.auth = True  # keyFile implies security.authorization
    return opts


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
