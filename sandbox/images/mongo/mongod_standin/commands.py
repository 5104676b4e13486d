"""The commands the stand-in implements. Anything not in COMMANDS fails with CommandNotFound (59).

Each handler is ``handler(conn, db, doc) -> reply`` and raises CommandError on failure.
"""

from __future__ import annotations

import datetime
import re
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bson import Int64, ObjectId
from bson.binary import Binary
from bson.decimal128 import Decimal128
from bson.regex import Regex

from . import (
    FCV,
    MAX_WIRE_VERSION,
    STANDIN_NAME,
    VERSION,
    VERSION_ARRAY,
    catalog,
    cursors,
    log,
    replset,
    roles,
    scram,
    sessions,
)
from .errors import CommandError, bson_type_name, not_implemented, wrong_type

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
        conn.authenticated(conversation.user, user_db)
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
    conn.user_id = None
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
    conn.require("getParameter", "getParameter")
    selector = doc["getParameter"]
    if isinstance(selector, dict):
        if set(selector) - {"allParameters", "showDetails"} or selector.get("showDetails"):
            raise not_implemented("getParameter showDetails")
        selector = "*" if selector.get("allParameters") else 1
    parameters = {**_PARAMETERS, "tlsMode": conn.member.opts.tls_mode}
    if selector == "*":
        return parameters
    names = [k for k in doc if k != "getParameter" and not k.startswith("$") and k not in _GENERIC]
    reply = {}
    for name in names:
        if name not in parameters:
            raise CommandError(72, "no option found to get")
        reply[name] = parameters[name]
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
    # As in mongod, an ended session's retryable writes are kept until its entry expires
    # (sessions.py); its open cursors are killed.
    ended = doc["endSessions"]
    if not isinstance(ended, list):
        raise wrong_type("endSessions.endSessions", ended, "array")
    conn.member.cursors.close_sessions(
        [s.get("id") for s in ended if isinstance(s, dict) and s.get("id") is not None]
    )
    return {}


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
    version = conn.member.receive_snapshot(
        doc["users"], doc["data"], doc["repl"], doc.get("sessions"), doc.get("catalog")
    )
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


# Generic arguments every command accepts (mongod's generic_argument.idl, less multi-tenancy).
# The user management commands are strict, as mongod's IDL declares them: any other field fails
# with 40415, so a misspelt option (say `mechanism` for `mechanisms`) is refused, never ignored.
GENERIC_ARGUMENTS = frozenset(
    {
        "apiVersion",
        "apiStrict",
        "apiDeprecationErrors",
        "$db",
        "maxTimeMS",
        "readConcern",
        "writeConcern",
        "lsid",
        "clientOperationKey",
        "txnNumber",
        "autocommit",
        "startTransaction",
        "stmtId",
        "comment",
        "$readPreference",
        "$clusterTime",
        "$audit",
        "$client",
        "$configServerState",
        "allowImplicitCollectionCreation",
        "$oplogQueryData",
        "$queryOptions",
        "$replData",
        "databaseVersion",
        "shardVersion",
        "tracking_info",
        "coordinator",
        "maxTimeMSOpOnly",
        "$configTime",
        "$topologyTime",
        "txnRetryCounter",
        "mayBypassWriteBlocking",
    }
)
_CREATE_UPDATE_FIELDS = frozenset(
    {"pwd", "customData", "roles", "digestPassword", "authenticationRestrictions", "mechanisms"}
)
_USERS_INFO_FIELDS = frozenset(
    {
        "showPrivileges",
        "showCredentials",
        "showAuthenticationRestrictions",
        "showCustomData",
        "filter",
    }
)


def _check_fields(name: str, doc: dict, allowed: frozenset) -> None:
    """Refuse a field the command does not have, as mongod's strict IDL parsers do."""
    for key in list(doc)[1:]:
        if key not in allowed and key not in GENERIC_ARGUMENTS:
            raise CommandError(40415, f"BSON field '{name}.{key}' is an unknown field.")


def _safe_bool(name: str, doc: dict, field: str, default: bool) -> bool:
    """An IDL safeBool: a bool or a number (its truth), anything else is a TypeMismatch."""
    if field not in doc:
        return default
    value = doc[field]
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, Decimal128):
        return value.to_decimal() != 0
    raise CommandError(
        14,
        f"BSON field '{name}.{field}' is the wrong type '{bson_type_name(value)}', expected "
        "types '[bool, long, int, decimal, double]'",
    )


def _user_name(name: str, doc: dict) -> str:
    value = doc[name]
    if not isinstance(value, str):
        raise wrong_type(f"{name}.{name}", value, "string")
    return value


def _role_names(name: str, value: object, db: str) -> list[dict]:
    """A roles array resolved to {role, db} (a bare name is a role of ``db``), duplicates
    dropped; whether the roles exist is checked later, after authorization, as mongod does."""
    if not isinstance(value, list):
        raise wrong_type(f"{name}.roles", value, "array")
    out = []
    for item in value:
        if isinstance(item, str):
            role = {"role": item, "db": db}
        elif isinstance(item, dict):
            for key in item:
                if key not in ("role", "db"):
                    raise CommandError(2, f"Unknown field '{key}' in RoleName document")
            for key in ("role", "db"):
                if key not in item:
                    raise CommandError(2, f"Missing field '{key}' in RoleName document")
                if not isinstance(item[key], str):
                    raise CommandError(
                        2,
                        f"Wrong type for field '{key}'. Expected string, got "
                        f"{bson_type_name(item[key])}",
                    )
            role = {"role": item["role"], "db": item["db"]}
        else:
            raise CommandError(2, "Role name must be either a document or string")
        if role not in out:
            out.append(role)
    return out


def _check_roles_exist(granted: list[dict]) -> None:
    for item in granted:
        if not roles.role_exists(item["role"], item["db"]):
            raise CommandError(31, f"Could not find role: {item['role']}@{item['db']}")


@dataclass
class UserArgs:
    """The fields of a createUser or updateUser command, type-checked as mongod's IDL does.
    None: the field was not given."""

    name: str
    pwd: str | None
    custom_data: dict | None
    roles: list[dict] | None
    digest_password: bool
    restrictions: list | None
    mechanisms: list[str] | None


def _user_args(name: str, db: str, doc: dict) -> UserArgs:
    """Parse createUser/updateUser like mongod's IDL: unknown fields and wrong types refused."""
    _check_fields(name, doc, _CREATE_UPDATE_FIELDS)
    user = _user_name(name, doc)
    pwd = doc.get("pwd")
    if "pwd" in doc and not isinstance(pwd, str):
        raise wrong_type(f"{name}.pwd", pwd, "string")
    custom_data = doc.get("customData")
    if "customData" in doc and not isinstance(custom_data, dict):
        raise wrong_type(f"{name}.customData", custom_data, "object")
    granted = _role_names(name, doc["roles"], db) if "roles" in doc else None
    restrictions = doc.get("authenticationRestrictions")
    if "authenticationRestrictions" in doc:
        if not isinstance(restrictions, list):
            raise wrong_type(f"{name}.authenticationRestrictions", restrictions, "array")
        if restrictions:
            raise not_implemented("authenticationRestrictions")
    mechanisms = doc.get("mechanisms")
    if "mechanisms" in doc:
        if not isinstance(mechanisms, list):
            raise wrong_type(f"{name}.mechanisms", mechanisms, "array")
        for index, mech in enumerate(mechanisms):
            if not isinstance(mech, str):
                raise wrong_type(f"{name}.mechanisms.{index}", mech, "string")
    return UserArgs(
        name=user,
        pwd=pwd,
        custom_data=custom_data,
        roles=granted,
        digest_password=_safe_bool(name, doc, "digestPassword", True),
        restrictions=restrictions,
        mechanisms=mechanisms,
    )


def _build_credentials(
    user: str, password: str, mechanisms: list[str] | None, digest_password: bool
) -> dict:
    """The SCRAM credentials of a user, as mongod's buildCredentials makes them for createUser
    and for updateUser with pwd: for the mechanisms given, or else for every enabled one (both
    here, SCRAM-SHA-1 first); a fresh salt each time. With digestPassword false the client sent
    the digest (only SCRAM-SHA-1 can use one)."""
    if mechanisms:
        for mech in mechanisms:
            if mech not in scram.MECHANISMS:
                raise CommandError(2, f"Unknown auth mechanism '{mech}'")
    wanted = [m for m in scram.MECHANISMS if not mechanisms or m in mechanisms]
    creds = {}
    if "SCRAM-SHA-1" in wanted:
        creds["SCRAM-SHA-1"] = scram.make_credentials(
            "SCRAM-SHA-1", user, password, digested=not digest_password
        )
    if "SCRAM-SHA-256" in wanted:
        if not digest_password:
            raise CommandError(2, "Use of SCRAM-SHA-256 requires undigested passwords")
        if not password:  # what mongod's SASLprep (ICU) answers for an empty password
            raise CommandError(
                50687, "Error preflighting UTF-8 conversion: U_STRING_NOT_TERMINATED_WARNING"
            )
        try:
            creds["SCRAM-SHA-256"] = scram.make_credentials("SCRAM-SHA-256", user, password)
        except ValueError:  # SASLprep refused a character (a control character, say)
            raise CommandError(
                50692, "Error preflighting normalization: U_STRINGPREP_PROHIBITED_ERROR"
            ) from None
    return creds


def _trim_credentials(creds: dict, mechanisms: list[str]) -> dict:
    """updateUser with mechanisms and no pwd: keep only those credentials (mongod's
    trimCredentials); a mechanism the user has no credentials for is refused."""
    for mech in mechanisms:
        if mech not in creds:
            raise CommandError(2, "mechanisms field must be a subset of previously set mechanisms")
    kept = {m: creds[m] for m in scram.MECHANISMS if m in mechanisms}
    if not kept:
        raise CommandError(
            2, "mechanisms field must contain at least one previously set known mechanism"
        )
    return kept


def user_mechanisms(user: dict) -> list[str]:
    """The mechanisms a user can authenticate with: those it has credentials for, in the order
    mongod's usersInfo lists them."""
    return [m for m in user["credentials"] if m in scram.MECHANISMS]


def _write_concern_needed(member: Member, doc: dict) -> int:
    """How many members must acknowledge the write; an invalid writeConcern is refused before
    anything is written, as mongod checks it before the command runs."""
    concern = doc.get("writeConcern") or {}
    if not isinstance(concern, dict):
        raise wrong_type("writeConcern", concern, "object")
    wanted = concern.get("w", 1)
    if wanted == "majority":
        return replset.majority(member.config) if member.config else 1
    if isinstance(wanted, int) and not isinstance(wanted, bool):
        return wanted
    if isinstance(wanted, str):
        raise CommandError(79, f"unrecognized write concern mode: {wanted}")
    raise CommandError(2, "w has to be a number or a string")


def _persist_and_replicate(conn: Connection, doc: dict, changed: bool = True) -> dict:
    """Save, push to the secondaries, and honour an explicit write concern honestly. With
    changed false (a retried write that changed nothing) there is nothing to save, but the
    snapshot is pushed again and the write concern checked, as mongod waits for it on a retry."""
    member = conn.member
    store = member.store
    needed = _write_concern_needed(member, doc)
    if changed:
        with store.lock:
            store.bump_repl()
            store.save()
    acks = 1 + member.replicate() if member.opts.replset else 1
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


def _check_grant(conn: Connection, granted: list[dict]) -> None:
    """mongod's checkAuthorizedToGrantRoles: grantRole on each role's database."""
    for item in granted:
        if not conn.allows("userAdmin", item["db"]):
            raise CommandError(13, f"Not authorized to grant role: {item['role']}@{item['db']}")


def _before_write(conn: Connection, doc: dict) -> None:
    """What mongod checks after authorization and before a user management write runs."""
    _check_writable(conn.member)
    _write_concern_needed(conn.member, doc)


@command("createUser")
def cmd_create_user(conn: Connection, db: str, doc: dict) -> dict:
    conn.require_authenticated("createUser")
    args = _user_args("createUser", db, doc)
    if args.roles is None:
        raise CommandError(40414, "BSON field 'createUser.roles' is missing but a required field")
    if not conn.allows("userAdmin", db):
        raise CommandError(13, f"Not authorized to create users on db: {db}")
    _check_grant(conn, args.roles)
    _before_write(conn, doc)
    name = args.name
    if db == "local":
        raise CommandError(2, "Cannot create users in the local database")
    if "\0" in name:
        raise CommandError(2, "Username cannot contain NULL characters")
    if db == "$external":
        raise not_implemented("users in $external")
    if args.pwd is None:
        raise CommandError(
            2,
            "Must provide a 'pwd' field for all user documents, except those with "
            "'$external' as the user's source db",
        )
    if args.mechanisms is not None and not args.mechanisms:
        raise CommandError(2, "mechanisms field must not be empty")
    creds = _build_credentials(name, args.pwd, args.mechanisms, args.digest_password)
    if not name:
        raise CommandError(2, "User document needs 'user' field to be non-empty")
    _check_roles_exist(args.roles)
    store = conn.member.store
    with store.lock:
        if store.find_user(name, db):
            raise CommandError(51003, f'User "{name}@{db}" already exists')
        user = {
            "_id": f"{db}.{name}",
            "userId": Binary(uuid.uuid4().bytes, 4),
            "user": name,
            "db": db,
            "credentials": creds,
        }
        if args.custom_data is not None:
            user["customData"] = args.custom_data
        user["roles"] = args.roles
        store.state["users"].append(user)
    log.info("ACCESS", "Created user", user=name, db=db, roles=args.roles)
    return _persist_and_replicate(conn, doc)


@command("updateUser")
def cmd_update_user(conn: Connection, db: str, doc: dict) -> dict:
    """mongod's updateUser: pwd (new credentials for every mechanism, or those given), roles
    (replaced), customData, mechanisms (without pwd: drop the other credentials)."""
    conn.require_authenticated("updateUser")
    args = _user_args("updateUser", db, doc)
    name, full = args.name, f"{args.name}@{db}"
    # Authorization, as mongod's checkAuthForTypedCommand(UpdateUserCommand).
    if args.pwd is not None and not conn.allows("userAdmin", db):
        raise CommandError(13, f"Not authorized to change password of user: {full}")
    if args.custom_data is not None and not conn.allows("userAdmin", db):
        raise CommandError(13, f"Not authorized to change customData of user: {full}")
    if args.roles is not None:
        if not conn.allows("userAdmin", roles.ANY_DATABASE):
            raise CommandError(
                13,
                "In order to use updateUser to set roles array, must be authorized to revoke "
                "any role in the system",
            )
        _check_grant(conn, args.roles)
    if args.restrictions is not None and not conn.allows("userAdmin", db):
        raise CommandError(13, "Unauthorized")
    if args.mechanisms is not None and args.pwd is None and not conn.allows("userAdmin", db):
        # Stricter than mongod, which checks no privilege for this: it changes credentials.
        raise CommandError(13, f"Not authorized to change the mechanisms of user: {full}")
    _before_write(conn, doc)
    if args.mechanisms is not None and not args.mechanisms:
        raise CommandError(2, "mechanisms field must not be empty")
    changes = {}
    if args.pwd is not None:
        if db == "$external":
            raise CommandError(
                2, "Cannot set the password for users defined on the '$external' database"
            )
        changes["credentials"] = _build_credentials(
            name, args.pwd, args.mechanisms, args.digest_password
        )
    store = conn.member.store
    with store.lock:
        if args.pwd is None and args.mechanisms is not None:
            user = store.find_user(name, db)
            if user is None:
                raise CommandError(11, f'Could not find user "{name}" for db "{db}"')
            changes["credentials"] = _trim_credentials(user["credentials"], args.mechanisms)
        if args.custom_data is not None:
            changes["customData"] = args.custom_data
        if args.roles is not None:
            changes["roles"] = args.roles
        # authenticationRestrictions: [] unsets them: a change, though users here have none.
        if not changes and args.restrictions is None:
            raise CommandError(2, "Must specify at least one field to update in updateUser")
        if args.roles is not None:
            _check_roles_exist(args.roles)
        user = store.find_user(name, db)
        if user is None:
            raise CommandError(11, f"User {full} not found")
        user.update(changes)
        user.pop("mechanisms", None)  # older state files kept it; credentials say it now
    log.info("ACCESS", "Updated user", user=name, db=db, fields=sorted(changes))
    return _persist_and_replicate(conn, doc)


@command("dropUser")
def cmd_drop_user(conn: Connection, db: str, doc: dict) -> dict:
    conn.require_authenticated("dropUser")
    _check_fields("dropUser", doc, frozenset())
    name = _user_name("dropUser", doc)
    if not conn.allows("userAdmin", db):
        raise CommandError(13, f"Not authorized to drop users from the {db} database")
    _before_write(conn, doc)
    store = conn.member.store
    with store.lock:
        user = store.find_user(name, db)
        if user is None:
            raise CommandError(11, f"User '{name}@{db}' not found")
        store.state["users"].remove(user)
    log.info("ACCESS", "Dropped user", user=name, db=db)
    return _persist_and_replicate(conn, doc)


def _public_user(user: dict, show_credentials: bool, show_custom_data: bool) -> dict:
    out = {"_id": user["_id"], "userId": user["userId"], "user": user["user"], "db": user["db"]}
    if show_credentials:
        out["credentials"] = user["credentials"]
    if show_custom_data and "customData" in user:
        out["customData"] = user["customData"]
    out["roles"] = user["roles"]
    out["mechanisms"] = user_mechanisms(user)
    return out


def _users_info_spec(spec: object, db: str) -> list[tuple[str, str]] | str:
    """usersInfo's argument: "db" (1: every user of db), "all" ({forAllDBs: true}), or the
    (user, db) pairs asked for."""
    if isinstance(spec, (int, float)) and not isinstance(spec, bool) and spec == 1:
        return "db"
    if isinstance(spec, dict) and spec.get("forAllDBs") is True and len(spec) == 1:
        return "all"
    items = spec if isinstance(spec, list) else [spec]
    wanted = []
    for item in items:
        if isinstance(item, str):
            wanted.append((item, db))
        elif (
            isinstance(item, dict)
            and set(item) == {"user", "db"}
            and all(isinstance(v, str) for v in item.values())
        ):
            wanted.append((item["user"], item["db"]))
        else:
            raise CommandError(2, "User name must be either a string or an object with user and db")
    return wanted


@command("usersInfo")
def cmd_users_info(conn: Connection, db: str, doc: dict) -> dict:
    conn.require_authenticated("usersInfo")
    _check_fields("usersInfo", doc, _USERS_INFO_FIELDS)
    show = {
        field: _safe_bool("usersInfo", doc, field, field == "showCustomData")
        for field in sorted(_USERS_INFO_FIELDS - {"filter"})
    }
    if show["showPrivileges"] or show["showAuthenticationRestrictions"] or "filter" in doc:
        raise not_implemented("usersInfo showPrivileges/showAuthenticationRestrictions/filter")
    wanted = _users_info_spec(doc["usersInfo"], db)
    # Authorization, as mongod's checkAuthForTypedCommand(UsersInfoCommand).
    if wanted == "db" and not conn.allows("userAdmin", db):
        raise CommandError(13, f"Not authorized to view users from the {db} database")
    if wanted == "all" and not conn.allows("userAdmin", roles.ANY_DATABASE):
        raise CommandError(13, "Not authorized to view users from all databases")
    if isinstance(wanted, list):
        for pair in wanted:
            if conn.user != pair and not conn.allows("userAdmin", pair[1]):
                raise CommandError(13, f"Not authorized to view users from the {db} database")
    _check_readable_users(conn)
    store = conn.member.store
    with store.lock:
        found = [
            u
            for u in store.state["users"]
            if wanted == "all"
            or (wanted == "db" and u["db"] == db)
            or (isinstance(wanted, list) and (u["user"], u["db"]) in wanted)
        ]
        users = [
            _public_user(u, show["showCredentials"], show["showCustomData"])
            for u in sorted(found, key=lambda u: (u["user"], u["db"]))
        ]
    return {"users": users}


def _check_readable_users(conn: Connection) -> None:
    if conn.member.state() in ("STARTUP", "REMOVED"):
        raise CommandError(13436, "node is not in primary or recovering state")


# ---- documents ---------------------------------------------------------------------------------


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
    if value is catalog.MISSING:
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
        value = catalog.value_at(doc, key)
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
    _write_concern_needed(conn.member, doc)
    documents = doc.get("documents")
    if not isinstance(documents, list):
        raise CommandError(2, "insert requires a documents array")
    ordered = doc.get("ordered", True)
    store = conn.member.store
    retryable = sessions.retryable_write(conn, "insert", doc)
    stmt_ids = sessions.statement_ids(doc, len(documents)) if retryable else []
    n, errors, retried = 0, [], []
    with store.lock:
        # Under the lock from the session check to the record of what ran: a retry arriving
        # while the first attempt runs waits, then finds its statements done.
        txn = sessions.begin(store, retryable) if retryable else None
        target, created = catalog.ensure_collection(store, db, coll)
        # the keys of _id_ and of each unique index, taken once for the whole batch
        keys = catalog.UniqueKeys(store, db, coll, target)
        for index, item in enumerate(documents):
            if txn is not None and txn.executed(stmt_ids[index]):
                retried.append(stmt_ids[index])  # done by an earlier attempt: not again
                continue
            if not isinstance(item, dict):
                raise CommandError(14, "insert documents must be objects")
            if "_id" not in item:
                item = {"_id": ObjectId(), **item}
            duplicate = keys.conflict(item)
            if duplicate is not None:
                errors.append({"index": index, "code": 11000, "errmsg": duplicate})
                if ordered:
                    break
                continue
            keys.add(item)
            target.append(item)
            if txn is not None:
                txn.record(stmt_ids[index])
            n += 1
    reply = {"n": n + len(retried)}
    if errors:
        reply["writeErrors"] = errors
    if retried:
        reply["retriedStmtIds"] = retried
    if n or retried or created:
        reply.update(_persist_and_replicate(conn, doc, changed=bool(n or created)))
    return reply


def _check_plain_query(doc: dict, name: str) -> None:
    if doc.get("sort"):
        raise not_implemented(f"{name} with sort")
    if doc.get("projection"):
        raise not_implemented(f"{name} with a projection")
    for key in ("collation", "min", "max", "tailable", "awaitData", "returnKey", "showRecordId",
                "oplogReplay"):
        if doc.get(key):
            raise not_implemented(f"{name} with {key}")


# Namespaces a mongod replica set member has and the stand-in does not: reading them fails
# (never an empty answer that would pass for "no entries"), so `mongodump --oplog` stops before
# it writes an archive that claims an oplog.
NO_OPLOG = {("local", "oplog.rs"), ("local", "oplog.$main"), ("config", "transactions")}


def _check_oplog(db: str, coll: str) -> None:
    if (db, coll) in NO_OPLOG:
        raise not_implemented(
            f"an oplog (asked for {db}.{coll}: it has no local.oplog.rs and no "
            "config.transactions), so point-in-time backups (mongodump --oplog), oplog replay "
            "and change streams are not available"
        )


def _hint_reverses(store: object, db: str, coll: str, hint: object, name: str) -> bool:
    """find/count `hint`: {$natural: 1} (insertion order, what the stand-in returns anyway) or
    {$natural: -1} (reversed). A hint naming an index that exists would change the order of the
    results to the index's: not implemented; one naming no index fails as in mongod (2)."""
    if hint is None or hint == {} or hint == "":
        return False
    if isinstance(hint, dict) and list(hint) == ["$natural"]:
        direction = hint["$natural"]
        if direction in (1, -1) and not isinstance(direction, bool):
            return direction == -1
        raise CommandError(2, "$natural hint may only accept 1 or -1")
    specs = catalog.index_specs(store, db, coll)
    if any(hint in (spec["name"], spec["key"]) for spec in specs):
        raise not_implemented(f"{name} with a hint of an index (only {{$natural: 1}} or -1)")
    raise CommandError(2, "error processing query: hint provided does not correspond to an "
                          "existing index")


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
    _check_oplog(db, coll)
    _check_system(db, coll)
    _check_readable(conn, doc)
    _check_plain_query(doc, name)
    store = conn.member.store
    with store.lock:
        reverse = _hint_reverses(store, db, coll, doc.get("hint"), name)
        docs = [d for d in _documents(conn, db, coll) if matches(d, doc.get(filter_key) or {})]
    if reverse:
        docs.reverse()
    return _slice(docs, doc.get("skip"), doc.get("limit"))


def collection_alive(conn: Connection, db: str, coll: str) -> Callable[[], bool]:
    """For a cursor over db.coll: whether the collection it was opened on still exists (a drop,
    or a drop and a new collection of that name, kill it; a replication snapshot does not)."""
    store = conn.member.store
    uuid_then = catalog.entry(store, db, coll).get("uuid")

    def alive() -> bool:
        with store.lock:
            return catalog.exists(store, db, coll) and (
                catalog.entry(store, db, coll).get("uuid") == uuid_then
            )

    return alive


@command("find")
def cmd_find(conn: Connection, db: str, doc: dict) -> dict:
    coll = _collection_name(doc, "find")
    batch_size = cursors.batch_size_of(doc.get("batchSize"), "find", cursors.DEFAULT_FIRST_BATCH)
    alive = collection_alive(conn, db, coll)
    docs = _matching(conn, db, doc, "find", "filter")
    single = bool(doc.get("singleBatch")) or (
        isinstance(doc.get("limit"), (int, float)) and doc["limit"] < 0
    )
    return cursors.first_reply(conn, doc, f"{db}.{coll}", docs, batch_size, alive, single)


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
    _check_oplog(db, coll)
    _check_system(db, coll)
    _check_readable(conn, doc)
    if doc.get("explain") or doc.get("collation"):
        raise not_implemented("aggregate with explain or collation")
    pipeline = doc.get("pipeline")
    if not isinstance(pipeline, list):
        raise CommandError(14, "'pipeline' option must be specified as an array")
    spec = doc.get("cursor") or {}
    batch_size = cursors.batch_size_of(
        spec.get("batchSize") if isinstance(spec, dict) else None,
        "aggregate.cursor",
        cursors.DEFAULT_FIRST_BATCH,
    )
    alive = collection_alive(conn, db, coll)
    store = conn.member.store
    with store.lock:
        reverse = _hint_reverses(store, db, coll, doc.get("hint"), "aggregate")
        docs = _documents(conn, db, coll)
    if reverse:
        docs.reverse()
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
    return cursors.first_reply(conn, doc, f"{db}.{coll}", docs, batch_size, alive)


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
            values = [catalog.value_at(d, operand[1:]) for d in docs]
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
    conn.require("listCollections", "listCollections", db)
    _check_readable(conn, doc)
    spec = doc.get("cursor") or {}
    batch_size = cursors.batch_size_of(
        spec.get("batchSize") if isinstance(spec, dict) else None, "listCollections.cursor", None
    )
    store = conn.member.store
    with store.lock:
        names = sorted(catalog.collections(store, db))
        infos = {name: catalog.entry(store, db, name) for name in names}
    entries = []
    for name in names:
        if doc.get("nameOnly"):
            entry = {"name": name, "type": "collection"}
        else:
            info = {"readOnly": False}
            if "uuid" in infos[name]:
                info["uuid"] = infos[name]["uuid"]
            entry = {
                "name": name,
                "type": "collection",
                "options": dict(infos[name].get("options", {})),
                "info": info,
                "idIndex": dict(catalog.ID_INDEX),
            }
        if matches(entry, doc.get("filter") or {}):
            entries.append(entry)
    return cursors.first_reply(
        conn, doc, f"{db}.$cmd.listCollections", entries, batch_size, lambda: True
    )
