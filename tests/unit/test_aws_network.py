"""The network audit's pure parts (fabfile/aws/network.py): facts in, checks and the fix plan
out, compared whole. No AWS: the facts are written here as gather() would read them."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from fabfile.aws.network import (
    TLS12_POLICY,
    AclEntry,
    Change,
    Check,
    Detector,
    Facts,
    Group,
    Instance,
    Listener,
    LoadBalancer,
    Plan,
    Policy,
    Route,
    Rule,
    Selector,
    Subnet,
    Trail,
    Unreadable,
    Volume,
    acl_leaks,
    action_text,
    as_json,
    evaluate,
    management,
    nothing_to_do,
    plan,
    rules_of,
    selectors,
    table,
    tcp,
)

SSH_CIDR = "10.0.9.0/24"
WANT = Policy("prod", "eu-west-1", {"jafar-env": "prod"}, "jafar-role", SSH_CIDR, "jafar-prod")
CORE = Group("sg-core", "jafar-core", (tcp(22, SSH_CIDR), tcp(80, "sg-alb"), tcp(443, "sg-alb")))
DATA = Group("sg-data", "jafar-data", (
    tcp(22, SSH_CIDR), tcp(5432, "sg-core"), tcp(6379, "sg-core"), tcp(9100, "sg-core"),
    tcp(9121, "sg-core"), tcp(9187, "sg-core"), tcp(27017, "sg-core", 27019)))


def instance(iid: str, name: str, role: str, group: str, protected: bool | None = None,
             **changes) -> Instance:
    base = Instance(iid, name, role, "running", "subnet-data" if role == "data" else "subnet-pub",
                    "vpc-1", (group,), "required", (Volume(f"vol-{iid[2:]}", True),), protected)
    return replace(base, **changes)


SUBNET = Subnet("subnet-data", ("10.0.0.0/16",), "rtb-data",
                (Route("10.0.0.0/16", "local"), Route("0.0.0.0/0", "nat-1")), "acl-data",
                (AclEntry(100, True, "-1", "10.0.0.0/16"), AclEntry(32767, False, "-1",
                                                                     "0.0.0.0/0")))
LB = LoadBalancer("jafar-prod", "arn:lb", ("sg-alb",), (
    Listener("arn:l80", 80, "HTTP", None, ("redirect to HTTPS",)),
    Listener("arn:l443", 443, "HTTPS", "ELBSecurityPolicy-TLS13-1-2-2021-06", ("forward",))),
    "jafar-waf")
CLEAN = Facts(
    "eu-west-1",
    (instance("i-c1", "core-1", "core", "sg-core"), instance("i-c2", "core-2", "core", "sg-core"),
     instance("i-d1", "data-1", "data", "sg-data", protected=True)),
    (CORE, DATA), (SUBNET,), LB, (Detector("d1", "ENABLED"),),
    (Trail("main", True, (Selector(True, "All"),)),))

DATA_PORTS_TEXT = "27017, 27018, 27019, 6379, 5432, 9100, 9121, 9187"
DATA_RULES = ("tcp 5432 from sg-core, tcp 6379 from sg-core, tcp 9100 from sg-core, tcp 9121 "
              "from sg-core, tcp 9187 from sg-core, tcp 27017-27019 from sg-core")
W = {  # what each check wants, as evaluate() says it for WANT
    "core-sg-inbound": "80/443 only from the ALB's SG (sg-alb)",
    "ssh": "22 only from 10.0.9.0/24 (ssh_cidr)",
    "data-sg-ports": "data ports only from the core SG (sg-core)",
    "data-sg-public": "nothing from 0.0.0.0/0 or ::/0",
    "data-sg-other": "no port but 22 and the data ports",
    "imdsv2": "HttpTokens required (IMDSv2)",
    "hops": "IMDS hop limit 1 (containers get no instance role)",
    "ebs": "every attached EBS volume encrypted",
    "termination": "DisableApiTermination on the data instance",
    "alb-https": "an HTTPS listener, every one with a TLS 1.2+ policy",
    "alb-http-redirect": "every HTTP listener redirects to HTTPS",
    "alb-waf": "a WAFv2 web ACL associated",
    "guardduty": "a GuardDuty detector enabled in eu-west-1",
    "cloudtrail": "a CloudTrail trail logging management events",
}


def checks_of(facts: Facts, want: Policy = WANT) -> dict[tuple[str, str], Check]:
    return {(c.check, c.subject): c for c in evaluate(want, facts)}


def failing(facts: Facts, want: Policy = WANT) -> list[Check]:
    return [c for c in evaluate(want, facts) if not c.ok]


def test_a_clean_network_passes_every_check_in_the_issues_order():
    assert evaluate(WANT, CLEAN) == [
        Check("core-sg-inbound", "sg-core (jafar-core)", True, W["core-sg-inbound"],
              "open: tcp 80 from sg-alb, tcp 443 from sg-alb"),
        Check("core-sg-ssh", "sg-core (jafar-core)", True, W["ssh"], "SSH only from 10.0.9.0/24"),
        Check("data-sg-ports", "sg-data (jafar-data)", True, W["data-sg-ports"], DATA_RULES),
        Check("data-sg-ssh", "sg-data (jafar-data)", True, W["ssh"], "SSH only from 10.0.9.0/24"),
        Check("data-sg-public", "sg-data (jafar-data)", True, W["data-sg-public"],
              "nothing open to anywhere"),
        Check("data-sg-other", "sg-data (jafar-data)", True, W["data-sg-other"],
              "no other port open"),
        Check("data-subnet-private", "subnet-data", True, "no route to an internet gateway",
              "rtb-data: no route to an internet gateway"),
        Check("data-subnet-acl", "subnet-data", True,
              "network ACL: inbound only from the VPC (10.0.0.0/16)",
              "acl-data: inbound only from 10.0.0.0/16"),
        Check("imdsv2", "i-c1 (core-1)", True, W["imdsv2"], "HttpTokens required"),
        Check("imdsv2", "i-c2 (core-2)", True, W["imdsv2"], "HttpTokens required"),
        Check("imdsv2", "i-d1 (data-1)", True, W["imdsv2"], "HttpTokens required"),
        *[Check("imds-hop-limit", subject, True, W["hops"], "HttpPutResponseHopLimit 1")
          for subject in ("i-c1 (core-1)", "i-c2 (core-2)", "i-d1 (data-1)")],
        Check("ebs-encrypted", "i-c1 (core-1)", True, W["ebs"], "encrypted: vol-c1"),
        Check("ebs-encrypted", "i-c2 (core-2)", True, W["ebs"], "encrypted: vol-c2"),
        Check("ebs-encrypted", "i-d1 (data-1)", True, W["ebs"], "encrypted: vol-d1"),
        Check("termination-protection", "i-d1 (data-1)", True, W["termination"],
              "DisableApiTermination true"),
        Check("alb-https", "jafar-prod", True, W["alb-https"],
              "HTTPS 443: ELBSecurityPolicy-TLS13-1-2-2021-06"),
        Check("alb-http-redirect", "jafar-prod", True, W["alb-http-redirect"],
              "HTTP 80: redirect to HTTPS"),
        Check("alb-waf", "jafar-prod", True, W["alb-waf"], "web ACL jafar-waf"),
        Check("guardduty", "eu-west-1", True, W["guardduty"], "detector d1 enabled"),
        Check("cloudtrail", "eu-west-1", True, W["cloudtrail"],
              "trail main logging, management events: All"),
    ]
    assert plan(WANT, CLEAN) == Plan()


def with_rules(group: Group, *rules: Rule) -> Group:
    return replace(group, rules=group.rules + rules)


def test_core_security_group_violations_name_the_rules_and_the_fix():
    core = with_rules(CORE, tcp(3000, "0.0.0.0/0"), tcp(22, "0.0.0.0/0"), tcp(443, "0.0.0.0/0"),
                      Rule("-1", None, None, "10.0.0.0/16"))
    assert failing(replace(CLEAN, groups=(core, DATA))) == [
        Check("core-sg-inbound", "sg-core (jafar-core)", False, W["core-sg-inbound"],
              "open beyond 80/443 from sg-alb: tcp 3000 from 0.0.0.0/0, tcp 443 from 0.0.0.0/0, "
              "all traffic from 10.0.0.0/16",
              "inv aws.fix --host prod (revokes tcp 3000 from 0.0.0.0/0, tcp 443 from "
              "0.0.0.0/0, all traffic from 10.0.0.0/16)"),
        Check("core-sg-ssh", "sg-core (jafar-core)", False, W["ssh"],
              "SSH open from outside 10.0.9.0/24: tcp 22 from 0.0.0.0/0, all traffic from "
              "10.0.0.0/16",
              "inv aws.fix --host prod (revokes tcp 22 from 0.0.0.0/0, all traffic from "
              "10.0.0.0/16, adds 22 from 10.0.9.0/24 first)"),
    ]


def test_the_core_groups_cluster_port_from_itself_is_wanted_with_two_core_hosts():
    """The Alertmanagers' gossip (tcp and udp 9094) from the core group itself: wanted and not
    an offender when they cluster; an offender like any other port when they do not."""
    gossip = (Rule("tcp", 9094, 9094, "sg-core"), Rule("udp", 9094, 9094, "sg-core"))
    clustered = replace(WANT, cluster=True)
    open_ = replace(CLEAN, groups=(with_rules(CORE, *gossip), DATA))
    assert failing(open_, clustered) == []
    assert checks_of(open_, clustered)[("core-sg-cluster", "sg-core (jafar-core)")].found == "open"
    half = replace(CLEAN, groups=(with_rules(CORE, gossip[0]), DATA))
    assert [(c.check, c.found) for c in failing(half, clustered)] == [
        ("core-sg-cluster", "missing: udp 9094")]
    assert [c.check for c in failing(open_)] == ["core-sg-inbound"]  # one core host: no gossip
    assert plan(clustered, open_) == Plan()
    assert [c.rule for c in plan(WANT, open_).changes] == list(gossip)


def test_ssh_from_inside_ssh_cidr_passes_and_from_a_security_group_does_not():
    inside = with_rules(CORE, tcp(22, "10.0.9.5/32"))
    assert failing(replace(CLEAN, groups=(inside, DATA))) == []
    bastion = with_rules(CORE, tcp(22, "sg-bastion"))
    assert [c.found for c in failing(replace(CLEAN, groups=(bastion, DATA)))] == [
        "SSH open from outside 10.0.9.0/24: tcp 22 from sg-bastion"]


def test_without_an_alb_80_and_443_may_come_from_anywhere_and_nothing_else():
    want = replace(WANT, alb=None)
    core = Group("sg-core", "jafar-core", (tcp(22, SSH_CIDR), tcp(80, "0.0.0.0/0"),
                                           tcp(443, "::/0"), tcp(443, "203.0.113.0/24")))
    facts = replace(CLEAN, groups=(core, DATA), alb=None)
    assert checks_of(facts, want)[("core-sg-inbound", "sg-core (jafar-core)")] == Check(
        "core-sg-inbound", "sg-core (jafar-core)", True, "80/443 from anywhere",
        "open: tcp 80 from 0.0.0.0/0, tcp 443 from ::/0, tcp 443 from 203.0.113.0/24")
    assert not [c for c in evaluate(want, facts) if c.check.startswith("alb-")]
    wide = replace(core, rules=(tcp(0, "0.0.0.0/0", 65535),))
    assert [c.check for c in failing(replace(facts, groups=(wide, DATA)), want)] == [
        "core-sg-inbound", "core-sg-ssh"]


def test_data_security_group_violations_each_under_its_check():
    data = with_rules(DATA, Rule("-1", None, None, "0.0.0.0/0"), tcp(27017, "10.0.0.0/16"),
                      Rule("udp", 53, 53, "sg-core"), tcp(22, "10.0.9.5/32"))
    assert failing(replace(CLEAN, groups=(CORE, data))) == [
        Check("data-sg-ports", "sg-data (jafar-data)", False, W["data-sg-ports"],
              f"data ports ({DATA_PORTS_TEXT}) open to other than the core SG: all traffic from "
              "0.0.0.0/0, tcp 27017 from 10.0.0.0/16",
              "inv aws.fix --host prod (revokes all traffic from 0.0.0.0/0, tcp 27017 from "
              "10.0.0.0/16, allows them from sg-core first)"),
        Check("data-sg-ssh", "sg-data (jafar-data)", False, W["ssh"],
              "SSH open from outside 10.0.9.0/24: all traffic from 0.0.0.0/0",
              "inv aws.fix --host prod (revokes all traffic from 0.0.0.0/0, adds 22 from "
              "10.0.9.0/24 first)"),
        Check("data-sg-public", "sg-data (jafar-data)", False, W["data-sg-public"],
              "open to anywhere: all traffic from 0.0.0.0/0",
              "inv aws.fix --host prod (revokes all traffic from 0.0.0.0/0)"),
        Check("data-sg-other", "sg-data (jafar-data)", False, W["data-sg-other"],
              "other ports open: all traffic from 0.0.0.0/0, udp 53 from sg-core",
              "inv aws.fix --host prod (revokes all traffic from 0.0.0.0/0, udp 53 from "
              "sg-core)"),
    ]


@pytest.mark.parametrize("rule, names", [
    (tcp(6379, "::/0"), ["data-sg-ports", "data-sg-public"]),
    (tcp(9121, "10.0.0.0/16"), ["data-sg-ports"]),
    (tcp(22, "0.0.0.0/0"), ["data-sg-ssh", "data-sg-public"]),
    (tcp(8080, "sg-core"), ["data-sg-other"]),
    (tcp(27000, "sg-core", 27100), ["data-sg-other"]),   # a range wider than the data ports
    (Rule("icmp", -1, -1, "sg-core"), ["data-sg-other"]),
])
def test_one_data_rule_fails_the_checks_it_breaks(rule, names):
    assert [c.check for c in failing(replace(CLEAN, groups=(CORE, with_rules(DATA, rule))))] \
        == names


def test_a_group_shared_by_core_and_data_is_judged_by_both_and_left_alone_by_the_fix():
    shared = replace(CLEAN, instances=tuple(replace(i, groups=("sg-core",))
                                            for i in CLEAN.instances), groups=(CORE,))
    assert failing(shared) == [Check(
        "data-sg-other", "sg-core (jafar-core)", False, W["data-sg-other"],
        "other ports open: tcp 80 from sg-alb, tcp 443 from sg-alb",
        "give the data instance a security group of its own (sg-core is also the core "
        "instances')")]
    fixes = plan(WANT, shared)
    assert fixes == Plan((), ("sg-core (jafar-core) is both a core and a data security group: "
                              "left alone; give the data instance a group of its own",))
    assert nothing_to_do(WANT, shared, fixes, evaluate(WANT, shared)) == (
        "nothing aws.fix can change: sg-core (jafar-core) is both a core and a data security "
        "group: left alone; give the data instance a group of its own")


def test_no_instance_of_a_role_fails_what_needs_it():
    no_data = replace(CLEAN, instances=CLEAN.instances[:2], subnets=())
    missing = "no instance tagged jafar-role=data among those tagged jafar-env=prod"
    tag = "tag the data instance jafar-role=data"
    assert failing(no_data) == [
        Check("data-sg-ports", "data SG", False, W["data-sg-ports"], missing, tag),
        Check("data-sg-ssh", "data SG", False, W["ssh"], missing, tag),
        Check("data-sg-public", "data SG", False, W["data-sg-public"], missing, tag),
        Check("data-sg-other", "data SG", False, W["data-sg-other"], missing, tag),
        Check("data-subnet-private", "data subnet", False, "no route to an internet gateway",
              missing, tag),
        Check("data-subnet-acl", "data subnet", False,
              "network ACL: inbound only from the VPC", missing, tag),
        Check("termination-protection", "data instance", False, W["termination"], missing, tag),
    ]
    no_core = replace(CLEAN, instances=CLEAN.instances[2:], groups=(DATA,))
    assert [(c.check, c.subject, c.found) for c in failing(no_core)] == [
        ("core-sg-inbound", "core SG", "no instance tagged jafar-role=core among those tagged "
                                       "jafar-env=prod"),
        ("core-sg-ssh", "core SG", "no instance tagged jafar-role=core among those tagged "
                                   "jafar-env=prod"),
        ("data-sg-ports", "sg-data (jafar-data)", f"data ports ({DATA_PORTS_TEXT}) open to other "
                                                  f"than the core SG: {DATA_RULES}"),
    ]
    assert plan(WANT, no_core) == Plan((), (
        "sg-data (jafar-data): left alone, no core instance was found to keep the data ports "
        "open to (no instance tagged jafar-role=core among those tagged jafar-env=prod)",))


def test_the_data_subnet_public_route_and_open_acl():
    public = replace(SUBNET, routes=(Route("10.0.0.0/16", "local"), Route("0.0.0.0/0", "igw-1")),
                     inbound=(AclEntry(100, True, "-1", "0.0.0.0/0"),
                              AclEntry(32767, False, "-1", "0.0.0.0/0")))
    assert failing(replace(CLEAN, subnets=(public,))) == [
        Check("data-subnet-private", "subnet-data", False, "no route to an internet gateway",
              "rtb-data: 0.0.0.0/0 -> igw-1",
              "delete 0.0.0.0/0 -> igw-1 from rtb-data (the data subnet reaches out through a "
              "NAT gateway)"),
        Check("data-subnet-acl", "subnet-data", False,
              "network ACL: inbound only from the VPC (10.0.0.0/16)",
              "acl-data: rule 100 allows all traffic from 0.0.0.0/0",
              "in acl-data, allow inbound only from 10.0.0.0/16 (replace rule 100), and keep the "
              "final deny"),
    ]


@pytest.mark.parametrize("entries, leaks", [
    ([AclEntry(100, True, "-1", "10.0.0.0/16")], []),
    ([AclEntry(100, True, "-1", "10.0.4.0/24")], []),
    ([AclEntry(100, True, "-1", "0.0.0.0/0")], [100]),
    ([AclEntry(100, True, "6", "0.0.0.0/0", (1024, 65535))], [100]),   # replies from anywhere
    ([AclEntry(90, False, "-1", "0.0.0.0/0"), AclEntry(100, True, "-1", "0.0.0.0/0")], []),
    ([AclEntry(110, False, "-1", "0.0.0.0/0"), AclEntry(100, True, "-1", "0.0.0.0/0")], [100]),
    # a deny of some ports does not stop the other ports of a later allow
    ([AclEntry(90, False, "6", "0.0.0.0/0", (0, 1023)), AclEntry(100, True, "-1", "0.0.0.0/0")],
     [100]),
    ([AclEntry(90, False, "-1", "0.0.0.0/1"), AclEntry(100, True, "-1", "0.0.0.0/0")], [100]),
    ([AclEntry(90, False, "-1", "0.0.0.0/1"), AclEntry(91, False, "-1", "128.0.0.0/1"),
      AclEntry(100, True, "-1", "0.0.0.0/0")], []),
    ([AclEntry(100, True, "-1", "::/0")], [100]),
    ([AclEntry(100, True, "-1", "10.0.0.0/8")], [100]),
])
def test_acl_leaks_follow_rule_order(entries, leaks):
    assert [e.number for e in acl_leaks(entries, ["10.0.0.0/16"])] == leaks


def test_instance_checks_imds_volumes_and_termination_protection():
    facts = replace(CLEAN, instances=(
        instance("i-c1", "core-1", "core", "sg-core", http_tokens="optional"),
        instance("i-c2", "", "core", "sg-core", volumes=(Volume("vol-a", True),
                                                         Volume("vol-b", False))),
        instance("i-d1", "data-1", "data", "sg-data", protected=False, volumes=())))
    assert failing(facts) == [
        Check("imdsv2", "i-c1 (core-1)", False, W["imdsv2"], "HttpTokens optional",
              "aws ec2 modify-instance-metadata-options --instance-id i-c1 --http-tokens "
              "required --http-endpoint enabled"),
        Check("ebs-encrypted", "i-c2 (core)", False, W["ebs"], "not encrypted: vol-b",
              "encrypt a copy: snapshot, copy-snapshot --encrypted, create-volume from it, swap "
              "it in (and aws ec2 enable-ebs-encryption-by-default)"),
        Check("termination-protection", "i-d1 (data-1)", False, W["termination"],
              "DisableApiTermination false",
              "aws ec2 modify-instance-attribute --instance-id i-d1 --disable-api-termination"),
    ]
    assert checks_of(facts)[("ebs-encrypted", "i-d1 (data-1)")].found == "no EBS volume attached"


@pytest.mark.parametrize("name, ok", [
    ("ELBSecurityPolicy-TLS13-1-2-2021-06", True),
    ("ELBSecurityPolicy-TLS13-1-2-Res-2021-06", True),
    ("ELBSecurityPolicy-TLS13-1-2-Ext2-2021-06", True),
    ("ELBSecurityPolicy-TLS13-1-2-FIPS-2023-04", True),
    ("ELBSecurityPolicy-TLS13-1-2-PQ-2025-09", True),
    ("ELBSecurityPolicy-TLS13-1-3-2021-06", True),
    ("ELBSecurityPolicy-TLS-1-2-2017-01", True),
    ("ELBSecurityPolicy-TLS-1-2-Ext-2018-06", True),
    ("ELBSecurityPolicy-FS-1-2-2019-08", True),
    ("ELBSecurityPolicy-FS-1-2-Res-2020-10", True),
    ("ELBSecurityPolicy-TLS13-1-1-2021-06", False),   # TLS 1.3 policies reaching down to 1.1
    ("ELBSecurityPolicy-TLS13-1-0-2021-06", False),
    ("ELBSecurityPolicy-TLS-1-1-2017-01", False),
    ("ELBSecurityPolicy-FS-1-1-2019-08", False),
    ("ELBSecurityPolicy-FS-2018-06", False),
    ("ELBSecurityPolicy-2016-08", False),             # the default: TLS 1.0
    ("ELBSecurityPolicy-TLS-1-2", True),
    ("my-own-policy", False),
    ("", False),
])
def test_tls_policies_pass_only_with_a_floor_of_tls_1_2(name, ok):
    assert bool(TLS12_POLICY.fullmatch(name)) is ok


def test_alb_listeners_and_waf():
    lb = replace(LB, listeners=(
        Listener("arn:l80", 80, "HTTP", None, ("redirect to HTTPS", "forward")),
        Listener("arn:l443", 443, "HTTPS", "ELBSecurityPolicy-2016-08", ("forward",)),
        Listener("arn:l8443", 8443, "HTTPS", "ELBSecurityPolicy-TLS13-1-2-2021-06",
                 ("forward",))), web_acl=None)
    assert failing(replace(CLEAN, alb=lb)) == [
        Check("alb-https", "jafar-prod", False, W["alb-https"],
              "HTTPS 443: ELBSecurityPolicy-2016-08 is not a TLS 1.2+ policy",
              "aws elbv2 modify-listener --listener-arn arn:l443 --ssl-policy "
              "ELBSecurityPolicy-TLS13-1-2-2021-06"),
        Check("alb-http-redirect", "jafar-prod", False, W["alb-http-redirect"],
              "HTTP 80: redirect to HTTPS, forward",
              "aws elbv2 modify-listener --listener-arn arn:l80 --default-actions "
              "'Type=redirect,RedirectConfig={Protocol=HTTPS,Port=443,StatusCode=HTTP_301}' "
              "(and no rule that forwards)"),
        Check("alb-waf", "jafar-prod", False, W["alb-waf"], "no web ACL associated",
              "aws wafv2 associate-web-acl --web-acl-arn ARN --resource-arn arn:lb"),
    ]
    only_https = replace(LB, listeners=LB.listeners[1:])
    assert checks_of(replace(CLEAN, alb=only_https))[("alb-http-redirect", "jafar-prod")] == \
        Check("alb-http-redirect", "jafar-prod", True, W["alb-http-redirect"],
              "no HTTP listener (plain HTTP is not served)")
    none = replace(LB, listeners=LB.listeners[:1])
    assert [c.found for c in failing(replace(CLEAN, alb=none))] == ["no HTTPS listener"]


def test_what_cannot_be_read_fails_saying_so_and_the_fix_leaves_its_groups_alone():
    denied = "cannot check: reading the load balancer jafar-prod: AWS answered AccessDenied: no"
    facts = replace(CLEAN, alb=Unreadable(denied), detectors=Unreadable(
        "cannot check: reading the GuardDuty detectors: AWS answered AccessDeniedException: no"),
        trails=(Trail("org", False, (), "cannot check: reading the CloudTrail trail org: AWS "
                                        "answered AccessDeniedException: no"),))
    assert [(c.check, c.found) for c in failing(facts)] == [
        ("core-sg-inbound", denied), ("alb-https", denied), ("alb-http-redirect", denied),
        ("alb-waf", denied),
        ("guardduty", "cannot check: reading the GuardDuty detectors: AWS answered "
                      "AccessDeniedException: no"),
        ("cloudtrail", "trail org: cannot check: reading the CloudTrail trail org: AWS answered "
                       "AccessDeniedException: no"),
    ]
    core = with_rules(CORE, tcp(3000, "0.0.0.0/0"))
    assert plan(WANT, replace(facts, groups=(core, DATA))) == Plan((), (
        f"sg-core (jafar-core): left alone, the load balancer's security group is unknown "
        f"({denied})",))
    waf = replace(LB, web_acl=Unreadable("cannot check: reading the WAF web ACL of jafar-prod: "
                                         "AWS answered AccessDeniedException: no"))
    assert [(c.check, c.ok) for c in evaluate(WANT, replace(CLEAN, alb=waf))
            if c.check == "alb-waf"] == [("alb-waf", False)]


def test_guardduty_and_cloudtrail_findings():
    facts = replace(CLEAN, detectors=(Detector("d1", "DISABLED"),), trails=(
        Trail("a", False, ()), Trail("b", True, (Selector(False, "All"),))))
    assert failing(facts) == [
        Check("guardduty", "eu-west-1", False, W["guardduty"], "detector d1 disabled",
              "aws guardduty update-detector --detector-id d1 --enable --region eu-west-1"),
        Check("cloudtrail", "eu-west-1", False, W["cloudtrail"],
              "trail a: is not logging; trail b: records no management writes",
              "aws cloudtrail start-logging --name a"),
    ]
    assert [c.found for c in failing(replace(CLEAN, detectors=(), trails=()))] == [
        "no detector in eu-west-1", "no trail in eu-west-1"]


@pytest.mark.parametrize("chosen, recorded", [
    ((), "All"),                                            # AWS's default: no selector
    ((Selector(True, "All"),), "All"),
    ((Selector(True, "WriteOnly"),), "WriteOnly"),
    ((Selector(True, "ReadOnly"), Selector(True, "WriteOnly")), "All"),
    ((Selector(True, "ReadOnly"),), None),
    ((Selector(False, "All"),), None),
])
def test_management_events_a_trail_records(chosen, recorded):
    assert management(Trail("t", True, chosen)) == recorded


def test_event_selectors_basic_and_advanced():
    assert selectors([{"ReadWriteType": "WriteOnly", "IncludeManagementEvents": True},
                      {"DataResources": [{"Type": "AWS::S3::Object"}]}], []) == (
        Selector(True, "WriteOnly"), Selector(True, "All"))
    assert selectors([], [
        {"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Management"]}]},
        {"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Management"]},
                            {"Field": "readOnly", "Equals": ["true"]}]},
        {"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Data"]}]}]) == (
        Selector(True, "All"), Selector(True, "ReadOnly"), Selector(False, "All"))


def test_rules_of_one_permission_one_rule_per_source():
    assert rules_of({"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443,
                     "IpRanges": [{"CidrIp": "0.0.0.0/0", "Description": "web"}],
                     "Ipv6Ranges": [{"CidrIpv6": "::/0"}],
                     "UserIdGroupPairs": [{"GroupId": "sg-alb", "UserId": "123"}],
                     "PrefixListIds": [{"PrefixListId": "pl-1"}]}) == [
        tcp(443, "0.0.0.0/0"), tcp(443, "::/0"), tcp(443, "sg-alb"), tcp(443, "pl-1")]
    assert rules_of({"IpProtocol": "-1", "IpRanges": [{"CidrIp": "10.0.0.0/16"}]}) == [
        Rule("-1", None, None, "10.0.0.0/16")]
    assert rules_of({"IpProtocol": "17", "FromPort": 53, "ToPort": 53,
                     "IpRanges": [{"CidrIp": "10.0.0.0/16"}]}) == [
        Rule("udp", 53, 53, "10.0.0.0/16")]


def test_rule_words_and_the_permission_that_adds_or_revokes_it():
    assert [r.describe() for r in (tcp(443, "sg-alb"), tcp(27017, "sg-core", 27019),
                                   Rule("-1", None, None, "::/0"), Rule("icmp", -1, -1, "pl-1"),
                                   Rule("icmp", 8, -1, "10.0.0.0/8"), Rule("50", None, None,
                                                                           "1.2.3.4/32"))] == [
        "tcp 443 from sg-alb", "tcp 27017-27019 from sg-core", "all traffic from ::/0",
        "icmp from pl-1", "icmp type 8 from 10.0.0.0/8", "protocol 50 from 1.2.3.4/32"]
    assert tcp(22, SSH_CIDR).permission() == {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                                              "IpRanges": [{"CidrIp": SSH_CIDR}]}
    assert Rule("-1", None, None, "::/0").permission() == {
        "IpProtocol": "-1", "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}
    assert tcp(80, "sg-alb").permission()["UserIdGroupPairs"] == [{"GroupId": "sg-alb"}]
    assert tcp(80, "pl-1").permission()["PrefixListIds"] == [{"PrefixListId": "pl-1"}]


def test_listener_actions_in_words():
    assert [action_text(a) for a in (
        [{"Type": "redirect", "RedirectConfig": {"Protocol": "HTTPS"}}],
        [{"Type": "redirect", "RedirectConfig": {"Protocol": "#{protocol}"}}],
        [{"Type": "authenticate-oidc", "Order": 1}, {"Type": "forward", "Order": 2}],
        [])] == ["redirect to HTTPS", "redirect to the same protocol", "forward", "nothing"]


# --- the fix plan ------------------------------------------------------------------------------

def test_fix_plan_adds_what_must_stay_open_then_revokes_and_never_touches_ssh_from_ssh_cidr():
    core = with_rules(CORE, tcp(3000, "0.0.0.0/0"), tcp(443, "0.0.0.0/0"))
    data = replace(DATA, rules=(Rule("-1", None, None, "0.0.0.0/0"), tcp(27017, "10.0.0.0/16"),
                                tcp(6379, "sg-core"), Rule("udp", 53, 53, "sg-core"),
                                tcp(22, "10.0.9.5/32")))
    assert plan(WANT, replace(CLEAN, groups=(core, data))) == Plan((
        Change("add", "sg-data", tcp(22, SSH_CIDR)),
        Change("add", "sg-data", tcp(5432, "sg-core")),
        Change("add", "sg-data", tcp(9100, "sg-core")),
        Change("add", "sg-data", tcp(9121, "sg-core")),
        Change("add", "sg-data", tcp(9187, "sg-core")),
        Change("add", "sg-data", tcp(27017, "sg-core", 27019)),
        Change("revoke", "sg-core", tcp(443, "0.0.0.0/0")),
        Change("revoke", "sg-core", tcp(3000, "0.0.0.0/0")),
        Change("revoke", "sg-data", Rule("-1", None, None, "0.0.0.0/0")),
        Change("revoke", "sg-data", tcp(27017, "10.0.0.0/16")),
        Change("revoke", "sg-data", Rule("udp", 53, 53, "sg-core")),
    ))


def test_fix_plan_without_an_alb_keeps_80_and_443_from_where_they_came():
    want = replace(WANT, alb=None)
    core = Group("sg-core", "jafar-core", (tcp(0, "0.0.0.0/0", 65535),))
    assert plan(want, replace(CLEAN, groups=(core, DATA), alb=None)) == Plan((
        Change("add", "sg-core", tcp(22, SSH_CIDR)),
        Change("add", "sg-core", tcp(80, "0.0.0.0/0")),
        Change("add", "sg-core", tcp(443, "0.0.0.0/0")),
        Change("revoke", "sg-core", tcp(0, "0.0.0.0/0", 65535)),
    ))


def test_fix_plan_with_an_alb_moves_the_web_ports_to_its_group():
    core = Group("sg-core", "jafar-core", (tcp(22, SSH_CIDR), tcp(80, "0.0.0.0/0"),
                                           tcp(443, "0.0.0.0/0")))
    fixes = plan(WANT, replace(CLEAN, groups=(core, DATA)))
    assert fixes.lines() == [
        "add sg-core: tcp 80 from sg-alb", "add sg-core: tcp 443 from sg-alb",
        "revoke sg-core: tcp 80 from 0.0.0.0/0", "revoke sg-core: tcp 443 from 0.0.0.0/0"]


def test_nothing_to_do_says_why_and_what_else_fails():
    facts = replace(CLEAN, detectors=(Detector("d1", "DISABLED"),))
    assert nothing_to_do(WANT, facts, plan(WANT, facts), evaluate(WANT, facts)) == (
        "nothing to do: the security groups of prod (sg-core, sg-data) already allow only what "
        "aws.check wants\naws.fix changes security-group rules only; still failing: guardduty "
        "(inv aws.check --host prod)")


def test_table_and_json():
    facts = replace(CLEAN, instances=CLEAN.instances[:1], groups=(CORE,), subnets=(),
                    detectors=(Detector("d1", "DISABLED"),))
    lines = table(WANT, facts, evaluate(WANT, facts))
    assert lines[:6] == [
        "prod: 1 instance(s) tagged jafar-env=prod in eu-west-1: i-c1 (core, running)",
        "CHECK                   SUBJECT               RESULT  WANTED                          "
        "                     FOUND",
        "core-sg-inbound         sg-core (jafar-core)  PASS    80/443 only from the ALB's SG "
        "(sg-alb)               open: tcp 80 from sg-alb, tcp 443 from sg-alb",
        "core-sg-ssh             sg-core (jafar-core)  PASS    22 only from 10.0.9.0/24 "
        "(ssh_cidr)                  SSH only from 10.0.9.0/24",
        "data-sg-ports           data SG               FAIL    data ports only from the core SG "
        "(sg-core)           no instance tagged jafar-role=data among those tagged "
        "jafar-env=prod",
        "    fix: tag the data instance jafar-role=data"]
    assert lines[-3:] == [
        "guardduty               eu-west-1             FAIL    a GuardDuty detector enabled in "
        "eu-west-1            detector d1 disabled",
        "    fix: aws guardduty update-detector --detector-id d1 --enable --region eu-west-1",
        "cloudtrail              eu-west-1             PASS    a CloudTrail trail logging "
        "management events         trail main logging, management events: All"]
    doc = json.loads(as_json(WANT, facts, evaluate(WANT, facts)))
    assert doc["passed"] is False and doc["environment"] == "prod"
    assert doc["instances"] == [{"id": "i-c1", "name": "core-1", "role": "core",
                                 "state": "running"}]
    assert doc["checks"][0] == {
        "check": "core-sg-inbound", "subject": "sg-core (jafar-core)", "ok": True,
        "result": "PASS", "wanted": W["core-sg-inbound"],
        "found": "open: tcp 80 from sg-alb, tcp 443 from sg-alb", "fix": ""}
    assert [c["check"] for c in doc["checks"] if c["result"] == "FAIL"] == [
        "data-sg-ports", "data-sg-ssh", "data-sg-public", "data-sg-other", "data-subnet-private",
        "data-subnet-acl", "termination-protection", "guardduty"]
