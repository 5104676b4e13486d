"""What the host records about itself under the deploy path's state/: the scaled counts, the
release it runs (pinned by digest) and its release history."""

from __future__ import annotations

import shlex


def state_dir(deploy_path: str) -> str:
    return f"{deploy_path}/state"


def scale_file(deploy_path: str) -> str:
    """Explicit replica counts set by `inv scale` (services without one use `replicas:`)."""
    return f"{state_dir(deploy_path)}/scale.json"


def release_file(deploy_path: str) -> str:
    """The release the core stack runs: tag and each service's image by digest."""
    return f"{state_dir(deploy_path)}/release.json"


def history_file(deploy_path: str) -> str:
    """Every release, rollback and first deploy on this host, oldest first."""
    return f"{state_dir(deploy_path)}/releases.json"


def read_scale(deploy_path: str) -> str:
    """The overrides as JSON, `{}` when there are none."""
    return f"cat {shlex.quote(scale_file(deploy_path))} 2>/dev/null || echo '{{}}'"


def read_release(deploy_path: str) -> str:
    return f"cat {shlex.quote(release_file(deploy_path))} 2>/dev/null || echo null"


def read_history(deploy_path: str) -> str:
    return f"cat {shlex.quote(history_file(deploy_path))} 2>/dev/null || echo '[]'"
