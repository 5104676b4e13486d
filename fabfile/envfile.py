"""The env file (.env.ec2): check it against .env.ec2.example and know which values to mask.

Problems are reported by key name or line number, never by value or by the line's text: a
pasted token, or `--file /etc/shadow`, must not be printed back. The file is read as Compose
reads it, so that what is checked and masked is what the containers get: a `$` outside single
quotes (which Compose would expand) is refused, as are duplicate keys (the later one would win
silently) and characters a server cannot take. A file that group or others can read is refused:
it holds the platform's passwords.
"""

from __future__ import annotations

import io
import re
import stat
import subprocess
from pathlib import Path

from dotenv.parser import parse_stream

from fabfile import ROOT, keyset
from fabfile.errors import BadInput

EXAMPLE = ROOT / ".env.ec2.example"
MAX_BYTES = 256 * 1024

# Values that health output must be able to show: addresses, ports, database names. Every other
# value of the env file is treated as secret and masked in all output.
PUBLIC_KEY = re.compile(r"(_HOSTS?|_PORT|_DB|_DB_NAME|_REPLICA_SET)$")
# Keys that hold credentials must be long enough to be real secrets (and to mask safely).
CREDENTIAL_KEY = re.compile(r"(PASSWORD|SECRET|TOKEN|KEYFILE)")
MIN_SECRET_LENGTH = 16
KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_JWT_KEY = rf"[!-+\--~]{{{MIN_SECRET_LENGTH},}}"  # printable, no space or comma

# What each server accepts, where it is narrower than "any text": (pattern, what to say).
NAME = (re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,62}"), "letters, digits, '_', '.', '-'")
CHARSETS: dict[str, tuple[re.Pattern[str], str]] = {
    # it goes into redis.conf (requirepass): the entrypoint refuses anything else
    "REDIS_PASSWORD": (re.compile(r"[A-Za-z0-9._~+/=-]+"), "A-Z a-z 0-9 . _ ~ + / = -"),
    # one line of base64, 6 to 1024 characters, as mongod requires
    "MONGO_KEYFILE": (re.compile(r"[A-Za-z0-9+/=]{6,1024}"),
                      "one line of base64 characters, 6 to 1024 of them"),
    "MONGO_REPLICA_SET": (re.compile(r"rs0"), "rs0 (the name mongod is started with)"),
    # the JWT key set (fabfile/keyset.py): the signing key, then the previous one, if any
    keyset.KEY: (re.compile(rf"{_JWT_KEY}(,{_JWT_KEY})?"),
                 f"one or two keys of {MIN_SECRET_LENGTH}+ printable characters, comma "
                 "separated, no spaces"),
    "MONGO_APP_DB": NAME, "MONGO_APP_USER": NAME, "MONGO_LEDGER_USER": NAME,
    "MONGO_BACKUP_USER": NAME,
    "MONGO_ROOT_USERNAME": NAME, "LEDGER_DB_NAME": NAME, "LEDGER_DB_USER": NAME,
    "POSTGRES_USER": NAME,
    "REDIS_PORT": (re.compile(r"[1-9][0-9]{0,4}"), "a port number"),
    "POSTGRES_PORT": (re.compile(r"[1-9][0-9]{0,4}"), "a port number"),
    "REDIS_HOST": (re.compile(r"[A-Za-z0-9.-]+"), "a host name or address"),
    "POSTGRES_HOST": (re.compile(r"[A-Za-z0-9.-]+"), "a host name or address"),
    "MONGO_HOSTS": (re.compile(r"[A-Za-z0-9.-]+:[0-9]+(,[A-Za-z0-9.-]+:[0-9]+)*"),
                    "host:port[,host:port...]"),
}


def read_text(path: Path, what: str = "env file") -> str:
    """The file's text, or BadInput that never shows its content: not a regular file, too
    large, not UTF-8."""
    try:
        info = path.stat()
    except OSError as exc:
        raise BadInput(f"{what} {path} cannot be read ({exc.strerror}); create it from "
                       f"{EXAMPLE.name}") from None
    if stat.S_ISDIR(info.st_mode):
        raise BadInput(f"{what} {path} is a directory; give the path of a file")
    if not stat.S_ISREG(info.st_mode):
        raise BadInput(f"{what} {path} is not a regular file; give the path of a file")
    if info.st_size > MAX_BYTES:
        raise BadInput(f"{what} {path} is {info.st_size} bytes, more than {MAX_BYTES}: not an "
                       "env file")
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise BadInput(f"{what} {path} cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[:exc.start].count(b"\n") + 1
        raise BadInput(f"{what} {path}: line {line} is not UTF-8 text; save the file as "
                       "UTF-8") from None


def parse(path: Path) -> dict[str, str]:
    """KEY=VALUE pairs, read as Compose reads them. A line that is not one, a bad key, a key
    given twice, or a `$` outside single quotes is BadInput naming the line or key only."""
    text = read_text(path)
    values: dict[str, str] = {}
    lines: dict[str, int] = {}
    for binding in parse_stream(io.StringIO(text)):
        line = binding.original.line
        if binding.error or (binding.key is not None and binding.value is None):
            raise BadInput(f"{path}: line {line}: not a KEY=VALUE line; fix or remove it")
        if binding.key is None:
            continue  # blank line or comment
        if not KEY.fullmatch(binding.key):
            raise BadInput(f"{path}: line {line}: not a KEY=VALUE line (a key is letters, "
                           "digits and '_', not starting with a digit); fix or remove it")
        if binding.key in values:
            raise BadInput(f"{path}: {binding.key} is given twice (lines {lines[binding.key]} "
                           f"and {line}); keep one")
        value = binding.value or ""
        if "$" in value and not quoted_singly(binding.original.string):
            raise BadInput(f"{path}: {binding.key}: '$' outside single quotes (Compose would "
                           f"expand it); write {binding.key}='...'")
        values[binding.key] = value
        lines[binding.key] = line
    return values


def quoted_singly(original: str) -> bool:
    """The value of a `KEY=...` line is in single quotes (Compose takes it literally)."""
    value = original.split("=", 1)[1].lstrip() if "=" in original else ""
    return value.startswith("'")


def example_keys(example: Path = EXAMPLE) -> list[str]:
    return list(parse(example))


def problems(path: Path, example: Path = EXAMPLE) -> list[str]:
    """Everything wrong with an env file, by key name; empty when it is fit to deploy."""
    found: list[str] = []
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0
    if mode & 0o077:
        found.append(f"mode is {mode:04o}, readable by group or others: chmod 600 {path}")
    return found + value_problems(parse(path), example)


def value_problems(values: dict[str, str], example: Path = EXAMPLE) -> list[str]:
    """What is wrong with a set of values (from the file or from the secrets store), by key
    name only; empty when they are fit to deploy."""
    found: list[str] = []
    wanted = example_keys(example)
    missing = [k for k in wanted if k not in values]
    empty = [k for k in wanted if k in values and not values[k].strip()]
    unknown = [k for k in values if k not in wanted]
    weak = [k for k in wanted if values.get(k, "").strip() and CREDENTIAL_KEY.search(k)
            and len(values[k]) < MIN_SECRET_LENGTH]
    charset = [f"{k} ({CHARSETS[k][1]})" for k in wanted if values.get(k, "").strip()
               and k in CHARSETS and not CHARSETS[k][0].fullmatch(values[k])]
    if missing:
        found.append(f"missing keys: {', '.join(missing)} (copy them from {example.name})")
    if empty:
        found.append(f"empty keys: {', '.join(empty)} (fill them from the secrets store)")
    if unknown:
        found.append(f"unknown keys: {', '.join(unknown)} (not in {example.name}: remove "
                     "them or add them to the example)")
    if weak:
        found.append(f"too short for a credential (< {MIN_SECRET_LENGTH} characters): "
                     f"{', '.join(weak)}")
    if charset:
        found.append(f"characters the server cannot take: {', '.join(charset)}")
    return found


def require_valid(path: Path, example: Path = EXAMPLE) -> dict[str, str]:
    """The parsed env file, or BadInput with every problem on one line."""
    if not path.exists():
        raise BadInput(f"env file {path} does not exist; create it from {example.name} "
                       "(cp .env.ec2.example .env.ec2 && chmod 600 .env.ec2) and fill it in")
    found = problems(path, example)
    if found:
        raise BadInput(f"{path}: " + "; ".join(found))
    return parse(path)


def quote(value: str) -> str:
    """A value as an env file holds it, read back the same by Compose and by `parse`: bare
    when plain, in single quotes (taken literally) when it has `$`, a quote, `#` or a space, in
    double quotes (with `\\` and `\\"` escaped) when it has a single quote but no `$`."""
    if not set(value) & set("$'\"#\\ \t"):
        return value
    if "'" not in value:
        return f"'{value}'"
    if "$" in value or "\n" in value:
        raise BadInput("a value has both a single quote and a '$' (or a line break): no env "
                       "file can hold it as Compose reads it; choose another value")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(values: dict[str, str]) -> str:
    """The values as an env file: the example's keys in its order, then any other, sorted."""
    order = example_keys()
    keys = [k for k in order if k in values] + sorted(k for k in values if k not in order)
    lines = []
    for k in keys:
        try:
            lines.append(f"{k}={quote(values[k])}\n")
        except BadInput as exc:
            raise BadInput(f"{k}: {exc}") from None
    return "".join(lines)


def secrets(values: dict[str, str]) -> list[str]:
    """Values to mask in all output: every value except addresses, ports and database names;
    each key of the JWT key set on its own too."""
    found = [v for k, v in values.items() if v and not PUBLIC_KEY.search(k)]
    return found + keyset.keys(values.get(keyset.KEY, ""))


def tracked_secrets(root: Path = ROOT, extra: tuple[Path, ...] = ()) -> list[str]:
    """Secret files tracked by git in this checkout (the suite refuses to deploy from it): the
    usual names, and `extra` (the environment's own env file and TLS files)."""
    inside = []
    for path in extra:
        try:
            inside.append(path.resolve().relative_to(root.resolve()).as_posix())
        except ValueError:
            continue  # outside the checkout: git cannot track it here
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "ls-files", "--", ".env.ec2", ".env.ec2.*", "*.pem",
             "*.key", "certs/*", ".sandbox/*", *inside],
            capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:  # not a git checkout: nothing is tracked
        return []
    return sorted({p for p in out.stdout.splitlines() if p and p != ".env.ec2.example"})


def refuse_tracked_secrets(root: Path = ROOT, extra: tuple[Path, ...] = ()) -> None:
    tracked = tracked_secrets(root, extra)
    if tracked:
        raise BadInput(f"refusing to deploy: git tracks secret file(s) {', '.join(tracked)}; "
                       "run git rm --cached on them and rotate those secrets")
