"""monitor.alarms against moto (the AWS stand-in) with real boto3 calls: the alarms each
instance of the environment gets, put once (a second plan has nothing to do), corrected when
someone changed one, deleted when their instance is gone; the task refuses what it cannot do
before anything is asked, and changes nothing before it holds the hosts' lock."""

from __future__ import annotations

import pytest

from fabfile.aws import alarms
from fabfile.config import load_environment
from fabfile.errors import BadInput
from tests.aws.test_network import aws_client, cli_env, hosts_block
from tests.conftest import env_yaml

TOPIC = "arn:aws:sns:eu-west-1:123456789012:jafar-test-alarms"
IMAGE = "ami-12c6146b"  # moto's example AMI


def write_env(environments, endpoint: str, tmp_path, topic: str | None = TOPIC,
              port: int = 2222):
    topic_text = f", alarm_topic: '{topic}'" if topic else ""
    return environments(env_yaml(
        hosts_block(port),
        f"aws: {{region: eu-west-1, endpoint_url: '{endpoint}'{topic_text}}}\n"
        f"env_file: {tmp_path / 'no-env-file'}\n"))


def instance(endpoint: str, name: str, kind: str, env: str = "test") -> str:
    return aws_client(endpoint, "ec2").run_instances(
        ImageId=IMAGE, MinCount=1, MaxCount=1, InstanceType=kind,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [
            {"Key": "jafar-env", "Value": env}, {"Key": "Name", "Value": name}]}],
    )["Instances"][0]["InstanceId"]


def names(endpoint: str) -> list[str]:
    cw = aws_client(endpoint, "cloudwatch")
    return sorted(a["AlarmName"] for a in cw.describe_alarms()["MetricAlarms"])


def test_each_instance_gets_its_alarms_once(environments, aws, tmp_path):
    burst = instance(aws, "core-1", "t3.micro")
    fixed = instance(aws, "data-1", "m5.large")
    instance(aws, "theirs", "t3.micro", env="other")  # another environment's: left out
    write_env(environments, aws, tmp_path)
    env = load_environment("test")
    wanted = alarms.wanted(env)
    assert [a.name for a in wanted] == sorted([
        f"jafar-test-{burst}-status-check", f"jafar-test-{burst}-system-check",
        f"jafar-test-{burst}-cpu-credits",
        f"jafar-test-{fixed}-status-check", f"jafar-test-{fixed}-system-check"])
    first = alarms.plan(wanted, alarms.existing(env), TOPIC)
    assert (len(first.put), first.delete, first.kept) == (5, (), 0)
    alarms.apply(env, first, TOPIC)
    assert names(aws) == sorted(a.name for a in wanted)

    stored = {a["AlarmName"]: a for a in
              aws_client(aws, "cloudwatch").describe_alarms()["MetricAlarms"]}
    status = stored[f"jafar-test-{fixed}-status-check"]
    assert (status["MetricName"], status["Namespace"], status["Threshold"],
            status["EvaluationPeriods"], status["TreatMissingData"]) == (
        "StatusCheckFailed", "AWS/EC2", 1.0, 2, "breaching")
    assert status["Dimensions"] == [{"Name": "InstanceId", "Value": fixed}]
    assert status["AlarmActions"] == status["OKActions"] == [TOPIC]
    assert "data-1" in status["AlarmDescription"]

    again = alarms.plan(alarms.wanted(env), alarms.existing(env), TOPIC)
    assert (again.put, again.delete, again.kept) == ((), (), 5)


def test_a_changed_alarm_is_put_back_and_a_gone_instance_loses_its_own(
        environments, aws, tmp_path):
    keep = instance(aws, "core-1", "m5.large")
    gone = instance(aws, "core-2", "m5.large")
    write_env(environments, aws, tmp_path)
    env = load_environment("test")
    alarms.apply(env, alarms.plan(alarms.wanted(env), alarms.existing(env), TOPIC), TOPIC)
    cw = aws_client(aws, "cloudwatch")
    # someone raised a threshold by hand; an instance was terminated
    changed = alarms.wanted_for(env, {"InstanceId": keep, "InstanceType": "m5.large"})[0]
    cw.put_metric_alarm(**{**changed.put_args(TOPIC), "EvaluationPeriods": 30})
    aws_client(aws, "ec2").terminate_instances(InstanceIds=[gone])
    shown = alarms.plan(alarms.wanted(env), alarms.existing(env), TOPIC)
    assert [a.name for a in shown.put] == [changed.name]
    assert shown.delete == (f"jafar-test-{gone}-status-check", f"jafar-test-{gone}-system-check")
    assert shown.lines() == [
        f"put {changed.name} (StatusCheckFailed {keep})",
        f"delete jafar-test-{gone}-status-check (its instance is gone)",
        f"delete jafar-test-{gone}-system-check (its instance is gone)"]
    alarms.apply(env, shown, TOPIC)
    assert names(aws) == [f"jafar-test-{keep}-status-check", f"jafar-test-{keep}-system-check"]
    assert alarms.plan(alarms.wanted(env), alarms.existing(env), TOPIC).put == ()


def test_no_topic_is_bad_input_before_aws_is_asked(environments, aws, tmp_path):
    write_env(environments, aws, tmp_path, topic=None)
    with pytest.raises(BadInput, match="test has no aws.alarm_topic; add the SNS topic's ARN"):
        alarms.topic(load_environment("test"))


@pytest.mark.parametrize("topic, message", [
    (None, "test has no aws.alarm_topic"),
    ("arn:aws:sqs:eu-west-1:123456789012:q", "aws.alarm_topic: invalid value"),
])
def test_the_task_refuses_in_one_line_and_contacts_nothing(
        environments, aws, tmp_path, listener, topic, message):
    path = write_env(environments, aws, tmp_path, topic=topic, port=listener.port)
    instance(aws, "core-1", "t3.micro")
    result = run_aws_monitor("monitor.alarms", "--host", "test", env=cli_env(path))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert result.stdout == "" and listener.accepted == 0
    assert names(aws) == []


def test_the_task_shows_its_plan_and_a_dry_run_changes_nothing(
        environments, aws, tmp_path, listener):
    iid = instance(aws, "data-1", "m5.large")
    path = write_env(environments, aws, tmp_path, port=listener.port)
    result = run_aws_monitor("monitor.alarms", "--host", "test", "--dry-run", env=cli_env(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"monitor.alarms on test (eu-west-1), to {TOPIC}:",
        f"  put jafar-test-{iid}-status-check (StatusCheckFailed {iid})",
        f"  put jafar-test-{iid}-system-check (StatusCheckFailed_System {iid})",
        "dry run: nothing changed"]
    assert names(aws) == [] and listener.accepted == 0


def test_the_task_says_nothing_to_do_when_all_are_as_wanted(environments, aws, tmp_path):
    instance(aws, "data-1", "m5.large")
    path = write_env(environments, aws, tmp_path)
    env = load_environment("test")
    alarms.apply(env, alarms.plan(alarms.wanted(env), alarms.existing(env), TOPIC), TOPIC)
    result = run_aws_monitor("monitor.alarms", "--host", "test", "--dry-run", env=cli_env(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (f"nothing to do: the 2 alarm(s) of test are as wanted, "
                                     f"to {TOPIC}")


def run_aws_monitor(*args: str, env: dict[str, str]):
    """`inv monitor.*` with the monitor namespace (as tests/aws/test_network runs aws.*)."""
    import subprocess
    import sys

    from tests.conftest import ROOT, clean_environment

    program = ("import sys; from invoke import Collection, Program; "
               "from fabfile.tasks import monitor; "
               "Program(namespace=Collection(monitor.namespace), name='inv', binary='inv')"
               ".run(['inv', *sys.argv[1:]])")
    return subprocess.run([sys.executable, "-c", program, *args], cwd=ROOT,
                          env=clean_environment(env), capture_output=True, text=True,
                          timeout=120)

