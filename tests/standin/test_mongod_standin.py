"""The mongod stand-in (NOT MongoDB), driven by the real mongosh and by pymongo.

Three stand-in members on 127.0.0.1 (primary, secondary, arbiter) with a 0400 keyfile. The
tests of the `TestStandinReplicaSet` class share that set and run in order: localhost exception,
initiate, users, data, restart. The TLS tests (--tlsMode) use a throwaway CA and certificates
made for the session (the `tls_files` fixture); the `TestStandinRequireTLS` class shares one
requireTLS member. `TestStandinRetryableWrites` shares a two-member set without auth (retried
inserts: raw OP_MSG, and pymongo through a proxy that loses an answer).
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import struct
import time
import uuid
import warnings
from pathlib import Path

import bson
import pytest
from cryptography.hazmat.primitives import serialization
from pymongo import MongoClient, ReadPreference
from pymongo.errors import DuplicateKeyError, OperationFailure, ServerSelectionTimeoutError
from standin_support import (
    NOT_A_CERT_TEXT,
    VENDORED_MONGOSH,
    ReplyLosingProxy,
    Standin,
    TLSFiles,
    free_ports,
    op_msg_command,
    run_mongod,
    run_mongosh,
)

ROOT_USER, ROOT_PWD = "root", "standin-root-pw"  # throwaway test credentials
APP_USER, APP_PWD = "app", "standin-app-pw"
KEY = "c3RhbmRpbi10ZXN0LWtleS0wMTIzNDU2Nzg5YWJjZGVm"
CREATE_ROOT = ("db.getSiblingDB('admin').createUser("
               "{user: process.env.U, pwd: process.env.P, roles: ['root']})")
CREATE_X = "db.getSiblingDB('admin').createUser({user: 'x', pwd: 'y', roles: ['root']})"
AUTH_ROOT = "db.getSiblingDB('admin').auth(process.env.U, process.env.P)"


# mongosh: member(port, auth) is the admin database of the member on 127.0.0.1:port, logged in
# with process.env.U/P when auth is true (credentials never on a command line).
_EACH_MEMBER = """
    const cred = () => encodeURIComponent(process.env.U) + ':' +
        encodeURIComponent(process.env.P) + '@';
    const member = (p, auth) => new Mongo('mongodb://' + (auth ? cred() : '') + '127.0.0.1:' +
        p + '/?directConnection=true&authSource=admin').getDB('admin');
"""


def _code_of(js: str) -> str:
    """mongosh script: run js, print the server error's code (and message) as JSON."""
    return (f"try {{ {js}; print('{{}}') }} catch (e) {{ print(EJSON.stringify("
            "{code: e.code, msg: e.message, name: e.codeName})) }")


def _client(port: int, **kwargs: object) -> MongoClient:
    kwargs.setdefault("directConnection", True)
    kwargs.setdefault("serverSelectionTimeoutMS", 5000)
    kwargs.setdefault("connectTimeoutMS", 3000)
    return MongoClient("127.0.0.1", port, **kwargs)


def _keyfile(tmp: Path, mode: int = 0o400, text: str = KEY) -> Path:
    path = tmp / f"keyfile-{mode:o}"
    path.write_text(text + "\n")
    os.chmod(path, mode)
    return path


# ---- refusing to start ---------------------------------------------------------------------
def test_standin_refuses_keyfile_readable_by_others(tmp_path: Path) -> None:
    key = _keyfile(tmp_path, 0o644)
    res = run_mongod(["--keyFile", str(key), "--dbpath", str(tmp_path), "--port", "1"])
    assert res.returncode != 0
    assert f"permissions on {key} are too open" in res.stderr


@pytest.mark.parametrize("text,expected", [
    ("", "is empty"),
    ("abc", "too short"),
    ("not*base64!chars", "invalid char"),
])
def test_standin_refuses_bad_keyfile(tmp_path: Path, text: str, expected: str) -> None:
    key = _keyfile(tmp_path, 0o400, text)
    res = run_mongod(["--keyFile", str(key), "--dbpath", str(tmp_path), "--port", "1"])
    assert res.returncode != 0
    assert expected in res.stderr
    assert "*base64!" not in res.stderr  # key content is never printed


def test_standin_refuses_missing_keyfile(tmp_path: Path) -> None:
    res = run_mongod(["--keyFile", str(tmp_path / "nope"), "--dbpath", str(tmp_path)])
    assert res.returncode != 0
    assert "No such file or directory" in res.stderr


def test_standin_refuses_unknown_option(tmp_path: Path) -> None:
    res = run_mongod(["--dbpath", str(tmp_path), "--oplogSize", "50"])
    assert res.returncode == 2
    assert "unrecognised option '--oplogSize'" in res.stderr


def test_standin_refuses_missing_dbpath(tmp_path: Path) -> None:
    res = run_mongod(["--dbpath", str(tmp_path / "absent"), "--port", str(free_ports(1)[0])])
    assert res.returncode == 100
    assert "NonExistentPath" in res.stderr


def test_standin_max_conns_refuses_one_more(tmp_path: Path) -> None:
    """--maxConns: like mongod, a connection beyond the limit is accepted and closed at once;
    a slot frees up when a connection ends."""
    member = Standin(free_ports(1)[0], tmp_path / "db", ["--maxConns", "2"],
                     tmp_path / "log").start()
    try:
        # Standin.start()'s readiness probe holds a slot until the stand-in sees it close: wait
        # for that, or one of the two held below may be the one refused (a flake under load).
        deadline = time.monotonic() + 20
        while "Connection ended" not in (tmp_path / "log").read_text():
            assert time.monotonic() < deadline, "the readiness probe's connection never ended"
            time.sleep(0.02)
        held = [socket.create_connection(("127.0.0.1", member.port), timeout=2) for _ in range(2)]
        time.sleep(0.3)  # the stand-in has accepted both
        third = socket.create_connection(("127.0.0.1", member.port), timeout=2)
        assert third.recv(1) == b""  # closed by the server
        third.close()
        held.pop().close()
        time.sleep(0.3)
        assert _op_query_is_master(member.port)["ok"] == 1  # a slot is free again
        held[0].close()
        assert "too many open connections" in (tmp_path / "log").read_text()
    finally:
        member.stop()


def test_standin_refuses_bad_max_conns(tmp_path: Path) -> None:
    res = run_mongod(["--dbpath", str(tmp_path), "--maxConns", "0"])
    assert res.returncode == 2 and "--maxConns must be at least 1" in res.stderr


# ---- the replica set ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rs(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("standin-rs")
    key = _keyfile(tmp)
    ports = free_ports(3)
    members = [Standin(p, tmp / f"db{i}", ["--replSet", "rs0", "--keyFile", str(key)],
                       tmp / f"mongod{i}.log") for i, p in enumerate(ports)]
    try:
        for m in members:
            m.start()
        yield members
    finally:
        for m in members:
            m.stop()


def _config(members: list[Standin]) -> dict:
    return {"_id": "rs0", "members": [
        {"_id": 0, "host": members[0].host, "priority": 2},
        {"_id": 1, "host": members[1].host},
        {"_id": 2, "host": members[2].host, "arbiterOnly": True},
    ]}


def _op_query_is_master(port: int) -> dict:
    """A legacy OP_QUERY isMaster on admin.$cmd, as drivers and mongosh send first."""
    query = bson.encode({"isMaster": 1, "helloOk": True})
    body = struct.pack("<i", 0) + b"admin.$cmd\x00" + struct.pack("<ii", 0, -1) + query
    msg = struct.pack("<iiii", 16 + len(body), 7, 0, 2004) + body
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(msg)
        header = sock.recv(16, socket.MSG_WAITALL)
        length, _, response_to, op_code = struct.unpack("<iiii", header)
        rest = sock.recv(length - 16, socket.MSG_WAITALL)
    assert (op_code, response_to) == (1, 7)  # OP_REPLY to our request
    return bson.decode(rest[20:])


def _as_root(members: list[Standin], i: int = 0, **kwargs: object) -> MongoClient:
    return _client(members[i].port, username=ROOT_USER, password=ROOT_PWD, **kwargs)


class TestStandinReplicaSet:
    def test_standin_legacy_handshake_before_initiate(self, rs: list[Standin]) -> None:
        reply = _op_query_is_master(rs[0].port)
        assert reply["ok"] == 1
        assert reply["ismaster"] is False
        assert reply["isreplicaset"] is True
        assert reply["maxWireVersion"] == 21
        assert reply["helloOk"] is True

    def test_standin_status_before_initiate_is_not_yet_initialized(self, rs: list[Standin]) -> None:
        with _client(rs[0].port) as client:
            with pytest.raises(OperationFailure) as err:
                client.admin.command("replSetGetStatus")
        assert err.value.code == 94

    def test_standin_localhost_exception_does_not_open_data(self, rs: list[Standin]) -> None:
        with _client(rs[0].port) as client:
            with pytest.raises(OperationFailure) as err:
                client.appdb.command("find", "things")
        assert err.value.code == 13

    def test_standin_mongosh_initiate_and_status_from_every_member(self, rs, mongosh) -> None:
        cfg = bson.json_util.dumps(_config(rs))
        ports = [m.port for m in rs]
        script = f"""
            const r = rs.initiate({cfg});
            const states = s => s.members.map(x => [x.name, x.stateStr, x.health]);
            const out = {{ok: r.ok, here: states(rs.status()), conf: rs.conf().members.length}};
            {_EACH_MEMBER}
            out.each = {ports}.map(p => states(member(p).runCommand({{replSetGetStatus: 1}})));
            print(EJSON.stringify(out))
        """
        out = run_mongosh(mongosh, rs[1].port, script)
        expected = [[rs[0].host, "PRIMARY", 1], [rs[1].host, "SECONDARY", 1],
                    [rs[2].host, "ARBITER", 1]]
        assert out == {"ok": 1, "here": expected, "conf": 3, "each": [expected] * 3}

    def test_standin_second_initiate_fails_already_initialized(self, rs, mongosh) -> None:
        cfg = bson.json_util.dumps(_config(rs))
        out = run_mongosh(mongosh, rs[0].port, _code_of(f"rs.initiate({cfg})"))
        assert out == {"code": 23, "msg": "already initialized", "name": "AlreadyInitialized"}
        with _client(rs[1].port) as client:
            with pytest.raises(OperationFailure) as err:
                client.admin.command("replSetInitiate", _config(rs))
        assert (err.value.code, err.value.details["errmsg"]) == (23, "already initialized")

    def test_standin_hello_after_initiate(self, rs: list[Standin]) -> None:
        with _client(rs[1].port) as client:
            hello = client.admin.command("hello")
        assert hello["setName"] == "rs0"
        assert hello["hosts"] == [rs[0].host, rs[1].host]
        assert hello["arbiters"] == [rs[2].host]
        assert hello["primary"] == rs[0].host
        assert hello["me"] == rs[1].host
        assert hello["secondary"] is True and hello["isWritablePrimary"] is False

    def test_standin_createuser_on_secondary_is_not_primary(self, rs, mongosh) -> None:
        out = run_mongosh(mongosh, rs[1].port, _code_of(CREATE_X))
        assert out["code"] == 10107

    def test_standin_localhost_exception_creates_first_user(self, rs, mongosh) -> None:
        env = {"U": ROOT_USER, "P": ROOT_PWD}
        out = run_mongosh(mongosh, rs[0].port, f"print(EJSON.stringify({CREATE_ROOT}))", env=env)
        assert out["ok"] == 1
        # The exception is closed now that a user exists.
        out = run_mongosh(mongosh, rs[0].port, _code_of(CREATE_X))
        assert out["code"] == 13
        with _client(rs[0].port) as client:
            with pytest.raises(OperationFailure) as err:
                client.admin.command("replSetGetStatus")
        assert err.value.code == 13

    def test_standin_pymongo_auth_success_and_wrong_password(self, rs: list[Standin]) -> None:
        for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-1", None):
            extra = {"authMechanism": mechanism} if mechanism else {}
            with _as_root(rs, **extra) as client:
                status = client.admin.command("connectionStatus")
            assert status["authInfo"]["authenticatedUsers"] == [{"user": ROOT_USER, "db": "admin"}]
        with _client(rs[0].port, username=ROOT_USER, password="wrong") as client:
            with pytest.raises(OperationFailure) as err:
                client.admin.command("ping")
        assert err.value.code == 18

    def test_standin_users_reach_the_secondary(self, rs: list[Standin]) -> None:
        with _as_root(rs, 1) as client:
            users = client.admin.command("usersInfo", ROOT_USER)["users"]
        assert [u["user"] for u in users] == [ROOT_USER]
        assert "credentials" not in users[0]

    def test_standin_mongosh_user_management(self, rs, mongosh) -> None:
        env = {"U": ROOT_USER, "P": ROOT_PWD, "AU": APP_USER, "AP": APP_PWD}
        script = """
            db.getSiblingDB('admin').auth(process.env.U, process.env.P);
            const app = db.getSiblingDB('appdb');
            app.createUser({user: process.env.AU, pwd: 'first-password', roles: ['read']});
            app.updateUser(process.env.AU,
                           {pwd: process.env.AP, roles: [{role: 'readWrite', db: 'appdb'}]});
            const info = app.getUser(process.env.AU);
            let dup = null;
            try { app.createUser({user: process.env.AU, pwd: 'x', roles: []}) }
            catch (e) { dup = e.code }
            let missing = null;
            try { app.updateUser('nobody', {pwd: 'x'}) } catch (e) { missing = e.code }
            print(EJSON.stringify({user: info.user, roles: info.roles, dup: dup, missing: missing}))
        """
        out = run_mongosh(mongosh, rs[0].port, script, env=env)
        assert out == {"user": APP_USER, "roles": [{"role": "readWrite", "db": "appdb"}],
                       "dup": 51003, "missing": 11}

    def test_standin_readwrite_user_is_refused_elsewhere(self, rs, mongosh) -> None:
        env = {"U": APP_USER, "P": APP_PWD}
        script = """
            const app = db.getSiblingDB('appdb');
            app.auth(process.env.U, process.env.P);
            const codes = {};
            try { app.createUser({user: 'evil', pwd: 'x', roles: ['readWrite']}) }
            catch (e) { codes.createUser = e.code }
            try { db.getSiblingDB('otherdb').things.insertOne({a: 1}) }
            catch (e) { codes.otherInsert = e.code }
            const ins = app.things.insertOne({_id: 'mongosh-1', kind: 'mongosh'});
            codes.ownInsert = ins.acknowledged;
            codes.ownFind = app.things.findOne({kind: 'mongosh'})._id;
            codes.ownCount = app.things.countDocuments({kind: 'mongosh'});
            print(EJSON.stringify(codes))
        """
        out = run_mongosh(mongosh, rs[0].port, script, env=env)
        assert out == {"createUser": 13, "otherInsert": 13, "ownInsert": True,
                       "ownFind": "mongosh-1", "ownCount": 1}

    def test_standin_unknown_command_is_command_not_found(self, rs, mongosh) -> None:
        with _as_root(rs) as client:
            for name in ("atlasVersion", "replSetReconfig", "fooBar"):
                with pytest.raises(OperationFailure) as err:
                    client.admin.command(name)
                assert err.value.code == 59
                assert err.value.details["codeName"] == "CommandNotFound"
                assert err.value.details["errmsg"] == f"no such command: '{name}'"
        out = run_mongosh(mongosh, rs[0].port, "try { db.adminCommand({fooBar: 1}); print('{}') } "
                          "catch (e) { print(EJSON.stringify({code: e.code, name: e.codeName})) }")
        assert out == {"code": 59, "name": "CommandNotFound"}

    def test_standin_pymongo_replica_set_uri_finds_primary(self, rs: list[Standin]) -> None:
        uri = f"mongodb://{rs[1].host},{rs[2].host}/?replicaSet=rs0&authSource=appdb"
        with MongoClient(uri, username=APP_USER, password=APP_PWD,
                         serverSelectionTimeoutMS=5000) as client:
            coll = client.appdb.things
            coll.insert_many([{"_id": 1, "kind": "py", "n": 1}, {"_id": 2, "kind": "py", "n": 2},
                              {"_id": 3, "kind": "other"}])
            assert client.primary == ("127.0.0.1", rs[0].port)
            assert [d["_id"] for d in coll.find({"kind": "py"})] == [1, 2]
            assert coll.count_documents({"kind": "py"}) == 2
            assert client.appdb.list_collection_names() == ["things"]
            # a readWrite user on appdb sees only appdb
            assert client.list_database_names() == ["appdb"]
            assert coll.find_one({"n": 2})["_id"] == 2
            assert client.appdb.command("count", "things", query={"kind": "py"})["n"] == 2
            secondary = coll.with_options(read_preference=ReadPreference.SECONDARY)
            assert secondary.find_one({"_id": 3})["kind"] == "other"
            # not implemented: says so (238 NotImplemented), never a wrong answer
            for unsupported in ({"n": {"$gt": 1}}, {"kind": re.compile("^p")}):
                with pytest.raises(OperationFailure) as err:
                    coll.find_one(unsupported)
                assert err.value.code == 238
            with pytest.raises(OperationFailure) as err:
                coll.update_one({"_id": 1}, {"$set": {"n": 5}})
            assert err.value.code == 59
            with client.start_session() as session:
                with pytest.raises(OperationFailure) as err:
                    with session.start_transaction():
                        coll.insert_one({"_id": 99}, session=session)
            assert err.value.code == 238
            assert coll.find_one({"_id": 99}) is None

    def test_standin_restart_keeps_state(self, rs, mongosh) -> None:
        for m in rs:
            m.stop()
        for m in rs:
            m.start()
        with _as_root(rs) as client:
            assert client.admin.command("hello")["isWritablePrimary"] is True
            assert client.list_database_names() == ["admin", "appdb", "config", "local"]
            assert client.appdb.things.find_one({"_id": 3})["kind"] == "other"
        script = f"""
            {_EACH_MEMBER}
            print(EJSON.stringify({[m.port for m in rs]}.map((p, i) => member(p, i < 2)
                .runCommand({{replSetGetStatus: 1}}).members.map(x => x.stateStr))))
        """
        out = run_mongosh(mongosh, rs[2].port, script, env={"U": ROOT_USER, "P": ROOT_PWD})
        assert out == [["PRIMARY", "SECONDARY", "ARBITER"]] * 3
        cfg = bson.json_util.dumps(_config(rs))
        with _as_root(rs) as client:
            with pytest.raises(OperationFailure) as err:
                client.admin.command("replSetInitiate", bson.json_util.loads(cfg))
        assert err.value.code == 23


# ---- retryable writes (lsid + txnNumber) --------------------------------------------------------
@pytest.fixture(scope="module")
def rw_set(tmp_path_factory: pytest.TempPathFactory):
    """A replica set of two members without auth: PRIMARY (priority 2) and SECONDARY."""
    tmp = tmp_path_factory.mktemp("standin-rw")
    members = [Standin(p, tmp / f"db{i}", ["--replSet", "rw"], tmp / f"mongod{i}.log")
               for i, p in enumerate(free_ports(2))]
    try:
        for m in members:
            m.start()
        with _client(members[0].port) as client:
            client.admin.command("replSetInitiate", {"_id": "rw", "members": [
                {"_id": 0, "host": members[0].host, "priority": 2},
                {"_id": 1, "host": members[1].host}]})
            assert client.admin.command("hello")["isWritablePrimary"] is True
        yield members
    finally:
        for m in members:
            m.stop()


def _lsid() -> dict:
    return {"id": bson.Binary(uuid.uuid4().bytes, 4)}


def _insert(docs: list, lsid: dict, txn: int) -> dict:
    return {"insert": "things", "documents": docs, "lsid": lsid,
            "txnNumber": bson.Int64(txn), "$db": "rwdb"}


def _ids(port: int, **query: object) -> list:
    with _client(port, read_preference=ReadPreference.SECONDARY_PREFERRED) as client:
        return [d["_id"] for d in client.rwdb.things.find(query)]


def _saved_sessions(member: Standin) -> dict:
    return bson.decode((member.dbpath / "standin-state.bson").read_bytes()).get("sessions", {})


class TestStandinRetryableWrites:
    def test_standin_retried_insert_is_answered_not_applied_again(self, rw_set) -> None:
        primary = rw_set[0].port
        lsid = _lsid()
        first = op_msg_command(primary, _insert([{"_id": "once", "v": 1}], lsid, 1))
        assert first == {"n": 1, "ok": 1.0}
        second = op_msg_command(primary, _insert([{"_id": "once", "v": 1}], lsid, 1))
        # mongod's answer to a retry: the first outcome, plus which statements it did not redo
        assert second.pop("retriedStmtIds") == [0]
        assert second == first  # no writeErrors: no E11000
        assert _ids(primary, _id="once") == ["once"]
        assert _ids(rw_set[1].port, _id="once") == ["once"]  # replicated once, too
        # the table went to the secondary with the documents, in the same snapshot
        assert len(_saved_sessions(rw_set[1])) == len(_saved_sessions(rw_set[0])) >= 1
        # a new txnNumber is a new write, not a retry: the duplicate is refused as usual
        again = op_msg_command(primary, _insert([{"_id": "once", "v": 1}], lsid, 2))
        assert again["n"] == 0 and again["writeErrors"][0]["code"] == 11000
        # an older txnNumber than the session's newest: refused, as mongod
        old = op_msg_command(primary, _insert([{"_id": "older"}], lsid, 1))
        assert (old["ok"], old["code"], old["codeName"]) == (0, 225, "TransactionTooOld")
        assert "Retryable write with txnNumber 1 is prohibited on session" in old["errmsg"]
        assert _ids(primary, _id="older") == []

    def test_standin_retry_runs_only_what_did_not_run(self, rw_set) -> None:
        primary = rw_set[0].port
        lsid = _lsid()
        assert op_msg_command(primary, _insert([{"_id": 10}, {"_id": 11}], lsid, 7))["n"] == 2
        # mongod's statement-level record: statements 0 and 1 are done, statement 2 is new
        reply = op_msg_command(primary, _insert([{"_id": 10}, {"_id": 11}, {"_id": 12}], lsid, 7))
        assert (reply["n"], reply["retriedStmtIds"]) == (3, [0, 1])
        assert _ids(primary).count(12) == 1
        # a statement that failed is not done: its retry runs (and fails) again
        lsid = _lsid()
        batch = [{"_id": 20}, {"_id": 10}, {"_id": 21}]  # ordered: stops at the duplicate 10
        first = op_msg_command(primary, _insert(batch, lsid, 1))
        assert (first["n"], first["writeErrors"][0]["index"]) == (1, 1)
        retry = op_msg_command(primary, _insert(batch, lsid, 1))
        assert (retry["n"], retry["retriedStmtIds"]) == (1, [0])
        assert retry["writeErrors"][0]["index"] == 1 and retry["writeErrors"][0]["code"] == 11000
        assert sorted(i for i in _ids(primary) if isinstance(i, int) and i >= 20) == [20]

    def test_standin_session_fields_refused_as_mongod(self, rw_set) -> None:
        primary = rw_set[0].port
        cases = [
            ({**_insert([{"a": 1}], _lsid(), 1), "txnNumber": 1}, 14),  # an int, not a long
            ({k: v for k, v in _insert([{"a": 1}], _lsid(), 1).items() if k != "lsid"}, 72),
            (_insert([{"a": 1}], _lsid(), -1), 72),
            ({"find": "things", "lsid": _lsid(), "txnNumber": bson.Int64(1), "$db": "rwdb"},
             50768),
            (_insert([{"a": 1}], {"id": "not-a-uuid"}, 1), 14),
        ]
        for command, code in cases:
            reply = op_msg_command(primary, command)
            assert (reply["ok"], reply["code"]) == (0, code), reply
        assert _ids(primary, a=1) == []

    def test_standin_retry_after_restart_is_still_answered(self, rw_set) -> None:
        """The table is saved with the documents: a write applied just before a restart whose
        answer was lost is not applied again when the driver retries it after the restart."""
        lsid = _lsid()
        command = _insert([{"_id": "restart"}], lsid, 3)
        assert op_msg_command(rw_set[0].port, command)["n"] == 1
        rw_set[0].stop()
        rw_set[0].start()
        reply = op_msg_command(rw_set[0].port, command)
        assert (reply["ok"], reply["n"], reply["retriedStmtIds"]) == (1, 1, [0])
        assert _ids(rw_set[0].port, _id="restart") == ["restart"]

    def test_standin_pymongo_retries_a_lost_insert_once(self, rw_set) -> None:
        """pymongo (retryWrites on by default) loses the answer to an insert the stand-in
        applied, retries it with the same lsid and txnNumber, and gets success, not E11000."""
        with ReplyLosingProxy(rw_set[0].port) as proxy, \
                _client(proxy.port, retryWrites=True) as client:
            coll = client.rwdb.things
            coll.insert_one({"_id": "warm-up"})  # connected, session pool in use
            proxy.lose_next_reply()
            result = coll.insert_one({"_id": "lost-reply", "v": 1})
            assert result.acknowledged and result.inserted_id == "lost-reply"
            first, retry = proxy.seen[-2:]
            assert (retry["lsid"], retry["txnNumber"]) == (first["lsid"], first["txnNumber"])
            assert coll.count_documents({"_id": "lost-reply"}) == 1
            with pytest.raises(DuplicateKeyError):  # a new insert is no retry
                coll.insert_one({"_id": "lost-reply"})


def test_standin_txn_number_on_a_standalone_is_illegal(tmp_path: Path) -> None:
    """As mongod without --replSet: drivers send no txnNumber to a standalone, and one that
    arrives is refused (IllegalOperation), not ignored."""
    member = Standin(free_ports(1)[0], tmp_path / "db", [], tmp_path / "mongod.log").start()
    try:
        reply = op_msg_command(member.port, _insert([{"_id": 1}], _lsid(), 1))
        assert (reply["ok"], reply["code"], reply["codeName"]) == (0, 20, "IllegalOperation")
        with _client(member.port) as client:  # pymongo: no retryable writes on a standalone
            client.rwdb.things.insert_one({"_id": 2})
            assert [d["_id"] for d in client.rwdb.things.find({})] == [2]
    finally:
        member.stop()


# ---- mongosh 1.10.6 (the one the image ships) --------------------------------------------------
@pytest.mark.skipif(not VENDORED_MONGOSH.exists(),
                    reason="mongosh 1.10.6 not fetched (run sandbox/images/mongo/fetch-vendor.sh)")
def test_standin_vendored_mongosh_1_10_6(tmp_path: Path) -> None:
    port = free_ports(1)[0]
    member = Standin(port, tmp_path / "db", ["--auth"], tmp_path / "mongod.log").start()
    shell = ["node", str(VENDORED_MONGOSH)]
    try:
        env = {"U": ROOT_USER, "P": ROOT_PWD}
        out = run_mongosh(shell, port, f"print(EJSON.stringify({CREATE_ROOT}))", env=env)
        assert out["ok"] == 1
        out = run_mongosh(shell, port, f"{AUTH_ROOT}; db.t.insertOne({{_id: 1}}); "
                          "print(EJSON.stringify([db.t.find({_id: 1}).toArray(), "
                          "db.t.countDocuments({})]))", env=env)
        assert out == [[{"_id": 1}], 1]
        out = run_mongosh(shell, port, _code_of("db.t.find({}).toArray()"))  # no credentials
        assert out["code"] == 13
    finally:
        member.stop()


# ---- TLS (--tlsMode) ---------------------------------------------------------------------------
HANDSHAKE_TIMEOUT = 8  # STANDIN_TLS_HANDSHAKE_TIMEOUT of the TLS members (10 s by default)
TLS_ENV = {"STANDIN_TLS_HANDSHAKE_TIMEOUT": str(HANDSHAKE_TIMEOUT)}
ONLY_TLS = "The server is configured to only allow SSL connections"


def _tls_args(files: TLSFiles, mode: str = "requireTLS", pem: Path | None = None) -> list[str]:
    """The options the data stack will give mongod for TLS (clients present no certificate)."""
    return ["--tlsMode", mode, "--tlsCertificateKeyFile", str(pem or files.pem),
            "--tlsCAFile", str(files.ca), "--tlsAllowConnectionsWithoutCertificates"]


def _tls_client(port: int, files: TLSFiles, **kwargs: object) -> MongoClient:
    return _client(port, tls=True, tlsCAFile=str(files.ca), **kwargs)


def _plain_is_master_answer(port: int) -> bytes:
    """Send a plain legacy isMaster; return what comes back before the server closes (b'')."""
    query = bson.encode({"isMaster": 1})
    body = struct.pack("<i", 0) + b"admin.$cmd\x00" + struct.pack("<ii", 0, -1) + query
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(struct.pack("<iiii", 16 + len(body), 7, 0, 2004) + body)
        try:
            return sock.recv(16)
        except ConnectionResetError:  # closed with our request unread: a reset, no answer
            return b""


@pytest.fixture(scope="module")
def tls_member(tmp_path_factory: pytest.TempPathFactory, tls_files: TLSFiles):
    """One --auth member with requireTLS (no user yet: the localhost exception applies)."""
    tmp = tmp_path_factory.mktemp("standin-tls-member")
    member = Standin(free_ports(1)[0], tmp / "db", ["--auth", *_tls_args(tls_files)],
                     tmp / "mongod.log", env=TLS_ENV).start()
    try:
        yield member
    finally:
        member.stop()


class TestStandinRequireTLS:
    def test_standin_tls_pymongo_creates_user_and_authenticates(self, tls_member,
                                                                 tls_files) -> None:
        with _tls_client(tls_member.port, tls_files) as client:
            assert client.admin.command("ping")["ok"] == 1
            client.admin.command("createUser", ROOT_USER, pwd=ROOT_PWD, roles=["root"])
        for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-1"):
            with _tls_client(tls_member.port, tls_files, username=ROOT_USER, password=ROOT_PWD,
                             authMechanism=mechanism) as client:
                status = client.admin.command("connectionStatus")
                assert status["authInfo"]["authenticatedUsers"] == [
                    {"user": ROOT_USER, "db": "admin"}]
                assert client.admin.command("getParameter", 1, tlsMode=1)["tlsMode"] == "requireTLS"
                assert client.admin.command("getParameter", "*")["tlsMode"] == "requireTLS"
        assert "Ingress TLS handshake complete" in tls_member.log_path.read_text()

    def test_standin_tls_is_tls_1_2_or_later(self, tls_member, tls_files) -> None:
        context = ssl.create_default_context(cafile=str(tls_files.ca))
        for host in ("127.0.0.1", "localhost"):  # both SANs of the certificate
            with context.wrap_socket(socket.create_connection(("127.0.0.1", tls_member.port)),
                                     server_hostname=host) as sock:
                assert sock.version() in ("TLSv1.2", "TLSv1.3")
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("DEFAULT:@SECLEVEL=0")  # the client offers TLS 1.1; the server refuses
        with pytest.raises(ssl.SSLError) as err:
            old.wrap_socket(socket.create_connection(("127.0.0.1", tls_member.port)),
                            server_hostname="127.0.0.1")
        assert err.value.reason == "TLSV1_ALERT_PROTOCOL_VERSION"

    def test_standin_tls_plain_pymongo_fails(self, tls_member) -> None:
        with _client(tls_member.port, serverSelectionTimeoutMS=1500) as client:
            with pytest.raises(ServerSelectionTimeoutError):
                client.admin.command("ping")

    def test_standin_tls_plain_socket_is_closed_without_an_answer(self, tls_member) -> None:
        assert _plain_is_master_answer(tls_member.port) == b""
        log = tls_member.log_path.read_text()
        refused = [json.loads(line) for line in log.splitlines() if ONLY_TLS in line]
        assert refused and refused[-1]["msg"] == (
            "Error receiving request from client. Ending connection from remote")
        assert refused[-1]["attr"]["error"]["codeName"] == "SSLHandshakeFailed"

    def test_standin_tls_stalled_handshake_blocks_nobody_and_is_cut(self, tls_member,
                                                                   tls_files) -> None:
        """Handshakes run in the connection's thread, under a deadline: two silent clients (one
        stopped after its first byte of a ClientHello) hold up no one, and are closed."""
        stalled = [socket.create_connection(("127.0.0.1", tls_member.port)) for _ in range(2)]
        started = time.monotonic()
        try:
            stalled[0].sendall(b"\x16")
            with _tls_client(tls_member.port, tls_files) as client:
                assert client.admin.command("ping")["ok"] == 1
            assert time.monotonic() - started < HANDSHAKE_TIMEOUT
            for sock in stalled:
                sock.settimeout(HANDSHAKE_TIMEOUT + 5)
                try:
                    assert sock.recv(1) == b""
                except ConnectionResetError:
                    pass
            assert time.monotonic() - started < HANDSHAKE_TIMEOUT + 3
        finally:
            for sock in stalled:
                sock.close()
        assert f"TLS handshake not complete within {HANDSHAKE_TIMEOUT}s" in (
            tls_member.log_path.read_text())

    def test_standin_tls_mongosh_2_12(self, tls_member, tls_files, mongosh) -> None:
        env = {"U": ROOT_USER, "P": ROOT_PWD}
        out = run_mongosh(mongosh, tls_member.port, f"{AUTH_ROOT}; print(EJSON.stringify("
                          "db.adminCommand({getParameter: 1, tlsMode: 1}).tlsMode))",
                          env=env, tls_ca=tls_files.ca)
        assert out == "requireTLS"
        out = run_mongosh(mongosh, tls_member.port, "print(1)", check=False,
                          selection_timeout_ms=1500)
        assert out["_rc"] != 0 and "MongoServerSelectionError" in out["_stderr"]


@pytest.mark.skipif(not VENDORED_MONGOSH.exists(),
                    reason="mongosh 1.10.6 not fetched (run sandbox/images/mongo/fetch-vendor.sh)")
def test_standin_tls_vendored_mongosh_1_10_6(tls_member, tls_files) -> None:
    shell = ["node", str(VENDORED_MONGOSH)]
    env = {"U": ROOT_USER, "P": ROOT_PWD}
    script = (f"{AUTH_ROOT}; print(EJSON.stringify(db.getSiblingDB('admin')"
              ".runCommand({connectionStatus: 1}).authInfo.authenticatedUsers))")
    out = run_mongosh(shell, tls_member.port, script, env=env, tls_ca=tls_files.ca)
    assert out == [{"user": ROOT_USER, "db": "admin"}]
    out = run_mongosh(shell, tls_member.port, "print(1)", check=False, selection_timeout_ms=1500)
    assert out["_rc"] != 0 and "MongoServerSelectionError" in out["_stderr"]


def test_standin_tls_replica_set(tmp_path: Path, tls_files: TLSFiles) -> None:
    """Three requireTLS members with a keyfile: they can only reach each other over TLS (a plain
    connection is refused), so an initiated set, a PRIMARY and a user on the secondary show that
    the members' own traffic (config push, heartbeats, snapshot sync) is TLS."""
    key = _keyfile(tmp_path)
    members = [Standin(p, tmp_path / f"db{i}", ["--replSet", "rs0", "--keyFile", str(key),
                                                *_tls_args(tls_files)],
                       tmp_path / f"mongod{i}.log", env=TLS_ENV)
               for i, p in enumerate(free_ports(3))]
    try:
        for m in members:
            m.start()
        with _tls_client(members[0].port, tls_files) as client:
            client.admin.command("replSetInitiate", _config(members))
            client.admin.command("createUser", ROOT_USER, pwd=ROOT_PWD, roles=["root"])
        expected = [[members[0].host, "PRIMARY", 1], [members[1].host, "SECONDARY", 1],
                    [members[2].host, "ARBITER", 1]]
        with _tls_client(members[1].port, tls_files, username=ROOT_USER,
                         password=ROOT_PWD) as client:  # the user reached the secondary
            status = client.admin.command("replSetGetStatus")
            assert [[m["name"], m["stateStr"], m["health"]] for m in status["members"]] == expected
            assert client.admin.command("hello")["primary"] == members[0].host
    finally:
        for m in members:
            m.stop()
    for m in members:
        log = m.log_path.read_text()
        assert "Ingress TLS handshake complete" in log and ONLY_TLS not in log


@pytest.mark.parametrize("mode", ["allowTLS", "preferTLS"])
def test_standin_allow_and_prefer_tls_serve_plain_and_tls(tmp_path: Path, tls_files: TLSFiles,
                                                          mode: str) -> None:
    """Both modes serve plain and TLS clients. Between members, as mongod's: allowTLS members
    talk plain, preferTLS members TLS (b's only clients are a's connections to it)."""
    a, b = [Standin(p, tmp_path / f"db{i}", ["--replSet", "rs0", *_tls_args(tls_files, mode)],
                    tmp_path / f"mongod{i}.log", env=TLS_ENV) for i, p in enumerate(free_ports(2))]
    config = {"_id": "rs0", "members": [{"_id": 0, "host": a.host, "priority": 2},
                                        {"_id": 1, "host": b.host}]}
    try:
        a.start()
        b.start()
        with _client(a.port) as plain, _tls_client(a.port, tls_files) as tls:
            assert plain.admin.command("ping")["ok"] == 1
            assert tls.admin.command("getParameter", 1, tlsMode=1)["tlsMode"] == mode
            plain.admin.command("replSetInitiate", config)
            status = tls.admin.command("replSetGetStatus")["members"]
            assert [(m["stateStr"], m["health"]) for m in status] == [("PRIMARY", 1),
                                                                       ("SECONDARY", 1)]
        assert _op_query_is_master(a.port)["ok"] == 1
    finally:
        a.stop()
        b.stop()
    a_log, b_log = a.log_path.read_text(), b.log_path.read_text()
    assert "Ingress TLS handshake complete" in a_log  # our TLS client
    assert ("Ingress TLS handshake complete" in b_log) == (mode == "preferTLS")
    assert ("not using SSL" in a_log) == (mode == "preferTLS")  # mongod's preferTLS notice
    assert "not using SSL" not in b_log


def test_standin_tls_member_name_must_match_certificate(tmp_path: Path,
                                                        tls_files: TLSFiles) -> None:
    """Member b's certificate (same CA) names wrong.example only: a reaches b at 127.0.0.1, so
    replSetInitiate fails the host name check (74) unless a has --tlsAllowInvalidHostnames."""
    ports = free_ports(2)
    a_args = ["--replSet", "rs0", *_tls_args(tls_files)]
    a = Standin(ports[0], tmp_path / "a", a_args, tmp_path / "a.log", env=TLS_ENV)
    b = Standin(ports[1], tmp_path / "b", ["--replSet", "rs0", *_tls_args(
        tls_files, pem=tls_files.wrong_name)], tmp_path / "b.log", env=TLS_ENV)
    config = {"_id": "rs0", "members": [{"_id": 0, "host": a.host, "priority": 2},
                                        {"_id": 1, "host": b.host}]}
    try:
        a.start()
        b.start()
        with _tls_client(a.port, tls_files) as client:
            with pytest.raises(OperationFailure) as err:
                client.admin.command("replSetInitiate", config)
        assert err.value.code == 74
        assert f"{b.host}: TLS peer certificate validation failed: IP address mismatch" in (
            err.value.details["errmsg"])
        a.stop()
        a.args = [*a_args, "--tlsAllowInvalidHostnames"]
        a.start()
        with _tls_client(a.port, tls_files) as client:
            client.admin.command("replSetInitiate", config)
            states = [m["stateStr"] for m in client.admin.command("replSetGetStatus")["members"]]
        assert states == ["PRIMARY", "SECONDARY"]
    finally:
        a.stop()
        b.stop()


def _key_only(files: TLSFiles) -> Path:
    """The private key alone (a secret): what someone passes when they mix up the files."""
    text = files.pem.read_text()
    path = files.pem.parent / "key-only.pem"
    path.write_text(text[text.index("-----BEGIN PRIVATE KEY-----"):])
    return path


def _cert_only(files: TLSFiles) -> Path:
    text = files.pem.read_text()
    path = files.pem.parent / "cert-only.pem"
    path.write_text(text[:text.index("-----BEGIN PRIVATE KEY-----")])
    return path


@pytest.mark.parametrize("case,code,expected", [
    ("no PEM", 2, "need tlsCertificateKeyFile or certificateSelector when TLS is enabled"),
    ("unknown mode", 2, "unsupported value for tlsMode sometimesTLS"),
    ("TLS options, TLS disabled", 2, "need to enable TLS via the sslMode/tlsMode flag"),
    ("CA, certificates required", 2, "add --tlsAllowConnectionsWithoutCertificates"),
    ("PEM not a certificate", 1, "no PEM certificate in it"),
    ("PEM a key only", 1, "no PEM certificate in it"),
    ("PEM a certificate only", 1, "no private key in it"),
    ("PEM missing", 1, "No such file or directory"),
    ("CA not a certificate", 1, "cannot read CA file"),
])
def test_standin_refuses_bad_tls_options(tmp_path: Path, tls_files: TLSFiles, case: str,
                                         code: int, expected: str) -> None:
    base = ["--dbpath", str(tmp_path), "--port", str(free_ports(1)[0])]
    pem, ca = ["--tlsCertificateKeyFile", str(tls_files.pem)], ["--tlsCAFile", str(tls_files.ca)]
    allow = ["--tlsAllowConnectionsWithoutCertificates"]
    require = ["--tlsMode", "requireTLS"]
    args = {
        "no PEM": [*require, *ca, *allow],
        "unknown mode": ["--tlsMode", "sometimesTLS", *pem],
        "TLS options, TLS disabled": [*pem, *ca, *allow],
        "CA, certificates required": [*require, *pem, *ca],
        "PEM not a certificate": [*require, "--tlsCertificateKeyFile", str(tls_files.not_a_cert)],
        "PEM a key only": [*require, "--tlsCertificateKeyFile", str(_key_only(tls_files))],
        "PEM a certificate only": [*require, "--tlsCertificateKeyFile", str(_cert_only(tls_files))],
        "PEM missing": [*require, "--tlsCertificateKeyFile", str(tmp_path / "absent.pem")],
        "CA not a certificate": [*require, *pem, "--tlsCAFile", str(tls_files.not_a_cert), *allow],
    }[case]
    res = run_mongod([*base, *args])
    assert (res.returncode, res.stdout) == (code, "")
    assert expected in res.stderr and res.stderr.count("\n") == 1  # one line
    output = res.stdout + res.stderr
    assert NOT_A_CERT_TEXT not in output  # nothing read from a PEM file is printed
    assert "PRIVATE KEY" not in output and "BEGIN" not in output


def test_standin_refuses_encrypted_pem_without_prompting(tmp_path: Path,
                                                         tls_files: TLSFiles) -> None:
    """An encrypted key would make OpenSSL prompt for a password (and hang a container)."""
    text = tls_files.pem.read_text()
    key = serialization.load_pem_private_key(
        text[text.index("-----BEGIN PRIVATE KEY-----"):].encode(), password=None)
    encrypted = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"test-passphrase"))
    pem = tmp_path / "encrypted.pem"
    pem.write_bytes(text[:text.index("-----BEGIN PRIVATE KEY-----")].encode() + encrypted)
    res = run_mongod(["--dbpath", str(tmp_path), "--tlsMode", "requireTLS",
                      "--tlsCertificateKeyFile", str(pem)])
    assert res.returncode == 1
    assert "the private key is encrypted" in res.stderr and res.stderr.count("\n") == 1
