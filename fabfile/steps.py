"""The documented deploy flow, in order: every step is also a task of its own (the runbook)."""

from __future__ import annotations

from fabfile.core_stack import CORE_UP
from fabfile.flow import Step
from fabfile.health import HEALTH
from fabfile.hosts.setup import HOST_HARDEN, HOST_PREPARE
from fabfile.replica import REPLICA_INIT
from fabfile.stacks import DATA_UP
from fabfile.sync import ENV_SYNC, FILES_SYNC

FLOW: tuple[Step, ...] = (HOST_PREPARE, HOST_HARDEN, ENV_SYNC, FILES_SYNC, DATA_UP,
                          REPLICA_INIT, CORE_UP, HEALTH)
STEPS = {s.name: s for s in FLOW}
MUTATING = {"host.prepare", "host.harden", "env.sync", "files.sync", "data.up", "replica.init",
            "core.up"}
