"""What the data plane's TLS files look like from inside the running containers."""

from __future__ import annotations

import shlex

from fabfile.commands.compose import LABEL


def mounted(project: str, mounts: dict[str, tuple[str, ...]]) -> str:
    """`ID SERVICE SECRET SHA256` for each running container of `project` and each secret its
    service mounts (service -> secret names). A container sees the file it was created with:
    env.sync replaces a host file by renaming, so a changed file shows here until the container
    is recreated."""
    lines = []
    for service, secrets in sorted(mounts.items()):
        ps = shlex.join(["docker", "ps", "--quiet", "--filter", f"label={LABEL}={project}",
                         "--filter", f"label=com.docker.compose.service={service}"])
        for secret in secrets:
            path = shlex.quote(f"/run/secrets/{secret}")
            lines.append(f"for c in $({ps}); do d=$(docker exec \"$c\" sha256sum {path}) && "
                         f"echo \"$c {service} {secret} ${{d%% *}}\"; done")
    return "; ".join(lines) + "; true" if lines else "true"
