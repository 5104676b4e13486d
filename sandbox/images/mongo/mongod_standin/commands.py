"""The commands the stand-in implements. Anything not in COMMANDS fails with CommandNotFound (59).

Each handler is ``handler(conn, db, doc) -> reply`` and raises CommandError on failure.
"""

from __future__ import annotations

import datetime
import re
import socket
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from bson import Int64, ObjectId
from bson.binary import Binary
from bson.regex import Regex

from . import (
    FCV,
    MAX_WIRE_VERSION,
    STANDIN_NAME,
    VERSION,
    VERSION_ARRAY,
    log,
    replset,
    roles,
    scram,
)
from .errors import CommandError, not_implemented

if TYPE_CHECKING:
    from .connection import Connection
    from .member import Member

COMMANDS = {}


def command(*names) -> dict:
    def register(func: Callable) -> Callable:
        for name in names:
            COMMANDS[name] = func
        return func

    return register


def _admin_only(name: str, db: str) -> None:
    if db != "admin":
        raise CommandError(13, f"{name} may only be run against the admin database.")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


# ---- handshake --------------------------------------------------------------------------------
@command("hello", "isMaster", "ismaster")
def cmd_hello(conn: Connection, db: str, doc: dict) -> dict:
    member = conn.member
    name = next(iter(doc))
    if "topologyVersion" in doc and "maxAwaitTimeMS" in doc:
        member.wait_topology_change(doc["topologyVersion"], float(doc["maxAwaitTimeMS"]) / 1000.0)
    state = member.state()
    reply = {}
    reply["isWritablePrimary" if name == "hello" else "ismaster"] = member.is_writable_primary()
    if doc.get("helloOk"):
        reply["helloOk"] = True
    reply["topologyVersion"] = member.topology_version()
    if member.opts.replset:
        config = member.config
        if config is None:
            reply["secondary"] = False
            reply["info"] = "Does not have a valid replica set config"
            reply["isreplicaset"] = True
        else:
            visible = [m for m in config["members"] if not m["hidden"]]
            reply["hosts"] = [
                m["host"] for m in visible if not m["arbiterOnly"] and m["priority"] > 0
            ]
            passives = [m["host"] for m in visible if not m["arbiterOnly"] and m["priority"] == 0]
            if passives:
                reply["passives"] = passives
            arbiters = [m["host"] for m in visible if m["arbiterOnly"]]
            if arbiters:
                reply["arbiters"] = arbiters
            reply["setName"] = config["_id"]
            reply["setVersion"] = config["version"]
            reply["secondary"] = state == "SECONDARY"
            primary = member.primary_host()
            if primary:
                reply["primary"] = primary
            me = replset.find_member(config, member.me) or {}
            if me.get("arbiterOnly"):
                reply["arbiterOnly"] = True
            elif me.get("priority") == 0:
                reply["passive"] = True
            if me.get("hidden"):
                reply["hidden"] = True
            reply["me"] = member.me
            if state == "PRIMARY":
                reply["electionId"] = ObjectId(f"7fffffff{config['term']:016x}")
    reply.update(
        {
            "maxBsonObjectSize": 16 * 1024 * 1024,
            "maxMessageSizeBytes": 48_000_000,
            "maxWriteBatchSize": 100_000,
            "localTime": _now(),
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": conn.id,
            "minWireVersion": 0,
            "maxWireVersion": MAX_WIRE_VERSION,
            "readOnly": False,
        }
    )
    mechs_for = doc.get("saslSupportedMechs")
    if isinstance(mechs_for, str) and "." in mechs_for:
        user_db, _, user = mechs_for.partition(".")
        creds = _credentials(conn, user, user_db)
        if creds:
            reply["saslSupportedMechs"] = sorted(creds)
    speculative = doc.get("speculativeAuthenticate")
    if isinstance(speculative, dict) and "saslStart" in speculative:
        try:
            reply["speculativeAuthenticate"] = cmd_sasl_start(
                conn, speculative.get("db", db), speculative
            )
        except CommandError:
            pass  # the client falls back to an ordinary saslStart, which reports the failure
    reply["standin"] = STANDIN_NAME
    return reply


# ---- authentication ---------------------------------------------------------------------------
def _credentials(conn: Connection, user: str, db: str) -> dict | None:
    if (user, db) == ("__system", "local"):
        return conn.member.system_creds or None
    if conn.member.state() == "ARBITER":
        return None  # arbiters hold no user data
    doc = conn.member.store.find_user(user, db)
    return doc["credentials"] if doc else None


@command("saslStart")
def cmd_sasl_start(conn: Connection, db: str, doc: dict) -> dict:
    mechanism = doc.get("mechanism")
    if mechanism not in scram.MECHANISMS:
        raise CommandError(
            334, f"Received authentication for mechanism {mechanism} which is not enabled"
        )

    def lookup(user: str) -> dict | None:
        creds = _credentials(conn, user, db)
        return creds.get(mechanism) if creds else None

    conversation = scram.ServerConversation(mechanism, lookup)
    try:
        payload = conversation.start(bytes(doc.get("payload", b"")))
    except (scram.ScramError, ValueError, UnicodeDecodeError) as exc:
        log.info(
            "ACCESS",
            "Authentication failed",
            mechanism=mechanism,
            user=conversation.user,
            db=db,
            remote=conn.remote,
            reason=str(exc),
        )
        raise CommandError(18, "Authentication failed.") from None
    cid = conn.next_conversation_id
    conn.next_conversation_id += 1
    options = doc.get("options") or {}
    conn.conversation = (cid, conversation, db, bool(options.get("skipEmptyExchange")))
    return {"conversationId": cid, "done": False, "payload": payload, "ok": 1.0}


@command("saslContinue")
def cmd_sasl_continue(conn: Connection, db: str, doc: dict) -> dict:
    if conn.conversation is None or conn.conversation[0] != doc.get("conversationId"):
        raise CommandError(17, "No SASL session state found")
    cid, conversation, user_db, skip_empty = conn.conversation
    try:
        payload = conversation.proceed(bytes(doc.get("payload", b"")))
    except (scram.ScramError, ValueError, UnicodeDecodeError) as exc:
        conn.conversation = None
        log.info(
            "ACCESS",
            "Authentication failed",
            mechanism=conversation.mechanism,
            user=conversation.user,
            db=user_db,
            remote=conn.remote,
            reason=str(exc),
        )
        raise CommandError(18, "Authentication failed.") from None
    if conversation.step == 2 and not conversation.done:
        conn.user = (conversation.user, user_db)
        log.info(
            "ACCESS",
            "Successfully authenticated",
            mechanism=conversation.mechanism,
            user=conversation.user,
            db=user_db,
            remote=conn.remote,
        )
        done = skip_empty
    else:
        done = True
    if done:
        conn.conversation = None
    return {"conversationId": cid, "done": done, "payload": payload, "ok": 1.0}


@command("logout")
def cmd_logout(conn: Connection, db: str, doc: dict) -> dict:
    conn.user = None
    return {}


@command("connectionStatus")
def cmd_connection_status(conn: Connection, db: str, doc: dict) -> dict:
    if doc.get("showPrivileges"):
        raise not_implemented("connectionStatus showPrivileges")
    users = [{"user": conn.user[0], "db": conn.user[1]}] if conn.user else []
    return {"authInfo": {"authenticatedUsers": users, "authenticatedUserRoles": conn.user_roles()}}


# ---- server information -----------------------------------------------------------------------
@command("ping")
def cmd_ping(conn: Connection, db: str, doc: dict) -> dict:
    return {}


@command("buildInfo", "buildinfo")
def cmd_build_info(conn: Connection, db: str, doc: dict) -> dict:
    return {
        "version": VERSION,
        "gitVersion": "0000000000000000000000000000000000000000",
        "modules": [],
        "allocator": "system",
        "javascriptEngine": "none",
        "sysInfo": "deprecated",
        "versionArray": VERSION_ARRAY,
        "bits": 64,
        "debug": False,
        "maxBsonObjectSize": 16 * 1024 * 1024,
        "storageEngines": ["standin"],
        "standin": STANDIN_NAME,
    }


_PARAMETERS = {
    "featureCompatibilityVersion": {"version": FCV},
    "authenticationMechanisms": list(scram.MECHANISMS),
    "logLevel": 0,
    "quiet": False,
}


@command("getParameter")
def cmd_get_parameter(conn: Connection, db: str, doc: dict) -> dict:
    _admin_only("getParameter", db)
    conn.require("getParameter", "clusterMonitor")
    selector = doc["getParameter"]
    if isinstance(selector, dict):
        if set(selector) - {"allParameters", "showDetails"} or selector.get("showDetails"):
            raise not_implemented("getParameter showDetails")
        selector = "*" if selector.get("allParameters") else 1
    if selector == "*":
        return dict(_PARAMETERS)
    names = [k for k in doc if k != "getParameter" and not k.startswith("$") and k not in _GENERIC]
    reply = {}
    for name in names:
        if name not in _PARAMETERS:
            raise CommandError(72, "no option found to get")
        reply[name] = _PARAMETERS[name]
    if not reply:
        raise CommandError(72, "no option found to get")
    return reply


_GENERIC = {
    "lsid",
    "txnNumber",
    "autocommit",
    "startTransaction",
    "apiVersion",
    "apiStrict",
    "apiDeprecationErrors",
    "comment",
    "maxTimeMS",
    "writeConcern",
    "readConcern",
}


@command("getLog")
def cmd_get_log(conn: Connection, db: str, doc: dict) -> dict:
    _admin_only("getLog", db)
    conn.require("getLog", "clusterMonitor")
    name = doc["getLog"]
    if name == "*":
        return {"names": ["global", "startupWarnings"]}
    found = log.get_log(name)
    if found is None:
        raise CommandError(2, f"No log named '{name}'")
    total, lines = found
    return {"totalLinesWritten": total, "log": lines}


@command("endSessions")
def cmd_end_sessions(conn: Connection, db: str, doc: dict) -> dict:
    return {}  # the stand-in keeps no server-side session state to end


# ---- replica set ---------------------------------------------------------------------------
def _need_replset(member: Member) -> None:
    if not member.opts.replset:
        raise CommandError(76, "This node was not started with replication enabled.")


@command("replSetInitiate")
def cmd_repl_set_initiate(conn: Connection, db: str, doc: dict) -> dict:
    _admin_only("replSetInitiate", db)
    conn.require("replSetInitiate", "clusterManager")
    member = conn.member
    _need_replset(member)
    if member.config is not None:
        raise CommandError(23, "already initialized")
    config = doc["replSetInitiate"]
    if not isinstance(config, dict) or not config:
        # default config: this host alone, as real mongod builds it
        config = {
            "_id": member.opts.replset,
            "version": 1,
            "members": [{"_id": 0, "host": f"{socket.gethostname()}:{member.opts.port}"}],
        }
    member.initiate(config)
    return {}


@command("replSetGetConfig")
def cmd_repl_set_get_config(conn: Connection, db: str, doc: dict) -> dict:
    _admin_only("replSetGetConfig", db)
    conn.require("replSetGetConfig", "clusterMonitor")
    member = conn.member
    _need_replset(member)
    if member.config is None:
        raise CommandError(94, "no replset config has been received")
    return {"config": member.config}


@command("replSetGetStatus")
def cmd_repl_set_get_status(conn: Connection, db: str, doc: dict) -> dict:
    _admin_only("replSetGetStatus", db)
    conn.require("replSetGetStatus", "clusterMonitor")
    member = conn.member
    _need_replset(member)
    config = member.config
    if config is None:
        raise CommandError(94, "no replset config has been received")
    now = _now()
    members = []
    for m in config["members"]:
        host = m["host"]
        entry = {"_id": m["_id"], "name": host}
        if host == member.me:
            state = member.state()
            entry.update(
                health=1.0,
                state=replset.STATE_CODES[state],
                stateStr=state,
                uptime=int(now.timestamp() - member.started),
                self=True,
            )
        else:
            reply = member.ping(host)  # fresh, bounded by the heartbeat timeout
            if reply is None:
                health = member.health.get(host, {})
                entry.update(
                    health=0.0,
                    state=8,
                    stateStr="(not reachable/healthy)",
                    lastHeartbeatMessage=health.get("error", ""),
                )
            else:
                state = replset.member_state(config, host)
                entry.update(
                    health=1.0,
                    state=replset.STATE_CODES[state],
                    stateStr=state,
                    lastHeartbeat=member.health[host]["last"],
                )
        members.append(entry)
    state = member.state()
    return {
        "set": config["_id"],
        "date": now,
        "myState": replset.STATE_CODES.get(state, 0),
        "term": Int64(config["term"]),
        "heartbeatIntervalMillis": Int64(config["settings"].get("heartbeatIntervalMillis", 2000)),
        "majorityVoteCount": len([m for m in config["members"] if m["votes"]]) // 2 + 1,
        "writeMajorityCount": replset.majority(config),
        "votingMembersCount": len([m for m in config["members"] if m["votes"]]),
        "members": members,
        "standin": "states follow the config (highest priority is PRIMARY); no elections",
    }


# ---- internal, member to member (keyfile) -------------------------------------------------------
@command("standinHeartbeat")
def cmd_standin_heartbeat(conn: Connection, db: str, doc: dict) -> dict:
    conn.require("standinHeartbeat", "internal")
    member = conn.member
    _need_replset(member)
    if doc.get("setName") != member.opts.replset:
        raise CommandError(
            93, f"Our set name did not match: this node runs --replSet {member.opts.replset}"
        )
    return member.heartbeat_reply()


@command("standinApplyConfig")
def cmd_standin_apply_config(conn: Connection, db: str, doc: dict) -> dict:
    conn.require("standinApplyConfig", "internal")
    member = conn.member
    _need_replset(member)
    applied = member.receive_config(doc["standinApplyConfig"], doc.get("yourHost"))
    return {"applied": applied}


@command("standinSync")
def cmd_standin_sync(conn: Connection, db: str, doc: dict) -> dict:
    conn.require("standinSync", "internal")
    _need_replset(conn.member)
    version = conn.member.receive_snapshot(doc["users"], doc["data"], doc["repl"])
    return {"repl": version}


# ---- users ------------------------------------------------------------------------------------
def _check_writable(member: Member) -> None:
    if not member.is_writable_primary():
        raise CommandError(10107, "not primary")


def _check_readable(conn: Connection, doc: dict) -> None:
    member = conn.member
    state = member.state()
    if state in ("STANDALONE", "PRIMARY"):
        return
    if state == "SECONDARY":
        pref = doc.get("$readPreference") or {}
        if pref.get("mode", "primary") != "primary":
            return
        raise CommandError(13435, "not primary and secondaryOk=false")
    raise CommandError(13436, "node is not in primary or recovering state")


def _parse_roles(value: object, db: str) -> list[dict]:
    if not isinstance(value, list):
        raise CommandError(2, '"roles" field must be an array')
    out = []
    for item in value:
        if isinstance(item, str):
            role, role_db = item, db
        elif (
            isinstance(item, dict)
            and isinstance(item.get("role"), str)
            and isinstance(item.get("db"), str)
        ):
            role, role_db = item["role"], item["db"]
        else:
            raise CommandError(2, "role names must be either strings or objects with role and db")
        if not roles.role_exists(role, role_db):
            raise CommandError(31, f"Could not find role: {role}@{role_db}")
        if {"role": role, "db": role_db} not in out:
            out.append({"role": role, "db": role_db})
    return out


def _mechanisms(value: object) -> list[str]:
    if value is None:
        return list(scram.MECHANISMS)
    if not isinstance(value, list) or not value or any(m not in scram.MECHANISMS for m in value):
        raise CommandError(2, f"mechanisms must be a non-empty subset of {list(scram.MECHANISMS)}")
    return list(dict.fromkeys(value))


def _credentials_for(user: str, password: str, mechanisms: list) -> dict:
    if not isinstance(password, str):
        raise CommandError(
            2,
            "Must provide a 'pwd' field for all user documents, except those with "
            "'$external' as the user's source db",
        )
    if not password:
        raise CommandError(2, "Password cannot be empty")
    return {m: scram.make_credentials(m, user, password) for m in mechanisms}


def _persist_and_replicate(conn: Connection, doc: dict) -> dict:
    """Save, push to the secondaries, and honour an explicit write concern honestly."""
    member = conn.member
    store = member.store
    with store.lock:
        store.bump_repl()
        store.save()
    acks = 1 + member.replicate() if member.opts.replset else 1
    concern = doc.get("writeConcern") or {}
    wanted = concern.get("w", 1)
    if wanted == "majority":
        needed = replset.majority(member.config) if member.config else 1
    elif isinstance(wanted, int) and not isinstance(wanted, bool):
        needed = wanted
    else:
        raise (
            CommandError(79, f"unrecognized write concern mode: {wanted}")
            if isinstance(wanted, str)
            else CommandError(2, "w has to be a number or a string")
        )
    if acks < needed:
        return {
            "writeConcernError": {
                "code": 64,
                "codeName": "WriteConcernFailed",
                "errmsg": f"waiting for replication failed: {acks} of {needed} "
                "members acknowledged the write",
            }
        }
    return {}


def _user_admin_for(conn: Connection, name: str, db: str, granted: list) -> None:
    conn.require(name, "userAdmin", db)
    for item in granted:
        conn.require(name, "userAdmin", item["db"])


@command("createUser")
def cmd_create_user(conn: Connection, db: str, doc: dict) -> dict:
    name = doc["createUser"]
    if not isinstance(name, str) or not name:
        raise CommandError(2, "User name must be a non-empty string")
    if "roles" not in doc:
        raise CommandError(2, '"createUser" command requires a "roles" array')
    granted = _parse_roles(doc["roles"], db)
    _user_admin_for(conn, "createUser", db, granted)
    if db == "local":
        raise CommandError(2, "Cannot create users in the local database")
    if db == "$external":
        raise not_implemented("users in $external")
    if doc.get("digestPassword") is False:
        raise not_implemented("digestPassword: false")
    if doc.get("authenticationRestrictions"):
        raise not_implemented("authenticationRestrictions")
    member = conn.member
    _check_writable(member)
    mechanisms = _mechanisms(doc.get("mechanisms"))
    creds = _credentials_for(name, doc.get("pwd"), mechanisms)
    store = member.store
    with store.lock:
        if store.find_user(name, db):
            raise CommandError(51003, f'User "{name}@{db}" already exists')
        user = {
            "_id": f"{db}.{name}",
            "userId": Binary(uuid.uuid4().bytes, 4),
            "user": name,
            "db": db,
            "credentials": creds,
            "roles": granted,
            "mechanisms": mechanisms,
        }
        if "customData" in doc:
            user["customData"] = doc["customData"]
        store.state["users"].append(user)
    log.info("ACCESS", "Created user", user=name, db=db, roles=granted)
    return _persist_and_replicate(conn, doc)


@command("updateUser")
def cmd_update_user(conn: Connection, db: str, doc: dict) -> dict:
    name = doc["updateUser"]
    fields = {
        "pwd",
        "roles",
        "customData",
        "mechanisms",
        "digestPassword",
        "authenticationRestrictions",
    }
    if not any(k in doc for k in fields):
        raise CommandError(2, "Must specify at least one field to update in updateUser")
    granted = _parse_roles(doc["roles"], db) if "roles" in doc else []
    _user_admin_for(conn, "updateUser", db, granted)
    if doc.get("digestPassword") is False:
        raise not_implemented("digestPassword: false")
    if doc.get("authenticationRestrictions"):
        raise not_implemented("authenticationRestrictions")
    member = conn.member
    _check_writable(member)
    store = member.store
    with store.lock:
        user = store.find_user(name, db)
        if user is None:
            raise CommandError(11, f'Could not find user "{name}@{db}"')
        mechanisms = _mechanisms(doc["mechanisms"]) if "mechanisms" in doc else user["mechanisms"]
        if "pwd" in doc:
            user["credentials"] = _credentials_for(name, doc["pwd"], mechanisms)
        elif "mechanisms" in doc:
            if set(mechanisms) - set(user["credentials"]):
                raise CommandError(
                    2, "mechanisms field must be a subset of previously set mechanisms"
                )
            user["credentials"] = {m: user["credentials"][m] for m in mechanisms}
        user["mechanisms"] = mechanisms
        if "roles" in doc:
            user["roles"] = granted
        if "customData" in doc:
            user["customData"] = doc["customData"]
    log.info("ACCESS", "Updated user", user=name, db=db, password_changed="pwd" in doc)
    return _persist_and_replicate(conn, doc)


@command("dropUser")
def cmd_drop_user(conn: Connection, db: str, doc: dict) -> dict:
    name = doc["dropUser"]
    conn.require("dropUser", "userAdmin", db)
    member = conn.member
    _check_writable(member)
    store = member.store
    with store.lock:
        user = store.find_user(name, db)
        if user is None:
            raise CommandError(11, f'Could not find user "{name}@{db}"')
        store.state["users"].remove(user)
    log.info("ACCESS", "Dropped user", user=name, db=db)
    return _persist_and_replicate(conn, doc)


def _public_user(user: str, show_credentials: bool, show_custom_data: bool) -> dict:
    out = {"_id": user["_id"], "userId": user["userId"], "user": user["user"], "db": user["db"]}
    if show_credentials:
        out["credentials"] = user["credentials"]
    if show_custom_data and "customData" in user:
        out["customData"] = user["customData"]
    out["roles"] = user["roles"]
    out["mechanisms"] = user["mechanisms"]
    return out


@command("usersInfo")
def cmd_users_info(conn: Connection, db: str, doc: dict) -> dict:
    if doc.get("showPrivileges") or doc.get("showAuthenticationRestrictions") or "filter" in doc:
        raise not_implemented("usersInfo showPrivileges/showAuthenticationRestrictions/filter")
    conn.require_authenticated("usersInfo")
    _check_readable_users(conn)
    store = conn.member.store
    spec = doc["usersInfo"]
    wanted = None  # None: every user of db
    all_dbs = isinstance(spec, dict) and spec.get("forAllDBs") is True
    if not all_dbs and spec != 1:
        items = spec if isinstance(spec, list) else [spec]
        wanted = []
        for item in items:
            if isinstance(item, str):
                wanted.append((item, db))
            elif isinstance(item, dict) and "user" in item and "db" in item:
                wanted.append((item["user"], item["db"]))
            else:
                raise CommandError(
                    2, "User name must be either a string or an object with user and db"
                )
    for user_name, user_db in wanted or []:
        if conn.user != (user_name, user_db):
            conn.require("usersInfo", "userAdmin", user_db)
    if wanted is None:
        if all_dbs:
            conn.require("usersInfo", "userAdmin", "\0every database")
        else:
            conn.require("usersInfo", "userAdmin", db)
    with store.lock:
        if wanted is None:
            found = [u for u in store.state["users"] if all_dbs or u["db"] == db]
        else:
            found = [u for u in store.state["users"] if (u["user"], u["db"]) in wanted]
        users = [
            _public_user(u, doc.get("showCredentials"), doc.get("showCustomData", True))
            for u in found
        ]
    return {"users": users}


def _check_readable_users(conn: Connection) -> None:
    if conn.member.state() in ("STARTUP", "REMOVED"):
        raise CommandError(13436, "node is not in primary or recovering state")


# ---- documents ---------------------------------------------------------------------------------
_MISSING = object()


def _value_at(doc: dict, path: str) -> object:
    value = doc
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return _MISSING
    return value


def _equal(a: object, b: object) -> bool:
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    try:
        return (
            type(a) is type(b)
            and a == b
            or (isinstance(a, (int, float)) and isinstance(b, (int, float)) and a == b)
        )
    except TypeError:
        return False


def _field_matches(value: object, wanted: object) -> bool:
    if value is _MISSING:
        return wanted is None
    if _equal(value, wanted):
        return True
    return (
        isinstance(value, list)
        and not isinstance(wanted, list)
        and any(_equal(v, wanted) for v in value)
    )


def matches(doc: dict, query: dict) -> bool:
    if not isinstance(query, dict):
        raise CommandError(14, "filter must be an object")
    for key, wanted in query.items():
        if key.startswith("$"):
            raise not_implemented(f"the top-level query operator {key} (equality filters only)")
        value = _value_at(doc, key)
        if isinstance(wanted, (Regex, re.Pattern)):
            raise not_implemented("regular expression filters (equality filters only)")
        if isinstance(wanted, dict) and wanted and any(k.startswith("$") for k in wanted):
            if not all(k.startswith("$") for k in wanted):
                raise CommandError(2, f"unknown operator: {next(iter(wanted))}")
            for op, operand in wanted.items():
                if op == "$eq":
                    ok = _field_matches(value, operand)
                elif op == "$in" and isinstance(operand, list):
                    ok = any(_field_matches(value, o) for o in operand)
                else:
                    raise not_implemented(f"the query operator {op} (equality, $eq and $in only)")
                if not ok:
                    return False
        elif not _field_matches(value, wanted):
            return False
    return True


def _collection_name(doc: dict, name: str) -> str:
    coll = doc[name]
    if not isinstance(coll, str) or not coll:
        raise CommandError(73, f"collection name has invalid type {type(coll).__name__}")
    if "$" in coll or "\0" in coll:
        raise CommandError(73, f"Invalid collection name: {coll}")
    return coll


def _documents(conn: Connection, db: str, coll: str) -> list:
    data = conn.member.store.state["data"]
    return list(data.get(db, {}).get(coll, []))


def _check_system(db: str, coll: str) -> None:
    if coll.startswith("system."):
        raise not_implemented(f"the {db}.{coll} collection (users are kept apart; use usersInfo)")


@command("insert")
def cmd_insert(conn: Connection, db: str, doc: dict) -> dict:
    coll = _collection_name(doc, "insert")
    conn.require("insert", "write", db)
    _check_system(db, coll)
    _check_writable(conn.member)
    documents = doc.get("documents")
    if not isinstance(documents, list):
        raise CommandError(2, "insert requires a documents array")
    ordered = doc.get("ordered", True)
    store = conn.member.store
    n, errors = 0, []
    with store.lock:
        target = store.state["data"].setdefault(db, {}).setdefault(coll, [])
        for index, item in enumerate(documents):
            if "_id" not in item:
                item = {"_id": ObjectId(), **item}
            if any(_equal(existing["_id"], item["_id"]) for existing in target):
                errors.append(
                    {
                        "index": index,
                        "code": 11000,
                        "errmsg": f"E11000 duplicate key error collection: {db}.{coll} index: _id_ "
                        f"dup key: {{ _id: {item['_id']!r} }}",
                    }
                )
                if ordered:
                    break
                continue
            target.append(item)
            n += 1
    reply = {"n": n}
    if errors:
        reply["writeErrors"] = errors
    if n:
        reply.update(_persist_and_replicate(conn, doc))
    return reply


def _check_plain_query(doc: dict, name: str) -> None:
    if doc.get("sort"):
        raise not_implemented(f"{name} with sort")
    if doc.get("projection"):
        raise not_implemented(f"{name} with a projection")
    for key in ("hint", "collation", "min", "max", "tailable", "awaitData"):
        if doc.get(key):
            raise not_implemented(f"{name} with {key}")


def _slice(docs: list, skip: object, limit: object) -> list:
    skip = int(skip or 0)
    limit = abs(int(limit or 0))
    if skip < 0:
        raise CommandError(2, "skip value must be non-negative")
    docs = docs[skip:]
    return docs[:limit] if limit else docs


def _matching(conn: Connection, db: str, doc: dict, name: str, filter_key: str) -> list:
    """The documents a find or count selects, after the same checks for both."""
    coll = _collection_name(doc, name)
    conn.require(name, "read", db)
    _check_system(db, coll)
    _check_readable(conn, doc)
    _check_plain_query(doc, name)
    with conn.member.store.lock:
        docs = [d for d in _documents(conn, db, coll) if matches(d, doc.get(filter_key) or {})]
    return _slice(docs, doc.get("skip"), doc.get("limit"))


@command("find")
def cmd_find(conn: Connection, db: str, doc: dict) -> dict:
    docs = _matching(conn, db, doc, "find", "filter")
    ns = f"{db}.{_collection_name(doc, 'find')}"
    return {"cursor": {"firstBatch": docs, "id": Int64(0), "ns": ns}}


@command("count")
def cmd_count(conn: Connection, db: str, doc: dict) -> dict:
    return {"n": len(_matching(conn, db, doc, "count", "query"))}


@command("aggregate")
def cmd_aggregate(conn: Connection, db: str, doc: dict) -> dict:
    coll = doc["aggregate"]
    if not isinstance(coll, str):
        raise not_implemented("collection-less aggregate")
    coll = _collection_name(doc, "aggregate")
    conn.require("aggregate", "read", db)
    _check_system(db, coll)
    _check_readable(conn, doc)
    if doc.get("explain") or doc.get("collation") or doc.get("hint"):
        raise not_implemented("aggregate with explain, collation or hint")
    pipeline = doc.get("pipeline")
    if not isinstance(pipeline, list):
        raise CommandError(14, "'pipeline' option must be specified as an array")
    with conn.member.store.lock:
        docs = _documents(conn, db, coll)
    for stage in pipeline:
        if not isinstance(stage, dict) or len(stage) != 1:
            raise CommandError(
                40323, "A pipeline stage specification object must contain exactly one field."
            )
        ((op, arg),) = stage.items()
        if op == "$match":
            docs = [d for d in docs if matches(d, arg)]
        elif op == "$limit":
            docs = docs[: int(arg)]
        elif op == "$skip":
            docs = docs[int(arg) :]
        elif op == "$count":
            docs = [{arg: len(docs)}] if docs else []
        elif op == "$group":
            docs = _group(docs, arg)
        else:
            raise not_implemented(
                f"the aggregation stage {op} "
                "($match, $limit, $skip, $count, constant-_id $group only)"
            )
    return {"cursor": {"firstBatch": docs, "id": Int64(0), "ns": f"{db}.{coll}"}}


def _is_expression(value: object) -> bool:
    if isinstance(value, str):
        return value.startswith("$")
    if isinstance(value, dict):
        return any(k.startswith("$") or _is_expression(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_is_expression(v) for v in value)
    return False


def _group(docs: list, spec: object) -> list:
    """$group with a constant _id and $sum accumulators: what countDocuments() sends."""
    if not isinstance(spec, dict) or "_id" not in spec:
        raise CommandError(15955, "a group specification must include an _id")
    if _is_expression(spec["_id"]):
        raise not_implemented("$group by a field or expression (a constant _id only)")
    out = {"_id": spec["_id"]}
    for name, acc in spec.items():
        if name == "_id":
            continue
        if not (isinstance(acc, dict) and list(acc) == ["$sum"]):
            raise not_implemented(f"the $group accumulator of {name} ($sum only)")
        operand = acc["$sum"]
        if isinstance(operand, (int, float)) and not isinstance(operand, bool):
            out[name] = operand * len(docs)
        elif isinstance(operand, str) and operand.startswith("$") and not operand.startswith("$$"):
            values = [_value_at(d, operand[1:]) for d in docs]
            out[name] = sum(
                v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
            )
        else:
            raise not_implemented(f"$sum of {operand!r} (a number or a field path only)")
    return [out] if docs else []


@command("listDatabases")
def cmd_list_databases(conn: Connection, db: str, doc: dict) -> dict:
    _admin_only("listDatabases", db)
    conn.require_authenticated("listDatabases")
    if doc.get("filter"):
        raise not_implemented("listDatabases with a filter")
    data = conn.member.store.state["data"]
    names = sorted({"admin", "config", "local"} | {name for name, colls in data.items() if colls})
    if conn.auth_enabled:
        readable = roles.readable_dbs(conn.effective_roles())
        if readable is not None:
            names = [n for n in names if n in readable]
    databases = []
    for name in names:
        if doc.get("nameOnly"):
            databases.append({"name": name})
        else:
            size = len(str(data.get(name, {}))) if data.get(name) else 0
            databases.append({"name": name, "sizeOnDisk": Int64(size), "empty": not data.get(name)})
    reply = {"databases": databases}
    if not doc.get("nameOnly"):
        total = sum(d["sizeOnDisk"] for d in databases)
        reply.update(totalSize=Int64(total), totalSizeMb=Int64(total // (1024 * 1024)))
    return reply


@command("listCollections")
def cmd_list_collections(conn: Connection, db: str, doc: dict) -> dict:
    if not (
        roles.allows(conn.effective_roles(), "read", db)
        or roles.allows(conn.effective_roles(), "dbAdmin", db)
    ):
        conn.require("listCollections", "read", db)
    _check_readable(conn, doc)
    with conn.member.store.lock:
        names = sorted(conn.member.store.state["data"].get(db, {}))
    entries = []
    for name in names:
        if doc.get("nameOnly"):
            entry = {"name": name, "type": "collection"}
        else:
            entry = {
                "name": name,
                "type": "collection",
                "options": {},
                "info": {"readOnly": False},
                "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"},
            }
        if matches(entry, doc.get("filter") or {}):
            entries.append(entry)
    return {"cursor": {"id": Int64(0), "ns": f"{db}.$cmd.listCollections", "firstBatch": entries}}
