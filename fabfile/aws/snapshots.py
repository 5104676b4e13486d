"""EBS snapshots of the data host's volumes (the mission's "Mongo snapshots"), one per volume
and backup set, through boto3.

`inv backup` takes them right after the set on the host is complete, where the environment
has `backup_snapshots: true`: every EBS volume of the data instance except its root volume
(where the stores' Docker volumes live on a data volume; the root one holds the OS). Each is
tagged jafar-env, jafar-backup-id and jafar-device, so the set and its snapshots go together.
A snapshot is crash-consistent at the moment it is created (EBS copies it in the background:
`pending` until it is complete); MongoDB's journal, PostgreSQL's WAL and Redis' AOF make such
a copy recoverable, and the dumps of the same id are the consistent copy. The retention keeps
the snapshots of the backup ids that `backup_keep` keeps (the same daily, weekly and monthly
selection as the sets on the host), and deletes the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fabfile.aws.client import answered, client
from fabfile.aws.network import policy, tagged_instances
from fabfile.backup import retention
from fabfile.config import Environment
from fabfile.errors import StepFailed

TAG_ID = "jafar-backup-id"
TAG_ENV = "jafar-env"
TAG_DEVICE = "jafar-device"


@dataclass(frozen=True)
class Volume:
    instance: str
    device: str
    volume: str


@dataclass(frozen=True)
class Snapshot:
    id: str
    backup_id: str
    device: str
    volume: str
    state: str        # pending, completed, error

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "device": self.device, "state": self.state}


def data_volumes(env: Environment, ec2: Any) -> list[Volume]:
    """The data instance's EBS volumes but the root one; none (only a root volume) is
    StepFailed: there is nothing that holds the stores apart from the OS."""
    want = policy(env)
    data = [i for i in tagged_instances(env, ec2, want)
            if {t["Key"]: t["Value"] for t in i.get("Tags", [])}.get(want.role_tag) == "data"]
    if len(data) != 1:
        raise StepFailed(f"{len(data)} EC2 instances tagged {want.tag_text()} have "
                         f"{want.role_tag}=data; EBS snapshots need exactly one")
    instance = data[0]
    found = [Volume(instance["InstanceId"], m["DeviceName"], m["Ebs"]["VolumeId"])
             for m in instance.get("BlockDeviceMappings", [])
             if "Ebs" in m and m["DeviceName"] != instance.get("RootDeviceName")]
    if not found:
        raise StepFailed(f"the data instance {instance['InstanceId']} has no EBS volume besides "
                         "its root one: attach one for the stores (README, Backups) or set "
                         "backup_snapshots: false")
    return sorted(found, key=lambda v: v.device)


def take(env: Environment, backup_id: str) -> list[Snapshot]:
    """One snapshot per data volume, tagged with the backup id."""
    ec2 = client(env, "ec2")
    taken = []
    for v in data_volumes(env, ec2):
        name = f"jafar-{env.name}-{backup_id}{v.device.replace('/', '-')}"
        tags = [{"Key": TAG_ENV, "Value": env.name}, {"Key": TAG_ID, "Value": backup_id},
                {"Key": TAG_DEVICE, "Value": v.device}, {"Key": "Name", "Value": name}]
        with answered(env, f"creating the EBS snapshot of {v.volume} ({v.device})"):
            answer = ec2.create_snapshot(
                VolumeId=v.volume, Description=f"jafar {env.name} backup {backup_id} {v.device}",
                TagSpecifications=[{"ResourceType": "snapshot", "Tags": tags}])
        taken.append(Snapshot(answer["SnapshotId"], backup_id, v.device, v.volume,
                              answer.get("State", "pending")))
    return taken


def existing(env: Environment, ec2: Any | None = None) -> list[Snapshot]:
    """The environment's backup snapshots, newest backup first."""
    ec2 = ec2 or client(env, "ec2")
    filters = [{"Name": f"tag:{TAG_ENV}", "Values": [env.name]},
               {"Name": "tag-key", "Values": [TAG_ID]}]
    with answered(env, "listing the environment's EBS snapshots"):
        pages = ec2.get_paginator("describe_snapshots").paginate(OwnerIds=["self"],
                                                                 Filters=filters)
        found = []
        for page in pages:
            for s in page["Snapshots"]:
                tags = {t["Key"]: t["Value"] for t in s.get("Tags", [])}
                found.append(Snapshot(s["SnapshotId"], tags[TAG_ID], tags.get(TAG_DEVICE, "-"),
                                      s.get("VolumeId", "-"), s.get("State", "-")))
    return sorted(found, key=lambda s: (s.backup_id, s.device), reverse=True)


def by_backup(found: list[Snapshot]) -> dict[str, list[Snapshot]]:
    grouped: dict[str, list[Snapshot]] = {}
    for s in found:
        grouped.setdefault(s.backup_id, []).append(s)
    return grouped


def prune(env: Environment) -> list[Snapshot]:
    """Delete the snapshots of the backup ids backup_keep does not keep; return them."""
    ec2 = client(env, "ec2")
    found = existing(env, ec2)
    kept = retention.kept(env, (s.backup_id for s in found))
    gone = [s for s in found if s.backup_id not in kept]
    for s in gone:
        with answered(env, f"deleting the EBS snapshot {s.id} of backup {s.backup_id}"):
            ec2.delete_snapshot(SnapshotId=s.id)
    return gone
