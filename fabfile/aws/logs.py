"""CloudWatch Logs: the log groups exist, with their retention and KMS key, before a stack that
logs to them starts (the awslogs driver does not create groups: a container would fail to
start); and the signed audit trail goes to a group of its own, one stream per host.

Groups: `awslogs_group` (the containers) and `awslogs_group/audit` (the audit trail), each with
`awslogs_retention_days` (default 30) and, when set, `awslogs_kms_key`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fabfile.aws.client import answered, client
from fabfile.config import Environment


def groups(env: Environment) -> list[str]:
    assert env.awslogs_group is not None  # log_driver awslogs requires it
    return [env.awslogs_group, audit_group(env)]


def audit_group(env: Environment) -> str:
    return f"{env.awslogs_group}/audit"


def prepare(env: Environment, say: Callable[[str], None]) -> None:
    """Before a stack starts: its log groups, when it logs to CloudWatch."""
    if env.log_driver == "awslogs":
        for change in ensure_groups(env):
            say(change)


def ensure_groups(env: Environment) -> list[str]:
    """Create what is missing, set what differs; one line per change ([] when all is as
    wanted)."""
    api = client(env, "logs")
    changes = []
    for name in groups(env):
        with answered(env, f"reading CloudWatch log group {name}"):
            found = [g for g in api.describe_log_groups(logGroupNamePrefix=name)["logGroups"]
                     if g["logGroupName"] == name]
        if not found:
            with answered(env, f"creating CloudWatch log group {name}"):
                api.create_log_group(logGroupName=name, **kms(env))
            changes.append(f"log group {name} created")
            current: dict[str, Any] = {}
        else:
            current = found[0]
            if env.awslogs_kms_key and current.get("kmsKeyId") != env.awslogs_kms_key:
                with answered(env, f"setting the KMS key of log group {name}"):
                    api.associate_kms_key(logGroupName=name, kmsKeyId=env.awslogs_kms_key)
                changes.append(f"log group {name}: KMS key set")
        if current.get("retentionInDays") != env.awslogs_retention_days:
            with answered(env, f"setting the retention of log group {name}"):
                api.put_retention_policy(logGroupName=name,
                                         retentionInDays=env.awslogs_retention_days)
            changes.append(f"log group {name}: retention {env.awslogs_retention_days} days")
    return changes


def kms(env: Environment) -> dict[str, str]:
    return {"kmsKeyId": env.awslogs_kms_key} if env.awslogs_kms_key else {}


def ship_audit(env: Environment, host: str, line: str) -> None:
    """One signed audit record into the audit group's stream of `host` (created on first use)."""
    api = client(env, "logs")
    group = audit_group(env)
    with answered(env, f"reading the streams of log group {group}"):
        streams = api.describe_log_streams(logGroupName=group, logStreamNamePrefix=host)
    if not any(s["logStreamName"] == host for s in streams["logStreams"]):
        with answered(env, f"creating log stream {host} in {group}"):
            api.create_log_stream(logGroupName=group, logStreamName=host)
    with answered(env, f"sending the audit record of {host} to {group}"):
        api.put_log_events(logGroupName=group, logStreamName=host,
                           logEvents=[{"timestamp": int(time.time() * 1000), "message": line}])
