"""The task namespaces, one module each; `ns` is what `inv` and `fab` load.

`jafar.host` (default none) is declared here so that invoke.yaml, ~/.invoke.yaml and
INVOKE_JAFAR_HOST (fabric.yaml and FABRIC_JAFAR_HOST for fab) can name the environment every
task uses when --host is left out.
"""

from __future__ import annotations

from invoke import Collection

from fabfile.tasks import (
    audit,
    aws,
    backup,
    env,
    host,
    images,
    lock,
    monitor,
    release,
    root,
    sandbox,
    secrets,
    tls,
)
from fabfile.tasks.steps import step_task

ns = Collection(
    root.deploy,
    root.health,
    root.scale,
    root.ps,
    root.logs,
    release.release,
    release.rollback,
    release.releases,
    backup.restore,
    backup.namespace,
    env.namespace,
    Collection("files", step_task("files.sync")),
    Collection("data", step_task("data.up")),
    Collection("replica", step_task("replica.init")),
    Collection("core", step_task("core.up")),
    host.namespace,
    lock.namespace,
    audit.namespace,
    tls.namespace,
    secrets.namespace,
    aws.namespace,
    monitor.namespace,
    images.namespace,
    sandbox.namespace,
)
ns.configure({"jafar": {"host": None}})
