"""Hosts from EC2 tags (hosts_from), against moto (the AWS stand-in): the right instances with
their roles and addresses; a bad role tag or topology is what AWS answered (exit 1); a dry run
asks nothing of AWS."""

from __future__ import annotations

import pytest

from fabfile.aws import inventory
from fabfile.config import load_environment
from fabfile.errors import BadInput, StepFailed
from tests.conftest import complete_env, run_inv
from tests.support import moto_server


def config(endpoint: str, extra: str = "") -> str:
    return (f"environments:\n  test:\n    registry: 127.0.0.1:5000/jafar\n    tag: t1\n"
            f"    topology: split\n    gateway: {{server_names: [jafar.test]}}\n"
            f"    aws: {{region: eu-west-1, endpoint_url: '{endpoint}'}}\n"
            f"    hosts_from: {{tags: {{jafar-env: test}}, user: deploy, key: /k}}\n{extra}")


def launch(endpoint: str, *instances: tuple[str, str, str]) -> None:
    """(Name tag, role tag, jafar-env tag) per instance."""
    ec2 = moto_server.client(endpoint, "ec2")
    for name, role, stage in instances:
        tags = [{"Key": "Name", "Value": name}, {"Key": "jafar-env", "Value": stage}]
        if role:
            tags.append({"Key": "jafar-role", "Value": role})
        ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
                          TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])


def test_the_tagged_instances_become_the_hosts_with_their_roles(environments, aws):
    launch(aws, ("test-data-1", "data", "test"), ("test-core-1", "core", "test"),
           ("test-core-2", "core", "test"), ("prod-core-1", "core", "prod"))
    environments(config(aws))
    env = load_environment("test")
    assert env.hosts == ()
    env = inventory.resolve(env)
    assert [(h.name, h.roles) for h in env.hosts] == [
        ("test-core-1", ("core",)), ("test-core-2", ("core",)), ("test-data-1", ("data",))]
    assert all(h.ssh.address == h.private_address and h.ssh.address.startswith("10.")
               for h in env.hosts)
    assert env.data_host.name == "test-data-1" and env.hosts[0].ssh.user == "deploy"


@pytest.mark.parametrize("instances, message", [
    ([("test-data-1", "", "test")], "its tag jafar-role must be data, core or data,core"),
    ([("test-data-1", "web", "test")], "its tag jafar-role must be data, core or data,core"),
    ([("test-core-1", "core", "test")], "needs exactly one host with role data, found 0"),
    ([], "no host: EC2 has no the running EC2 instances tagged jafar-env=test"),
])
def test_what_ec2_answered_wrong_is_exit_1(environments, aws, instances, message):
    launch(aws, *instances)
    environments(config(aws))
    with pytest.raises(StepFailed, match=message):
        inventory.resolve(load_environment("test"))


def test_hosts_and_hosts_from_together_are_refused(environments, aws):
    environments(config(aws) + "    hosts: [{name: h, address: 10.0.0.1, roles: [data]}]\n")
    with pytest.raises(BadInput, match="give hosts or hosts_from, not both"):
        load_environment("test")


def test_a_dry_run_asks_nothing_of_aws(environments, listener, tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text(complete_env())
    env_file.chmod(0o600)
    path = environments(config(f"http://127.0.0.1:{listener.port}",
                               f"    env_file: {env_file}\n"))
    result = run_inv("deploy", "--host", "test", "--dry-run", "--only", "data.up,core.up",
                     env={"JAFAR_ENVIRONMENTS": str(path), **moto_server.CREDENTIALS})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the hosts are the running EC2 instances tagged jafar-env=test" in result.stdout
    assert "[ec2-data] data.up" in result.stdout and "[ec2-core] core.up" in result.stdout
    assert listener.accepted == 0
