"""The services of the two Compose stacks, as the suite needs to know them.

One table, so validation (scale, health) and the health probe agree with the compose files;
a unit test checks this table against the compose files themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from fabfile.config import Environment


@dataclass(frozen=True)
class Service:
    name: str
    stack: str                 # "data" or "core"
    health_port: int | None    # HTTP port of GET /health, None when only Docker's check applies
    scalable: bool = False
    profile: str | None = None  # compose profile that enables it (None: always on)


JAFAR_PORT = 3000

SERVICES: tuple[Service, ...] = (
    Service("mongo-primary", "data", None),
    Service("mongo-secondary", "data", None),
    Service("mongo-arbiter", "data", None),
    Service("redis", "data", None),
    Service("postgres-ledger", "data", None),
    Service("gateway", "core", None),
    Service("auth-service", "core", JAFAR_PORT, scalable=True),
    Service("api-service", "core", JAFAR_PORT, scalable=True),
    Service("wallet-service", "core", JAFAR_PORT, scalable=True),
    Service("transaction-service", "core", JAFAR_PORT, scalable=True),
    Service("ledger-service", "core", JAFAR_PORT, scalable=True),
    Service("notification-service", "core", JAFAR_PORT, scalable=True),
    Service("risk-service", "core", JAFAR_PORT, scalable=True),
    Service("prometheus", "core", None),
    Service("grafana", "core", None, profile="grafana"),
)

STACKS = ("data", "core")


def stack_services(stack: str, env: Environment) -> tuple[Service, ...]:
    """The services `up` starts for this environment (profiles it does not enable are off)."""
    return tuple(s for s in SERVICES if s.stack == stack
                 and (s.profile is None or s.profile in env.compose_profiles))


def compose_project(env: Environment, stack: str) -> str:
    return f"{env.project}-{stack}"
