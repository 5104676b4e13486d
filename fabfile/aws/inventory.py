"""The environment's hosts from EC2 (`hosts_from:`): the running instances with its tags, each
one's role from the role tag (`data`, `core`, or `data,core`), named by its Name tag (or its
instance id), reached at the address `hosts_from.address` names. The topology's rules are
then checked as for hosts listed in the file; what EC2 answered wrong is exit 1."""

from __future__ import annotations

import re
from dataclasses import replace

from fabfile.aws.client import answered, client
from fabfile.config import (
    ADDRESS_KINDS,
    ROLES,
    Endpoint,
    Environment,
    Host,
    HostsFrom,
    check_hosts,
    hosts_checker,
)
from fabfile.errors import BadInput, StepFailed

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


def instances(env: Environment, source: HostsFrom) -> list[dict]:
    filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in sorted(source.tags.items())]
    filters.append({"Name": "instance-state-name", "Values": ["running"]})
    with answered(env, f"listing {source.describe()}"):
        pages = client(env, "ec2").get_paginator("describe_instances").paginate(Filters=filters)
        return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


def host_of(source: HostsFrom, instance: dict) -> Host:
    tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
    ident = instance["InstanceId"]
    roles = tuple(r.strip() for r in tags.get(source.role_tag, "").split(",") if r.strip())
    if not roles or any(r not in ROLES for r in roles):
        raise StepFailed(f"instance {ident}: its tag {source.role_tag} must be data, core or "
                         "data,core; tag it, or take it out of the environment's tags")
    address = instance.get(ADDRESS_KINDS[source.address])
    if not address:
        raise StepFailed(f"instance {ident} has no {source.address.replace('_', ' ')}; choose "
                         "another hosts_from.address")
    name = tags.get("Name", "").lower()
    return Host(name=name if NAME.fullmatch(name) else ident.lower(),
                ssh=Endpoint(address, source.user, source.port, source.key),
                roles=tuple(r for r in ROLES if r in roles),
                private_address=instance.get("PrivateIpAddress"), become=source.become)


def resolve(env: Environment) -> Environment:
    """The environment with its hosts read from EC2 (itself when they are listed in the
    file)."""
    source = env.hosts_from
    if source is None or env.hosts:
        return env
    found = sorted((host_of(source, i) for i in instances(env, source)), key=lambda h: h.name)
    if not found:
        raise StepFailed(f"no host: EC2 has no {source.describe()}")
    hosts = tuple(found)
    try:
        check_hosts(hosts_checker(env), "hosts", env.topology, hosts)
    except BadInput as exc:  # what EC2 answered, not what was typed
        raise StepFailed(str(exc)) from None
    return replace(env, hosts=hosts)


def placeholders(env: Environment) -> Environment:
    """For a dry run, which asks nothing of AWS: one stand-in host per role, its address
    written as <from EC2>."""
    source = env.hosts_from
    if source is None or env.hosts:
        return env
    unknown = "<from EC2>"
    roles = [("data", "core")] if env.topology == "single" else [("data",), ("core",)]
    hosts = tuple(Host(name=f"ec2-{'-'.join(r)}", ssh=Endpoint(unknown, source.user,
                                                                source.port, source.key),
                       roles=r, private_address=unknown, become=source.become)
                  for r in roles)
    return replace(env, hosts=hosts)
