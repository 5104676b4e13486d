"""What a core host records about itself (state/ under the deploy path), read in one round
trip together with its containers: the scaled counts and the release it runs.

Replica counts: the environment's default (`replicas:`), overridden per service by
`inv scale`, recorded on every core host so that no deploy resets them. Hosts store only
explicit overrides: a later edit of `replicas:` applies to every service without one. When core
hosts disagree (one was rebuilt, a scale failed half way), the highest count wins and the task
says so; a new core host gets the others' overrides.

The release: tag and each service's image pinned by digest (`repo:tag@sha256:...`), so a
rollback runs the same bits even if the tag moved; the host's record wins over the config's
`tag:` (a deploy never silently changes the running version).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from fabfile.commands import inventory as inventory_cmd
from fabfile.commands import sections
from fabfile.commands import state as cmd
from fabfile.commands.files import write_stdin
from fabfile.config import Environment
from fabfile.errors import StepFailed
from fabfile.ops import inventory
from fabfile.ops.inventory import Container
from fabfile.services import JAFAR, compose_project

NAMES = {s.name for s in JAFAR}
SECTIONS = ("scale", "release", "history", "containers", "memory")


@dataclass(frozen=True)
class Release:
    """One entry of a host's release history (and, for the running one, release.json)."""

    id: int
    tag: str
    images: dict[str, str]           # service -> repo:tag@sha256:...
    kind: str = "release"            # initial (first core.up), release, rollback
    services: tuple[str, ...] = ()   # the services this entry changed
    started: str = ""
    finished: str = ""
    by: str = ""
    result: str = "ok"               # ok, failed, rolled back

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "services": list(self.services)}

    @classmethod
    def from_dict(cls, raw: object) -> Release:
        if not isinstance(raw, dict) or not isinstance(raw.get("images"), dict):
            raise ValueError("not a release record")
        return cls(int(raw["id"]), str(raw["tag"]), {str(k): str(v) for k, v in
                                                     raw["images"].items()},
                   str(raw.get("kind", "release")), tuple(raw.get("services", ())),
                   str(raw.get("started", "")), str(raw.get("finished", "")),
                   str(raw.get("by", "")), str(raw.get("result", "ok")))


@dataclass
class CoreState:
    """One core host, read in one round trip."""

    host: str
    overrides: dict[str, int]
    release: Release | None
    history: list[Release]
    containers: list[Container]
    memory_kb: int
    extra: dict[str, str] = field(default_factory=dict)

    def count(self, service: str) -> int:
        return len([c for c in self.containers if c.service == service])

    @property
    def images(self) -> dict[str, str]:
        """What compose runs here: the recorded release (empty: the config's tag)."""
        return dict(self.release.images) if self.release else {}


def probe(env: Environment, extra: dict[str, str] | None = None) -> str:
    return sections.script({
        "scale": cmd.read_scale(env.deploy_path),
        "release": cmd.read_release(env.deploy_path),
        "history": cmd.read_history(env.deploy_path),
        "containers": inventory_cmd.containers([compose_project(env, "core")]),
        "memory": inventory_cmd.memory(),
        **(extra or {}),
    })


def parse(host: str, output: str, extra: tuple[str, ...] = ()) -> CoreState:
    s = sections.split(output, SECTIONS + extra)
    memory = s.get("memory", "").strip()
    return CoreState(host, parse_overrides(host, s.get("scale", "{}")),
                     parse_release(host, s.get("release", "null")),
                     parse_history(host, s.get("history", "[]")),
                     inventory.parse(s.get("containers", "")),
                     int(memory) if memory.isdigit() else 0,
                     {k: s.get(k, "") for k in extra})


def parse_overrides(host: str, text: str) -> dict[str, int]:
    """The host's scale.json; a file the suite cannot read is a failure, never ignored."""
    try:
        raw = json.loads(text or "{}")
    except ValueError:
        raise StepFailed(f"{host}: state/scale.json is not JSON; fix or remove it (inv scale "
                         "writes it)") from None
    if not isinstance(raw, dict) or not all(
            k in NAMES and isinstance(v, int) and not isinstance(v, bool) and v >= 0
            for k, v in raw.items()):
        raise StepFailed(f"{host}: state/scale.json must map jafar service names to counts")
    return dict(sorted(raw.items()))


def parse_release(host: str, text: str) -> Release | None:
    try:
        raw = json.loads(text or "null")
        return None if raw is None else Release.from_dict(raw)
    except (ValueError, KeyError, TypeError):
        raise StepFailed(f"{host}: state/release.json is not a release record; restore it "
                         "from state/releases.json (inv releases shows them)") from None


def parse_history(host: str, text: str) -> list[Release]:
    try:
        raw = json.loads(text or "[]")
        if not isinstance(raw, list):
            raise ValueError
        return [Release.from_dict(r) for r in raw]
    except (ValueError, KeyError, TypeError):
        raise StepFailed(f"{host}: state/releases.json is not a release history") from None


def merge(per_host: dict[str, dict[str, int]]) -> tuple[dict[str, int], list[str]]:
    """The overrides every core host should hold (the highest count per service), and a note
    for each service whose hosts disagree."""
    merged: dict[str, int] = {}
    for overrides in per_host.values():
        for name, count in overrides.items():
            merged[name] = max(merged.get(name, count), count)
    notes = []
    for name in sorted(merged):
        seen = {h: o.get(name) for h, o in sorted(per_host.items())}
        if len(set(seen.values())) > 1:
            shown = ", ".join(f"{h}: {'default' if c is None else c}" for h, c in seen.items())
            notes.append(f"core hosts disagree on {name} ({shown}); using {merged[name]}")
    return merged, notes


def wanted(env: Environment, overrides: dict[str, int]) -> dict[str, int]:
    """Replicas per core host of each of the seven services."""
    return {s.name: overrides.get(s.name, env.replicas) for s in JAFAR}


def encode(value: object) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


def write_command(env: Environment) -> str:
    return write_stdin(cmd.scale_file(env.deploy_path), "644")


def write_release_commands(env: Environment) -> tuple[str, str]:
    """Write release.json, then releases.json (each atomically, from stdin)."""
    return (write_stdin(cmd.release_file(env.deploy_path), "644"),
            write_stdin(cmd.history_file(env.deploy_path), "644"))


def describe(env: Environment, counts: dict[str, int], overrides: dict[str, int],
             core_hosts: int) -> list[str]:
    """`api-service: 3 per host x 2 hosts (inv scale)` for each service that is overridden."""
    hosts = f" x {core_hosts} hosts" if core_hosts > 1 else ""
    return [f"{name}: {counts[name]} per host{hosts} (scaled with inv scale; default "
            f"{env.replicas})" for name in sorted(overrides)]
