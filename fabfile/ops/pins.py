"""The infrastructure images by digest: `inv images.pin` resolves each image an environment runs
(nginx, MongoDB, Redis, PostgreSQL, Prometheus, Grafana) to the digest its registry serves now,
pulled on the hosts that run it, and writes `VARIABLE: repo:tag@sha256:...` to the
environment's pins file (`pins:` in environments.yml; default config/pins/<name>.yml: review
and commit it). Every compose command then runs exactly those bits, whatever the tag does
later. A pin whose tag is no longer the one the environment asks for is refused before any
host is touched; a protected environment must have a pin for every image. The jafar services
are pinned per release (inv release), not here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

from fabfile.commands import release as release_cmd
from fabfile.config import Environment, Host
from fabfile.errors import BadInput, StepFailed
from fabfile.flow import Pool
from fabfile.ops import registry
from fabfile.ops.release import pinned, pull_failures
from fabfile.stackspec import infra_images

HEADER = ("# The infrastructure images by digest, written by inv images.pin (review and commit;\n"
          "# see fabfile/ops/pins.py). A deploy runs exactly these bits.\n")


def wanted(env: Environment) -> dict[str, tuple[str, str]]:
    """variable -> (the reference the environment asks for, the stack that runs it)."""
    return {var: (env.images.get(var, default), stack)
            for var, (default, stack) in infra_images(env).items()}


def tag_of(pin: str) -> str:
    return pin.split("@", 1)[0]


def stale(env: Environment) -> list[str]:
    """Why the pins cannot be used as they are ([] when they can)."""
    pins, asked = env.pins, wanted(env)
    problems = [f"{var} is pinned to {tag_of(pins[var])} but the environment runs {ref}"
                for var, (ref, _) in asked.items() if var in pins and tag_of(pins[var]) != ref]
    if env.protected:
        problems += [f"{var} ({ref}) has no pin" for var, (ref, _) in asked.items()
                     if var not in pins]
    return problems


def require_current(env: Environment) -> None:
    """Before a task runs compose: the pins match what the environment asks for."""
    problems = stale(env)
    if problems:
        raise BadInput(f"image pins in {env.pins_file} are not current: {problems[0]}"
                       f"{f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''}; "
                       f"run inv images.pin --host {env.name}")


def resolve(env: Environment, pool: Pool) -> dict[str, str]:
    """Pull each image on every host whose stack runs it: variable -> repo:tag@sha256, the
    same on every host (a tag that moved between two pulls is a failure)."""
    asked = wanted(env)
    found: dict[str, str] = {}
    for stack in ("data", "core"):
        refs = {var: ref for var, (ref, s) in asked.items() if s == stack}
        if not refs:
            continue
        for host in env.hosts_with(stack):
            got = pull_on(pool, host, refs)
            for var, pin in got.items():
                if found.setdefault(var, pin) != pin:
                    raise StepFailed(f"{var}: {host.name} was served other bits for "
                                     f"{refs[var]} than another host (the tag moved during "
                                     "the run); nothing written, run it again")
    return {var: found[var] for var in sorted(found)}


def pull_on(pool: Pool, host: Host, refs: dict[str, str]) -> dict[str, str]:
    registry.login(pool.env, pool.get(host))
    result = pool.get(host).run(release_cmd.pull(sorted(set(refs.values()))), check=False)
    failed = pull_failures(host.name, result.stdout)
    if failed or not result.ok:
        raise StepFailed(pool.printer.mask(
            f"pull failed, nothing written: {'; '.join(failed) or result.stderr.strip()}"))
    return pinned(result.stdout, refs)


def changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """One line per variable whose pin is new, moved or gone."""
    lines = []
    for var in sorted(set(before) | set(after)):
        old, new = before.get(var), after.get(var)
        if old == new:
            continue
        if old is None:
            lines.append(f"{var}: pinned {new}")
        elif new is None:
            lines.append(f"{var}: no longer run, pin removed ({old})")
        elif tag_of(old) == tag_of(new):
            lines.append(f"{var}: the tag {tag_of(new)} moved: {digest(old)} -> {digest(new)}")
        else:
            lines.append(f"{var}: {tag_of(old)} -> {new}")
    return lines


def digest(pin: str) -> str:
    return pin.rsplit("@", 1)[1][:19]


def write(path: Path, pins: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(HEADER + yaml.safe_dump(pins, sort_keys=True))
    tmp.replace(path)


def pin(env: Environment, pool: Pool, check_only: bool, say: Callable[[str], None]) -> list[str]:
    """Resolve, compare and (unless check_only) write; returns what differed."""
    after = resolve(env, pool)
    lines = changes(env.pins, after)
    if not lines:
        say(f"nothing to do: {len(after)} image pins in {env.pins_file} match what the "
            "registry serves")
        return []
    for line in lines:
        say(line)
    if check_only:
        say(f"{len(lines)} pin(s) differ from what the registry serves; nothing written "
            f"(inv images.pin --host {env.name} writes them)")
    else:
        write(env.pins_file, after)
        say(f"wrote {env.pins_file}: review and commit it; the next deploy runs these digests")
    return lines
