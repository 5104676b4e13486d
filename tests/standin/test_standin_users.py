"""User management in the mongod stand-in (NOT MongoDB): updateUser, db.changeUserPassword,
dropUser and usersInfo as mongod 7 does them, driven by the real mongosh and by pymongo.

The suite rotates passwords with these commands, so the tests prove what a rotation relies on:
after a password change the old password is refused and the new one accepted on NEW connections
(each login below is a fresh client), on the primary and on the secondary, and still after a
restart; roles are replaced, not merged; a dropped user can no longer log in and its open
sessions lose their rights; only a user administrator may do any of it. The credentials are
checked against an independent computation of SCRAM (RFC 5802/7677, MongoDB's SCRAM-SHA-1
digest), not against the stand-in's own code.

A two-member replica set (PRIMARY, SECONDARY) with a 0400 keyfile; the tests share it and the
last one restarts both members.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from pathlib import Path

import bson
import pytest
from pymongo import MongoClient
from pymongo.errors import NotPrimaryError, OperationFailure
from standin_support import VENDORED_MONGOSH, Standin, free_ports, run_mongosh

ROOT_USER, ROOT_PWD = "root", "users-root-pw"  # throwaway test credentials
KEY = "dXNlcnMtdGVzdC1rZXktMDEyMzQ1Njc4OWFiY2RlZg"
SHA1, SHA256 = "SCRAM-SHA-1", "SCRAM-SHA-256"
CATCH_UP_TIMEOUT = 60.0  # heartbeats every 2 s push a snapshot to a member that is behind


def _client(port: int, **kwargs: object) -> MongoClient:
    kwargs.setdefault("directConnection", True)
    kwargs.setdefault("serverSelectionTimeoutMS", 5000)
    kwargs.setdefault("connectTimeoutMS", 3000)
    return MongoClient("127.0.0.1", port, **kwargs)


def login(port: int, user: str, pwd: str, db: str = "appdb", mechanism: str | None = None):
    """Log in on a NEW connection: "ok" (with the user it authenticated as) or the error code."""
    extra = {"authMechanism": mechanism} if mechanism else {}
    with _client(port, username=user, password=pwd, authSource=db, **extra) as client:
        try:
            status = client.admin.command("connectionStatus")
        except OperationFailure as exc:
            return exc.code
    assert status["authInfo"]["authenticatedUsers"] == [{"user": user, "db": db}]
    return "ok"


def login_both(port: int, user: str, pwd: str, db: str = "appdb") -> dict:
    return {m: login(port, user, pwd, db, m) for m in (SHA1, SHA256)}


def _root(port: int) -> MongoClient:
    return _client(port, username=ROOT_USER, password=ROOT_PWD)


def _error(db: object, command: dict) -> tuple[int, str]:
    with pytest.raises(OperationFailure) as err:
        db.command(command)
    return err.value.code, err.value.details["errmsg"]


def _user_doc(port: int, user: str, db: str = "appdb", **options: object) -> dict | None:
    with _root(port) as client:
        users = client[db].command("usersInfo", user, showCredentials=True, **options)["users"]
    assert len(users) <= 1
    return users[0] if users else None


# ---- SCRAM, computed here independently of the stand-in ----------------------------------------
def _expected_keys(mechanism: str, user: str, pwd: str, salt_b64: str, iterations: int) -> dict:
    """storedKey and serverKey that mongod stores for this password, salt and iteration count
    (RFC 5802; MongoDB's SCRAM-SHA-1 hashes md5("user:mongo:pwd"); ASCII passwords here, which
    SASLprep leaves as they are)."""
    name = "sha1" if mechanism == SHA1 else "sha256"
    secret = (hashlib.md5(f"{user}:mongo:{pwd}".encode()).hexdigest() if mechanism == SHA1
              else pwd).encode()
    salted = hashlib.pbkdf2_hmac(name, secret, base64.b64decode(salt_b64), iterations)
    client_key = hmac.new(salted, b"Client Key", name).digest()
    return {"storedKey": base64.b64encode(hashlib.new(name, client_key).digest()).decode(),
            "serverKey": base64.b64encode(hmac.new(salted, b"Server Key", name).digest()).decode()}


def assert_credentials_of(creds: dict, user: str, pwd: str, mechanisms: tuple) -> None:
    """The stored credentials are exactly mongod's for pwd: these mechanisms only, mongod 7's
    salt lengths and iteration counts, keys derived from pwd."""
    assert list(creds) == list(mechanisms)
    params = {SHA1: (16, 10000), SHA256: (28, 15000)}
    for mechanism in mechanisms:
        cred = creds[mechanism]
        salt_len, iterations = params[mechanism]
        assert len(base64.b64decode(cred["salt"])) == salt_len
        assert cred["iterationCount"] == iterations
        keys = _expected_keys(mechanism, user, pwd, cred["salt"], iterations)
        assert {k: cred[k] for k in keys} == keys


# ---- the replica set ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rs(tmp_path_factory: pytest.TempPathFactory):
    """PRIMARY (priority 2) and SECONDARY, keyfile auth, the root user made through the
    localhost exception."""
    tmp = tmp_path_factory.mktemp("standin-users")
    key = tmp / "keyfile"
    key.write_text(KEY + "\n")
    os.chmod(key, 0o400)
    members = [Standin(p, tmp / f"db{i}", ["--replSet", "rsu", "--keyFile", str(key)],
                       tmp / f"mongod{i}.log") for i, p in enumerate(free_ports(2))]
    try:
        for m in members:
            m.start()
        with _client(members[0].port) as client:  # no user yet: the localhost exception
            client.admin.command("replSetInitiate", {"_id": "rsu", "members": [
                {"_id": 0, "host": members[0].host, "priority": 2},
                {"_id": 1, "host": members[1].host}]})
            client.admin.command("createUser", ROOT_USER, pwd=ROOT_PWD, roles=["root"])
        assert login(members[1].port, ROOT_USER, ROOT_PWD, "admin") == "ok"
        yield members
    finally:
        for m in members:
            m.stop()


def _create(rs: list[Standin], user: str, pwd: str, roles: list, db: str = "appdb",
            **options: object) -> None:
    with _root(rs[0].port) as client:
        client[db].command("createUser", user, pwd=pwd, roles=roles, **options)


SHELLS = ["mongosh 2.12", pytest.param("mongosh 1.10.6", marks=pytest.mark.skipif(
    not VENDORED_MONGOSH.exists(),
    reason="mongosh 1.10.6 not fetched (run sandbox/images/mongo/fetch-vendor.sh)"))]


@pytest.fixture(params=SHELLS)
def shell(request: pytest.FixtureRequest, mongosh: list[str]) -> list[str]:
    """The real mongosh 2.12 (the tests' own), and 1.10.6, the one the image ships."""
    return mongosh if request.param == "mongosh 2.12" else ["node", str(VENDORED_MONGOSH)]


# mongosh: log in as root (process.env.U/P), then try(f) prints {ok} or the server error's code.
_AS_ROOT = """
    db.getSiblingDB('admin').auth(process.env.U, process.env.P);
    const app = db.getSiblingDB('appdb');
    const attempt = f => { try { const r = f(); return {ok: r.ok} }
                           catch (e) { return {code: e.code, msg: e.message} } };
"""
ROOT_ENV = {"U": ROOT_USER, "P": ROOT_PWD}


# ---- updateUser with pwd -----------------------------------------------------------------------
def test_update_user_pwd_replaces_both_credentials(rs: list[Standin]) -> None:
    _create(rs, "rot1", "old-pw-1", ["read"])
    before = _user_doc(rs[0].port, "rot1")
    assert_credentials_of(before["credentials"], "rot1", "old-pw-1", (SHA1, SHA256))
    assert login_both(rs[0].port, "rot1", "old-pw-1") == {SHA1: "ok", SHA256: "ok"}
    with _root(rs[0].port) as client:
        assert client.appdb.command("updateUser", "rot1", pwd="new-pw-1") == {"ok": 1.0}
    after = _user_doc(rs[0].port, "rot1")
    assert_credentials_of(after["credentials"], "rot1", "new-pw-1", (SHA1, SHA256))
    for mechanism in (SHA1, SHA256):  # a fresh salt, as mongod's buildCredentials makes
        assert after["credentials"][mechanism]["salt"] != before["credentials"][mechanism]["salt"]
    assert after["mechanisms"] == [SHA1, SHA256]
    assert (after["userId"], after["roles"]) == (before["userId"], before["roles"])
    assert login_both(rs[0].port, "rot1", "old-pw-1") == {SHA1: 18, SHA256: 18}
    assert login_both(rs[0].port, "rot1", "new-pw-1") == {SHA1: "ok", SHA256: "ok"}
    log = rs[0].log_path.read_text()
    assert "new-pw-1" not in log and "old-pw-1" not in log  # passwords are never logged


def test_change_user_password_with_mongosh(rs: list[Standin], shell: list[str]) -> None:
    """db.changeUserPassword() (updateUser + pwd) through the real mongosh; the old password is
    refused to a new connection in the same shell, the new one accepted."""
    user = "rot2" + ("a" if "node" not in shell else "b")
    _create(rs, user, "old-pw-2", [{"role": "readWrite", "db": "appdb"}])
    script = _AS_ROOT + """
        const fresh = pwd => attempt(() => new Mongo('mongodb://' + process.env.AU + ':' + pwd +
            '@127.0.0.1:' + process.env.PORT + '/appdb?directConnection=true').getDB('appdb')
            .runCommand({connectionStatus: 1}));
        const out = {before: fresh('old-pw-2')};
        out.change = attempt(() => app.changeUserPassword(process.env.AU, process.env.NEW));
        out.old = fresh('old-pw-2');
        out.now = fresh(process.env.NEW);
        out.mechanisms = app.getUser(process.env.AU).mechanisms;
        print(EJSON.stringify(out))
    """
    out = run_mongosh(shell, rs[0].port, script,
                      env={**ROOT_ENV, "AU": user, "NEW": "new-pw-2", "PORT": str(rs[0].port)})
    assert out["before"] == {"ok": 1} and out["change"] == {"ok": 1}
    assert out["old"]["code"] == 18 and out["now"] == {"ok": 1}
    assert out["mechanisms"] == [SHA1, SHA256]
    assert login_both(rs[0].port, user, "old-pw-2") == {SHA1: 18, SHA256: 18}
    assert login_both(rs[0].port, user, "new-pw-2") == {SHA1: "ok", SHA256: "ok"}
    assert_credentials_of(_user_doc(rs[0].port, user)["credentials"], user, "new-pw-2",
                          (SHA1, SHA256))
    entries = [json.loads(line) for line in rs[0].log_path.read_text().splitlines()
               if '"Updated user"' in line]
    assert {"user": user, "db": "appdb", "fields": ["credentials"]} in [e["attr"] for e in entries]


def test_update_user_replaces_roles_with_mongosh(rs: list[Standin], mongosh: list[str]) -> None:
    _create(rs, "rot3", "pw-3", ["read"])
    with _client(rs[0].port, username="rot3", password="pw-3", authSource="appdb") as client:
        with pytest.raises(OperationFailure) as err:
            client.appdb.things.insert_one({"_id": "rot3"})
        assert err.value.code == 13
    script = _AS_ROOT + """
        const out = {};
        out.set = attempt(() => app.updateUser('rot3', {roles: [
            {role: 'readWrite', db: 'appdb'}, {role: 'read', db: 'otherdb'}]}));
        out.roles = app.getUser('rot3').roles;
        print(EJSON.stringify(out))
    """
    out = run_mongosh(mongosh, rs[0].port, script, env=ROOT_ENV)
    assert out == {"set": {"ok": 1}, "roles": [{"role": "readWrite", "db": "appdb"},
                                              {"role": "read", "db": "otherdb"}]}
    with _client(rs[0].port, username="rot3", password="pw-3", authSource="appdb") as client:
        client.appdb.things.insert_one({"_id": "rot3"})  # readWrite now
        # replaced, not merged: without readWrite on appdb the user cannot even read there
        with _root(rs[0].port) as root:
            root.appdb.command("updateUser", "rot3", roles=[{"role": "read", "db": "otherdb"}])
        with pytest.raises(OperationFailure) as err:  # the same session sees the new roles
            client.appdb.things.find_one({"_id": "rot3"})
        assert err.value.code == 13
    assert _user_doc(rs[0].port, "rot3")["roles"] == [{"role": "read", "db": "otherdb"}]
    assert login(rs[0].port, "rot3", "pw-3") == "ok"  # roles alone leave the password


def test_update_user_mechanisms(rs: list[Standin]) -> None:
    _create(rs, "rot4", "pw-4a", ["read"], mechanisms=[SHA256])
    port = rs[0].port
    assert _user_doc(port, "rot4")["mechanisms"] == [SHA256]
    assert login_both(port, "rot4", "pw-4a") == {SHA1: 18, SHA256: "ok"}
    with _root(port) as client:
        # a new password without mechanisms: credentials for every mechanism, as mongod
        client.appdb.command("updateUser", "rot4", pwd="pw-4b")
        assert_credentials_of(_user_doc(port, "rot4")["credentials"], "rot4", "pw-4b",
                              (SHA1, SHA256))
        assert login_both(port, "rot4", "pw-4b") == {SHA1: "ok", SHA256: "ok"}
        # mechanisms without pwd: the other credentials are dropped, these kept as they were
        kept = _user_doc(port, "rot4")["credentials"][SHA1]
        client.appdb.command("updateUser", "rot4", mechanisms=[SHA1])
        assert _user_doc(port, "rot4")["credentials"] == {SHA1: kept}
        assert login_both(port, "rot4", "pw-4b") == {SHA1: "ok", SHA256: 18}
        assert _error(client.appdb, {"updateUser": "rot4", "mechanisms": [SHA256]}) == (
            2, "mechanisms field must be a subset of previously set mechanisms")
        client.appdb.command("updateUser", "rot4", pwd="pw-4c", mechanisms=[SHA256])
    assert_credentials_of(_user_doc(port, "rot4")["credentials"], "rot4", "pw-4c", (SHA256,))
    assert login_both(port, "rot4", "pw-4c") == {SHA1: 18, SHA256: "ok"}
    assert login_both(port, "rot4", "pw-4b") == {SHA1: 18, SHA256: 18}


def test_password_digested_by_mongosh(rs: list[Standin], mongosh: list[str]) -> None:
    """passwordDigestor: 'client' sends digestPassword: false and md5("user:mongo:pwd"): usable
    for SCRAM-SHA-1 only, as mongod says."""
    _create(rs, "rot5", "pw-5a", ["read"], mechanisms=[SHA1])
    script = _AS_ROOT + """
        const out = {};
        out.sha1 = attempt(() => app.updateUser('rot5', {pwd: 'pw-5b', passwordDigestor: 'client',
                                                         mechanisms: ['SCRAM-SHA-1']}));
        out.both = attempt(() => app.updateUser('rot5', {pwd: 'pw-5c',
                                                         passwordDigestor: 'client'}));
        print(EJSON.stringify(out))
    """
    out = run_mongosh(mongosh, rs[0].port, script, env=ROOT_ENV)
    assert out == {"sha1": {"ok": 1}, "both": {
        "code": 2, "msg": "Use of SCRAM-SHA-256 requires undigested passwords"}}
    assert_credentials_of(_user_doc(rs[0].port, "rot5")["credentials"], "rot5", "pw-5b", (SHA1,))
    assert login(rs[0].port, "rot5", "pw-5b", mechanism=SHA1) == "ok"
    assert login(rs[0].port, "rot5", "pw-5c", mechanism=SHA1) == 18  # the refused one
    assert login(rs[0].port, "rot5", "pw-5a", mechanism=SHA1) == 18


UPDATE_ERRORS = [
    ({"updateUser": "nobody", "pwd": "x"}, 11, "User nobody@appdb not found"),
    ({"updateUser": "nobody", "mechanisms": [SHA1]}, 11,
     'Could not find user "nobody" for db "appdb"'),
    ({"updateUser": "rot6"}, 2, "Must specify at least one field to update in updateUser"),
    ({"updateUser": "rot6", "digestPassword": True}, 2,
     "Must specify at least one field to update in updateUser"),
    ({"updateUser": "rot6", "pwd": "x", "mechanism": [SHA1]}, 40415,
     "BSON field 'updateUser.mechanism' is an unknown field."),
    ({"updateUser": "rot6", "pwd": True}, 14,
     "BSON field 'updateUser.pwd' is the wrong type 'bool', expected type 'string'"),
    ({"updateUser": "rot6", "pwd": "x", "roles": "read"}, 14,
     "BSON field 'updateUser.roles' is the wrong type 'string', expected type 'array'"),
    ({"updateUser": "rot6", "customData": "x"}, 14,
     "BSON field 'updateUser.customData' is the wrong type 'string', expected type 'object'"),
    ({"updateUser": "rot6", "pwd": "x", "roles": ["noSuchRole"]}, 31,
     "Could not find role: noSuchRole@appdb"),
    ({"updateUser": "rot6", "pwd": "x", "mechanisms": []}, 2, "mechanisms field must not be empty"),
    ({"updateUser": "rot6", "pwd": "x", "mechanisms": ["PLAIN"]}, 2,
     "Unknown auth mechanism 'PLAIN'"),
    ({"updateUser": "rot6", "pwd": ""}, 50687,
     "Error preflighting UTF-8 conversion: U_STRING_NOT_TERMINATED_WARNING"),
    ({"updateUser": "rot6", "pwd": "pass\x00word"}, 50692,
     "Error preflighting normalization: U_STRINGPREP_PROHIBITED_ERROR"),
    ({"updateUser": "rot6", "pwd": "x", "digestPassword": False}, 2,
     "Use of SCRAM-SHA-256 requires undigested passwords"),
    ({"updateUser": "rot6", "pwd": "x", "writeConcern": {"w": "nonsense"}}, 79,
     "unrecognized write concern mode: nonsense"),
    ({"updateUser": "rot6", "pwd": "x", "authenticationRestrictions": [
        {"clientSource": ["127.0.0.1"]}]}, 238,
     "the mongod stand-in does not implement authenticationRestrictions"),
]


def test_update_user_errors_as_mongod_and_nothing_changes(rs: list[Standin]) -> None:
    """Each refusal with mongod 7's code and message; none of them changes the user."""
    _create(rs, "rot6", "pw-6", ["read"])
    before = _user_doc(rs[0].port, "rot6")
    with _root(rs[0].port) as client:
        got = [_error(client.appdb, command) for command, _, _ in UPDATE_ERRORS]
    assert got == [(code, message) for _, code, message in UPDATE_ERRORS]
    assert _user_doc(rs[0].port, "rot6") == before
    assert login_both(rs[0].port, "rot6", "pw-6") == {SHA1: "ok", SHA256: "ok"}
    assert login(rs[0].port, "rot6", "x") == 18


def test_create_user_as_mongod(rs: list[Standin]) -> None:
    """createUser builds credentials the same way (updateUser shares it), digested or not."""
    with _root(rs[0].port) as client:
        assert _error(client.appdb, {"createUser": "cu1", "pwd": "x"}) == (
            40414, "BSON field 'createUser.roles' is missing but a required field")
        assert _error(client.appdb, {"createUser": "cu1", "pwd": "x", "roles": [],
                                     "passwordDigestor": "client"}) == (
            40415, "BSON field 'createUser.passwordDigestor' is an unknown field.")
        assert _error(client.appdb, {"createUser": "", "pwd": "x", "roles": []}) == (
            2, "User document needs 'user' field to be non-empty")
        digest = hashlib.md5(b"cu1:mongo:pw-cu1").hexdigest()
        client.appdb.command("createUser", "cu1", pwd=digest, roles=[], digestPassword=False,
                             mechanisms=[SHA1])
        assert _error(client.appdb, {"createUser": "cu1", "pwd": "x", "roles": []}) == (
            51003, 'User "cu1@appdb" already exists')
    assert_credentials_of(_user_doc(rs[0].port, "cu1")["credentials"], "cu1", "pw-cu1", (SHA1,))
    assert login(rs[0].port, "cu1", "pw-cu1", mechanism=SHA1) == "ok"


# ---- dropUser ----------------------------------------------------------------------------------
def test_drop_user(rs: list[Standin], mongosh: list[str]) -> None:
    _create(rs, "rot7", "pw-7", ["readWrite"])
    _create(rs, "rot7b", "pw-7b", ["readWrite"])
    port = rs[0].port
    open_a = _client(port, username="rot7", password="pw-7", authSource="appdb", maxPoolSize=1)
    open_b = _client(port, username="rot7b", password="pw-7b", authSource="appdb", maxPoolSize=1)
    try:
        for client in (open_a, open_b):
            assert client.appdb.things.count_documents({}) >= 0  # logged in, session open
        with _root(port) as root:
            assert root.appdb.command("dropUser", "rot7") == {"ok": 1.0}
            assert _error(root.appdb, {"dropUser": "rot7"}) == (11, "User 'rot7@appdb' not found")
            assert root.appdb.command("usersInfo", "rot7")["users"] == []
            # dropped and created again: another user (another userId), same name and password
            root.appdb.command("dropUser", "rot7b")
            root.appdb.command("createUser", "rot7b", pwd="pw-7b", roles=["readWrite"])
        # as mongod: the open sessions of a dropped user are no longer logged in
        for client, user in ((open_a, "rot7"), (open_b, "rot7b")):
            with pytest.raises(OperationFailure) as err:
                client.appdb.things.find_one({})
            assert (err.value.code, err.value.details["errmsg"]) == (
                13, "Command find requires authentication")
            status = client.admin.command("connectionStatus")["authInfo"]
            assert status["authenticatedUsers"] == [], user
    finally:
        open_a.close()
        open_b.close()
    assert login_both(port, "rot7", "pw-7") == {SHA1: 18, SHA256: 18}
    assert login_both(rs[1].port, "rot7", "pw-7") == {SHA1: 18, SHA256: 18}  # on the secondary
    assert login(port, "rot7b", "pw-7b") == "ok"  # the new rot7b
    script = _AS_ROOT + """
        print(EJSON.stringify({drop: attempt(() => app.dropUser('rot7')),
                               info: app.getUsers().users.map(u => u.user)
                                        .filter(u => u.startsWith('rot7'))}))
    """
    out = run_mongosh(mongosh, port, script, env=ROOT_ENV)
    assert out == {"drop": {"code": 11, "msg": "User 'rot7@appdb' not found"}, "info": ["rot7b"]}


# ---- who may ------------------------------------------------------------------------------------
def test_only_user_administrators_may(rs: list[Standin], mongosh: list[str]) -> None:
    port = rs[0].port
    _create(rs, "rot8", "pw-8", ["read"])
    _create(rs, "uadmin", "pw-uadmin", ["userAdmin"])  # userAdmin on appdb only
    _create(rs, "plain", "pw-plain", ["readWrite"])
    _create(rs, "other8", "pw-other8", ["read"], db="otherdb")
    _create(rs, "anyadmin", "pw-anyadmin", ["userAdminAnyDatabase"], db="admin")

    def as_user(user: str, pwd: str, db: str) -> MongoClient:
        return _client(port, username=user, password=pwd, authSource=db)

    with as_user("plain", "pw-plain", "appdb") as plain:
        assert _error(plain.appdb, {"updateUser": "rot8", "pwd": "x"}) == (
            13, "Not authorized to change password of user: rot8@appdb")
        assert _error(plain.appdb, {"updateUser": "plain", "pwd": "x"}) == (  # not even its own
            13, "Not authorized to change password of user: plain@appdb")
        assert _error(plain.appdb, {"dropUser": "rot8"}) == (
            13, "Not authorized to drop users from the appdb database")
        assert _error(plain.appdb, {"usersInfo": "rot8"}) == (
            13, "Not authorized to view users from the appdb database")
        assert [u["user"] for u in plain.appdb.command("usersInfo", "plain")["users"]] == [
            "plain"]  # itself: allowed
    with as_user("uadmin", "pw-uadmin", "appdb") as uadmin:
        uadmin.appdb.command("updateUser", "rot8", pwd="pw-8b")  # changePassword on appdb
        assert _error(uadmin.appdb, {"updateUser": "rot8", "roles": ["readWrite"]}) == (
            13, "In order to use updateUser to set roles array, must be authorized to revoke "
            "any role in the system")
        assert _error(uadmin.otherdb, {"updateUser": "other8", "pwd": "x"}) == (
            13, "Not authorized to change password of user: other8@otherdb")
        assert _error(uadmin.otherdb, {"dropUser": "other8"}) == (
            13, "Not authorized to drop users from the otherdb database")
    assert login(port, "rot8", "pw-8b") == "ok" and login(port, "rot8", "pw-8") == 18
    assert login(port, "other8", "pw-other8", "otherdb") == "ok"
    with as_user("anyadmin", "pw-anyadmin", "admin") as anyadmin:
        anyadmin.appdb.command("updateUser", "rot8", roles=["readWrite"])
        anyadmin.otherdb.command("updateUser", "other8", pwd="pw-other8b")
        anyadmin.otherdb.command("dropUser", "other8")
    assert _user_doc(port, "rot8")["roles"] == [{"role": "readWrite", "db": "appdb"}]
    assert login(port, "other8", "pw-other8b", "otherdb") == 18  # dropped
    with _client(port) as anonymous:  # loopback, but users exist: no localhost exception
        for command in ({"updateUser": "rot8", "pwd": "x"}, {"dropUser": "rot8"},
                        {"usersInfo": 1}):
            name = next(iter(command))
            assert _error(anonymous.appdb, command) == (
                13, f"Command {name} requires authentication")
    script = """
        db.getSiblingDB('appdb').auth(process.env.U, process.env.P);
        try { db.getSiblingDB('appdb').changeUserPassword('rot8', 'x'); print('{}') }
        catch (e) { print(EJSON.stringify({code: e.code})) }
    """
    out = run_mongosh(mongosh, port, script, env={"U": "plain", "P": "pw-plain"})
    assert out == {"code": 13}
    assert login(port, "rot8", "pw-8b") == "ok"


# ---- replication and restart --------------------------------------------------------------------
def _command_reply(client: MongoClient, db: str, command: dict) -> dict:
    return client[db].command(command)  # pymongo returns a writeConcernError, does not raise


def test_user_changes_reach_the_secondary(rs: list[Standin]) -> None:
    primary, secondary = rs
    _create(rs, "rot9", "pw-9a", ["read"])
    with _root(primary.port) as client:
        # w: 2 is acknowledged: the secondary took the change before the answer
        reply = _command_reply(client, "appdb", {"updateUser": "rot9", "pwd": "pw-9b",
                                                 "roles": ["readWrite"],
                                                 "writeConcern": {"w": 2}})
        assert reply == {"ok": 1.0}
    assert login_both(secondary.port, "rot9", "pw-9a") == {SHA1: 18, SHA256: 18}
    assert login_both(secondary.port, "rot9", "pw-9b") == {SHA1: "ok", SHA256: "ok"}
    on_secondary = _user_doc(secondary.port, "rot9")
    assert on_secondary == _user_doc(primary.port, "rot9")
    assert on_secondary["roles"] == [{"role": "readWrite", "db": "appdb"}]
    for command in ({"updateUser": "rot9", "pwd": "x"}, {"dropUser": "rot9"}):
        # the secondary takes no user changes (a client each: pymongo forgets a not-primary)
        with _root(secondary.port) as client, pytest.raises(NotPrimaryError) as err:
            client.appdb.command(command)
            assert (err.value.details["code"], err.value.details["codeName"]) == (
                10107, "NotWritablePrimary")
    assert login(secondary.port, "rot9", "pw-9b") == "ok"
    # a change made while the secondary is down reaches it when it is back (heartbeats)
    secondary.stop()
    try:
        with _root(primary.port) as client:
            reply = _command_reply(client, "appdb", {"updateUser": "rot9", "pwd": "pw-9c",
                                                     "writeConcern": {"w": 2}})
            assert reply["ok"] == 1.0 and reply["writeConcernError"]["code"] == 64
    finally:
        secondary.start()
    assert login(primary.port, "rot9", "pw-9c") == "ok"
    deadline = time.monotonic() + CATCH_UP_TIMEOUT
    while login(secondary.port, "rot9", "pw-9c") != "ok":
        assert time.monotonic() < deadline, "the secondary never caught up with the password"
        time.sleep(0.5)
    assert login(secondary.port, "rot9", "pw-9b") == 18


def _state_file(member: Standin) -> bytes:
    return (member.dbpath / "standin-state.bson").read_bytes()


def _crash(member: Standin) -> None:
    """SIGKILL: no shutdown save, so what survives was saved when the change was answered."""
    member.proc.kill()
    member.proc.wait(timeout=10)
    member.proc = None


def test_user_changes_survive_a_restart(rs: list[Standin]) -> None:
    """Both members killed (not stopped) after the changes, then started again."""
    _create(rs, "rot10", "pw-10a", ["read"])
    _create(rs, "rot10d", "pw-10d", ["read"])
    with _root(rs[0].port) as client:
        client.appdb.command("updateUser", "rot10", pwd="pw-10b", roles=["readWrite"],
                             writeConcern={"w": 2})
        client.appdb.command("dropUser", "rot10d", writeConcern={"w": 2})
    for member in rs:
        _crash(member)
    for member in rs:
        state = _state_file(member)
        assert b"pw-10b" not in state and b"pw-10a" not in state  # credentials, no password
        users = {(u["user"], u["db"]) for u in bson.decode(state)["users"]}
        assert ("rot10", "appdb") in users and ("rot10d", "appdb") not in users
    for member in rs:
        member.start()
    for member in rs:
        assert login_both(member.port, "rot10", "pw-10a") == {SHA1: 18, SHA256: 18}
        assert login_both(member.port, "rot10", "pw-10b") == {SHA1: "ok", SHA256: "ok"}
        assert login(member.port, "rot10d", "pw-10d") == 18
        assert _user_doc(member.port, "rot10")["roles"] == [{"role": "readWrite", "db": "appdb"}]
        assert login(member.port, "rot1", "new-pw-1") == "ok"  # the first test's change, too
    with _root(rs[0].port) as client:  # and the primary takes changes again
        client.appdb.command("updateUser", "rot10", pwd="pw-10c")
    assert login(rs[0].port, "rot10", "pw-10c") == "ok"


def test_old_state_files_keep_working(tmp_path: Path) -> None:
    """A state file written before this change kept a `mechanisms` field in each user: usersInfo
    now derives it from the credentials, and updateUser drops the stale copy."""
    member = Standin(free_ports(1)[0], tmp_path / "db", ["--auth"], tmp_path / "log").start()
    try:
        with _client(member.port) as client:
            client.admin.command("createUser", ROOT_USER, pwd=ROOT_PWD, roles=["root"])
    finally:
        member.stop()
    path = tmp_path / "db" / "standin-state.bson"
    state = bson.decode(path.read_bytes())
    state["users"][0]["mechanisms"] = [SHA1, SHA256]
    path.write_bytes(bson.encode(state))
    member.start()
    try:
        with _root(member.port) as client:
            client.admin.command("updateUser", ROOT_USER, pwd="new-root-pw", mechanisms=[SHA256])
        assert login(member.port, ROOT_USER, "new-root-pw", "admin") == "ok"
        with _client(member.port, username=ROOT_USER, password="new-root-pw") as client:
            info = client.admin.command("usersInfo", ROOT_USER)["users"][0]
        assert info["mechanisms"] == [SHA256]
    finally:
        member.stop()
    assert "mechanisms" not in bson.decode(path.read_bytes())["users"][0]
