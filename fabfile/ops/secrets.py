"""The secrets store from the operator's side: pull a copy, push a file, how old each value is.

`pull` writes an env file (mode 0600, never over an existing file without --force, never where
git would track it); `push` shows which keys change (never a value) before it writes; `ages`
dates each key's current value from the store's own history (Secrets Manager's versions,
SSM's parameter history), against the environment's `rotate_after_days`.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fabfile import ROOT, envfile
from fabfile.aws import secretstore
from fabfile.config import Environment
from fabfile.errors import BadInput


def check_out_path(text: str | None, force: bool) -> Path:
    """Where `secrets.pull` may write: a new file (or --force), in an existing folder, not a
    file git would track in this checkout."""
    if not text or not text.strip():
        raise BadInput("--out is required: the file to write the values to (mode 0600), e.g. "
                       "--out ~/.jafar/prod.env")
    path = Path(os.path.expanduser(text))
    if path.is_dir():
        raise BadInput(f"--out {path} is a directory; give a file name")
    if not path.parent.is_dir():
        raise BadInput(f"--out {path}: the folder {path.parent} does not exist")
    if path.exists() and not force:
        raise BadInput(f"--out {path} exists; pass --force to replace it")
    if tracked_by_git(path):
        raise BadInput(f"--out {path} is inside this checkout and not git-ignored: a secret "
                       "there could be committed; write it outside, or to .env.ec2")
    return path


def tracked_by_git(path: Path) -> bool:
    """The path is in this checkout and `git check-ignore` does not ignore it."""
    try:
        path.resolve().relative_to(ROOT.resolve())
    except ValueError:
        return False
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", "--",
                              str(path.resolve())], capture_output=True, timeout=10,
                             check=False)
    except (OSError, subprocess.TimeoutExpired):
        return True  # cannot tell: refuse
    return out.returncode == 1  # 0 ignored, 1 not ignored, 128 not a repository


def write_private(path: Path, text: str, force: bool) -> None:
    """Create the file with mode 0600 from the start (no moment where others can read it)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        if force:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if someone created the file meanwhile
            os.unlink(tmp)
    except FileExistsError:
        os.unlink(tmp)
        raise BadInput(f"--out {path} exists; pass --force to replace it") from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def pull(env: Environment, out: Path, force: bool) -> str:
    """Write the store's values to `out`; returns what to tell the operator."""
    values = secretstore.store(env).read()
    write_private(out, envfile.render(values), force)
    problems = envfile.value_problems(values)
    note = f"; the store's values are not fit to deploy: {'; '.join(problems)}" if problems \
        else ""
    return (f"wrote {len(values)} keys from {env.secrets.describe()} to {out} (mode 0600; "
            f"delete it when done){note}")


@dataclass(frozen=True)
class Change:
    added: list[str]
    changed: list[str]
    removed: list[str]

    def empty(self) -> bool:
        return not (self.added or self.changed or self.removed)

    def describe(self) -> str:
        parts = [f"{what}: {', '.join(keys)}" for what, keys in
                 (("added", self.added), ("changed", self.changed), ("removed", self.removed))
                 if keys]
        return "; ".join(parts)


def difference(before: dict[str, str], after: dict[str, str]) -> Change:
    """Which keys a push adds, changes or removes (by name only)."""
    return Change(added=sorted(set(after) - set(before)),
                  changed=sorted(k for k in set(before) & set(after) if before[k] != after[k]),
                  removed=sorted(set(before) - set(after)))


@dataclass(frozen=True)
class Age:
    key: str
    days: int
    since: str        # ISO date of the value's first appearance
    exact: bool       # False: the history ran out, the value is at least that old
    overdue: bool

    def as_dict(self) -> dict[str, object]:
        return {"key": self.key, "age_days": self.days, "since": self.since,
                "exact": self.exact, "overdue": self.overdue}


def ages(env: Environment, now: datetime | None = None) -> list[Age]:
    """Each credential's age (the keys that hold secrets: addresses and names are left out)."""
    now = now or datetime.now(UTC)
    found = secretstore.last_changed(secretstore.store(env).history())
    rows = []
    for key in sorted(found):
        if not envfile.CREDENTIAL_KEY.search(key):
            continue
        since, exact = found[key]
        days = (now - since).days
        rows.append(Age(key, days, since.astimezone(UTC).strftime("%Y-%m-%d"), exact,
                        days > env.rotate_after_days))
    return rows
