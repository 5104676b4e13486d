"""The containers a host runs, parsed from one `docker inspect` listing (commands/inventory)."""

from __future__ import annotations

from dataclasses import dataclass

from fabfile.commands.inventory import FIELDS


@dataclass(frozen=True)
class Container:
    service: str
    number: int
    id: str
    name: str
    state: str       # running, exited, restarting, ...
    health: str      # healthy, unhealthy, starting, none
    image: str
    started: str     # RFC 3339, as Docker reports it
    networks: dict[str, str]

    @property
    def ok(self) -> bool:
        """Running, and healthy when it has a health check."""
        return self.state == "running" and self.health in ("healthy", "none")

    @property
    def tag(self) -> str:
        """The image's tag (`v2` of `registry/jafar/api-service:v2@sha256:...`)."""
        last = self.image.split("@", 1)[0].rsplit("/", 1)[-1]
        return last.rsplit(":", 1)[1] if ":" in last else "latest"

    def address(self, network: str) -> str | None:
        return self.networks.get(network) or None


def parse(output: str) -> list[Container]:
    """One Container per well-formed line; sorted by service, then replica number."""
    found = []
    for line in output.splitlines():
        fields = line.split("\t")
        if len(fields) != len(FIELDS) or not fields[1].isdigit():
            continue
        service, number, cid, name, state, health, image, started, nets = fields
        networks = dict(n.split("=", 1) for n in nets.split() if "=" in n)
        found.append(Container(service, int(number), cid, name.lstrip("/"), state, health,
                               image, started, networks))
    return sorted(found, key=lambda c: (c.service, c.number))


def of(containers: list[Container], service: str) -> list[Container]:
    return [c for c in containers if c.service == service]
