"""What the real MongoDB Database Tools (mongodump, mongorestore 100.18.0) ask of the mongod
stand-in (NOT MongoDB): create with idIndex, drop, listIndexes, createIndexes (unique enforced),
find with hint {$natural: 1}, cursors (getMore, killCursors, endSessions), insert with its
documents in an OP_MSG kind-1 section, the backup and restore roles, and no oplog.

A two-member replica set (PRIMARY, SECONDARY) with a 0400 keyfile, shared by the tests; each
test uses its own database. The last tests run the real tools built by fetch-vendor.sh
(vendor/mongo-tools/bin) against it when they are there, and skip with the hook's one-line
reason when they are not (the image test runs them in the image with TLS).
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import subprocess
import uuid
from pathlib import Path

import bson
import pytest
from bson import Int64
from pymongo import ASCENDING, DESCENDING, MongoClient, ReadPreference
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure
from standin_support import IMAGE_DIR, Standin, free_ports

ROOT_USER, ROOT_PWD = "root", "tools-root-pw"  # throwaway test credentials
KEY = "dG9vbHMtdGVzdC1rZXktMDEyMzQ1Njc4OWFiY2RlZg"
TOOLS_BIN = IMAGE_DIR / "vendor" / "mongo-tools" / "bin"
TOOLS_ABSENT = IMAGE_DIR / "vendor" / "mongo-tools" / "share" / "ABSENT"
USERS = {  # name: (password, roles on admin)
    "backupper": ("tools-backup-pw", ["backup"]),
    "restorer": ("tools-restore-pw", ["restore"]),
    "other": ("tools-other-pw", ["readAnyDatabase"]),
}


def _client(port: int, **kwargs: object) -> MongoClient:
    kwargs.setdefault("directConnection", True)
    kwargs.setdefault("serverSelectionTimeoutMS", 5000)
    kwargs.setdefault("connectTimeoutMS", 3000)
    return MongoClient("127.0.0.1", port, **kwargs)


def _as(port: int, user: str = ROOT_USER, **kwargs: object) -> MongoClient:
    pwd = ROOT_PWD if user == ROOT_USER else USERS[user][0]
    return _client(port, username=user, password=pwd, authSource="admin", **kwargs)


def _code(db: object, command: dict) -> int:
    """The error's code; its codeName must be mongod's (mongosh's drop() tests the name)."""
    with pytest.raises(OperationFailure) as err:
        db.command(command)
    assert not err.value.details["codeName"].startswith("Location") or err.value.code in (
        15955, 40414, 40415, 51003, 51024), err.value.details  # mongod's own location codes
    return err.value.code


@pytest.fixture(scope="module")
def rs(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("standin-tools")
    key = tmp / "keyfile"
    key.write_text(KEY + "\n")
    os.chmod(key, 0o400)
    members = [Standin(p, tmp / f"db{i}", ["--replSet", "rst", "--keyFile", str(key)],
                       tmp / f"mongod{i}.log") for i, p in enumerate(free_ports(2))]
    try:
        for m in members:
            m.start()
        with _client(members[0].port) as client:  # the localhost exception
            client.admin.command("replSetInitiate", {"_id": "rst", "members": [
                {"_id": 0, "host": members[0].host, "priority": 2},
                {"_id": 1, "host": members[1].host}]})
            client.admin.command("createUser", ROOT_USER, pwd=ROOT_PWD, roles=["root"])
        with _as(members[0].port) as client:
            for name, (pwd, roles) in USERS.items():
                client.admin.command("createUser", name, pwd=pwd, roles=roles)
        yield members
    finally:
        for m in members:
            m.stop()


# ---- create, drop ------------------------------------------------------------------------------
def test_standin_create_with_id_index_and_drop(rs: list[Standin]) -> None:
    with _as(rs[0].port) as client:
        db = client.tools_create
        ok = db.command("create", "c", idIndex={"key": {"_id": 1}, "name": "_id_",
                                                 "ns": "tools_create.c", "v": 2})
        assert ok["ok"] == 1
        assert db.list_collection_names() == ["c"]  # an empty collection exists
        info = db.command("listCollections")["cursor"]["firstBatch"][0]
        assert info["options"] == {} and info["idIndex"]["key"] == {"_id": 1}
        assert isinstance(info["info"]["uuid"], uuid.UUID | bson.Binary)
        assert _code(db, {"create": "c"}) == 48  # NamespaceExists
        assert _code(db, {"create": "d", "capped": True, "size": 4096}) == 238
        assert _code(db, {"create": "d", "validator": {"a": 1}}) == 238
        assert _code(db, {"create": "d", "viewOn": "c", "pipeline": []}) == 238
        assert _code(db, {"create": "d", "bogus": 1}) == 40415
        assert _code(db, {"create": "d", "idIndex": {"key": {"a": 1}, "name": "_id_"}}) == 2
        assert _code(db, {"create": "d", "idIndex": {"key": {"_id": 1}, "name": "x"}}) == 2
        assert _code(db, {"create": "d", "idIndex": {"key": {"_id": 1}, "name": "_id_",
                                                     "ns": "other.d"}}) == 2
        assert "d" not in db.list_collection_names()  # nothing refused was created
        db.c.insert_many([{"_id": 1}, {"_id": 2}])
        db.c.create_index("a")
        dropped = db.command("drop", "c")
        assert dropped["nIndexesWas"] == 2 and dropped["ns"] == "tools_create.c"
        assert db.list_collection_names() == []
        assert "tools_create" not in client.list_database_names()
        assert _code(db, {"drop": "c"}) == 26  # NamespaceNotFound: drivers ignore it
        with pytest.raises(OperationFailure) as missing:
            db.command({"drop": "c"})
        assert missing.value.details["codeName"] == "NamespaceNotFound"  # what mongosh checks
        db.drop_collection("c")  # as mongorestore --drop calls it: no error
    # the secondary follows (create and drop are replicated like inserts)
    with _as(rs[1].port, read_preference=ReadPreference.SECONDARY_PREFERRED) as client:
        assert client.tools_create.list_collection_names() == []


# ---- indexes -----------------------------------------------------------------------------------
def test_standin_create_indexes_and_list_indexes(rs: list[Standin]) -> None:
    with _as(rs[0].port) as client:
        db = client.tools_idx
        first = db.command("createIndexes", "acc", indexes=[
            {"key": {"iban": 1}, "name": "iban_1", "unique": True},
            {"key": {"owner": 1, "opened": -1}, "name": "owner_opened", "background": True,
             "ns": "tools_idx.acc"}])
        assert (first["numIndexesBefore"], first["numIndexesAfter"]) == (1, 3)
        assert first["createdCollectionAutomatically"] is True
        again = db.command("createIndexes", "acc", indexes=[
            {"key": {"iban": 1}, "name": "iban_1", "unique": True}])
        assert again["note"] == "all indexes already exist" and again["numIndexesAfter"] == 3
        specs = list(db.acc.list_indexes())
        assert [dict(s) for s in specs] == [
            {"v": 2, "key": {"_id": 1}, "name": "_id_"},
            {"v": 2, "key": {"iban": 1}, "name": "iban_1", "unique": True},
            {"v": 2, "key": {"owner": 1, "opened": -1}, "name": "owner_opened"}]
        db.acc.create_index([("kind", ASCENDING), ("n", DESCENDING)], sparse=True)
        assert "kind_1_n_-1" in db.acc.index_information()
        # conflicts and refusals, as mongod answers them
        assert _code(db, {"createIndexes": "acc", "indexes": [
            {"key": {"other": 1}, "name": "iban_1"}]}) == 86  # same name, other key
        assert _code(db, {"createIndexes": "acc", "indexes": [
            {"key": {"iban": 1}, "name": "iban_again", "unique": True}]}) == 85
        assert _code(db, {"createIndexes": "acc", "indexes": [
            {"key": {"iban": 1}, "name": "iban_1"}]}) == 85  # same name, other options
        for refused in ({"key": {"t": "text"}, "name": "t"},
                        {"key": {"g": "2dsphere"}, "name": "g"},
                        {"key": {"h": "hashed"}, "name": "h"}, {"key": {"$**": 1}, "name": "w"},
                        {"key": {"e": 1}, "name": "ttl", "expireAfterSeconds": 60},
                        {"key": {"p": 1}, "name": "p", "partialFilterExpression": {"p": 1}},
                        {"key": {"c": 1}, "name": "c", "collation": {"locale": "fr"}}):
            assert _code(db, {"createIndexes": "acc", "indexes": [refused]}) == 238, refused
        assert _code(db, {"createIndexes": "acc", "indexes": [{"key": {"x": 0},
                                                               "name": "x"}]}) == 67
        assert _code(db, {"createIndexes": "acc", "indexes": [{"key": {"x": 1}}]}) == 9
        assert _code(db, {"createIndexes": "acc", "indexes": [
            {"key": {"x": 1}, "name": "x", "weirdOption": 1}]}) == 197
        db.command("createIndexes", "acc", indexes=[{"key": {"x": 1}, "name": "x",
                                                     "weirdOption": 1}],
                   ignoreUnknownIndexOptions=True)
        assert dict(db.acc.index_information()["x"]) == {"v": 2, "key": [("x", 1)]}
        assert _code(db, {"listIndexes": "missing"}) == 26
        assert len(list(db.acc.list_indexes())) == 5
    with _as(rs[1].port, read_preference=ReadPreference.SECONDARY_PREFERRED) as client:
        assert len(list(client.tools_idx.acc.list_indexes())) == 5  # replicated


def test_standin_unique_index_is_enforced(rs: list[Standin]) -> None:
    with _as(rs[0].port) as client:
        coll = client.tools_unique.acc
        coll.create_index("iban", unique=True, name="iban_1")
        coll.create_index([("bank", 1), ("no", 1)], unique=True, name="bank_no")
        coll.create_index("alias", unique=True, sparse=True, name="alias_sparse")
        coll.insert_many([{"_id": 1, "iban": "DE01", "bank": "a", "no": 1},
                          {"_id": 2, "iban": "DE02", "bank": "a", "no": 2}])
        with pytest.raises(DuplicateKeyError) as err:
            coll.insert_one({"_id": 3, "iban": "DE01"})
        assert 'index: iban_1 dup key: { iban: "DE01" }' in str(err.value)
        with pytest.raises(DuplicateKeyError):
            coll.insert_one({"_id": 3, "iban": "DE03", "bank": "a", "no": 2.0})  # 2 == 2.0
        coll.insert_one({"_id": 3, "iban": "DE03", "bank": "b", "no": 2})
        # a missing field is null in a unique index: one document only, unless sparse
        coll.insert_one({"_id": 4, "bank": "c", "no": 1})
        with pytest.raises(DuplicateKeyError):
            coll.insert_one({"_id": 5, "bank": "c", "no": 2})
        # arrays: each element is a key (multikey), a document may repeat its own
        coll.insert_one({"_id": 6, "iban": ["DE06", "DE06"], "bank": "d", "no": 1})
        with pytest.raises(DuplicateKeyError):
            coll.insert_one({"_id": 7, "iban": ["DE07", "DE06"], "bank": "d", "no": 2})
        # unordered: the others of the batch go in, as mongorestore's ordered: false relies on
        with pytest.raises(BulkWriteError) as bulk:
            coll.insert_many([{"_id": 8, "iban": "DE08", "bank": "e", "no": 1},
                              {"_id": 9, "iban": "DE01", "bank": "e", "no": 2},
                              {"_id": 10, "iban": "DE10", "bank": "e", "no": 3}], ordered=False)
        assert [e["index"] for e in bulk.value.details["writeErrors"]] == [1]
        assert sorted(d["_id"] for d in coll.find()) == [1, 2, 3, 4, 6, 8, 10]
        # building a unique index over duplicates fails and creates nothing
        build = client.tools_unique.build
        build.insert_many([{"_id": 1, "dup": 1}, {"_id": 2, "dup": 2}, {"_id": 3, "dup": 1}])
        with pytest.raises(OperationFailure) as err:
            build.create_index("dup", unique=True)
        assert err.value.code == 11000 and "dup key: { dup: 1 }" in err.value.details["errmsg"]
        assert "dup_1" not in build.index_information()
        build.create_index("dup")  # not unique: fine
        build.insert_one({"_id": 4, "dup": 1})


# ---- find, cursors -----------------------------------------------------------------------------
def test_standin_find_hint_natural(rs: list[Standin]) -> None:
    with _as(rs[0].port) as client:
        coll = client.tools_hint.c
        coll.insert_many([{"_id": i, "k": i % 2} for i in (3, 1, 2)])
        coll.create_index("k")
        assert [d["_id"] for d in coll.find(hint=[("$natural", 1)])] == [3, 1, 2]
        assert [d["_id"] for d in coll.find(hint=[("$natural", -1)])] == [2, 1, 3]
        assert coll.count_documents({}, hint=[("$natural", 1)]) == 3
        assert client.tools_hint.command("count", "c", hint={"$natural": 1})["n"] == 3
        for hint, code in (({"nope": 1}, 2), ("nope_1", 2), ({"k": 1}, 238), ("k_1", 238),
                           ({"$natural": 2}, 2)):
            assert _code(client.tools_hint, {"find": "c", "hint": hint}) == code, hint


def test_standin_get_more_and_kill_cursors(rs: list[Standin]) -> None:
    with _as(rs[0].port) as client:
        db = client.tools_cursor
        db.c.insert_many([{"_id": i, "pad": "x" * 10} for i in range(250)])
        first = db.command("find", "c")["cursor"]
        assert len(first["firstBatch"]) == 101 and first["id"] != 0  # mongod's default
        cid = first["id"]
        more = db.command("getMore", cid, collection="c", batchSize=50)["cursor"]
        assert [d["_id"] for d in more["nextBatch"]] == list(range(101, 151))
        assert more["id"] == cid
        assert _code(db, {"getMore": cid, "collection": "other"}) == 13  # another namespace
        assert _code(db, {"getMore": 5, "collection": "c"}) == 14  # an int, not a long
        with _as(rs[0].port, "other") as other:  # another user may not take it over
            assert _code(other.tools_cursor, {"getMore": cid, "collection": "c"}) == 13
            assert _code(other.tools_cursor, {"killCursors": "c", "cursors": [cid]}) == 13
        rest = db.command("getMore", cid, collection="c")["cursor"]
        assert len(rest["nextBatch"]) == 99 and rest["id"] == 0  # exhausted: closed
        assert _code(db, {"getMore": cid, "collection": "c"}) == 43
        # pymongo iterates through getMore
        assert [d["_id"] for d in db.c.find(batch_size=7)] == list(range(250))
        # killCursors
        cid = db.command("find", "c", batchSize=10)["cursor"]["id"]
        killed = db.command("killCursors", "c", cursors=[cid, Int64(12345)])
        assert killed["cursorsKilled"] == [cid] and killed["cursorsNotFound"] == [12345]
        assert _code(db, {"getMore": cid, "collection": "c"}) == 43
        # singleBatch, and a batch of 0
        single = db.command("find", "c", batchSize=5, singleBatch=True)["cursor"]
        assert len(single["firstBatch"]) == 5 and single["id"] == 0
        empty = db.command("find", "c", batchSize=0)["cursor"]
        assert empty["firstBatch"] == [] and empty["id"] != 0
        # a dropped collection kills its cursors (QueryPlanKilled)
        db.command("drop", "c")
        assert _code(db, {"getMore": empty["id"], "collection": "c"}) == 175
        # listIndexes and listCollections give cursors too
        db.d.insert_one({"_id": 1})
        li = db.command("listIndexes", "d", cursor={"batchSize": 0})["cursor"]
        assert li["ns"] == "tools_cursor.$cmd.listIndexes.d" and li["id"] != 0
        nxt = db.command("getMore", li["id"], collection="$cmd.listIndexes.d")["cursor"]
        assert [s["name"] for s in nxt["nextBatch"]] == ["_id_"]


def test_standin_end_sessions_kills_its_cursors(rs: list[Standin]) -> None:
    with _as(rs[0].port) as client:
        db = client.tools_sessions
        db.c.insert_many([{"_id": i} for i in range(20)])
        with client.start_session() as session:
            cid = db.command("find", "c", batchSize=2, session=session)["cursor"]["id"]
            lsid = session.session_id
        client.admin.command("endSessions", [lsid])
        assert _code(db, {"getMore": cid, "collection": "c"}) == 43


def test_standin_insert_documents_in_a_kind_1_section(tmp_path: Path) -> None:
    """A member without auth (this raw socket does no SCRAM): the documents come in a kind-1
    section, as mongorestore's Go driver sends them, ordered: false, one a duplicate."""
    member = Standin(free_ports(1)[0], tmp_path / "db", [], tmp_path / "mongod.log").start()
    try:
        docs = [{"_id": i, "v": i} for i in range(3)] + [{"_id": 1}]
        body = {"insert": "k", "ordered": False, "$db": "tools_kind1",
                "writeConcern": {"w": 1}, "bypassEmptyTsReplacement": True}
        payload = b"".join(bson.encode(d) for d in docs)
        seq = b"documents\x00" + payload
        msg = (struct.pack("<I", 0) + b"\x00" + bson.encode(body) + b"\x01"
               + struct.pack("<i", 4 + len(seq)) + seq)
        with socket.create_connection(("127.0.0.1", member.port), timeout=10) as sock:
            sock.sendall(struct.pack("<iiii", 16 + len(msg), 5, 0, 2013) + msg)
            header = sock.recv(16, socket.MSG_WAITALL)
            (length,) = struct.unpack_from("<i", header)
            reply = bson.decode(sock.recv(length - 16, socket.MSG_WAITALL)[5:])
        assert reply["ok"] == 1 and reply["n"] == 3
        assert [e["index"] for e in reply["writeErrors"]] == [3]
        with _client(member.port) as client:
            assert list(client.tools_kind1.k.find()) == [{"_id": i, "v": i} for i in range(3)]
    finally:
        member.stop()


# ---- the backup and restore roles (as mongod 7.0's role_graph_builtin_roles.cpp) -------------
def test_standin_backup_and_restore_roles(rs: list[Standin]) -> None:
    with _as(rs[0].port) as client:
        client.tools_roles.c.insert_many([{"_id": 1}, {"_id": 2}])
        client.tools_roles.c.create_index("a")
    with _as(rs[0].port, "backupper") as client:
        db = client.tools_roles
        assert [d["_id"] for d in db.c.find(hint=[("$natural", 1)])] == [1, 2]
        assert db.command("count", "c")["n"] == 2
        assert [i["name"] for i in db.c.list_indexes()] == ["_id_", "a_1"]
        assert db.list_collection_names() == ["c"]
        assert "tools_roles" in client.list_database_names()
        assert client.admin.command("getParameter", featureCompatibilityVersion=1)["ok"] == 1
        for refused in ({"insert": "c", "documents": [{"_id": 3}]}, {"create": "new"},
                        {"createIndexes": "c", "indexes": [{"key": {"b": 1}, "name": "b"}]},
                        {"drop": "c"}):
            assert _code(db, refused) == 13, refused
        assert _code(client.admin, {"replSetGetStatus": 1}) == 13  # backup is no monitor
    with _as(rs[0].port, "restorer") as client:
        db = client.tools_roles
        db.command("drop", "c")
        db.command("create", "c", idIndex={"key": {"_id": 1}, "name": "_id_"})
        db.command("insert", "c", documents=[{"_id": 1}], ordered=False)
        db.command("createIndexes", "c", indexes=[{"key": {"a": 1}, "name": "a_1"}])
        assert db.list_collection_names() == ["c"]
        assert client.admin.command("getParameter", featureCompatibilityVersion=1)["ok"] == 1
        for refused in ({"find": "c"}, {"count": "c"}, {"listIndexes": "c"}):
            assert _code(db, refused) == 13, refused  # restore may not read documents
    with _as(rs[0].port, "other") as client:  # readAnyDatabase: reads, no writes
        assert _code(client.tools_roles, {"drop": "c"}) == 13


# ---- the real tools, on the machine (the image test runs them in the image, with TLS) -------
def _tools() -> Path:
    if not (TOOLS_BIN / "mongodump").exists():
        reason = TOOLS_ABSENT.read_text().strip() if TOOLS_ABSENT.exists() else (
            "mongo-tools: not built (run sandbox/images/mongo/fetch-vendor.sh)")
        pytest.skip(reason)
    return TOOLS_BIN


def _tool(name: str, port: int, user: str, args: list[str],
          tmp: Path) -> subprocess.CompletedProcess[str]:
    """Run a real tool with the password in a --config YAML file (never on argv)."""
    pwd = ROOT_PWD if user == ROOT_USER else USERS[user][0]
    config = tmp / f"{name}-{user}.yaml"
    config.write_text(f"password: {pwd}\n")
    os.chmod(config, 0o600)
    return subprocess.run(
        [str(_tools() / name), f"--uri=mongodb://{user}@127.0.0.1:{port}/?authSource=admin"
         "&directConnection=true", f"--config={config}", *args],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def _checksum(client: MongoClient, db: str) -> dict:
    out = {}
    for name in sorted(client[db].list_collection_names()):
        docs = sorted(bson.encode(d) for d in client[db][name].find())
        out[name] = (len(docs), hashlib.sha256(b"".join(docs)).hexdigest(),
                     # by name: mongorestore creates them in an order of its own
                     sorted((dict(i) for i in client[db][name].list_indexes()),
                            key=lambda i: i["name"]))
    return out


def test_standin_real_mongodump_mongorestore_round_trip(rs: list[Standin], tmp_path: Path) -> None:
    with _as(rs[0].port) as client:
        db = client.tools_bank
        db.accounts.insert_many([{"_id": i, "iban": f"DE{i:04}", "balance": Int64(i * 100),
                                  "tags": ["a", str(i)], "nested": {"n": i / 3}}
                                 for i in range(1500)])  # > 101: find goes through getMore
        db.accounts.create_index("iban", unique=True)
        db.accounts.create_index([("balance", DESCENDING), ("iban", ASCENDING)])
        db.ledger.insert_one({"_id": uuid.uuid4().hex, "amount": bson.Decimal128("1.10")})
        db.command("create", "empty")
        before = _checksum(client, "tools_bank")
    archive = tmp_path / "bank.archive.gz"
    # as a backup does: the secondary, the backup role
    secondary_port = rs[1].port
    dump = _tool("mongodump", secondary_port, "backupper",
                 ["--readPreference=secondary", "-d", "tools_bank", f"--archive={archive}",
                  "--gzip"], tmp_path)
    assert dump.returncode == 0, dump.stderr
    assert "done dumping tools_bank.accounts (1500 documents)" in dump.stderr.replace("`", "")
    with _as(rs[0].port) as client:
        client.tools_bank.accounts.insert_one({"_id": "after the dump"})
        client.tools_bank.drop_collection("ledger")
    restore = _tool("mongorestore", rs[0].port, "restorer",
                    [f"--archive={archive}", "--gzip", "--drop"], tmp_path)
    assert restore.returncode == 0, restore.stderr
    assert "1501 document(s) restored successfully. 0 document(s) failed" in restore.stderr
    with _as(rs[0].port) as client:
        assert _checksum(client, "tools_bank") == before
    with _as(rs[1].port, read_preference=ReadPreference.SECONDARY_PREFERRED) as client:
        assert _checksum(client, "tools_bank") == before  # the secondary took it too


def test_standin_real_mongodump_oplog_fails_clearly(rs: list[Standin], tmp_path: Path) -> None:
    archive = tmp_path / "full.archive"
    dump = _tool("mongodump", rs[0].port, "backupper", ["--oplog", f"--archive={archive}"],
                 tmp_path)
    assert dump.returncode != 0
    assert "does not implement an oplog" in dump.stderr
    assert "mongodump --oplog" in dump.stderr
    assert not archive.exists() or b"oplog" not in archive.read_bytes()
