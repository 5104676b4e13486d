"""inv aws.check and aws.fix against moto (the AWS stand-in) with real boto3 calls: a VPC laid
out as the mission describes passes every check; one violation of each kind fails exactly the
check that names it; aws.fix corrects the security-group ones (adding before revoking, never
touching 22 from ssh_cidr) and a second run has nothing to do.

moto implements every API read and written here (EC2, ELBv2, WAFv2, GuardDuty, CloudTrail).
Where it differs from AWS the arrangement says so: run_instances ignores DisableApiTermination
(set afterwards with modify_instance_attribute); get_event_selectors answers [] for a trail
given none (AWS answers its default selector, every management event; the suite reads [] as
that default), so the clean trail is given one; detach_volume answers 500 without the instance
and device; moto accepts any SslPolicy name and enforces no IAM policy.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

from fabfile.aws import network
from fabfile.aws.network import Change, tcp
from fabfile.config import load_environment
from fabfile.errors import StepFailed
from tests.cli.conftest import hosts
from tests.conftest import ROOT, clean_environment, env_yaml
from tests.support import moto_server

SSH_CIDR = "10.0.9.0/24"   # the bastion's subnet
VPC = "10.0.0.0/16"

# `inv aws.*` as an operator runs it, with this namespace (fabfile/tasks/__init__.py wires it)
PROGRAM = ("import sys; from invoke import Collection, Program; from fabfile.tasks import aws; "
           "Program(namespace=Collection(aws.namespace), name='inv', binary='inv')"
           ".run(['inv', *sys.argv[1:]])")


def run_aws(*args: str, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROGRAM, *args], cwd=ROOT,
                          env=clean_environment(env), capture_output=True, text=True,
                          timeout=120, input=stdin)


def hosts_block(port: int = 2222, key: str = "/tmp/none") -> str:
    return hosts(port, key)


def env_text(endpoint: str, tmp_path, alb: bool = True, hosts: str = "") -> str:
    """An environment `test` on moto: its instances tagged jafar-env=test, SSH from SSH_CIDR,
    no env file (aws.check needs none)."""
    alb_text = ", alb: {name: jafar-test, target_group: jafar-test-core}" if alb else ""
    return env_yaml(hosts or hosts_block(),
                    f"aws: {{region: eu-west-1, endpoint_url: '{endpoint}'{alb_text}}}\n"
                    f"env_file: {tmp_path / 'no-env-file'}\n"
                    f"host: {{ssh_cidr: {SSH_CIDR}}}\n")


def environment(environments, endpoint: str, tmp_path, alb: bool = True, hosts: str = ""):
    path = environments(env_text(endpoint, tmp_path, alb, hosts))
    return path, load_environment("test")


# boto3 clients cost a fraction of a second each to make (the suite's make a new session per
# call); the tests keep theirs and the suite's, which are the same real clients on moto
aws_client = functools.cache(moto_server.client)
_suite_client = network.client


@functools.cache
def _cached(endpoint: str, region: str, service: str):
    from fabfile.config import AwsSettings, Environment

    return _suite_client(Environment(name="x", hosts=(), registry="r", tag="t", aws=AwsSettings(
        region=region, endpoint_url=endpoint)), service)


@pytest.fixture(autouse=True)
def reused_clients(monkeypatch):
    monkeypatch.setattr(network, "client", lambda env, service: _cached(
        env.aws.endpoint_url, env.aws.region, service))


@dataclass
class Layout:
    """The ids of a clean layout built on moto."""

    vpc: str
    igw: str
    public: str
    data_subnet: str
    data_table: str
    data_acl: str
    alb_sg: str
    core_sg: str
    data_sg: str
    core: list[str]
    data: str
    lb: str
    https: str
    http: str
    target_group: str
    web_acl: str
    detector: str
    nat: str
    plain_volume: str        # made, not attached: the plain-volume violation attaches it


REDIRECT = {"Type": "redirect", "RedirectConfig": {"Protocol": "HTTPS", "Port": "443",
                                                   "StatusCode": "HTTP_301"}}


def build(endpoint: str) -> Layout:
    """Public core subnets behind an ALB, a private data subnet (NAT route, own ACL), SGs as
    the mission wants, instances tagged, IMDSv2, encrypted EBS, WAF, GuardDuty, CloudTrail."""
    ec2 = aws_client(endpoint, "ec2")
    vpc = ec2.create_vpc(CidrBlock=VPC)["Vpc"]["VpcId"]
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    public = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24",
                               AvailabilityZone="eu-west-1a")["Subnet"]["SubnetId"]
    public_b = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.3.0/24",
                                 AvailabilityZone="eu-west-1b")["Subnet"]["SubnetId"]
    data_subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.2.0/24",
                                    AvailabilityZone="eu-west-1a")["Subnet"]["SubnetId"]
    public_table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    ec2.create_route(RouteTableId=public_table, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    for subnet in (public, public_b):
        ec2.associate_route_table(RouteTableId=public_table, SubnetId=subnet)
    eip = ec2.allocate_address(Domain="vpc")["AllocationId"]
    nat = ec2.create_nat_gateway(SubnetId=public, AllocationId=eip)["NatGateway"]["NatGatewayId"]
    data_table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    ec2.create_route(RouteTableId=data_table, DestinationCidrBlock="0.0.0.0/0",
                     NatGatewayId=nat)
    ec2.associate_route_table(RouteTableId=data_table, SubnetId=data_subnet)
    data_acl = ec2.create_network_acl(VpcId=vpc)["NetworkAcl"]["NetworkAclId"]
    for egress in (False, True):
        ec2.create_network_acl_entry(NetworkAclId=data_acl, RuleNumber=100, Protocol="-1",
                                     RuleAction="allow", Egress=egress,
                                     CidrBlock=VPC if not egress else "0.0.0.0/0")
    association = next(
        a["NetworkAclAssociationId"] for acl in ec2.describe_network_acls(Filters=[
            {"Name": "association.subnet-id", "Values": [data_subnet]}])["NetworkAcls"]
        for a in acl["Associations"] if a["SubnetId"] == data_subnet)
    ec2.replace_network_acl_association(AssociationId=association, NetworkAclId=data_acl)

    def group(name: str) -> str:
        return ec2.create_security_group(GroupName=name, Description=name,
                                         VpcId=vpc)["GroupId"]
    alb_sg, core_sg, data_sg = group("jafar-alb"), group("jafar-core"), group("jafar-data")
    allow(endpoint, alb_sg, tcp(80, "0.0.0.0/0"), tcp(443, "0.0.0.0/0"), tcp(443, "::/0"))
    allow(endpoint, core_sg, tcp(80, alb_sg), tcp(443, alb_sg), tcp(22, SSH_CIDR))
    allow(endpoint, data_sg, tcp(27017, core_sg, 27019), tcp(6379, core_sg),
          tcp(5432, core_sg), tcp(9100, core_sg), tcp(9121, core_sg), tcp(9187, core_sg),
          tcp(22, SSH_CIDR))

    image = "ami-12c6146b"  # moto's example AMI (listing moto's images costs seconds)

    def instance(name: str, role: str, subnet: str, sg: str, env: str = "test",
                 tokens: str = "required", encrypted: bool = True) -> str:
        return ec2.run_instances(
            ImageId=image, MinCount=1, MaxCount=1, SubnetId=subnet, SecurityGroupIds=[sg],
            MetadataOptions={"HttpTokens": tokens},
            BlockDeviceMappings=[{"DeviceName": "/dev/sda1",
                                  "Ebs": {"VolumeSize": 8, "Encrypted": encrypted}}],
            TagSpecifications=[{"ResourceType": "instance", "Tags": [
                {"Key": "jafar-env", "Value": env}, {"Key": "jafar-role", "Value": role},
                {"Key": "Name", "Value": name}]}])["Instances"][0]["InstanceId"]
    core = [instance("core-1", "core", public, core_sg), instance("core-2", "core", public,
                                                                  core_sg)]
    data = instance("data-1", "data", data_subnet, data_sg)
    # moto ignores DisableApiTermination in run_instances; AWS would take it there too
    ec2.modify_instance_attribute(InstanceId=data, DisableApiTermination={"Value": True})
    # not the environment's: another environment's instance, and a terminated one of ours
    wide = group("other-env")
    allow(endpoint, wide, Rule_all("0.0.0.0/0"))
    instance("other", "data", public, wide, env="staging", tokens="optional", encrypted=False)
    gone = instance("gone", "core", public, wide, tokens="optional", encrypted=False)
    ec2.terminate_instances(InstanceIds=[gone])

    elb = aws_client(endpoint, "elbv2")
    lb = elb.create_load_balancer(Name="jafar-test", Subnets=[public, public_b],
                                  SecurityGroups=[alb_sg])["LoadBalancers"][0]["LoadBalancerArn"]
    tg = elb.create_target_group(Name="jafar-test-core", Protocol="HTTP", Port=80,
                                 VpcId=vpc)["TargetGroups"][0]["TargetGroupArn"]
    cert = aws_client(endpoint, "acm").request_certificate(
        DomainName="jafar.test")["CertificateArn"]
    https = elb.create_listener(
        LoadBalancerArn=lb, Protocol="HTTPS", Port=443,
        SslPolicy="ELBSecurityPolicy-TLS13-1-2-2021-06", Certificates=[{"CertificateArn": cert}],
        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}])["Listeners"][0]["ListenerArn"]
    http = elb.create_listener(LoadBalancerArn=lb, Protocol="HTTP", Port=80,
                               DefaultActions=[REDIRECT])["Listeners"][0]["ListenerArn"]
    waf = aws_client(endpoint, "wafv2")
    web_acl = waf.create_web_acl(
        Name="jafar-test", Scope="REGIONAL", DefaultAction={"Allow": {}},
        VisibilityConfig={"SampledRequestsEnabled": True, "CloudWatchMetricsEnabled": True,
                          "MetricName": "jafar-test"})["Summary"]["ARN"]
    waf.associate_web_acl(WebACLArn=web_acl, ResourceArn=lb)
    detector = aws_client(endpoint, "guardduty").create_detector(
        Enable=True)["DetectorId"]
    aws_client(endpoint, "s3").create_bucket(
        Bucket="jafar-test-trail", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    ct = aws_client(endpoint, "cloudtrail")
    ct.create_trail(Name="jafar-test", S3BucketName="jafar-test-trail", IsMultiRegionTrail=True)
    ct.put_event_selectors(TrailName="jafar-test", EventSelectors=[
        {"ReadWriteType": "All", "IncludeManagementEvents": True}])
    ct.start_logging(Name="jafar-test")
    plain = ec2.create_volume(AvailabilityZone="eu-west-1a", Size=8,
                              Encrypted=False)["VolumeId"]
    return Layout(vpc, igw, public, data_subnet, data_table, data_acl, alb_sg, core_sg, data_sg,
                  core, data, lb, https, http, tg, web_acl, detector, nat, plain)


def Rule_all(source: str) -> network.Rule:  # noqa: N802 - reads as a constructor
    return network.Rule("-1", None, None, source)


def allow(endpoint: str, group: str, *rules: network.Rule) -> None:
    aws_client(endpoint, "ec2").authorize_security_group_ingress(
        GroupId=group, IpPermissions=[r.permission() for r in rules])


def revoke(endpoint: str, group: str, *rules: network.Rule) -> None:
    aws_client(endpoint, "ec2").revoke_security_group_ingress(
        GroupId=group, IpPermissions=[r.permission() for r in rules])


@pytest.fixture
def clean(environments, aws, tmp_path):
    layout = build(aws)
    _, env = environment(environments, aws, tmp_path)
    return layout, env


def failed(env) -> set[str]:
    want = network.policy(env)
    return {c.check for c in network.evaluate(want, network.gather(env)) if not c.ok}


def _ec2(ep):
    return aws_client(ep, "ec2")


# name: (make the violation, undo it, the checks it fails); a data port open to anywhere is
# also open to other than the core SG: both checks are true of it
VIOLATIONS = {
    "core-port": (lambda ep, lay: allow(ep, lay.core_sg, tcp(3000, "0.0.0.0/0")),
                  lambda ep, lay: revoke(ep, lay.core_sg, tcp(3000, "0.0.0.0/0")),
                  {"core-sg-inbound"}),
    "core-web-around-the-alb": (lambda ep, lay: allow(ep, lay.core_sg, tcp(443, "0.0.0.0/0")),
                                lambda ep, lay: revoke(ep, lay.core_sg, tcp(443, "0.0.0.0/0")),
                                {"core-sg-inbound"}),
    "core-ssh": (lambda ep, lay: allow(ep, lay.core_sg, tcp(22, "0.0.0.0/0")),
                 lambda ep, lay: revoke(ep, lay.core_sg, tcp(22, "0.0.0.0/0")),
                 {"core-sg-ssh"}),
    "data-port": (lambda ep, lay: allow(ep, lay.data_sg, tcp(27017, VPC)),
                  lambda ep, lay: revoke(ep, lay.data_sg, tcp(27017, VPC)),
                  {"data-sg-ports"}),
    "data-ssh": (lambda ep, lay: allow(ep, lay.data_sg, tcp(22, VPC)),
                 lambda ep, lay: revoke(ep, lay.data_sg, tcp(22, VPC)),
                 {"data-sg-ssh"}),
    "data-public": (lambda ep, lay: allow(ep, lay.data_sg, tcp(6379, "::/0")),
                    lambda ep, lay: revoke(ep, lay.data_sg, tcp(6379, "::/0")),
                    {"data-sg-public", "data-sg-ports"}),
    "data-other": (lambda ep, lay: allow(ep, lay.data_sg, tcp(8080, lay.core_sg)),
                   lambda ep, lay: revoke(ep, lay.data_sg, tcp(8080, lay.core_sg)),
                   {"data-sg-other"}),
    "public-route": (lambda ep, lay: _ec2(ep).replace_route(
        RouteTableId=lay.data_table, DestinationCidrBlock="0.0.0.0/0", GatewayId=lay.igw),
        lambda ep, lay: _ec2(ep).replace_route(
            RouteTableId=lay.data_table, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=lay.nat),
        {"data-subnet-private"}),
    "acl-open": (lambda ep, lay: _ec2(ep).create_network_acl_entry(
        NetworkAclId=lay.data_acl, RuleNumber=50, Protocol="6", RuleAction="allow",
        Egress=False, CidrBlock="0.0.0.0/0", PortRange={"From": 27017, "To": 27017}),
        lambda ep, lay: _ec2(ep).delete_network_acl_entry(
            NetworkAclId=lay.data_acl, RuleNumber=50, Egress=False),
        {"data-subnet-acl"}),
    "imdsv1": (lambda ep, lay: _ec2(ep).modify_instance_metadata_options(
        InstanceId=lay.core[0], HttpTokens="optional"),
        lambda ep, lay: _ec2(ep).modify_instance_metadata_options(
            InstanceId=lay.core[0], HttpTokens="required"),
        {"imdsv2"}),
    "imds-hops": (lambda ep, lay: _ec2(ep).modify_instance_metadata_options(
        InstanceId=lay.data, HttpTokens="required", HttpPutResponseHopLimit=2),
        lambda ep, lay: _ec2(ep).modify_instance_metadata_options(
            InstanceId=lay.data, HttpTokens="required", HttpPutResponseHopLimit=1),
        {"imds-hop-limit"}),
    "plain-volume": (lambda ep, lay: _ec2(ep).attach_volume(
        VolumeId=lay.plain_volume, InstanceId=lay.core[1], Device="/dev/sdf"),
        # moto answers 500 to a detach without the instance and device (AWS takes it)
        lambda ep, lay: _ec2(ep).detach_volume(VolumeId=lay.plain_volume,
                                               InstanceId=lay.core[1], Device="/dev/sdf"),
        {"ebs-encrypted"}),
    "unprotected": (lambda ep, lay: _ec2(ep).modify_instance_attribute(
        InstanceId=lay.data, DisableApiTermination={"Value": False}),
        lambda ep, lay: _ec2(ep).modify_instance_attribute(
            InstanceId=lay.data, DisableApiTermination={"Value": True}),
        {"termination-protection"}),
    "weak-tls": (lambda ep, lay: aws_client(ep, "elbv2").modify_listener(
        ListenerArn=lay.https, SslPolicy="ELBSecurityPolicy-2016-08"),
        lambda ep, lay: aws_client(ep, "elbv2").modify_listener(
            ListenerArn=lay.https, SslPolicy="ELBSecurityPolicy-TLS13-1-2-2021-06"),
        {"alb-https"}),
    "http-forwards": (lambda ep, lay: aws_client(ep, "elbv2").modify_listener(
        ListenerArn=lay.http, DefaultActions=[{"Type": "forward",
                                               "TargetGroupArn": lay.target_group}]),
        lambda ep, lay: aws_client(ep, "elbv2").modify_listener(
            ListenerArn=lay.http, DefaultActions=[REDIRECT]),
        {"alb-http-redirect"}),
    "no-waf": (lambda ep, lay: aws_client(ep, "wafv2").disassociate_web_acl(
        ResourceArn=lay.lb),
        lambda ep, lay: aws_client(ep, "wafv2").associate_web_acl(
            WebACLArn=lay.web_acl, ResourceArn=lay.lb),
        {"alb-waf"}),
    "guardduty-off": (lambda ep, lay: aws_client(ep, "guardduty").update_detector(
        DetectorId=lay.detector, Enable=False),
        lambda ep, lay: aws_client(ep, "guardduty").update_detector(
            DetectorId=lay.detector, Enable=True),
        {"guardduty"}),
    "trail-stopped": (lambda ep, lay: aws_client(ep, "cloudtrail").stop_logging(
        Name="jafar-test"),
        lambda ep, lay: aws_client(ep, "cloudtrail").start_logging(Name="jafar-test"),
        {"cloudtrail"}),
    "trail-without-management-events": (
        lambda ep, lay: aws_client(ep, "cloudtrail").put_event_selectors(
            TrailName="jafar-test", EventSelectors=[{"ReadWriteType": "All",
                                                     "IncludeManagementEvents": False}]),
        lambda ep, lay: aws_client(ep, "cloudtrail").put_event_selectors(
            TrailName="jafar-test", EventSelectors=[{"ReadWriteType": "All",
                                                     "IncludeManagementEvents": True}]),
        {"cloudtrail"}),
}


def violate(ep, lay, *names: str) -> None:
    for name in names:
        VIOLATIONS[name][0](ep, lay)


class TestOneLayout:
    """One clean layout for the class (building one costs seconds): each test makes one
    violation, judges, and undoes it; the next test would show an undo that failed."""

    @pytest.fixture(scope="class")
    @classmethod
    def shared(cls, moto_endpoint, tmp_path_factory):
        with pytest.MonkeyPatch.context() as mp:
            for key in [k for k in os.environ if k.startswith("AWS_")]:
                mp.delenv(key)
            for key, value in moto_server.CREDENTIALS.items():
                mp.setenv(key, value)
            moto_server.reset(moto_endpoint)
            layout = build(moto_endpoint)
            tmp = tmp_path_factory.mktemp("network")
            path = tmp / "environments.yml"
            path.write_text(env_text(moto_endpoint, tmp))
            mp.setenv("JAFAR_ENVIRONMENTS", str(path))
            yield layout, load_environment("test")

    def test_a_clean_layout_passes_every_check(self, shared):
        layout, env = shared
        want = network.policy(env)
        facts = network.gather(env)
        assert [(i.id, i.role) for i in facts.instances] == sorted(
            [(layout.core[0], "core"), (layout.core[1], "core"), (layout.data, "data")])
        checks = network.evaluate(want, facts)
        assert [c for c in checks if not c.ok] == []
        assert [(c.check, c.subject) for c in checks] == [
            ("core-sg-inbound", f"{layout.core_sg} (jafar-core)"),
            ("core-sg-ssh", f"{layout.core_sg} (jafar-core)"),
            *[(name, f"{layout.data_sg} (jafar-data)") for name in (
                "data-sg-ports", "data-sg-ssh", "data-sg-public", "data-sg-other")],
            ("data-subnet-private", layout.data_subnet),
            ("data-subnet-acl", layout.data_subnet),
            *[("imdsv2", i.label()) for i in facts.instances],
            *[("imds-hop-limit", i.label()) for i in facts.instances],
            *[("ebs-encrypted", i.label()) for i in facts.instances],
            ("termination-protection", f"{layout.data} (data-1)"),
            ("alb-https", "jafar-test"), ("alb-http-redirect", "jafar-test"),
            ("alb-waf", "jafar-test"), ("guardduty", "eu-west-1"), ("cloudtrail", "eu-west-1")]
        found = {c.check: c.found for c in checks}
        assert found["core-sg-inbound"] == (f"open: tcp 80 from {layout.alb_sg}, tcp 443 from "
                                            f"{layout.alb_sg}")
        assert found["data-subnet-private"] == (f"{layout.data_table}: no route to an internet "
                                                "gateway")
        assert found["data-subnet-acl"] == f"{layout.data_acl}: inbound only from {VPC}"
        assert found["alb-https"] == "HTTPS 443: ELBSecurityPolicy-TLS13-1-2-2021-06"
        assert found["alb-http-redirect"] == "HTTP 80: redirect to HTTPS"
        assert found["alb-waf"] == "web ACL jafar-test"
        assert found["guardduty"] == f"detector {layout.detector} enabled"
        assert found["cloudtrail"] == "trail jafar-test logging, management events: All"

    @pytest.mark.parametrize("name", list(VIOLATIONS))
    def test_each_violation_fails_the_check_that_names_it(self, shared, moto_endpoint, name):
        layout, env = shared
        make, undo, names = VIOLATIONS[name]
        make(moto_endpoint, layout)
        try:
            assert failed(env) == names
        finally:
            undo(moto_endpoint, layout)

    def test_findings_and_fixes_name_the_resource(self, shared, moto_endpoint):
        layout, env = shared
        chosen = ("core-port", "imdsv1", "guardduty-off")
        violate(moto_endpoint, layout, *chosen)
        try:
            checks = {(c.check, c.subject): c for c in network.evaluate(
                network.policy(env), network.gather(env))}
        finally:
            for name in chosen:
                VIOLATIONS[name][1](moto_endpoint, layout)
        core = checks[("core-sg-inbound", f"{layout.core_sg} (jafar-core)")]
        assert (core.found, core.fix) == (
            f"open beyond 80/443 from {layout.alb_sg}: tcp 3000 from 0.0.0.0/0",
            "inv aws.fix --host test (revokes tcp 3000 from 0.0.0.0/0)")
        imds = checks[("imdsv2", f"{layout.core[0]} (core-1)")]
        assert (imds.ok, imds.found, imds.fix) == (
            False, "HttpTokens optional", f"aws ec2 modify-instance-metadata-options "
            f"--instance-id {layout.core[0]} --http-tokens required --http-endpoint enabled")
        gd = checks[("guardduty", "eu-west-1")]
        assert (gd.found, gd.fix) == (
            f"detector {layout.detector} disabled",
            f"aws guardduty update-detector --detector-id {layout.detector} --enable "
            "--region eu-west-1")

    def test_every_violation_was_undone(self, shared):
        assert failed(shared[1]) == set()


def test_without_an_alb_80_and_443_may_come_from_anywhere(environments, aws, tmp_path):
    layout = build(aws)
    _, env = environment(environments, aws, tmp_path, alb=False)
    allow(aws, layout.core_sg, tcp(443, "0.0.0.0/0"), tcp(80, "::/0"))
    checks = network.evaluate(network.policy(env), network.gather(env))
    assert [c for c in checks if not c.ok] == []
    assert not [c for c in checks if c.check.startswith("alb-")]


def test_an_alb_that_does_not_exist_fails_its_checks_and_the_core_sg_cannot_be_judged(
        environments, aws, tmp_path):
    build(aws)
    environments(env_text(aws, tmp_path).replace("name: jafar-test", "name: jafar-gone"))
    env = load_environment("test")
    checks = {c.check: c for c in network.evaluate(network.policy(env), network.gather(env))}
    assert {name for name, c in checks.items() if not c.ok} == {
        "core-sg-inbound", "alb-https", "alb-http-redirect", "alb-waf"}
    assert checks["alb-waf"].found == "AWS has no load balancer named jafar-gone in eu-west-1"
    assert checks["core-sg-inbound"].found == checks["alb-waf"].found
    assert network.plan(network.policy(env), network.gather(env)).changes == ()


def test_no_instance_with_the_tags_is_one_line_naming_them(environments, aws, tmp_path):
    _, env = environment(environments, aws, tmp_path)
    with pytest.raises(StepFailed) as exc:
        network.gather(env)
    assert str(exc.value) == ("no EC2 instance in eu-west-1 has the tags jafar-env=test "
                              "(running or stopped); tag the instances or fix "
                              "aws.instance_tags of test")


def test_fix_adds_before_it_revokes_and_leaves_ssh_from_ssh_cidr_alone(clean, aws):
    layout, env = clean
    core, data = layout.core_sg, layout.data_sg
    allow(aws, core, tcp(3000, "0.0.0.0/0"), tcp(22, "0.0.0.0/0"), tcp(443, "0.0.0.0/0"))
    revoke(aws, data, tcp(5432, core))
    allow(aws, data, tcp(5432, VPC), tcp(6379, "::/0"))
    want = network.policy(env)
    planned = network.plan(want, network.gather(env))
    assert planned == network.Plan((
        Change("add", data, tcp(5432, core)),
        *sorted([Change("revoke", core, tcp(22, "0.0.0.0/0")),
                 Change("revoke", core, tcp(443, "0.0.0.0/0")),
                 Change("revoke", core, tcp(3000, "0.0.0.0/0")),
                 Change("revoke", data, tcp(5432, VPC)),
                 Change("revoke", data, tcp(6379, "::/0"))])))
    done = []
    network.apply(env, planned.changes, lambda change, changed: done.append((change, changed)))
    assert done == [(c, True) for c in planned.changes]
    facts = network.gather(env)
    checks = network.evaluate(want, facts)
    assert [c for c in checks if not c.ok] == []
    assert tcp(22, SSH_CIDR) in facts.group(core).rules
    assert tcp(22, SSH_CIDR) in facts.group(data).rules
    again = network.plan(want, facts)
    assert again == network.Plan()
    assert network.nothing_to_do(want, facts, again, checks) == (
        f"nothing to do: the security groups of test ({', '.join(sorted([core, data]))}) "
        "already allow only what aws.check wants")


def test_fix_keeps_ssh_open_from_ssh_cidr_before_revoking_what_let_it_in(clean, aws):
    layout, env = clean
    data = layout.data_sg
    revoke(aws, data, tcp(22, SSH_CIDR))
    allow(aws, data, Rule_all("0.0.0.0/0"))
    planned = network.plan(network.policy(env), network.gather(env))
    assert planned.changes == (Change("add", data, tcp(22, SSH_CIDR)),
                               Change("revoke", data, Rule_all("0.0.0.0/0")))
    network.apply(env, planned.changes, lambda change, changed: None)
    assert failed(env) == set()


def test_applying_a_change_already_made_says_so(clean, aws):
    layout, env = clean
    done = []
    network.apply(env, [Change("add", layout.core_sg, tcp(22, SSH_CIDR)),
                        Change("revoke", layout.core_sg, tcp(3000, "0.0.0.0/0"))],
                  lambda change, changed: done.append(changed))
    assert done == [False, False]


# --- the CLI ---------------------------------------------------------------------------------

def cli_env(path) -> dict[str, str]:
    return {**moto_server.CREDENTIALS, "JAFAR_ENVIRONMENTS": str(path)}


def test_check_cli_passes_a_clean_layout_and_fails_a_violation(environments, aws, tmp_path):
    layout = build(aws)
    path, _ = environment(environments, aws, tmp_path)
    ok = run_aws("aws.check", "--host", "test", "--json", env=cli_env(path))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["passed"] is True and len(doc["checks"]) == 23  # 3 instances: +3 hop limits
    assert {c["result"] for c in doc["checks"]} == {"PASS"}
    violate(aws, layout, "core-ssh")
    bad = run_aws("aws.check", "--host", "test", env=cli_env(path))
    assert bad.returncode == 1
    assert bad.stderr.strip() == f"1 checks failed: core-sg-ssh {layout.core_sg} (jafar-core)"
    assert (f"    fix: inv aws.fix --host test (revokes tcp 22 from 0.0.0.0/0, adds 22 from "
            f"{SSH_CIDR} first)") in bad.stdout.splitlines()
    as_json = run_aws("aws.check", "--host", "test", "--json", env=cli_env(path))
    assert as_json.returncode == 1 and as_json.stderr == ""
    assert json.loads(as_json.stdout)["passed"] is False


def test_check_cli_with_no_instance_is_one_line_exit_1(environments, aws, tmp_path):
    path, _ = environment(environments, aws, tmp_path)
    result = run_aws("aws.check", "--host", "test", env=cli_env(path))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "error: no EC2 instance in eu-west-1 has the tags jafar-env=test (running or stopped); "
        "tag the instances or fix aws.instance_tags of test"]


def test_fix_dry_run_prints_the_plan_and_changes_nothing(environments, aws, tmp_path, listener):
    layout = build(aws)
    path, _ = environment(environments, aws, tmp_path, hosts=hosts_block(listener.port))
    allow(aws, layout.core_sg, tcp(3000, "0.0.0.0/0"))
    before = network.gather(load_environment("test")).groups
    result = run_aws("aws.fix", "--host", "test", "--dry-run", env=cli_env(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "aws.fix on test (eu-west-1), in this order:",
        f"  revoke {layout.core_sg}: tcp 3000 from 0.0.0.0/0",
        "dry run: nothing changed"]
    assert network.gather(load_environment("test")).groups == before
    assert listener.accepted == 0


def test_fix_asks_and_without_a_terminal_changes_nothing(environments, aws, tmp_path, listener):
    layout = build(aws)
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True,
                   timeout=30)
    (tmp_path / "env").write_text(complete_env_text())
    (tmp_path / "env").chmod(0o600)
    (tmp_path / "known_hosts").write_text("")
    path = environments(env_yaml(
        hosts_block(listener.port, str(key)),
        f"aws: {{region: eu-west-1, endpoint_url: '{aws}', alb: {{name: jafar-test, "
        f"target_group: jafar-test-core}}}}\nenv_file: {tmp_path / 'env'}\n"
        f"known_hosts: {tmp_path / 'known_hosts'}\nconnect_timeout: 2\n"
        f"host: {{ssh_cidr: {SSH_CIDR}, operator_keys: [{key}.pub]}}\n"))
    allow(aws, layout.core_sg, tcp(3000, "0.0.0.0/0"))
    before = network.gather(load_environment("test")).groups
    asked = run_aws("aws.fix", "--host", "test", env=cli_env(path))
    assert asked.returncode == 2, asked.stdout + asked.stderr
    assert asked.stderr.strip() == ("error: there is no terminal to confirm change 1 "
                                    "security-group rule(s); pass --yes")
    # with --yes the deploy lock comes first: a host that cannot be reached, nothing changed
    locked = run_aws("aws.fix", "--host", "test", "--yes", env=cli_env(path))
    assert locked.returncode == 1, locked.stdout + locked.stderr
    assert f"  revoke {layout.core_sg}: tcp 3000 from 0.0.0.0/0" in locked.stdout.splitlines()
    assert "error: h1: admin@[127.0.0.1]" in locked.stderr
    assert "its SSH server did not answer" in locked.stderr
    assert network.gather(load_environment("test")).groups == before
    clean_run = network.plan(network.policy(load_environment("test")),
                             network.gather(load_environment("test")))
    assert clean_run.changes == (Change("revoke", layout.core_sg, tcp(3000, "0.0.0.0/0")),)


def complete_env_text() -> str:
    from tests.conftest import complete_env

    return complete_env()


@pytest.mark.parametrize("task", ["aws.check", "aws.fix"])
def test_without_an_aws_block_it_is_one_line_exit_2_and_nothing_contacted(
        environments, tmp_path, listener, task):
    path = environments(env_yaml(hosts_block(listener.port),
                                 f"env_file: {tmp_path / 'no-env-file'}\n"))
    result = run_aws(task, "--host", "test", env={"JAFAR_ENVIRONMENTS": str(path)})
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: environment test has no aws: block; add aws: {region: eu-west-1}"), lines
    assert listener.accepted == 0


def test_the_core_hosts_hop_limit_is_2_only_when_alertmanager_signs_sns_calls(
        environments, aws, tmp_path):
    """A container is one hop more than its host: hop limit 1 keeps every container away from
    the instance role; with alerting.sns_topic Alertmanager (a container) needs it."""
    layout = build(aws)
    sns = "alerting: {sns_topic: 'arn:aws:sns:eu-west-1:123456789012:jafar-test-pager'}\n"
    environments(env_text(aws, tmp_path).replace("    hosts:\n", f"    {sns}    hosts:\n", 1))
    env = load_environment("test")
    checks = {(c.check, c.subject): c for c in network.evaluate(network.policy(env),
                                                                network.gather(env))}
    core = checks[("imds-hop-limit", f"{layout.core[0]} (core-1)")]
    assert (core.ok, core.wanted, core.found, core.fix) == (
        False, "IMDS hop limit 2 (Alertmanager signs SNS calls)",
        "HttpPutResponseHopLimit 1", f"aws ec2 modify-instance-metadata-options --instance-id "
        f"{layout.core[0]} --http-put-response-hop-limit 2")
    assert checks[("imds-hop-limit", f"{layout.data} (data-1)")].ok  # the data host: 1


SPLIT_HOSTS = "".join(
    f"- {{name: {n}, address: {a}, private_address: {a}, user: deploy, key: /tmp/none, "
    f"roles: [{r}]}}\n" for n, a, r in (("d1", "10.0.2.10", "data"), ("c1", "10.0.1.11", "core"),
                                         ("c2", "10.0.1.12", "core")))


def test_two_core_hosts_want_the_cluster_port_from_the_core_group_itself_and_only_so(
        environments, aws, tmp_path):
    """Split with two core hosts: their Alertmanagers gossip on tcp and udp 9094, so the core
    group must let both in from itself (a missing one is a FAIL with the command that adds
    it), and 9094 from anywhere else is still an offender."""
    layout = build(aws)
    environments(env_text(aws, tmp_path, hosts=SPLIT_HOSTS).replace(
        "    hosts:\n", "    topology: split\n    private_cidr: 10.0.0.0/16\n    hosts:\n", 1))
    env = load_environment("test")

    def judged() -> dict[str, network.Check]:
        return {c.check: c for c in network.evaluate(network.policy(env), network.gather(env))
                if c.subject == f"{layout.core_sg} (jafar-core)"}

    missing = judged()["core-sg-cluster"]
    assert (missing.ok, missing.found) == (False, "missing: tcp, udp 9094")
    pair = f"UserIdGroupPairs=[{{GroupId={layout.core_sg}}}]"
    assert missing.fix == (
        f"aws ec2 authorize-security-group-ingress --group-id {layout.core_sg} --ip-permissions "
        f"'IpProtocol=tcp,FromPort=9094,ToPort=9094,{pair}' "
        f"'IpProtocol=udp,FromPort=9094,ToPort=9094,{pair}'")
    allow(aws, layout.core_sg, network.Rule("tcp", 9094, 9094, layout.core_sg),
          network.Rule("udp", 9094, 9094, layout.core_sg))
    checks = judged()
    assert checks["core-sg-cluster"].ok and checks["core-sg-inbound"].ok
    allow(aws, layout.core_sg, network.Rule("udp", 9094, 9094, "0.0.0.0/0"))
    inbound = judged()["core-sg-inbound"]
    assert not inbound.ok and "udp 9094 from 0.0.0.0/0" in inbound.found
