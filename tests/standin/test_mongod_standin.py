"""The mongod stand-in (NOT MongoDB), driven by the real mongosh and by pymongo.

Three stand-in members on 127.0.0.1 (primary, secondary, arbiter) with a 0400 keyfile. The
tests of the `TestStandinReplicaSet` class share that set and run in order: localhost exception,
initiate, users, data, restart.
"""

from __future__ import annotations

import os
import re
import socket
import struct
from pathlib import Path

import bson
import pytest
from pymongo import MongoClient, ReadPreference
from pymongo.errors import OperationFailure
from standin_support import (
    VENDORED_MONGOSH,
    Standin,
    free_ports,
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
