#!/usr/bin/env python3
"""What a backup set holds, and whether a restore of it holds the same.

    python3 scripts/backup_digest.py mongo ARCHIVE DB    (ARCHIVE: a file, or - for stdin)

prints one JSON object, {"COLLECTION": {"documents": N, "checksum": HEX}, ...}, for the
collections of database DB in a mongodump archive (--archive --gzip).

    python3 scripts/backup_digest.py verdict MANIFEST FILES LEDGER LEDGER_OUT REDIS MONGO MONGO_OUT

is backup-verify.sh's table and verdict: FILES, LEDGER and MONGO are "ok" or why that part
failed (MONGO may be "skipped"), LEDGER_OUT is ledger-digest.sql's output on the restore,
REDIS the keys redis-check-rdb read (or "FAILED why"), MONGO_OUT this script's `mongo` JSON of
the restore's dump. It prints a row per check and exits 1 when one differs or failed.

backup.sh records the archive's digest in the manifest; backup-verify.sh restores the archive
into a scratch mongod, dumps that again and compares the two: the same documents give
the same checksum whatever order a server returns them in (the sum of each document's SHA-256,
modulo 2**256), and a document changed in one byte does not.

The archive format (mongo-tools common/archive): a magic number, then blocks; a block is a
header BSON document, zero or more body BSON documents and the terminator 0xFFFFFFFF. The first
block is the prelude (the archive's and collections' metadata); every other header names a
namespace ({db, collection, EOF, CRC}) whose documents its body holds. Only the standard
library: it runs on the data host.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
import sys
from typing import BinaryIO

MAGIC = 0x8199E26D
TERMINATOR = 0xFFFFFFFF
MODULUS = 2 ** 256


class ArchiveError(Exception):
    """Not a mongodump archive, or a cut or damaged one."""


def read_exact(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise ArchiveError(f"the archive ends inside a block ({len(data)} of {size} bytes)")
    return data


def next_document(stream: BinaryIO) -> bytes | None:
    """The next BSON document, whole, or None at a terminator."""
    head = read_exact(stream, 4)
    (size,) = struct.unpack("<I", head)
    if size == TERMINATOR:
        return None
    if size < 5 or size > 48 * 1024 * 1024:
        raise ArchiveError(f"{size} is neither a BSON length nor the archive's terminator")
    return head + read_exact(stream, size - 4)


def header_fields(doc: bytes) -> dict[str, object]:
    """The string, boolean and integer fields of a namespace header (all it holds)."""
    fields: dict[str, object] = {}
    pos, end = 4, len(doc) - 1
    while pos < end:
        kind = doc[pos]
        name_end = doc.index(b"\0", pos + 1)
        name = doc[pos + 1:name_end].decode()
        pos = name_end + 1
        if kind == 0x02:  # string: int32 length (with its NUL), bytes
            (length,) = struct.unpack_from("<i", doc, pos)
            fields[name] = doc[pos + 4:pos + 3 + length].decode()
            pos += 4 + length
        elif kind == 0x08:  # boolean
            fields[name] = doc[pos] == 1
            pos += 1
        elif kind == 0x10:  # int32
            fields[name] = struct.unpack_from("<i", doc, pos)[0]
            pos += 4
        elif kind == 0x12:  # int64
            fields[name] = struct.unpack_from("<q", doc, pos)[0]
            pos += 8
        else:
            raise ArchiveError(f"a namespace header has a field of BSON type {kind:#x}")
    return fields


def digest(stream: BinaryIO, database: str) -> dict[str, dict[str, object]]:
    """Counts and checksums of `database`'s collections in an (uncompressed) archive stream."""
    if struct.unpack("<I", read_exact(stream, 4))[0] != MAGIC:
        raise ArchiveError("this is not a mongodump archive (no magic number)")
    sums: dict[str, list[int]] = {}
    first = True
    while True:
        head = stream.read(4)
        if not head:
            break
        if len(head) != 4:
            raise ArchiveError("the archive ends inside a block header")
        (size,) = struct.unpack("<I", head)
        if size == TERMINATOR:
            raise ArchiveError("two terminators in a row (a block without a header)")
        header = head + read_exact(stream, size - 4)
        fields = {} if first else header_fields(header)
        entry = None
        if not first and fields.get("db") == database:
            entry = sums.setdefault(str(fields.get("collection")), [0, 0])
        first = False
        while (doc := next_document(stream)) is not None:
            if entry is not None:
                entry[0] += 1
                entry[1] = (entry[1] + int.from_bytes(hashlib.sha256(doc).digest(), "big")) \
                    % MODULUS
    return {name: {"documents": count, "checksum": f"{total:064x}"}
            for name, (count, total) in sorted(sums.items())}


HEADINGS = ("STORE", "WHAT", "RECORDED", "RESTORED", "RESULT")
Row = tuple[str, str, str, str, str]
Digest = dict[str, tuple[object, str]]  # name: (count, checksum)


def check(store: str, what: str, recorded: object, restored: object) -> Row:
    return (store, what, str(recorded), str(restored),
            "ok" if recorded == restored else "DIFFERENT")


def failure(store: str, why: str) -> Row:
    return (store, "-", "-", "-", f"FAILED: {why}")


def compare(store: str, unit: str, recorded: Digest | None, restored: Digest) -> list[Row]:
    """Per name, its count and checksum on both sides; a name on one side only differs."""
    if recorded is None:  # a set taken before its manifest held checksums
        return [failure(store, f"its manifest records no checksums of its {unit}: nothing "
                               "to compare with")]
    if not recorded and not restored:
        return [(store, unit, "0", "0", "ok")]
    rows = []
    for name in sorted(recorded.keys() | restored.keys()):
        (rec_n, rec_c), (res_n, res_c) = (recorded.get(name, ("none", "")),
                                          restored.get(name, ("none", "")))
        rows += [check(store, f"{name} {unit}", rec_n, res_n),
                 check(store, f"{name} checksum", rec_c[:16] or "none", res_c[:16] or "none")]
    return rows


def ledger_lines(text: str) -> Digest:
    """ledger-digest.sql's output: TABLE<tab>name<tab>rows<tab>checksum lines."""
    found: Digest = {}
    for line in text.splitlines():
        if line.startswith("TABLE\t"):
            _, name, rows, checksum = line.split("\t")
            found[name] = (int(rows), checksum)
    return found


def verdict(stores: dict, files: str, ledger: str, ledger_out: str, redis: str, mongo: str,
            mongo_out: dict) -> list[Row]:
    """The rows of a verify: the manifest's `stores` against what the restore holds."""
    rows: list[Row] = [("files", "SHA-256", "SHA256SUMS", "same", "ok") if files == "ok"
                       else failure("files", files)]
    if ledger != "ok":
        rows.append(failure("ledger", ledger))
    else:
        tables = stores["ledger"].get("tables")
        rows += compare("ledger", "rows",
                        {k: (v["rows"], v["checksum"]) for k, v in tables.items()}
                        if isinstance(tables, dict) else None, ledger_lines(ledger_out))
    if redis.startswith("FAILED"):
        rows.append(failure("redis", redis.removeprefix("FAILED ") or "redis-check-rdb failed"))
    else:
        rows.append(check("redis", "keys (redis-check-rdb)",
                          stores["redis"].get("rdb_keys", "not recorded"), int(redis or 0)))
    if mongo == "skipped":
        rows.append(("mongo", "-", "-", "-", "not in this set: "
                     + stores.get("mongo", {}).get("skipped", "no MongoDB")))
    elif mongo != "ok":
        rows.append(failure("mongo", mongo))
    else:
        sums = stores["mongo"].get("checksums")
        rows += compare("mongo", "documents",
                        {k: (n, sums.get(k, "")) for k, n in
                         stores["mongo"].get("collections", {}).items()}
                        if isinstance(sums, dict) else None,
                        {k: (v["documents"], v["checksum"]) for k, v in mongo_out.items()})
    return rows


def table(rows: list[Row]) -> list[str]:
    widths = [max(len(r[i]) for r in [HEADINGS, *rows]) for i in range(4)]
    return ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
            for r in [HEADINGS, *rows]]


def bad(rows: list[Row]) -> list[Row]:
    return [r for r in rows if r[4] != "ok" and not r[4].startswith("not in this set")]


def main_verdict(argv: list[str]) -> int:
    manifest, files, ledger, ledger_out, redis, mongo, mongo_out = argv
    with open(manifest) as f:
        stores = json.load(f)["stores"]
    with open(ledger_out) as f:
        ledger_text = f.read()
    with open(mongo_out) as f:
        mongo_json = json.load(f)
    rows = verdict(stores, files, ledger, ledger_text, redis, mongo, mongo_json)
    print("\n".join(table(rows)))
    if bad(rows):
        print(f"verify: {len(bad(rows))} difference(s) or failure(s)", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 8 and argv[0] == "verdict":
        return main_verdict(argv[1:])
    if len(argv) != 3 or argv[0] != "mongo":
        print("usage: backup_digest.py mongo ARCHIVE DB | verdict MANIFEST FILES LEDGER "
              "LEDGER_OUT REDIS MONGO MONGO_OUT", file=sys.stderr)
        return 2
    source = sys.stdin.buffer if argv[1] == "-" else open(argv[1], "rb")  # noqa: SIM115
    try:
        with gzip.GzipFile(fileobj=source) as stream:
            print(json.dumps(digest(stream, argv[2]), sort_keys=True))
    except (ArchiveError, OSError, EOFError, ValueError) as exc:
        print(f"backup_digest: {argv[1]}: {exc}", file=sys.stderr)
        return 1
    finally:
        source.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
