#!/usr/bin/env python3
"""Per-collection document counts and checksums of a mongodump archive (--archive --gzip).

    python3 scripts/backup_digest.py mongo ARCHIVE DB    (ARCHIVE: a file, or - for stdin)

prints one JSON object, {"COLLECTION": {"documents": N, "checksum": HEX}, ...}, for the
collections of database DB. backup.sh records it in the manifest; backup-verify.sh restores the
archive into a scratch mongod, dumps that again and compares the two: the same documents give
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


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "mongo":
        print("usage: backup_digest.py mongo ARCHIVE DB", file=sys.stderr)
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
