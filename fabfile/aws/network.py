"""The network the mission describes, read from AWS and judged: `inv aws.check` and `aws.fix`.

Three parts, so that what is judged can be tested by exact equality, without AWS:
- `gather(env)` reads EC2, ELBv2, WAFv2, GuardDuty and CloudTrail (through `client` and
  `answered`) into plain facts. A part AWS does not answer (access denied, an API the
  endpoint lacks) is kept as `Unreadable`, and its checks FAIL saying "cannot check": a check
  never passes on what it could not read.
- `evaluate(policy, facts)` turns the facts into checks, PASS or FAIL, each with a one-line fix.
- `plan(policy, facts)` lists the security-group changes `aws.fix` makes (adds first, then
  revokes), and `apply(env, plan, done)` makes them. Nothing else is ever changed.

The instances are those with every tag of `aws.instance_tags` (not terminated); the tag
`aws.role_tag` gives each its role, data or core. The core security groups are those of the
core instances, the data security groups those of the data instance.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from fabfile.aws.client import answered, client, settings
from fabfile.config import Environment
from fabfile.errors import BadInput, StepFailed
from fabfile.flow import columns
from fabfile.monitor import cluster

T = TypeVar("T")

SSH = 22
WEB_PORTS = (80, 443)
# MongoDB (27017-27019), Redis, PostgreSQL, and their exporters: node_exporter, redis and
# postgres exporters (scraped by Prometheus on the core host)
DATA_PORTS = (27017, 27018, 27019, 6379, 5432, 9100, 9121, 9187)
ANYWHERE = ("0.0.0.0/0", "::/0")
LIVE_STATES = ("pending", "running", "stopping", "stopped")  # not shutting-down, terminated
ROLES = ("data", "core")
# TLS 1.2 or newer only, decided by the policy's name (AWS names the lowest version in it):
# ELBSecurityPolicy-TLS13-1-2-*, -TLS13-1-3-* (TLS 1.3 policies whose floor is 1.2 or 1.3),
# -TLS-1-2-* and -FS-1-2-*, FIPS and PQ variants included. Everything else fails: the
# TLS13-1-0/-1-1 and FS-1-1 policies, ELBSecurityPolicy-2016-08 (the default, TLS 1.0) and
# any name this rule does not know.
TLS12_POLICY = re.compile(r"ELBSecurityPolicy-(TLS13-1-[23]|TLS-1-2|FS-1-2)(-[A-Za-z0-9-]+)?")
GOOD_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
PROTOCOLS = {"6": "tcp", "17": "udp", "1": "icmp", "58": "icmpv6"}


# --- facts: what AWS answered -----------------------------------------------------------------

@dataclass(frozen=True, order=True)
class Rule:
    """One inbound security-group permission for one source (a CIDR, sg-... or pl-...)."""

    protocol: str              # tcp, udp, icmp, icmpv6, -1 (all traffic) or a number
    low: int | None            # FromPort as AWS gives it (None for all traffic)
    high: int | None           # ToPort
    source: str

    def covers(self, port: int) -> bool:
        """Does it let in TCP on `port`?"""
        if self.protocol == "-1":
            return True
        return self.protocol == "tcp" and _span(self)[0] <= port <= _span(self)[1]

    def beyond(self, allowed: Iterable[int]) -> bool:
        """Does it let in anything other than TCP on the `allowed` ports?"""
        if self.protocol != "tcp":
            return True
        low, high = _span(self)
        return sum(1 for p in set(allowed) if low <= p <= high) < high - low + 1

    def ports(self) -> str:
        if self.protocol == "-1":
            return "all traffic"
        if self.protocol in ("tcp", "udp"):
            low, high = _span(self)
            return f"{self.protocol} {low}" if low == high else f"{self.protocol} {low}-{high}"
        if self.protocol in ("icmp", "icmpv6"):
            return self.protocol if self.low in (None, -1) else f"{self.protocol} type {self.low}"
        return f"protocol {self.protocol}"

    def describe(self) -> str:
        return f"{self.ports()} from {self.source}"

    def permission(self) -> dict[str, Any]:
        """The IpPermissions entry that adds or revokes exactly this rule."""
        perm: dict[str, Any] = {"IpProtocol": self.protocol}
        if self.low is not None:
            perm["FromPort"] = self.low
        if self.high is not None:
            perm["ToPort"] = self.high
        if self.source.startswith("sg-"):
            perm["UserIdGroupPairs"] = [{"GroupId": self.source}]
        elif self.source.startswith("pl-"):
            perm["PrefixListIds"] = [{"PrefixListId": self.source}]
        elif ":" in self.source:
            perm["Ipv6Ranges"] = [{"CidrIpv6": self.source}]
        else:
            perm["IpRanges"] = [{"CidrIp": self.source}]
        return perm


def _span(rule: Rule) -> tuple[int, int]:
    low = 0 if rule.low in (None, -1) else int(rule.low)  # type: ignore[arg-type]
    high = 65535 if rule.high in (None, -1) else int(rule.high)  # type: ignore[arg-type]
    return low, high


def tcp(port: int, source: str, high: int | None = None) -> Rule:
    return Rule("tcp", port, port if high is None else high, source)


@dataclass(frozen=True)
class Group:
    """A security group and its inbound rules."""

    id: str
    name: str
    rules: tuple[Rule, ...]

    def label(self) -> str:
        return f"{self.id} ({self.name})"


@dataclass(frozen=True)
class Volume:
    id: str
    encrypted: bool


@dataclass(frozen=True)
class Instance:
    """One EC2 instance with the environment's tags."""

    id: str
    name: str                      # its Name tag, or ""
    role: str                      # data, core, or what the role tag says ("" if none)
    state: str
    subnet: str
    vpc: str
    groups: tuple[str, ...]
    http_tokens: str               # "required": IMDSv2 only
    volumes: tuple[Volume, ...]
    termination_protected: bool | None = None   # read for the data instance only
    hop_limit: int = 1             # IMDS PUT response hop limit: 1 keeps containers out

    def label(self) -> str:
        return f"{self.id} ({self.name or self.role or 'no role'})"


@dataclass(frozen=True)
class Route:
    destination: str
    target: str                    # igw-..., nat-..., local, ...


@dataclass(frozen=True)
class AclEntry:
    """An inbound network ACL entry."""

    number: int
    allow: bool
    protocol: str                  # -1 (all), 6 (tcp), 17 (udp), 1 (icmp), ...
    cidr: str
    ports: tuple[int, int] | None = None

    def describe(self) -> str:
        what = {"-1": "all traffic"}.get(self.protocol, PROTOCOLS.get(self.protocol,
                                                                       f"protocol {self.protocol}"))
        if self.ports is not None and self.protocol in ("6", "17"):
            low, high = self.ports
            what += f" {low}" if low == high else f" {low}-{high}"
        return f"rule {self.number} {'allows' if self.allow else 'denies'} {what} from {self.cidr}"


@dataclass(frozen=True)
class Subnet:
    """The data instance's subnet: its route table, its network ACL, its VPC's ranges."""

    id: str
    vpc_cidrs: tuple[str, ...]
    route_table: str
    routes: tuple[Route, ...]
    acl: str
    inbound: tuple[AclEntry, ...]


@dataclass(frozen=True)
class Listener:
    arn: str
    port: int
    protocol: str
    ssl_policy: str | None
    actions: tuple[str, ...]       # "redirect to HTTPS", "forward", ... (HTTP: every rule's)


@dataclass(frozen=True)
class LoadBalancer:
    name: str
    arn: str
    groups: tuple[str, ...]
    listeners: tuple[Listener, ...]
    web_acl: str | None | Unreadable   # the WAFv2 web ACL's name


@dataclass(frozen=True)
class Detector:
    id: str
    status: str                    # ENABLED or DISABLED


@dataclass(frozen=True)
class Selector:
    """A CloudTrail event selector, basic or advanced, as far as management events go."""

    include_management: bool       # basic: IncludeManagementEvents; advanced: eventCategory
    read_write: str                # All, WriteOnly or ReadOnly


@dataclass(frozen=True)
class Trail:
    name: str
    logging: bool
    selectors: tuple[Selector, ...]   # none: AWS's default (every management event)
    problem: str = ""                 # why its status or selectors could not be read


@dataclass(frozen=True)
class Unreadable:
    """What AWS did not answer, said as the check's finding ("cannot check: ...")."""

    reason: str


@dataclass(frozen=True)
class Facts:
    region: str
    instances: tuple[Instance, ...]
    groups: tuple[Group, ...]
    subnets: tuple[Subnet | Unreadable, ...]        # the data instances' subnets
    alb: LoadBalancer | Unreadable | None            # None: no aws.alb configured
    detectors: tuple[Detector, ...] | Unreadable
    trails: tuple[Trail, ...] | Unreadable

    def of_role(self, role: str) -> tuple[Instance, ...]:
        return tuple(i for i in self.instances if i.role == role)

    def group_ids(self, role: str) -> tuple[str, ...]:
        return tuple(sorted({g for i in self.of_role(role) for g in i.groups}))

    def group(self, group_id: str) -> Group:
        return next(g for g in self.groups if g.id == group_id)


@dataclass(frozen=True)
class Policy:
    """What the environment wants: from config/environments.yml."""

    environment: str
    region: str
    tags: dict[str, str]
    role_tag: str
    ssh_cidr: str
    alb: str | None = None         # the load balancer's name, when there is one
    core_hops: int = 1             # 2 when Alertmanager's container signs SNS calls (sns_topic)
    cluster: bool = False          # the core hosts' Alertmanagers gossip (monitor/cluster.py)

    def tag_text(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in sorted(self.tags.items()))


def policy(env: Environment) -> Policy:
    aws = settings(env)
    return Policy(env.name, aws.region, dict(aws.instance_tags), aws.role_tag,
                  env.host_setup.ssh_cidr, aws.alb.name if aws.alb else None,
                  2 if env.alerting.sns_topic else 1, cluster.clustered(env))


# --- reading AWS --------------------------------------------------------------------------------

def gather(env: Environment) -> Facts:
    """Everything the checks look at, in a few calls per service. No instance with the tags is
    StepFailed (exit 1): that is what AWS answered."""
    want = policy(env)
    ec2 = client(env, "ec2")
    found = find_instances(env, ec2, want)
    ids = sorted({g for i in found for g in i.groups})
    with answered(env, f"reading the security groups {', '.join(ids)}"):
        answer = ec2.describe_security_groups(GroupIds=ids)["SecurityGroups"] if ids else []
    groups = tuple(sorted((Group(g["GroupId"], g.get("GroupName", ""),
                                 tuple(sorted(r for p in g.get("IpPermissions", [])
                                              for r in rules_of(p))))
                           for g in answer), key=lambda g: g.id))
    subnets = tuple(readable(lambda s=s, v=v: read_subnet(env, ec2, s, v))
                    for s, v in sorted({(i.subnet, i.vpc) for i in found if i.role == "data"}))
    alb = readable(lambda: read_alb(env, want.alb)) if want.alb else None
    return Facts(want.region, found, groups, subnets, alb,
                 readable(lambda: read_detectors(env)), readable(lambda: read_trails(env)))


def readable(read: Callable[[], T]) -> T | Unreadable:
    """One part of the facts, or why AWS did not give it: its checks then FAIL."""
    try:
        return read()
    except (StepFailed, BadInput) as exc:
        return Unreadable(f"cannot check: {exc}")


def tagged_instances(env: Environment, ec2: Any, want: Policy) -> list[dict[str, Any]]:
    """describe_instances of the environment's instances (by its tags, not terminated); none
    is StepFailed (exit 1), naming the tags."""
    filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in sorted(want.tags.items())]
    filters.append({"Name": "instance-state-name", "Values": list(LIVE_STATES)})
    with answered(env, f"finding the EC2 instances tagged {want.tag_text()}"):
        raw = [i for page in ec2.get_paginator("describe_instances").paginate(Filters=filters)
               for r in page["Reservations"] for i in r["Instances"]]
    if not raw:
        raise StepFailed(f"no EC2 instance in {want.region} has the tags {want.tag_text()} "
                         f"(running or stopped); tag the instances or fix aws.instance_tags of "
                         f"{env.name}")
    return raw


def find_instances(env: Environment, ec2: Any, want: Policy) -> tuple[Instance, ...]:
    raw = tagged_instances(env, ec2, want)
    volume_ids = sorted({b["Ebs"]["VolumeId"] for i in raw for b in i.get("BlockDeviceMappings",
                                                                          []) if "Ebs" in b})
    encrypted: dict[str, bool] = {}
    if volume_ids:
        with answered(env, "reading the instances' EBS volumes"):
            for page in ec2.get_paginator("describe_volumes").paginate(VolumeIds=volume_ids):
                encrypted.update({v["VolumeId"]: bool(v.get("Encrypted")) for v in
                                  page["Volumes"]})
    found = []
    for i in sorted(raw, key=lambda i: i["InstanceId"]):
        tags = {t["Key"]: t["Value"] for t in i.get("Tags", [])}
        role = tags.get(want.role_tag, "")
        protected = None
        if role == "data":
            with answered(env, f"reading the termination protection of {i['InstanceId']}"):
                protected = bool(ec2.describe_instance_attribute(
                    InstanceId=i["InstanceId"], Attribute="disableApiTermination")
                    ["DisableApiTermination"]["Value"])
        volumes = tuple(Volume(v, encrypted.get(v, False)) for v in sorted(
            b["Ebs"]["VolumeId"] for b in i.get("BlockDeviceMappings", []) if "Ebs" in b))
        found.append(Instance(
            i["InstanceId"], tags.get("Name", ""), role, i["State"]["Name"],
            i.get("SubnetId", ""), i.get("VpcId", ""),
            tuple(sorted(g["GroupId"] for g in i.get("SecurityGroups", []))),
            i.get("MetadataOptions", {}).get("HttpTokens", "optional"), volumes, protected,
            int(i.get("MetadataOptions", {}).get("HttpPutResponseHopLimit", 1))))
    return tuple(found)


def rules_of(permission: dict[str, Any]) -> list[Rule]:
    """One Rule per source of an IpPermissions entry (as AWS lists them)."""
    protocol = str(permission.get("IpProtocol", "-1"))
    protocol = PROTOCOLS.get(protocol, protocol)
    low, high = permission.get("FromPort"), permission.get("ToPort")
    if protocol == "-1":
        low = high = None
    sources = ([r["CidrIp"] for r in permission.get("IpRanges", [])]
               + [r["CidrIpv6"] for r in permission.get("Ipv6Ranges", [])]
               + [p["GroupId"] for p in permission.get("UserIdGroupPairs", [])]
               + [p["PrefixListId"] for p in permission.get("PrefixListIds", [])])
    return [Rule(protocol, low, high, s) for s in sources]


def read_subnet(env: Environment, ec2: Any, subnet: str, vpc: str) -> Subnet:
    with answered(env, f"reading the route table, network ACL and VPC of {subnet}"):
        tables = ec2.describe_route_tables(Filters=[
            {"Name": "association.subnet-id", "Values": [subnet]}])["RouteTables"]
        if not tables:  # no table of its own: the VPC's main route table
            tables = ec2.describe_route_tables(Filters=[
                {"Name": "vpc-id", "Values": [vpc]},
                {"Name": "association.main", "Values": ["true"]}])["RouteTables"]
        acls = ec2.describe_network_acls(Filters=[
            {"Name": "association.subnet-id", "Values": [subnet]}])["NetworkAcls"]
        vpcs = ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"]
    if not tables or not acls or not vpcs:
        raise StepFailed(f"{subnet}: AWS gave no route table, network ACL or VPC for it")
    table, acl, cidrs = tables[0], acls[0], vpcs[0]
    routes = tuple(Route(r.get("DestinationCidrBlock") or r.get("DestinationIpv6CidrBlock")
                         or r.get("DestinationPrefixListId", "?"),
                         next((str(r[k]) for k in ("GatewayId", "NatGatewayId",
                                                   "TransitGatewayId", "VpcPeeringConnectionId",
                                                   "EgressOnlyInternetGatewayId",
                                                   "NetworkInterfaceId", "InstanceId")
                               if r.get(k)), "?"))
                   for r in table.get("Routes", []))
    entries = tuple(sorted((AclEntry(
        int(e["RuleNumber"]), e["RuleAction"] == "allow", str(e.get("Protocol", "-1")),
        e.get("CidrBlock") or e.get("Ipv6CidrBlock", ""),
        (int(e["PortRange"]["From"]), int(e["PortRange"]["To"])) if "PortRange" in e else None)
        for e in acl.get("Entries", []) if not e.get("Egress")), key=lambda e: e.number))
    vpc_cidrs = tuple(sorted(
        [a["CidrBlock"] for a in cidrs.get("CidrBlockAssociationSet", [])
         if a.get("CidrBlockState", {}).get("State") == "associated"]
        + [a["Ipv6CidrBlock"] for a in cidrs.get("Ipv6CidrBlockAssociationSet", [])
           if a.get("Ipv6CidrBlockState", {}).get("State") == "associated"]))
    return Subnet(subnet, vpc_cidrs, table["RouteTableId"], routes, acl["NetworkAclId"], entries)


def read_alb(env: Environment, name: str) -> LoadBalancer | Unreadable:
    region = settings(env).region
    elb = client(env, "elbv2")
    with answered(env, f"reading the load balancer {name}"):
        try:
            lb = elb.describe_load_balancers(Names=[name])["LoadBalancers"][0]
        except elb.exceptions.LoadBalancerNotFoundException:
            return Unreadable(f"AWS has no load balancer named {name} in {region}")
        raw = [x for page in elb.get_paginator("describe_listeners").paginate(
            LoadBalancerArn=lb["LoadBalancerArn"]) for x in page["Listeners"]]
        listeners = []
        for x in sorted(raw, key=lambda x: (x["Port"], x["ListenerArn"])):
            actions = [x.get("DefaultActions", [])]
            if x["Protocol"] == "HTTP":  # what each of its rules does, not only the default
                actions = [r.get("Actions", []) for r in
                           elb.describe_rules(ListenerArn=x["ListenerArn"])["Rules"]]
            listeners.append(Listener(x["ListenerArn"], int(x["Port"]), x["Protocol"],
                                      x.get("SslPolicy"),
                                      tuple(action_text(a) for a in actions)))
    return LoadBalancer(name, lb["LoadBalancerArn"], tuple(sorted(lb.get("SecurityGroups", []))),
                        tuple(listeners),
                        readable(lambda: read_web_acl(env, lb["LoadBalancerArn"], name)))


def action_text(actions: list[dict[str, Any]]) -> str:
    """What a listener rule does in the end (its last action: authentication comes first)."""
    if not actions:
        return "nothing"
    last = sorted(actions, key=lambda a: a.get("Order", 0))[-1]
    if last.get("Type") == "redirect":
        protocol = last.get("RedirectConfig", {}).get("Protocol", "#{protocol}")
        return f"redirect to {'the same protocol' if protocol == '#{protocol}' else protocol}"
    return str(last.get("Type", "?"))


def read_web_acl(env: Environment, arn: str, name: str) -> str | None:
    waf = client(env, "wafv2")
    with answered(env, f"reading the WAF web ACL of {name}"):
        try:
            acl = waf.get_web_acl_for_resource(ResourceArn=arn).get("WebACL")
        except waf.exceptions.WAFNonexistentItemException:  # AWS: nothing associated
            return None
    return str(acl["Name"]) if acl else None


def read_detectors(env: Environment) -> tuple[Detector, ...]:
    gd = client(env, "guardduty")
    with answered(env, "reading the GuardDuty detectors"):
        ids = [d for page in gd.get_paginator("list_detectors").paginate()
               for d in page["DetectorIds"]]
        return tuple(Detector(d, str(gd.get_detector(DetectorId=d).get("Status", "?")))
                     for d in sorted(ids))


def read_trails(env: Environment) -> tuple[Trail, ...]:
    ct = client(env, "cloudtrail")
    with answered(env, "reading the CloudTrail trails"):
        listed = ct.describe_trails(includeShadowTrails=True)["trailList"]
    found = []
    for t in listed:  # one trail AWS does not show us (another account's) spoils no other
        try:
            with answered(env, f"reading the CloudTrail trail {t['Name']}"):
                status = ct.get_trail_status(Name=t["TrailARN"])
                chosen = ct.get_event_selectors(TrailName=t["TrailARN"])
        except (StepFailed, BadInput) as exc:
            found.append(Trail(t["Name"], False, (), f"cannot check: {exc}"))
            continue
        found.append(Trail(t["Name"], bool(status.get("IsLogging")),
                           selectors(chosen.get("EventSelectors") or [],
                                     chosen.get("AdvancedEventSelectors") or [])))
    return tuple(sorted(found, key=lambda t: t.name))


def selectors(basic: list[dict[str, Any]], advanced: list[dict[str, Any]]) -> tuple[Selector, ...]:
    """Event selectors as far as management events go (advanced ones by their eventCategory
    and readOnly fields)."""
    found = [Selector(bool(s.get("IncludeManagementEvents", True)),
                      str(s.get("ReadWriteType", "All"))) for s in basic]
    for s in advanced:
        fields = {f.get("Field"): f for f in s.get("FieldSelectors", [])}
        category = fields.get("eventCategory", {}).get("Equals", [])
        read_only = fields.get("readOnly", {}).get("Equals", [])
        mode = {"true": "ReadOnly", "false": "WriteOnly"}.get(read_only[0], "All") \
            if len(read_only) == 1 else "All"
        found.append(Selector("Management" in category, mode))
    return tuple(found)


# --- judging: pure ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Check:
    """One PASS or FAIL, with what was wanted, what was found and, when it fails, the fix."""

    check: str
    subject: str
    ok: bool
    wanted: str
    found: str
    fix: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "result": "PASS" if self.ok else "FAIL"}


def rules_text(rules: Iterable[Rule]) -> str:
    return ", ".join(r.describe() for r in rules) or "no inbound rule"


def within(source: str, cidr: str) -> bool:
    """Is the rule's source inside `cidr` (a security group or prefix list never is)?"""
    try:
        net, outer = ipaddress.ip_network(source), ipaddress.ip_network(cidr)
    except ValueError:
        return False
    return net.version == outer.version and net.subnet_of(outer)  # type: ignore[arg-type]


def ssh_offenders(group: Group, ssh_cidr: str) -> list[Rule]:
    """Rules that let SSH in from somewhere outside ssh_cidr."""
    return [r for r in group.rules if r.covers(SSH) and not within(r.source, ssh_cidr)]


def web_sources(want: Policy, facts: Facts) -> tuple[str, ...] | None | Unreadable:
    """Where 80/443 may come from: anywhere (None), or the ALB's security groups."""
    if want.alb is None:
        return None
    if isinstance(facts.alb, LoadBalancer):
        return facts.alb.groups
    return facts.alb or Unreadable("cannot check: the load balancer was not read")


def core_offenders(group: Group, sources: tuple[str, ...] | None,
                   gossiping: bool = False) -> list[Rule]:
    """Rules that open more than 80/443 (from the allowed sources), and than the cluster port
    from the group itself when the Alertmanagers gossip; SSH is judged apart."""
    def allowed(r: Rule) -> set[int]:
        return {SSH} | (set(WEB_PORTS) if sources is None or r.source in sources else set())
    return [r for r in group.rules if r.beyond(allowed(r))
            and not (gossiping and gossip(r, group))]


def gossip(rule: Rule, group: Group) -> bool:
    """Alertmanager's cluster port (TCP or UDP) from the core group itself."""
    return (rule.source == group.id and rule.protocol in ("tcp", "udp")
            and _span(rule) == (cluster.CLUSTER_PORT, cluster.CLUSTER_PORT))


def cluster_check(group: Group) -> Check:
    """Both protocols of the gossip port open from the group itself (memberlist needs both)."""
    found = {r.protocol for r in group.rules if gossip(r, group)}
    missing = sorted({"tcp", "udp"} - found)
    port = cluster.CLUSTER_PORT
    return Check(
        "core-sg-cluster", group.label(), not missing,
        f"tcp+udp {port} from itself (Alertmanager cluster)",
        "open" if not missing else f"missing: {', '.join(missing)} {port}",
        "" if not missing else
        f"aws ec2 authorize-security-group-ingress --group-id {group.id} --ip-permissions "
        + " ".join(f"'IpProtocol={p},FromPort={port},ToPort={port},UserIdGroupPairs="
                   f"[{{GroupId={group.id}}}]'" for p in missing))


def data_offenders(group: Group, core_groups: tuple[str, ...],
                   ssh_cidr: str) -> dict[str, list[Rule]]:
    """The data security group's wrong rules, by check."""
    return {
        "data-sg-ports": [r for r in group.rules if any(r.covers(p) for p in DATA_PORTS)
                          and r.source not in core_groups],
        "data-sg-ssh": ssh_offenders(group, ssh_cidr),
        "data-sg-public": [r for r in group.rules if r.source in ANYWHERE],
        "data-sg-other": [r for r in group.rules if r.beyond((SSH, *DATA_PORTS))],
    }


def evaluate(want: Policy, facts: Facts) -> list[Check]:
    """Every check of the issue's list, in its order."""
    return [*core_checks(want, facts), *data_checks(want, facts), *subnet_checks(want, facts),
            *instance_checks(want, facts), *alb_checks(want, facts),
            guardduty_check(want, facts), cloudtrail_check(want, facts)]


def fix_command(want: Policy) -> str:
    return f"inv aws.fix --host {want.environment}"


def missing_role(want: Policy, role: str) -> str:
    return (f"no instance tagged {want.role_tag}={role} among those tagged {want.tag_text()}")


def core_checks(want: Policy, facts: Facts) -> list[Check]:
    sources = web_sources(want, facts)
    if sources is None:
        web, web_text = "80/443 from anywhere", "anywhere"
    elif isinstance(sources, Unreadable):
        web, web_text = f"80/443 only from the security group of {want.alb}", want.alb or ""
    else:
        web_text = ", ".join(sources) or "no security group"
        web = f"80/443 only from the ALB's SG ({web_text})"
    ssh = f"22 only from {want.ssh_cidr} (ssh_cidr)"
    ids = facts.group_ids("core")
    if not ids:
        found = missing_role(want, "core")
        fix = f"tag the core instances {want.role_tag}=core"
        return [Check("core-sg-inbound", "core SG", False, web, found, fix),
                Check("core-sg-ssh", "core SG", False, ssh, found, fix)]
    out = []
    for gid in ids:
        g = facts.group(gid)
        if isinstance(sources, Unreadable):
            out.append(Check("core-sg-inbound", g.label(), False, web, sources.reason,
                             f"fix aws.alb of {want.environment} or the load balancer, then "
                             "run aws.check again"))
        else:
            bad = core_offenders(g, sources, want.cluster)
            out.append(Check("core-sg-inbound", g.label(), not bad, web,
                             f"open beyond 80/443 from {web_text}: {rules_text(bad)}" if bad
                             else "open: " + (rules_text(r for r in g.rules if r.beyond({SSH}))
                                              if any(r.beyond({SSH}) for r in g.rules)
                                              else "nothing but SSH"),
                             f"{fix_command(want)} (revokes {rules_text(bad)})" if bad else ""))
        bad = ssh_offenders(g, want.ssh_cidr)
        out.append(Check("core-sg-ssh", g.label(), not bad, ssh,
                         f"SSH open from outside {want.ssh_cidr}: {rules_text(bad)}" if bad
                         else ssh_passed(g, want.ssh_cidr),
                         f"{fix_command(want)} (revokes {rules_text(bad)}, adds 22 from "
                         f"{want.ssh_cidr} first)" if bad else ""))
        if want.cluster:
            out.append(cluster_check(g))
    return out


DATA_WANTED = {
    "data-sg-ports": "data ports only from the core SG ({core})",
    "data-sg-ssh": "22 only from {ssh} (ssh_cidr)",
    "data-sg-public": "nothing from 0.0.0.0/0 or ::/0",
    "data-sg-other": "no port but 22 and the data ports",
}
DATA_FOUND = {
    "data-sg-ports": "data ports ({ports}) open to other than the core SG: {rules}",
    "data-sg-ssh": "SSH open from outside {ssh}: {rules}",
    "data-sg-public": "open to anywhere: {rules}",
    "data-sg-other": "other ports open: {rules}",
}


def ssh_passed(group: Group, ssh_cidr: str) -> str:
    return f"SSH only from {ssh_cidr}" if any(r.covers(SSH) for r in group.rules) \
        else "SSH not open"


def data_passed(name: str, group: Group, ssh_cidr: str) -> str:
    """What a data check that passes found."""
    if name == "data-sg-ports":
        return rules_text(r for r in group.rules if any(r.covers(p) for p in DATA_PORTS)) \
            if any(r.covers(p) for r in group.rules for p in DATA_PORTS) else "no data port open"
    return {"data-sg-ssh": ssh_passed(group, ssh_cidr),
            "data-sg-public": "nothing open to anywhere",
            "data-sg-other": "no other port open"}[name]


def port_list(ports: Iterable[int]) -> str:
    return ", ".join(str(p) for p in ports)


def data_checks(want: Policy, facts: Facts) -> list[Check]:
    core = facts.group_ids("core")
    text = {"ports": port_list(DATA_PORTS), "core": ", ".join(core) or "none found",
            "ssh": want.ssh_cidr}
    ids = facts.group_ids("data")
    if not ids:
        return [Check(name, "data SG", False, DATA_WANTED[name].format(**text),
                      missing_role(want, "data"), f"tag the data instance {want.role_tag}=data")
                for name in DATA_WANTED]
    out = []
    for gid in ids:
        g = facts.group(gid)
        shared = gid in core
        for name, bad in data_offenders(g, core, want.ssh_cidr).items():
            if shared:
                fix = (f"give the data instance a security group of its own ({gid} is also "
                       "the core instances')")
            elif name == "data-sg-ports" and not core:
                fix = f"tag the core instances {want.role_tag}=core, then {fix_command(want)}"
            else:
                first = {"data-sg-ssh": f", adds 22 from {want.ssh_cidr} first",
                         "data-sg-ports": f", allows them from {text['core']} first"}
                fix = f"{fix_command(want)} (revokes {rules_text(bad)}{first.get(name, '')})"
            found = (DATA_FOUND[name].format(rules=rules_text(bad), **text) if bad
                     else data_passed(name, g, want.ssh_cidr))
            out.append(Check(name, g.label(), not bad, DATA_WANTED[name].format(**text), found,
                             fix if bad else ""))
    return out


def uncovered(net: Any, covers: list[Any]) -> list[Any]:
    """The parts of `net` that none of `covers` contains."""
    pieces = [net]
    for cover in covers:
        if cover.version != net.version:
            continue
        rest = []
        for piece in pieces:
            if piece.subnet_of(cover):
                continue
            rest.extend(piece.address_exclude(cover) if cover.subnet_of(piece) else [piece])
        pieces = rest
    return pieces


def acl_leaks(entries: Iterable[AclEntry], vpc_cidrs: Iterable[str]) -> list[AclEntry]:
    """Inbound allow entries that let in an address outside the VPC, in rule order (an
    earlier deny of all traffic shadows a later allow; a deny of some ports does not)."""
    inside = [ipaddress.ip_network(c) for c in vpc_cidrs]
    denied: list[Any] = []
    leaks = []
    for e in sorted(entries, key=lambda e: e.number):
        net = ipaddress.ip_network(e.cidr)
        if not e.allow:
            if e.protocol == "-1":
                denied.append(net)
        elif uncovered(net, inside + denied):
            leaks.append(e)
    return leaks


def subnet_checks(want: Policy, facts: Facts) -> list[Check]:
    private = "no route to an internet gateway"
    acl = "network ACL: inbound only from the VPC"
    if not facts.subnets:
        found = missing_role(want, "data")
        fix = f"tag the data instance {want.role_tag}=data"
        return [Check("data-subnet-private", "data subnet", False, private, found, fix),
                Check("data-subnet-acl", "data subnet", False, acl, found, fix)]
    out = []
    for s in facts.subnets:
        if isinstance(s, Unreadable):
            fix = "give the caller ec2:DescribeRouteTables, DescribeNetworkAcls, DescribeVpcs"
            out += [Check("data-subnet-private", "data subnet", False, private, s.reason, fix),
                    Check("data-subnet-acl", "data subnet", False, acl, s.reason, fix)]
            continue
        igw = [r for r in s.routes if r.target.startswith("igw-")]
        out.append(Check(
            "data-subnet-private", s.id, not igw, private,
            f"{s.route_table}: " + (", ".join(f"{r.destination} -> {r.target}" for r in igw)
                                    if igw else "no route to an internet gateway"),
            f"delete {igw[0].destination} -> {igw[0].target} from {s.route_table} (the data "
            "subnet reaches out through a NAT gateway)" if igw else ""))
        leaks = acl_leaks(s.inbound, s.vpc_cidrs)
        vpc = ", ".join(s.vpc_cidrs)
        out.append(Check(
            "data-subnet-acl", s.id, not leaks, f"{acl} ({vpc})",
            f"{s.acl}: " + ("; ".join(e.describe() for e in leaks) if leaks
                            else f"inbound only from {vpc}"),
            f"in {s.acl}, allow inbound only from {vpc} (replace rule {leaks[0].number}), and "
            "keep the final deny" if leaks else ""))
    return out


def instance_checks(want: Policy, facts: Facts) -> list[Check]:
    out = []
    for i in facts.instances:
        out.append(Check(
            "imdsv2", i.label(), i.http_tokens == "required", "HttpTokens required (IMDSv2)",
            f"HttpTokens {i.http_tokens}",
            "" if i.http_tokens == "required" else
            f"aws ec2 modify-instance-metadata-options --instance-id {i.id} --http-tokens "
            "required --http-endpoint enabled"))
    for i in facts.instances:
        # a container is one hop more than the host: with 1 it cannot reach the instance
        # role; only Alertmanager on a core host needs it (to sign its SNS calls)
        hops = want.core_hops if i.role == "core" else 1
        why = "Alertmanager signs SNS calls" if hops == 2 else "containers get no instance role"
        out.append(Check(
            "imds-hop-limit", i.label(), i.hop_limit == hops,
            f"IMDS hop limit {hops} ({why})", f"HttpPutResponseHopLimit {i.hop_limit}",
            "" if i.hop_limit == hops else
            f"aws ec2 modify-instance-metadata-options --instance-id {i.id} "
            f"--http-put-response-hop-limit {hops}"))
    for i in facts.instances:
        plain = [v.id for v in i.volumes if not v.encrypted]
        out.append(Check(
            "ebs-encrypted", i.label(), not plain, "every attached EBS volume encrypted",
            f"not encrypted: {', '.join(plain)}" if plain else
            (f"encrypted: {', '.join(v.id for v in i.volumes)}" if i.volumes
             else "no EBS volume attached"),
            "encrypt a copy: snapshot, copy-snapshot --encrypted, create-volume from it, swap "
            "it in (and aws ec2 enable-ebs-encryption-by-default)" if plain else ""))
    data = facts.of_role("data")
    if not data:
        out.append(Check("termination-protection", "data instance", False,
                         "DisableApiTermination on the data instance", missing_role(want, "data"),
                         f"tag the data instance {want.role_tag}=data"))
    for i in data:
        out.append(Check(
            "termination-protection", i.label(), bool(i.termination_protected),
            "DisableApiTermination on the data instance",
            f"DisableApiTermination {str(bool(i.termination_protected)).lower()}",
            "" if i.termination_protected else
            f"aws ec2 modify-instance-attribute --instance-id {i.id} --disable-api-termination"))
    return out


def alb_checks(want: Policy, facts: Facts) -> list[Check]:
    if want.alb is None:
        return []
    https_wanted = "an HTTPS listener, every one with a TLS 1.2+ policy"
    http_wanted = "every HTTP listener redirects to HTTPS"
    waf_wanted = "a WAFv2 web ACL associated"
    lb = facts.alb
    if not isinstance(lb, LoadBalancer):
        reason = lb.reason if isinstance(lb, Unreadable) else "not read"
        fix = f"fix aws.alb.name of {want.environment}, or give the caller elasticloadbalancing:" \
              "Describe*"
        return [Check(name, want.alb, False, text, reason, fix) for name, text in (
            ("alb-https", https_wanted), ("alb-http-redirect", http_wanted),
            ("alb-waf", waf_wanted))]
    https = [x for x in lb.listeners if x.protocol == "HTTPS"]
    weak = [x for x in https if not TLS12_POLICY.fullmatch(x.ssl_policy or "")]
    if not https:
        found, fix = "no HTTPS listener", (f"add an HTTPS listener on 443 with {GOOD_POLICY} "
                                           "and the ACM certificate")
    elif weak:
        found = "; ".join(f"HTTPS {x.port}: {x.ssl_policy} is not a TLS 1.2+ policy"
                          for x in weak)
        fix = f"aws elbv2 modify-listener --listener-arn {weak[0].arn} --ssl-policy {GOOD_POLICY}"
    else:
        found = "; ".join(f"HTTPS {x.port}: {x.ssl_policy}" for x in https)
        fix = ""
    checks = [Check("alb-https", lb.name, bool(https) and not weak, https_wanted, found, fix)]
    http = [x for x in lb.listeners if x.protocol == "HTTP"]
    plain = [x for x in http if any(a != "redirect to HTTPS" for a in x.actions)]
    if plain:
        found = "; ".join(f"HTTP {x.port}: {', '.join(x.actions)}" for x in plain)
        fix = (f"aws elbv2 modify-listener --listener-arn {plain[0].arn} --default-actions "
               "'Type=redirect,RedirectConfig={Protocol=HTTPS,Port=443,StatusCode=HTTP_301}' "
               "(and no rule that forwards)")
    else:
        found = ("; ".join(f"HTTP {x.port}: redirect to HTTPS" for x in http) if http
                 else "no HTTP listener (plain HTTP is not served)")
        fix = ""
    checks.append(Check("alb-http-redirect", lb.name, not plain, http_wanted, found, fix))
    acl = lb.web_acl
    associate = ("aws wafv2 associate-web-acl --web-acl-arn ARN --resource-arn "
                 f"{lb.arn}")
    if isinstance(acl, Unreadable):
        checks.append(Check("alb-waf", lb.name, False, waf_wanted, acl.reason,
                            "give the caller wafv2:GetWebACLForResource"))
    else:
        checks.append(Check("alb-waf", lb.name, acl is not None, waf_wanted,
                            f"web ACL {acl}" if acl else "no web ACL associated",
                            "" if acl else associate))
    return checks


def guardduty_check(want: Policy, facts: Facts) -> Check:
    wanted = f"a GuardDuty detector enabled in {want.region}"
    found = facts.detectors
    if isinstance(found, Unreadable):
        return Check("guardduty", want.region, False, wanted, found.reason,
                     "give the caller guardduty:ListDetectors and guardduty:GetDetector")
    enabled = [d for d in found if d.status == "ENABLED"]
    if enabled:
        return Check("guardduty", want.region, True, wanted, f"detector {enabled[0].id} enabled")
    if found:
        return Check("guardduty", want.region, False, wanted,
                     "; ".join(f"detector {d.id} {d.status.lower()}" for d in found),
                     f"aws guardduty update-detector --detector-id {found[0].id} --enable "
                     f"--region {want.region}")
    return Check("guardduty", want.region, False, wanted, f"no detector in {want.region}",
                 f"aws guardduty create-detector --enable --region {want.region}")


def management(trail: Trail) -> str | None:
    """Which management events a trail records: All, WriteOnly, or None (not the writes).
    No selector at all is AWS's default: every management event."""
    if not trail.selectors:
        return "All"
    kinds = {s.read_write for s in trail.selectors if s.include_management}
    if "All" in kinds or {"ReadOnly", "WriteOnly"} <= kinds:
        return "All"
    return "WriteOnly" if "WriteOnly" in kinds else None


def cloudtrail_check(want: Policy, facts: Facts) -> Check:
    wanted = "a CloudTrail trail logging management events"
    found = facts.trails
    if isinstance(found, Unreadable):
        return Check("cloudtrail", want.region, False, wanted, found.reason,
                     "give the caller cloudtrail:DescribeTrails, GetTrailStatus and "
                     "GetEventSelectors")
    good = [t for t in found if t.logging and management(t) and not t.problem]
    if good:
        return Check("cloudtrail", want.region, True, wanted,
                     f"trail {good[0].name} logging, management events: {management(good[0])}")
    if not found:
        return Check("cloudtrail", want.region, False, wanted, f"no trail in {want.region}",
                     "aws cloudtrail create-trail --name jafar --s3-bucket-name BUCKET "
                     "--is-multi-region-trail, then aws cloudtrail start-logging --name jafar")
    parts = [f"trail {t.name}: " + (t.problem or ("records no management writes" if t.logging
                                                  else "is not logging")) for t in found]
    t = next((t for t in found if not t.problem), found[0])
    fix = ("give the caller cloudtrail:GetTrailStatus and GetEventSelectors" if t.problem
           else f"aws cloudtrail put-event-selectors --trail-name {t.name} --event-selectors "
           "ReadWriteType=All,IncludeManagementEvents=true" if t.logging
           else f"aws cloudtrail start-logging --name {t.name}")
    return Check("cloudtrail", want.region, False, wanted, "; ".join(parts), fix)


# --- the fix: pure plan, then apply -----------------------------------------------------------

@dataclass(frozen=True, order=True)
class Change:
    """One security-group rule to add or to revoke."""

    action: str     # add or revoke
    group: str
    rule: Rule

    def describe(self) -> str:
        return f"{self.action} {self.group}: {self.rule.describe()}"


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...] = ()
    notes: tuple[str, ...] = field(default=())   # groups left alone, and why

    def lines(self) -> list[str]:
        return [c.describe() for c in self.changes] + [f"note: {n}" for n in self.notes]


def keeps(revoked: list[Rule], kept: list[Rule], wanted: Callable[[int], list[str]],
          ports: Iterable[int], group: str, ssh_cidr: str) -> list[Change]:
    """The allowed rules to add before revoking: for every allowed port a revoked rule let in,
    the allowed source(s) of that port, unless a rule that stays already lets them in."""
    need: dict[str, list[int]] = {}
    for port in sorted({p for p in (SSH, *ports) for r in revoked if r.covers(p)}):
        for source in ([ssh_cidr] if port == SSH else wanted(port)):
            if not any(r.covers(port) and r.source == source for r in kept):
                need.setdefault(source, []).append(port)
    adds = []
    for source, found in sorted(need.items()):
        start = prev = found[0]
        for port in [*found[1:], None]:  # contiguous ports as one rule: 27017-27019
            if port is not None and port == prev + 1:
                prev = port
                continue
            adds.append(Change("add", group, tcp(start, source, prev)))
            if port is not None:
                start = prev = port
    return adds


def never_touched(rule: Rule, ssh_cidr: str) -> bool:
    """22 from ssh_cidr (or inside it) is never revoked: it is how the operator gets in."""
    return rule.protocol == "tcp" and rule.low == rule.high == SSH and within(rule.source,
                                                                             ssh_cidr)


def plan(want: Policy, facts: Facts) -> Plan:
    """What aws.fix changes: per group, the allowed rules that keep what works (added first),
    then the offending rules revoked. Groups it cannot judge are left alone, with a note."""
    core, data = facts.group_ids("core"), facts.group_ids("data")
    sources = web_sources(want, facts)
    adds: list[Change] = []
    revokes: list[Change] = []
    notes = []
    for gid in sorted(set(core) | set(data)):
        g = facts.group(gid)
        if gid in core and gid in data:
            notes.append(f"{g.label()} is both a core and a data security group: left alone; "
                         "give the data instance a group of its own")
            continue
        if gid in core:
            if isinstance(sources, Unreadable):
                notes.append(f"{g.label()}: left alone, the load balancer's security group is "
                             f"unknown ({sources.reason})")
                continue
            bad = sorted(set(core_offenders(g, sources, want.cluster))
                         | set(ssh_offenders(g, want.ssh_cidr)))
            ports: tuple[int, ...] = WEB_PORTS

            def wanted(port: int, bad: list[Rule] = bad) -> list[str]:
                if sources is not None:
                    return list(sources)
                return sorted({r.source for r in bad if r.covers(port)})
        else:
            found = data_offenders(g, core, want.ssh_cidr)
            bad = sorted({r for rules in found.values() for r in rules})
            if bad and not core:
                notes.append(f"{g.label()}: left alone, no core instance was found to keep the "
                             f"data ports open to ({missing_role(want, 'core')})")
                continue
            ports = DATA_PORTS

            def wanted(port: int) -> list[str]:
                return list(core)
        bad = [r for r in bad if not never_touched(r, want.ssh_cidr)]
        kept = [r for r in g.rules if r not in bad]
        adds += keeps(bad, kept, wanted, ports, gid, want.ssh_cidr)
        revokes += [Change("revoke", gid, r) for r in bad]
    return Plan(tuple(sorted(adds)) + tuple(sorted(revokes)), tuple(notes))


def apply(env: Environment, changes: Iterable[Change],
          done: Callable[[Change, bool], None]) -> None:
    """Make the changes in order (every add before any revoke); `done(change, changed)` after
    each (changed False: it was already so). The first failure stops it (StepFailed)."""
    ec2 = client(env, "ec2")
    for c in changes:
        adding = c.action == "add"
        already = "InvalidPermission.Duplicate" if adding else "InvalidPermission.NotFound"
        permission = c.rule.permission()
        if adding:  # says, in the console too, where the rule came from
            for key in ("IpRanges", "Ipv6Ranges", "UserIdGroupPairs", "PrefixListIds"):
                for source in permission.get(key, []):
                    source["Description"] = ADDED_BY
        with answered(env, f"{'adding' if adding else 'revoking'} {c.rule.describe()} on "
                           f"{c.group}"):
            try:
                if adding:
                    answer = ec2.authorize_security_group_ingress(GroupId=c.group,
                                                                  IpPermissions=[permission])
                else:
                    answer = ec2.revoke_security_group_ingress(GroupId=c.group,
                                                               IpPermissions=[permission])
                changed = not answer.get("UnknownIpPermissions")  # AWS: revoked nothing
            except ec2.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != already:
                    raise
                changed = False
        done(c, changed)


ADDED_BY = "added by inv aws.fix"
SG_CHECKS = ("core-sg-inbound", "core-sg-ssh", "data-sg-ports", "data-sg-ssh",
             "data-sg-public", "data-sg-other")


def nothing_to_do(want: Policy, facts: Facts, fixes: Plan, checks: list[Check]) -> str:
    """Why aws.fix has nothing to change."""
    groups = ", ".join(sorted(set(facts.group_ids("core")) | set(facts.group_ids("data"))))
    failing = [c for c in checks if not c.ok and c.check in SG_CHECKS]
    others = sorted({c.check for c in checks if not c.ok and c.check not in SG_CHECKS})
    if failing:
        why = "; ".join(fixes.notes) or "; ".join(f"{c.check}: {c.found}" for c in failing)
        text = f"nothing aws.fix can change: {why}"
    else:
        text = (f"nothing to do: the security groups of {want.environment} ({groups or 'none'}) "
                "already allow only what aws.check wants")
    if others:
        text += (f"\naws.fix changes security-group rules only; still failing: "
                 f"{', '.join(others)} (inv aws.check --host {want.environment})")
    return text


# --- output ----------------------------------------------------------------------------------

def cut(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def table(want: Policy, facts: Facts, checks: list[Check]) -> list[str]:
    """For people: who was found, then one row per check, each failure followed by its fix."""
    found = ", ".join(f"{i.id} ({i.role or 'no role'}, {i.state})" for i in facts.instances)
    lines = [f"{want.environment}: {len(facts.instances)} instance(s) tagged {want.tag_text()} "
             f"in {want.region}: {found}"]
    rows = columns(("CHECK", "SUBJECT", "RESULT", "WANTED", "FOUND"),
                   [(c.check, c.subject, "PASS" if c.ok else "FAIL", cut(c.wanted), c.found)
                    for c in checks])
    lines.append(rows[0])
    for c, row in zip(checks, rows[1:], strict=True):
        lines.append(row)
        if not c.ok:
            lines.append(f"    fix: {c.fix}")
    return lines


def as_json(want: Policy, facts: Facts, checks: list[Check]) -> str:
    """For monitors: every check with its result, and the instances found."""
    return json.dumps({
        "environment": want.environment, "region": want.region,
        "passed": all(c.ok for c in checks),
        "instances": [{"id": i.id, "name": i.name, "role": i.role, "state": i.state}
                      for i in facts.instances],
        "checks": [c.as_dict() for c in checks]}, indent=2)
