"""CloudWatch Logs against moto (the AWS stand-in): the groups exist with their retention and
KMS key before a stack logs to them; the audit trail lands in its own group, a stream per
host."""

from __future__ import annotations

import pytest

from fabfile.aws import logs
from fabfile.config import load_environment
from fabfile.errors import BadInput
from tests.conftest import env_yaml
from tests.support import moto_server
from tests.unit.test_config import ONE_HOST

KEY = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def environment(environments, endpoint: str, extra: str = ""):
    environments(env_yaml(ONE_HOST, f"aws: {{region: eu-west-1, endpoint_url: '{endpoint}'}}\n"
                                    "log_driver: awslogs\nawslogs_group: /jafar/test\n" + extra))
    return load_environment("test")


def test_groups_are_created_with_retention_then_left_alone(environments, aws):
    env = environment(environments, aws)
    assert logs.ensure_groups(env) == [
        "log group /jafar/test created", "log group /jafar/test: retention 30 days",
        "log group /jafar/test/audit created", "log group /jafar/test/audit: retention 30 days"]
    assert logs.ensure_groups(env) == []
    found = {g["logGroupName"]: g for g in moto_server.client(aws, "logs").describe_log_groups(
        logGroupNamePrefix="/jafar/test")["logGroups"]}
    assert {n: g["retentionInDays"] for n, g in found.items()} == {
        "/jafar/test": 30, "/jafar/test/audit": 30}
    longer = environment(environments, aws, "awslogs_retention_days: 365\n")
    assert logs.ensure_groups(longer) == ["log group /jafar/test: retention 365 days",
                                          "log group /jafar/test/audit: retention 365 days"]
    assert logs.ensure_groups(longer) == []


def test_a_kms_key_is_given_to_new_groups(environments, aws):
    """(An existing group gets it with associate_kms_key, which moto does not implement: it
    answers an error, never a false success, so that path is not shown here.)"""
    env = environment(environments, aws, f"awslogs_kms_key: '{KEY}'\n")
    logs.ensure_groups(env)
    found = moto_server.client(aws, "logs").describe_log_groups(
        logGroupNamePrefix="/jafar/test")["logGroups"]
    assert {g["logGroupName"]: g.get("kmsKeyId") for g in found} == {
        "/jafar/test": KEY, "/jafar/test/audit": KEY}
    assert logs.ensure_groups(env) == []


def test_an_audit_record_goes_to_the_hosts_stream(environments, aws):
    env = environment(environments, aws)
    logs.ensure_groups(env)
    logs.ship_audit(env, "prod-core-1", '{"task":"deploy"}\tc2lnbmF0dXJl')
    logs.ship_audit(env, "prod-core-1", '{"task":"scale"}\tc2lnbmF0dXJl')
    events = moto_server.client(aws, "logs").get_log_events(
        logGroupName="/jafar/test/audit", logStreamName="prod-core-1")["events"]
    assert [e["message"] for e in events] == ['{"task":"deploy"}\tc2lnbmF0dXJl',
                                              '{"task":"scale"}\tc2lnbmF0dXJl']


@pytest.mark.parametrize("extra, message", [
    ("awslogs_retention_days: 31\n", "awslogs_retention_days: must be one of CloudWatch's"),
    ("awslogs_retention_days: true\n", "awslogs_retention_days: must be one of CloudWatch's"),
    ("awslogs_kms_key: mykey\n", "awslogs_kms_key: invalid value 'mykey'; a KMS key ARN"),
])
def test_bad_log_settings_are_refused(environments, aws, extra, message):
    with pytest.raises(BadInput, match=message):
        environment(environments, aws, extra)
