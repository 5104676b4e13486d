"""MongoDB error codes the stand-in answers with (names and numbers as real mongod uses them)."""

from __future__ import annotations

CODE_NAMES = {
    1: "InternalError",
    2: "BadValue",
    9: "FailedToParse",
    11: "UserNotFound",
    13: "Unauthorized",
    14: "TypeMismatch",
    17: "ProtocolError",
    18: "AuthenticationFailed",
    23: "AlreadyInitialized",
    31: "RoleNotFound",
    40: "ConflictingUpdateOperators",
    43: "CursorNotFound",
    59: "CommandNotFound",
    64: "WriteConcernFailed",
    72: "InvalidOptions",
    73: "InvalidNamespace",
    74: "NodeNotFound",
    76: "NoReplicationEnabled",
    79: "UnknownReplWriteConcern",
    93: "InvalidReplicaSetConfig",
    94: "NotYetInitialized",
    103: "NewReplicaSetConfigurationIncompatible",
    238: "NotImplemented",
    334: "MechanismUnavailable",
    352: "UnsupportedOpQueryCommand",
    10107: "NotWritablePrimary",
    11000: "DuplicateKey",
    13435: "NotPrimaryNoSecondaryOk",
    13436: "NotPrimaryOrSecondary",
    15955: "Location15955",
    40323: "Location40323",
    40571: "Location40571",
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
