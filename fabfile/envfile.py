"""The env file (.env.ec2): check it against .env.ec2.example and know which values to mask.

Problems are reported by key name, never by value. A file that group or others can read is
refused: it holds the platform's passwords.
"""

from __future__ import annotations

import io
import re
import stat
import subprocess
from pathlib import Path

from dotenv.parser import parse_stream

from fabfile import ROOT
from fabfile.errors import BadInput

EXAMPLE = ROOT / ".env.ec2.example"

# Values that health output must be able to show: addresses, ports, database names. Every other
# value of the env file is treated as secret and masked in all output.
PUBLIC_KEY = re.compile(r"(_HOSTS?|_PORT|_DB|_DB_NAME|_REPLICA_SET)$")
# Keys that hold credentials must be long enough to be real secrets (and to mask safely).
CREDENTIAL_KEY = re.compile(r"(PASSWORD|SECRET|TOKEN|KEYFILE)")
MIN_SECRET_LENGTH = 16


def parse(path: Path) -> dict[str, str]:
    """KEY=VALUE pairs; a line that is not one is BadInput naming the line (not its text)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise BadInput(f"{path}: cannot read the env file ({exc.strerror}); "
                       "create it from .env.ec2.example") from None
    values: dict[str, str] = {}
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            raise BadInput(f"{path}: line {binding.original.line}: not a KEY=VALUE line; "
                           "fix or remove it")
        if binding.key is not None:
            values[binding.key] = binding.value or ""
    return values


def example_keys(example: Path = EXAMPLE) -> list[str]:
    return list(parse(example))


def problems(path: Path, example: Path = EXAMPLE) -> list[str]:
    """Everything wrong with an env file, by key name; empty when it is fit to deploy."""
    found: list[str] = []
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0
    if mode & 0o077:
        found.append(f"mode is {mode:04o}, readable by group or others: chmod 600 {path}")
    values = parse(path)
    wanted = example_keys(example)
    missing = [k for k in wanted if k not in values]
    empty = [k for k in wanted if k in values and not values[k].strip()]
    unknown = [k for k in values if k not in wanted]
    weak = [k for k in wanted if values.get(k, "").strip() and CREDENTIAL_KEY.search(k)
            and len(values[k]) < MIN_SECRET_LENGTH]
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
    return found


def require_valid(path: Path, example: Path = EXAMPLE) -> dict[str, str]:
    """The parsed env file, or BadInput with every problem on one line."""
    if not path.is_file():
        raise BadInput(f"env file {path} does not exist; create it from {example.name} "
                       "(cp .env.ec2.example .env.ec2 && chmod 600 .env.ec2) and fill it in")
    found = problems(path, example)
    if found:
        raise BadInput(f"{path}: " + "; ".join(found))
    return parse(path)


def secret_values(path: Path) -> list[str]:
    """Values to mask in all output: every value except addresses, ports and database names.
    A missing or unreadable file has nothing to mask."""
    try:
        values = parse(path)
    except BadInput:
        return []
    return [v for k, v in values.items() if v and not PUBLIC_KEY.search(k)]


def tracked_secrets(root: Path = ROOT) -> list[str]:
    """Secret files tracked by git in this checkout (the suite refuses to deploy from it)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "ls-files", "--", ".env.ec2", ".env.ec2.*", "*.pem",
             "*.key", "certs/*", ".sandbox/*"],
            capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:  # not a git checkout: nothing is tracked
        return []
    return [p for p in out.stdout.splitlines() if p and p != ".env.ec2.example"]


def refuse_tracked_secrets(root: Path = ROOT) -> None:
    tracked = tracked_secrets(root)
    if tracked:
        raise BadInput(f"refusing to deploy: git tracks secret file(s) {', '.join(tracked)}; "
                       "run git rm --cached on them and rotate those secrets")
