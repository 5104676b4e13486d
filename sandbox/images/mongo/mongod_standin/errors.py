"""MongoDB error codes the stand-in answers with (names and numbers as real mongod uses them)."""

from __future__ import annotations

import datetime

from bson import Int64, ObjectId
from bson.decimal128 import Decimal128
from bson.regex import Regex
from bson.timestamp import Timestamp

CODE_NAMES = {
    1: "InternalError",
    2: "BadValue",
    9: "FailedToParse",
    11: "UserNotFound",
    13: "Unauthorized",
    14: "TypeMismatch",
    17: "ProtocolError",
    18: "AuthenticationFailed",
    20: "IllegalOperation",
    23: "AlreadyInitialized",
    26: "NamespaceNotFound",
    31: "RoleNotFound",
    40: "ConflictingUpdateOperators",
    43: "CursorNotFound",
    48: "NamespaceExists",
    59: "CommandNotFound",
    64: "WriteConcernFailed",
    67: "CannotCreateIndex",
    72: "InvalidOptions",
    73: "InvalidNamespace",
    74: "NodeNotFound",
    76: "NoReplicationEnabled",
    79: "UnknownReplWriteConcern",
    85: "IndexOptionsConflict",
    86: "IndexKeySpecsConflict",
    93: "InvalidReplicaSetConfig",
    94: "NotYetInitialized",
    103: "NewReplicaSetConfigurationIncompatible",
    141: "SSLHandshakeFailed",
    175: "QueryPlanKilled",
    197: "InvalidIndexSpecificationOption",
    225: "TransactionTooOld",
    238: "NotImplemented",
    334: "MechanismUnavailable",
    352: "UnsupportedOpQueryCommand",
    10107: "NotWritablePrimary",
    11000: "DuplicateKey",
    13435: "NotPrimaryNoSecondaryOk",
    13436: "NotPrimaryOrSecondary",
    15955: "Location15955",
    40323: "Location40323",
    40414: "Location40414",
    40415: "Location40415",
    40571: "Location40571",
    50687: "Location50687",
    50692: "Location50692",
    50768: "NotARetryableWriteCommand",
    51003: "Location51003",
}


class CommandError(Exception):
    """A command failed: becomes {ok: 0, errmsg, code, codeName}."""

    def __init__(self, code: int, errmsg: str) -> None:
        super().__init__(errmsg)
        self.code = code
        self.errmsg = errmsg

    def reply(self) -> dict:
        return error_reply(self.code, self.errmsg)


def error_reply(code: int, errmsg: str) -> dict:
    return {
        "ok": 0.0,
        "errmsg": errmsg,
        "code": code,
        "codeName": CODE_NAMES.get(code, f"Location{code}"),
    }


def not_implemented(what: str) -> CommandError:
    """A feature of an implemented command that the stand-in does not have."""
    return CommandError(238, f"the mongod stand-in does not implement {what}")


def bson_type_name(value: object) -> str:
    """The BSON type name of a value, as mongod's parse errors say it ('bool', 'long'...)."""
    for kind, name in (
        (bool, "bool"),
        (Int64, "long"),
        (int, "int"),
        (float, "double"),
        (str, "string"),
        (dict, "object"),
        (list, "array"),
        (bytes, "binData"),
        (ObjectId, "objectId"),
        (datetime.datetime, "date"),
        (Regex, "regex"),
        (Timestamp, "timestamp"),
        (Decimal128, "decimal"),
    ):
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__


def wrong_type(path: str, value: object, expected: str) -> CommandError:
    """mongod's TypeMismatch (14) for a command field of the wrong BSON type."""
    return CommandError(
        14,
        f"BSON field '{path}' is the wrong type '{bson_type_name(value)}', "
        f"expected type '{expected}'",
    )
