"""backup.verify: the archive digest (scripts/backup_digest.py), the command, and how the
verify's output becomes a verdict. The scripts themselves are drilled on the sandbox
(tests/e2e/test_10_backup.py)."""

from __future__ import annotations

import gzip
import importlib.util
import json
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from fabfile.backup import commands as cmd
from fabfile.backup import sets
from fabfile.errors import BadInput, StepFailed
from tests.conftest import shipped

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sandbox():
    return shipped("sandbox")


DIGEST = ROOT / "scripts" / "backup_digest.py"
spec = importlib.util.spec_from_file_location("backup_digest", DIGEST)
assert spec is not None and spec.loader is not None
digest_mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(digest_mod)


def bson(*fields: tuple[str, object]) -> bytes:
    """A BSON document of strings, booleans, int32s and (as ("name", ("int64", n))) int64s."""
    body = b""
    for name, value in fields:
        key = name.encode() + b"\0"
        if isinstance(value, bool):
            body += b"\x08" + key + (b"\x01" if value else b"\x00")
        elif isinstance(value, int):
            body += b"\x10" + key + struct.pack("<i", value)
        elif isinstance(value, tuple):
            body += b"\x12" + key + struct.pack("<q", value[1])
        else:
            raw = str(value).encode() + b"\0"
            body += b"\x02" + key + struct.pack("<i", len(raw)) + raw
    return struct.pack("<i", len(body) + 5) + body + b"\0"


TERM = struct.pack("<I", 0xFFFFFFFF)


def header(db: str, coll: str, eof: bool = False) -> bytes:
    return bson(("db", db), ("collection", coll), ("EOF", eof), ("CRC", ("int64", 0)))


def archive(blocks: list[tuple[str, str, list[bytes]]]) -> bytes:
    """magic, a prelude, then one block per (db, collection, documents), then each
    namespace's EOF header, as mongodump writes them."""
    out = struct.pack("<I", 0x8199E26D) + bson(("server", "7.0")) + bson(("db", "x")) + TERM
    for db, coll, docs in blocks:
        out += header(db, coll) + b"".join(docs) + TERM
    for db, coll in dict.fromkeys((db, coll) for db, coll, _ in blocks):
        out += header(db, coll, eof=True) + TERM
    return out


DOCS = [bson(("_id", i), ("ref", f"ref-{i}")) for i in range(5)]


def digest(data: bytes, db: str = "jafar") -> dict:
    import io
    return digest_mod.digest(io.BytesIO(data), db)


def test_counts_and_an_order_free_checksum_per_collection():
    one = digest(archive([("jafar", "a", DOCS), ("jafar", "b", DOCS[:2]),
                          ("admin", "system.users", DOCS)]))
    assert {k: v["documents"] for k, v in one.items()} == {"a": 5, "b": 2}
    assert all(len(v["checksum"]) == 64 for v in one.values())
    # the same documents in another order, in two interleaved blocks: the same digest
    again = digest(archive([("jafar", "a", DOCS[3:][::-1]), ("jafar", "b", DOCS[:2]),
                            ("jafar", "a", DOCS[:3])]))
    assert again == one


def test_one_byte_changed_or_a_document_missing_changes_the_checksum():
    one = digest(archive([("jafar", "a", DOCS)]))
    changed = DOCS[:4] + [bson(("_id", 4), ("ref", "ref-5"))]
    assert digest(archive([("jafar", "a", changed)]))["a"]["checksum"] != one["a"]["checksum"]
    fewer = digest(archive([("jafar", "a", DOCS[:4])]))["a"]
    assert fewer["documents"] == 4 and fewer["checksum"] != one["a"]["checksum"]
    # a duplicate does not cancel out (a sum, not an XOR)
    assert digest(archive([("jafar", "a", DOCS + DOCS[:1] * 2)]))["a"]["checksum"] \
        != one["a"]["checksum"]


def test_an_empty_collection_is_listed_with_no_documents():
    assert digest(archive([("jafar", "empty", [])])) == {
        "empty": {"documents": 0, "checksum": "0" * 64}}


@pytest.mark.parametrize(("data", "said"), [
    (b"not an archive at all", "this is not a mongodump archive"),
    (archive([("jafar", "a", DOCS)])[:-30], "the archive ends inside a block"),
])
def test_a_damaged_archive_fails_in_one_line(tmp_path, data, said):
    path = tmp_path / "mongo.archive.gz"
    path.write_bytes(gzip.compress(data))
    proc = subprocess.run([sys.executable, str(DIGEST), "mongo", str(path), "jafar"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    assert said in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_the_script_reads_gzip_from_a_file_or_stdin(tmp_path):
    data = gzip.compress(archive([("jafar", "a", DOCS)]))
    path = tmp_path / "a.gz"
    path.write_bytes(data)
    by_file = subprocess.run([sys.executable, str(DIGEST), "mongo", str(path), "jafar"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    by_stdin = subprocess.run([sys.executable, str(DIGEST), "mongo", "-", "jafar"], input=data,
                              capture_output=True, timeout=30, check=True).stdout.decode()
    assert json.loads(by_file) == json.loads(by_stdin) == digest(archive([("jafar", "a", DOCS)]))
    usage = subprocess.run([sys.executable, str(DIGEST), "mongo"], capture_output=True,
                           text=True, timeout=30, check=False)
    assert usage.returncode == 2


def test_the_verify_command(sandbox):
    assert cmd.verify(sandbox, "20261204T050000Z") == (
        "cd /opt/jafar && ./scripts/backup-verify.sh --project jafar-data 20261204T050000Z")


TABLE = """STORE   WHAT                        RECORDED          RESTORED          RESULT
files   SHA-256                     SHA256SUMS        same              ok
ledger  public.e2e_backup rows      500               499               DIFFERENT
redis   -                           -                 -                 FAILED: an RDB error
mongo   e2e_backup documents        250               250               ok
"""


class VerifyRemote:
    def __init__(self, stdout: str, stderr: str, exited: int) -> None:
        self.out = SimpleNamespace(stdout=stdout, stderr=stderr, exited=exited)

    def run(self, command: str, timeout: int | None = None, check: bool = True):
        assert "./scripts/backup-verify.sh" in command and not check
        return self.out


class Pool:
    def __init__(self, remote: VerifyRemote) -> None:
        self.remote = remote

    def get(self, host, admin: bool = False):
        return self.remote

    def renew(self, host, remote) -> None:
        pass


def test_a_difference_is_a_verdict_with_its_table(sandbox):
    verdict = sets.verify(sandbox, Pool(VerifyRemote(TABLE, "verify X failed: 2", 1)), "X")
    assert not verdict.passed and verdict.failed == 2
    assert verdict.table == TABLE.splitlines()


def test_a_pass_needs_exit_0_and_the_set_named(sandbox):
    ok = "\n".join(ln for ln in TABLE.splitlines() if "DIFF" not in ln and "FAIL" not in ln)
    assert sets.verify(sandbox, Pool(VerifyRemote(ok + "\nverify X passed\n", "", 0)), "X").passed
    assert not sets.verify(sandbox, Pool(VerifyRemote(ok + "\nverify Y passed\n", "", 0)),
                           "X").passed


def test_a_verify_that_compared_nothing_is_a_step_failure(sandbox):
    said = ("verify: error: a backup is running on this host (it holds backups/.lock); "
            "verify after it")
    with pytest.raises(StepFailed) as failed:
        sets.verify(sandbox, Pool(VerifyRemote("", said + "\n", 1)), "X")
    assert str(failed.value) == f"{sandbox.data_host.name}: scripts/backup-verify.sh X: {said}"


def test_without_from_the_set_finished_last_is_verified():
    def one(i: str, finished: str) -> sets.BackupSet:
        return sets.BackupSet(i, finished, "v1", {}, {})
    found = [one("A", "2026-12-01T00:00:00Z"), one("Z-before-restore", "2026-12-02T00:00:00Z"),
             one("B", "2026-12-03T00:00:00Z")]
    assert sets.newest(found).id == "B"
    with pytest.raises(BadInput, match="there is no backup on the data host yet"):
        sets.newest([])


STORES = {
    "ledger": {"tables": {"public.entries": {"rows": 3, "checksum": "a" * 32},
                          "public.accounts": {"rows": 2, "checksum": "b" * 32}}},
    "redis": {"keys": 7, "rdb_keys": 5},
    "mongo": {"collections": {"wallets": 4}, "checksums": {"wallets": "c" * 64}},
}
LEDGER_OUT = f"TABLE\tpublic.accounts\t2\t{'b' * 32}\nTABLE\tpublic.entries\t3\t{'a' * 32}\n"
MONGO_OUT = {"wallets": {"documents": 4, "checksum": "c" * 64}}


def verdict(**changes) -> list[tuple[str, ...]]:
    args = {"stores": STORES, "files": "ok", "ledger": "ok", "ledger_out": LEDGER_OUT,
            "redis": "5", "mongo": "ok", "mongo_out": MONGO_OUT, **changes}
    return digest_mod.verdict(**args)


def test_a_restore_that_holds_what_was_recorded_passes():
    rows = verdict()
    assert not digest_mod.bad(rows)
    assert [r[:2] for r in rows] == [
        ("files", "SHA-256"), ("ledger", "public.accounts rows"),
        ("ledger", "public.accounts checksum"), ("ledger", "public.entries rows"),
        ("ledger", "public.entries checksum"), ("redis", "keys (redis-check-rdb)"),
        ("mongo", "wallets documents"), ("mongo", "wallets checksum")]
    lines = digest_mod.table(rows)
    assert lines[0].split() == ["STORE", "WHAT", "RECORDED", "RESTORED", "RESULT"]
    assert lines[2].split() == ["ledger", "public.accounts", "rows", "2", "2", "ok"]
    assert lines[3].split() == ["ledger", "public.accounts", "checksum", "b" * 16, "b" * 16,
                                "ok"]


def test_a_row_missing_a_table_missing_or_a_changed_document_differs():
    fewer = LEDGER_OUT.replace("\t3\t", "\t2\t")
    assert ("ledger", "public.entries rows", "3", "2", "DIFFERENT") in verdict(ledger_out=fewer)
    gone = LEDGER_OUT.splitlines()[0] + "\n"
    assert ("ledger", "public.entries rows", "3", "none", "DIFFERENT") in verdict(ledger_out=gone)
    extra = LEDGER_OUT + f"TABLE\tpublic.new\t1\t{'d' * 32}\n"
    assert ("ledger", "public.new rows", "none", "1", "DIFFERENT") in verdict(ledger_out=extra)
    other = {"wallets": {"documents": 4, "checksum": "e" * 64}}
    assert ("mongo", "wallets checksum", "c" * 16, "e" * 16, "DIFFERENT") \
        in verdict(mongo_out=other)
    assert ("redis", "keys (redis-check-rdb)", "5", "4", "DIFFERENT") in verdict(redis="4")


def test_a_part_that_failed_fails_the_verify_and_says_why():
    rows = verdict(files="1 file(s) changed: redis.rdb", redis="FAILED an RDB error")
    assert ("files", "-", "-", "-", "FAILED: 1 file(s) changed: redis.rdb") in rows
    assert ("redis", "-", "-", "-", "FAILED: an RDB error") in rows
    assert len(digest_mod.bad(rows)) == 2


def test_a_set_without_mongodb_passes_and_says_so_but_one_without_checksums_cannot():
    skipped = {**STORES, "mongo": {"skipped": "no mongo-tools in this image"}}
    rows = verdict(stores=skipped, mongo="skipped")
    assert ("mongo", "-", "-", "-", "not in this set: no mongo-tools in this image") in rows
    assert not digest_mod.bad(rows)
    old = {**STORES, "ledger": {"tables": 2}}  # a manifest from before the checksums
    assert ("ledger", "-", "-", "-", "FAILED: its manifest records no checksums of its rows: "
            "nothing to compare with") in verdict(stores=old)


def test_the_verdict_command_exits_1_on_a_difference(tmp_path):
    manifest, ledger, mongo = tmp_path / "m.json", tmp_path / "ledger", tmp_path / "mongo"
    manifest.write_text(json.dumps({"stores": STORES}))
    ledger.write_text(LEDGER_OUT)
    mongo.write_text(json.dumps(MONGO_OUT))

    def run(redis_keys: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(DIGEST), "verdict", str(manifest), "ok", "ok",
                               str(ledger), redis_keys, "ok", str(mongo)],
                              capture_output=True, text=True, timeout=30, check=False)
    passed, differs = run("5"), run("6")
    assert passed.returncode == 0 and passed.stdout.startswith("STORE ")
    assert differs.returncode == 1
    assert differs.stderr == "verify: 1 difference(s) or failure(s)\n"
