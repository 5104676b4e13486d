"""The services of the two Compose stacks, as the suite needs to know them.

The one place that knows the service catalogue: validation (scale, logs), the health probe, the
gateway's routes and the capacity check read it. Static tests check it against the compose files
and the gateway's nginx.conf, so it cannot drift from them.
"""

from __future__ import annotations

from dataclasses import dataclass

from fabfile.config import Environment


@dataclass(frozen=True)
class Service:
    name: str
    stack: str                 # "data" or "core"
    health_port: int | None    # HTTP port of GET /health, None when only Docker's check applies
    memory_mb: int             # the compose file's memory limit
    scalable: bool = False
    profile: str | None = None  # compose profile that enables it (None: always on)
    route: str | None = None    # the gateway's location prefix for a jafar service
    uses: tuple[str, ...] = ()  # data stores it connects to (its pool counts against them)
    uid: int = 0                # the user its container runs as (who may read its secrets)
    volumes: tuple[str, ...] = ()  # a store's volumes (compose names): what a restore empties

    @property
    def short(self) -> str:
        """`api` for api-service: the name `inv scale` accepts besides the full one."""
        return self.name.removesuffix("-service")

    @property
    def image_variable(self) -> str:
        """The compose variable that pins this service's image (JAFAR_IMAGE_API_SERVICE)."""
        return "JAFAR_IMAGE_" + self.name.upper().replace("-", "_")

    @property
    def upstream(self) -> str:
        """The nginx upstream block the gateway proxies this service's route to."""
        return f"jafar_{self.short}"


JAFAR_PORT = 3000

SERVICES: tuple[Service, ...] = (
    # uid 999: the official mongo, redis and postgres images' users (mongodb, redis, postgres)
    Service("mongo-primary", "data", None, 2048, uid=999,
            volumes=("mongo-primary-data", "mongo-primary-config")),
    Service("mongo-secondary", "data", None, 2048, uid=999,
            volumes=("mongo-secondary-data", "mongo-secondary-config")),
    Service("mongo-arbiter", "data", None, 512, uid=999,
            volumes=("mongo-arbiter-data", "mongo-arbiter-config")),
    Service("redis", "data", None, 1024, uid=999, volumes=("redis-data",)),
    Service("postgres-ledger", "data", None, 1024, uid=999, volumes=("postgres-ledger-data",)),
    Service("gateway", "core", None, 256, uid=0),  # nginx's master reads the TLS key
    # the seven jafar services, in the gateway's routing order
    Service("api-service", "core", JAFAR_PORT, 512, True, route="/api/",
            uses=("mongo", "redis"), uid=1000),
    Service("auth-service", "core", JAFAR_PORT, 512, True, route="/auth/",
            uses=("mongo", "redis"), uid=1000),
    Service("wallet-service", "core", JAFAR_PORT, 512, True, route="/wallet/",
            uses=("mongo",), uid=1000),
    Service("transaction-service", "core", JAFAR_PORT, 512, True, route="/transactions/",
            uses=("mongo", "redis"), uid=1000),
    Service("ledger-service", "core", JAFAR_PORT, 512, True, route="/ledger/",
            uses=("postgres", "mongo"), uid=1000),
    Service("notification-service", "core", JAFAR_PORT, 512, True, route="/notifications/",
            uses=("redis",), uid=1000),
    Service("risk-service", "core", JAFAR_PORT, 512, True, route="/risk/",
            uses=("mongo", "redis"), uid=1000),
    Service("prometheus", "core", None, 1024, uid=65534),
    Service("alertmanager", "core", None, 256, uid=65534),
    Service("grafana", "core", None, 512, profile="grafana", uid=472),
)

STACKS = ("data", "core")
BY_NAME = {s.name: s for s in SERVICES}
JAFAR = tuple(s for s in SERVICES if s.scalable)


def stack_services(stack: str, env: Environment) -> tuple[Service, ...]:
    """The services `up` starts for this environment (profiles it does not enable are off)."""
    return tuple(s for s in SERVICES if s.stack == stack
                 and (s.profile is None or s.profile in env.compose_profiles))


def compose_project(env: Environment, stack: str) -> str:
    return f"{env.project}-{stack}"


def jafar_service(name: str) -> Service | None:
    """A jafar service by its full (`api-service`) or short (`api`) name."""
    for s in JAFAR:
        if name in (s.name, s.short):
            return s
    return None
