"""monitor.alarms: the CloudWatch alarms for what Prometheus cannot see from inside a host that
is down or starved (EC2's status checks, a burstable instance out of CPU credits), per instance
of the environment, to the SNS topic `aws.alarm_topic`.

Each alarm is data (`Alarm`); the plan compares them with what CloudWatch has under the
environment's prefix (`jafar-<env>-`): missing or different ones are put, those of instances
that are gone are deleted, the rest is left alone (a second run has nothing to do)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fabfile.aws.client import answered, client, settings
from fabfile.aws.network import policy, tagged_instances
from fabfile.config import Environment
from fabfile.errors import BadInput

#: the fields of describe_alarms that the suite sets, compared to decide "as wanted"
COMPARED = ("Namespace", "MetricName", "Statistic", "ComparisonOperator", "Threshold",
            "EvaluationPeriods", "Period", "TreatMissingData", "AlarmDescription",
            "ActionsEnabled")


@dataclass(frozen=True)
class Alarm:
    name: str
    instance: str        # InstanceId
    metric: str          # in AWS/EC2
    statistic: str
    comparison: str
    threshold: float
    periods: int
    period: int          # seconds
    missing: str         # TreatMissingData
    description: str

    def put_args(self, topic: str) -> dict[str, Any]:
        """put_metric_alarm's arguments: alarm and recovery both notify the topic."""
        return {
            "AlarmName": self.name, "AlarmDescription": self.description,
            "Namespace": "AWS/EC2", "MetricName": self.metric, "Statistic": self.statistic,
            "Dimensions": [{"Name": "InstanceId", "Value": self.instance}],
            "ComparisonOperator": self.comparison, "Threshold": self.threshold,
            "EvaluationPeriods": self.periods, "Period": self.period,
            "TreatMissingData": self.missing, "ActionsEnabled": True,
            "AlarmActions": [topic], "OKActions": [topic],
        }

    def matches(self, described: dict[str, Any], topic: str) -> bool:
        want = self.put_args(topic)
        return (all(described.get(k) == want[k] for k in COMPARED)
                and described.get("Dimensions") == want["Dimensions"]
                and described.get("AlarmActions") == [topic]
                and described.get("OKActions") == [topic])


def prefix(env: Environment) -> str:
    return f"jafar-{env.name}-"


def topic(env: Environment) -> str:
    """The SNS topic; refused before AWS is asked when the environment names none."""
    arn = settings(env).alarm_topic
    if not arn:
        raise BadInput(f"{env.name} has no aws.alarm_topic; add the SNS topic's ARN to its aws: "
                       "block in config/environments.yml (arn:aws:sns:REGION:ACCOUNT:NAME)")
    return arn


def wanted_for(env: Environment, instance: dict[str, Any]) -> list[Alarm]:
    """The alarms of one instance: its status checks (a missing datapoint counts as failing:
    a host that reports nothing is not assumed fine) and, on a burstable type (t2, t3, t4g),
    its CPU credits running out."""
    iid = instance["InstanceId"]
    tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
    label = tags.get("Name") or iid
    base = f"{prefix(env)}{iid}"
    alarms = [
        Alarm(f"{base}-status-check", iid, "StatusCheckFailed", "Maximum",
              "GreaterThanOrEqualToThreshold", 1.0, 2, 60, "breaching",
              f"{env.name} {label}: an EC2 status check failed for 2 minutes, or the instance "
              "reports nothing (jafar monitor.alarms)"),
        Alarm(f"{base}-system-check", iid, "StatusCheckFailed_System", "Maximum",
              "GreaterThanOrEqualToThreshold", 1.0, 2, 60, "breaching",
              f"{env.name} {label}: AWS's system status check failed (the hardware or network "
              "under it): stop and start it elsewhere (jafar monitor.alarms)"),
    ]
    if str(instance.get("InstanceType", "")).startswith("t"):
        alarms.append(Alarm(
            f"{base}-cpu-credits", iid, "CPUCreditBalance", "Minimum", "LessThanThreshold",
            20.0, 3, 300, "notBreaching",
            f"{env.name} {label}: fewer than 20 CPU credits for 15 minutes; it is throttled to "
            "its baseline soon (jafar monitor.alarms)"))
    return alarms


def wanted(env: Environment) -> list[Alarm]:
    raw = tagged_instances(env, client(env, "ec2"), policy(env))
    return sorted((a for i in raw for a in wanted_for(env, i)), key=lambda a: a.name)


def existing(env: Environment) -> dict[str, dict[str, Any]]:
    """CloudWatch's metric alarms under the environment's prefix, by name."""
    cw = client(env, "cloudwatch")
    with answered(env, f"reading the CloudWatch alarms {prefix(env)}*"):
        return {a["AlarmName"]: a
                for page in cw.get_paginator("describe_alarms").paginate(
                    AlarmNamePrefix=prefix(env), AlarmTypes=["MetricAlarm"])
                for a in page["MetricAlarms"]}


@dataclass(frozen=True)
class Plan:
    put: tuple[Alarm, ...]       # missing or different
    delete: tuple[str, ...]      # under the prefix, of no instance of the environment now
    kept: int                    # already as wanted

    def lines(self) -> list[str]:
        return ([f"put {a.name} ({a.metric} {a.instance})" for a in self.put]
                + [f"delete {name} (its instance is gone)" for name in self.delete])


def plan(alarms: list[Alarm], found: dict[str, dict[str, Any]], arn: str) -> Plan:
    names = {a.name for a in alarms}
    put = tuple(a for a in alarms if a.name not in found or not a.matches(found[a.name], arn))
    return Plan(put, tuple(sorted(n for n in found if n not in names)), len(alarms) - len(put))


def apply(env: Environment, shown: Plan, arn: str) -> None:
    cw = client(env, "cloudwatch")
    for alarm in shown.put:
        with answered(env, f"putting the CloudWatch alarm {alarm.name}"):
            cw.put_metric_alarm(**alarm.put_args(arn))
    if shown.delete:
        with answered(env, f"deleting {len(shown.delete)} CloudWatch alarm(s)"):
            for at in range(0, len(shown.delete), 100):  # delete_alarms takes 100 at most
                cw.delete_alarms(AlarmNames=list(shown.delete[at:at + 100]))
