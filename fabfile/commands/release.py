"""Release commands: pull and pin images by digest, the migration hook, what the gateway saw."""

from __future__ import annotations

import shlex

from fabfile.commands.compose import compose
from fabfile.commands.routing import gateway_id
from fabfile.config import Environment


def login(registry: str) -> str:
    """`docker login` to the registry with the password on stdin (ECR: the user is AWS)."""
    return shlex.join(["docker", "login", "--username", "AWS", "--password-stdin", registry])


def pull(refs: list[str]) -> str:
    """Pull every image (by tag or by digest) and print `OK<TAB>ref<TAB>repo digests` or
    `FAIL<TAB>ref<TAB>the pull's last error line` for each; exit 1 if any failed. Nothing runs
    differently afterwards: pulling only adds images."""
    script = ('rc=0; for ref in "$@"; do '
              'if err=$(docker pull --quiet "$ref" 2>&1 >/dev/null); then '
              'printf "OK\\t%s\\t%s\\n" "$ref" "$(docker image inspect --format '
              '\'{{range .RepoDigests}}{{.}} {{end}}\' "$ref")"; '
              'else printf "FAIL\\t%s\\t%s\\n" "$ref" "$(printf %s "$err" | tail -n 1)"; rc=1; fi; '
              'done; exit $rc')
    return shlex.join(["sh", "-c", script, "pull", *refs])


def migrate(env: Environment, images: dict[str, str], service: str, command: str) -> str:
    """The one-off migration hook: `command` in a new container of `service` with the new
    release's image, removed afterwards; no other service is started (--no-deps)."""
    return compose(env, "core", "run", "--rm", "--no-deps", "-T", service, *shlex.split(command),
                   images=images)


def gateway_log(core_project: str, since: int) -> str:
    """The gateway's access log (JSON lines on stdout) since a time on the host's clock."""
    return (f"gw=$({gateway_id(core_project)} | head -n 1); "
            f'[ -z "$gw" ] || docker logs --since {int(since)} "$gw" 2>/dev/null')


def health_log(container_id: str) -> str:
    """Why a container is not healthy: its health check's last outputs and its last lines."""
    fmt = "{{range .State.Health.Log}}{{.Output}}{{end}}"
    return (f"docker inspect --format {shlex.quote(fmt)} {shlex.quote(container_id)} "
            f"2>&1 | tail -n 3; docker logs --tail 5 {shlex.quote(container_id)} 2>&1")
