"""Which backup ids a retention keeps: scripts/backup_retention.py's rule, the one the data
host's sets are kept by (the script runs there), loaded from its file so that the EBS
snapshots and the copies in S3 follow the same rule, not a second one."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

from fabfile import ROOT
from fabfile.config import Environment


def kept(env: Environment, ids: Iterable[str]) -> set[str]:
    """The ids backup_keep keeps (the newest always)."""
    spec = importlib.util.spec_from_file_location(
        "jafar_backup_retention", ROOT / "scripts" / "backup_retention.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return set(module.to_keep(sorted(set(ids)), *env.backup_keep))
