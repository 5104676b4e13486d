"""The sandbox namespace: the local copy of the EC2 target (see fabfile/local_sandbox.py)."""

from __future__ import annotations

import json as jsonlib

from invoke import Collection, Context, task

from fabfile import local_sandbox as sandbox
from fabfile.remote import Masker, Printer
from fabfile.tasks.common import handled


@task(name="up", auto_shortflags=False, help={
    "hosts": "1: one host with both roles; N > 1: a data host and N-1 core hosts"})
@handled
def sandbox_up(c: Context, hosts: int = 1) -> None:
    """Build the images and boot local test hosts that behave like fresh EC2 instances."""
    sandbox.up(hosts, Printer(Masker()))


@task(name="down", auto_shortflags=False)
@handled
def sandbox_down(c: Context) -> None:
    """Remove the sandbox hosts and registry; their volumes and .sandbox/ are kept."""
    sandbox.down(Printer(Masker()))


@task(name="reset", auto_shortflags=False, help={
    "hosts": "how many hosts the new sandbox has (see sandbox.up)"})
@handled
def sandbox_reset(c: Context, hosts: int = 1) -> None:
    """Destroy the sandbox hosts with their volumes, keys and secrets, then bring up fresh
    ones (the registry, which holds only images built here, is kept)."""
    say = Printer(Masker())
    sandbox.down(say, purge=True, keep_registry=True)
    sandbox.up(hosts, say)


@task(name="status", auto_shortflags=False, help={"json": "print JSON instead of a table"})
@handled
def sandbox_status(c: Context, json: bool = False) -> None:
    """List the sandbox's containers with their state and loopback ports."""
    rows = sandbox.status()
    if json:
        print(jsonlib.dumps(rows, indent=2))
    elif not rows:
        print("no sandbox: run inv sandbox.up")
    else:
        width = max(len(r["name"]) for r in rows)
        for r in rows:
            print(f"{r['name']:<{width}}  {r['state']:<8}  {r['ports']}")


namespace = Collection("sandbox", sandbox_up, sandbox_down, sandbox_reset, sandbox_status)
