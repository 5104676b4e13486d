"""EBS snapshots of the data instance's volumes against moto (the AWS stand-in) with real boto3
calls: one per data volume (never the root one), tagged with the backup id; the retention
keeps the backup ids backup_keep keeps and deletes the other snapshots; what cannot be
snapshotted is said."""

from __future__ import annotations

import pytest

from fabfile.aws import snapshots
from fabfile.config import load_environment
from fabfile.errors import BadInput, StepFailed
from tests.aws.test_alarms import IMAGE
from tests.aws.test_network import aws_client, hosts_block
from tests.conftest import env_yaml


def environment(environments, endpoint: str, tmp_path, keep: str = ""):
    environments(env_yaml(hosts_block(),
                          f"aws: {{region: eu-west-1, endpoint_url: '{endpoint}'}}\n"
                          f"backup_snapshots: true\n{keep}"
                          f"env_file: {tmp_path / 'no-env-file'}\n"))
    return load_environment("test")


def data_instance(endpoint: str, volumes: tuple[str, ...] = ("/dev/sdf",),
                  role: str = "data") -> str:
    return aws_client(endpoint, "ec2").run_instances(
        ImageId=IMAGE, MinCount=1, MaxCount=1, InstanceType="t3.small",
        BlockDeviceMappings=[{"DeviceName": d, "Ebs": {"VolumeSize": 10, "Encrypted": True}}
                             for d in volumes],
        TagSpecifications=[{"ResourceType": "instance", "Tags": [
            {"Key": "jafar-env", "Value": "test"}, {"Key": "jafar-role", "Value": role}]}],
    )["Instances"][0]["InstanceId"]


def test_each_data_volume_but_the_root_one_is_snapshotted_with_the_backup_id(
        environments, aws, tmp_path):
    env = environment(environments, aws, tmp_path)
    instance = data_instance(aws, ("/dev/sdf", "/dev/sdg"))
    data_instance(aws, ("/dev/sdh",), role="core")  # not the data host's
    taken = snapshots.take(env, "20261204T023000Z")
    assert [s.device for s in taken] == ["/dev/sdf", "/dev/sdg"]
    ec2 = aws_client(aws, "ec2")
    attached = {m["DeviceName"]: m["Ebs"]["VolumeId"] for m in ec2.describe_instances(
        InstanceIds=[instance])["Reservations"][0]["Instances"][0]["BlockDeviceMappings"]}
    assert [s.volume for s in taken] == [attached["/dev/sdf"], attached["/dev/sdg"]]
    found = ec2.describe_snapshots(SnapshotIds=[s.id for s in taken])["Snapshots"]
    tags = {s["SnapshotId"]: {t["Key"]: t["Value"] for t in s["Tags"]} for s in found}
    assert tags[taken[0].id] == {"jafar-env": "test", "jafar-backup-id": "20261204T023000Z",
                                 "jafar-device": "/dev/sdf",
                                 "Name": "jafar-test-20261204T023000Z-dev-sdf"}
    listed = snapshots.existing(env)
    assert {(s.backup_id, s.device) for s in listed} == {
        ("20261204T023000Z", "/dev/sdf"), ("20261204T023000Z", "/dev/sdg")}


def test_the_retention_keeps_what_backup_keep_keeps(environments, aws, tmp_path):
    env = environment(environments, aws, tmp_path,
                      keep="backup_keep: {daily: 2, weekly: 0, monthly: 0}\n")
    data_instance(aws)
    for backup_id in ("20261201T023000Z", "20261202T023000Z", "20261203T023000Z",
                      "20261203T120000Z"):
        snapshots.take(env, backup_id)
    gone = snapshots.prune(env)
    # kept: the newest of each of the last 2 days that have one (3 and 2 December)
    assert sorted(s.backup_id for s in gone) == ["20261201T023000Z", "20261203T023000Z"]
    assert [s.backup_id for s in snapshots.existing(env)] == ["20261203T120000Z",
                                                              "20261202T023000Z"]
    assert snapshots.prune(env) == []  # a second run deletes nothing
    grouped = snapshots.by_backup(snapshots.existing(env))  # what backup.list shows
    assert sorted(grouped) == ["20261202T023000Z", "20261203T120000Z"]
    assert [x.as_dict()["device"] for x in grouped["20261202T023000Z"]] == ["/dev/sdf"]


def test_without_a_data_volume_or_a_data_instance_nothing_is_snapshotted(
        environments, aws, tmp_path):
    env = environment(environments, aws, tmp_path)
    with pytest.raises(StepFailed, match="no EC2 instance in eu-west-1 has the tags"):
        snapshots.take(env, "20261204T023000Z")
    data_instance(aws, ())
    with pytest.raises(StepFailed, match="has no EBS volume besides its root one"):
        snapshots.take(env, "20261204T023000Z")
    assert snapshots.existing(env) == []


def test_snapshots_need_an_aws_block(environments, tmp_path):
    environments(env_yaml(hosts_block(), "backup_snapshots: true\n"))
    with pytest.raises(BadInput, match="backup_snapshots: needs an aws: block"):
        load_environment("test")


def test_the_backup_task_says_what_it_snapshotted_and_deleted(environments, aws, tmp_path):
    from fabfile.tasks.backup import snapshot

    env = environment(environments, aws, tmp_path,
                      keep="backup_keep: {daily: 1, weekly: 0, monthly: 0}\n")
    with pytest.raises(StepFailed) as failed:
        snapshot(env, "20261201T023000Z")
    assert str(failed.value).startswith("backup 20261201T023000Z is complete on the data host, "
                                        "but its EBS snapshots were not taken: no EC2 instance")
    data_instance(aws)
    snapshots.take(env, "20261201T023000Z")
    said = snapshot(env, "20261202T023000Z")
    assert said.startswith("EBS snapshots snap-") and said.split("; ")[0].endswith("(/dev/sdf)")
    assert said.endswith("; snapshot retention deleted 1 of backups 20261201T023000Z")
