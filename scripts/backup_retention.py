#!/usr/bin/env python3
"""Which backup sets to keep: the newest set of each of the last N days, weeks and months,
then, oldest first, fewer until they all fit in MAX bytes.

Run by scripts/backup.sh after a complete set (so the timer applies it too):
    python3 scripts/backup_retention.py --keep DAILY,WEEKLY,MONTHLY [--max-bytes MAX] DIR

A set is a folder of DIR with a manifest.json, named by its UTC time (20261203T154500Z, with
an optional suffix such as -before-restore). The newest set is always kept (even when it alone
is larger than MAX: then a line says so on stderr), and a folder whose name is not such a time
is never removed (its size counts). Removed sets are printed, one `removed ID` a line.
Exit status 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import datetime
import re
import shutil
import sys
from pathlib import Path

STAMP = re.compile(r"^(\d{8}T\d{6}Z)(?:-[A-Za-z0-9_.-]+)?$")


def when(backup_id: str) -> datetime.datetime | None:
    match = STAMP.match(backup_id)
    if not match:
        return None
    try:
        return datetime.datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ")
    except ValueError:
        return None


def to_keep(ids: list[str], daily: int, weekly: int, monthly: int) -> set[str]:
    """The ids kept: per period, the newest set of each of the last `n` periods that have one
    (as restic's --keep-daily/--keep-weekly/--keep-monthly); undated ids and the newest one
    always."""
    dated = sorted(((t, i) for i in ids if (t := when(i)) is not None), reverse=True)
    kept = {i for i in ids if when(i) is None}
    if dated:
        kept.add(dated[0][1])
    periods = (
        (daily, lambda t: t.strftime("%Y-%m-%d")),
        (weekly, lambda t: "{}-W{:02d}".format(*t.isocalendar()[:2])),
        (monthly, lambda t: t.strftime("%Y-%m")),
    )
    for count, bucket in periods:
        seen: set[str] = set()
        for t, backup_id in dated:
            if len(seen) >= count:
                break
            b = bucket(t)
            if b not in seen:
                seen.add(b)
                kept.add(backup_id)
    return kept


def within(sizes: dict[str, int], kept: set[str], max_bytes: int) -> set[str]:
    """Of `kept`, the sets that fit in max_bytes together: the oldest dated ones go first,
    never the newest (nor an undated one)."""
    kept = set(kept)
    oldest_first = sorted((t, i) for i in kept if (t := when(i)) is not None)[:-1]
    for _, backup_id in oldest_first:
        if sum(sizes[i] for i in kept) <= max_bytes:
            break
        kept.discard(backup_id)
    return kept


def size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def parse_keep(text: str) -> tuple[int, int, int]:
    parts = text.split(",")
    if len(parts) != 3 or not all(p.isdigit() and 0 <= int(p) <= 1000 for p in parts):
        raise ValueError(f"--keep {text!r} is not DAILY,WEEKLY,MONTHLY (three counts, 0-1000)")
    daily, weekly, monthly = (int(p) for p in parts)
    return daily, weekly, monthly


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", required=True, help="DAILY,WEEKLY,MONTHLY, e.g. 7,4,12")
    parser.add_argument("--max-bytes", type=int, default=0, help="the sets' total at most")
    parser.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    try:
        daily, weekly, monthly = parse_keep(args.keep)
    except ValueError as exc:
        print(f"backup_retention: {exc}", file=sys.stderr)
        return 2
    sets = [p.name for p in args.dir.iterdir()
            if p.is_dir() and not p.name.startswith(".") and (p / "manifest.json").is_file()]
    kept = to_keep(sets, daily, weekly, monthly)
    if args.max_bytes > 0:
        sizes = {i: size(args.dir / i) for i in sets}
        kept = within(sizes, kept, args.max_bytes)
        total = sum(sizes[i] for i in kept)
        if total > args.max_bytes:
            print(f"backup_retention: the sets kept take {total} bytes, more than the "
                  f"{args.max_bytes} allowed, and the newest set (and a folder not named by a "
                  "time) is never removed: raise backup_max_size", file=sys.stderr)
    for backup_id in sorted(set(sets) - kept):
        shutil.rmtree(args.dir / backup_id)
        print(f"removed {backup_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
