"""Replica set configuration: validation and normalisation, and who is primary.

The stand-in holds no elections: the member with the highest priority (the first one listed
among equals) is the primary, arbiterOnly members are arbiters, the others secondaries.
"""

from __future__ import annotations

from bson import Int64, ObjectId

from .errors import CommandError, not_implemented

_TOP_FIELDS = {
    "_id",
    "version",
    "term",
    "protocolVersion",
    "members",
    "settings",
    "writeConcernMajorityJournalDefault",
    "configsvr",
}
_MEMBER_FIELDS = {
    "_id",
    "host",
    "arbiterOnly",
    "priority",
    "votes",
    "hidden",
    "tags",
    "secondaryDelaySecs",
    "buildIndexes",
}


def _invalid(msg: str) -> CommandError:
    return CommandError(93, msg)


def split_host(host: str) -> tuple[str, int]:
    """'host:port' -> (host, port); a missing port is 27017; '[v6]:port' is understood."""
    if host.startswith("["):
        addr, _, rest = host[1:].partition("]")
        return addr, int(rest[1:]) if rest.startswith(":") else 27017
    name, sep, port = host.rpartition(":")
    if not sep:
        return host, 27017
    return name, int(port)


def _number(value: object, what: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CommandError(14, f"{what} field value has the wrong type")
    return value


def normalize(config: dict, set_name: str) -> dict:
    """Validate a config given to replSetInitiate; return it with every default filled in."""
    if not isinstance(config, dict):
        raise CommandError(14, "replSetInitiate expects a document as its argument")
    for key in config:
        if key not in _TOP_FIELDS:
            raise _invalid(f"Unexpected field {key} in replica set configuration")
    if config.get("_id") != set_name:
        raise _invalid(
            f"Attempting to initiate a replica set with name {config.get('_id')}, "
            f"but command line reports {set_name}; rejecting"
        )
    if config.get("configsvr"):
        raise not_implemented("config server replica sets")
    members = config.get("members")
    if not isinstance(members, list) or not members:
        raise _invalid("Replica set configuration must contain at least one member (members)")
    if len(members) > 50:
        raise _invalid("Replica set configuration contains more than 50 members")
    out_members, ids, hosts = [], set(), set()
    for index, member in enumerate(members):
        if not isinstance(member, dict):
            raise CommandError(14, f"members.{index} must be a document")
        for key in member:
            if key not in _MEMBER_FIELDS:
                raise _invalid(
                    f"Unexpected field {key} in replica set member configuration for "
                    f"member: {member.get('host')}"
                )
        if "_id" not in member:
            raise _invalid(f"members.{index} is missing the required _id field")
        mid = _number(member["_id"], f"members.{index}._id")
        if mid != int(mid) or mid < 0:
            raise _invalid(f"members.{index}._id must be a non-negative integer")
        host = member.get("host")
        if not isinstance(host, str) or not host:
            raise _invalid(f"members.{index} is missing the required host field")
        try:
            name, port = split_host(host)
        except ValueError:
            raise _invalid(f"members.{index}.host {host!r} is not a valid host:port") from None
        if not name or not 0 < port < 65536:
            raise _invalid(f"members.{index}.host {host!r} is not a valid host:port")
        if mid in ids:
            raise _invalid(
                "Found two member configurations with same _id field, "
                f"members.{index}._id == {int(mid)}"
            )
        if host in hosts:
            raise _invalid(
                "Found two member configurations with same host field, "
                f"members.{index}.host == {host}"
            )
        ids.add(mid)
        hosts.add(host)
        arbiter = bool(member.get("arbiterOnly", False))
        priority = _number(member.get("priority", 0 if arbiter else 1), f"members.{index}.priority")
        votes = _number(member.get("votes", 1), f"members.{index}.votes")
        hidden = bool(member.get("hidden", False))
        if not 0 <= priority <= 1000:
            raise _invalid(f"members.{index}.priority must be between 0 and 1000")
        if votes not in (0, 1):
            raise _invalid(f"members.{index}.votes must be 0 or 1")
        if arbiter and priority != 0:
            raise _invalid(f"priority must be 0 when arbiterOnly=true (members.{index})")
        if hidden and priority != 0:
            raise _invalid(f"priority must be 0 when hidden=true (members.{index})")
        if votes == 0 and priority != 0:
            raise _invalid(f"priority must be 0 when non-voting (votes:0) (members.{index})")
        if member.get("secondaryDelaySecs", 0):
            raise not_implemented("delayed members (secondaryDelaySecs)")
        out_members.append(
            {
                "_id": int(mid),
                "host": host,
                "arbiterOnly": arbiter,
                "buildIndexes": bool(member.get("buildIndexes", True)),
                "hidden": hidden,
                "priority": priority,
                "tags": dict(member.get("tags", {})),
                "secondaryDelaySecs": Int64(0),
                "votes": int(votes),
            }
        )
    if not any(m["priority"] > 0 for m in out_members):
        raise _invalid("Replica set configuration must contain at least one electable member")
    settings = dict(config.get("settings") or {})
    settings.setdefault("chainingAllowed", True)
    settings.setdefault("heartbeatIntervalMillis", 2000)
    settings.setdefault("heartbeatTimeoutSecs", 10)
    settings.setdefault("electionTimeoutMillis", 10000)
    settings.setdefault("catchUpTimeoutMillis", -1)
    settings.setdefault("getLastErrorModes", {})
    settings.setdefault("getLastErrorDefaults", {"w": 1, "wtimeout": 0})
    settings.setdefault("replicaSetId", ObjectId())
    return {
        "_id": set_name,
        "version": int(config.get("version", 1)),
        "term": 1,
        "protocolVersion": Int64(1),
        "writeConcernMajorityJournalDefault": True,
        "members": out_members,
        "settings": settings,
    }


def primary_member(config: dict) -> dict | None:
    """The member the stand-in treats as primary: highest priority, first listed among equals."""
    best = None
    for member in config["members"]:
        if member["arbiterOnly"] or member["priority"] <= 0:
            continue
        if best is None or member["priority"] > best["priority"]:
            best = member
    return best


def member_state(config: dict, host: str) -> str | None:
    """PRIMARY, SECONDARY or ARBITER for the member named host (None if not a member)."""
    for member in config["members"]:
        if member["host"] == host:
            if member["arbiterOnly"]:
                return "ARBITER"
            return "PRIMARY" if primary_member(config) is member else "SECONDARY"
    return None


def find_member(config: dict, host: str) -> dict | None:
    for member in config["members"]:
        if member["host"] == host:
            return member
    return None


def majority(config: dict) -> int:
    """Acknowledgements w:'majority' needs: a majority of voting members, at most the number of
    voting data-bearing members (what mongod calls writeMajorityCount)."""
    voting = [m for m in config["members"] if m["votes"]]
    data_bearing = [m for m in voting if not m["arbiterOnly"]]
    return min(len(voting) // 2 + 1, len(data_bearing))


STATE_CODES = {
    "STARTUP": 0,
    "PRIMARY": 1,
    "SECONDARY": 2,
    "ARBITER": 7,
    "(not reachable/healthy)": 8,
}
