"""Benchmark: the health probe batched into one SSH command vs one command per question.

Needs a deployed sandbox (bin/quickstart). Runs each way ROUNDS times on one connection and
prints, from this one run, the round trips and wall time of both and their ratio. Talks only
to the sandbox's loopback SSH port. Not a test: nothing is asserted.

    .venv/bin/python bench/health_round_trips.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from fabfile.config import Environment, Host, load_environment  # noqa: E402
from fabfile.health import check_host  # noqa: E402
from fabfile.remote import Masker, Printer, Remote  # noqa: E402
from fabfile.services import (  # noqa: E402
    JAFAR_PORT,
    STACKS,
    compose_project,
    stack_services,
)

ROUNDS = 5


def naive(remote: Remote, env: Environment, host: Host) -> int:
    """What a first version would do: list, then inspect and curl each container alone."""
    trips = 0
    for stack in (s for s in STACKS if host.has(s)):
        project = compose_project(env, stack)
        ids = remote.run(f"docker ps -aq --filter label=com.docker.compose.project={project}")
        trips += 1
        http = {s.name for s in stack_services(stack, env) if s.health_port}
        for cid in ids.stdout.split():
            info = remote.run("docker inspect --format '{{index .Config.Labels "
                              "\"com.docker.compose.service\"}} {{range "
                              ".NetworkSettings.Networks}}{{.IPAddress}} {{end}}' " + cid)
            trips += 1
            service, *ips = info.stdout.split()
            if service in http and ips:
                remote.run(f"curl -s -m 3 http://{ips[0]}:{JAFAR_PORT}/health", check=False)
                trips += 1
    remote.run("curl -sk -m 3 -o /dev/null https://127.0.0.1/health", check=False)
    return trips + 1


def main() -> None:
    env = load_environment("sandbox")
    host = env.hosts_with("core")[0]  # the host with the most containers to ask about
    remote = Remote(env, host, Printer(Masker()))
    remote.run("true")  # connect first: the handshake is not what is measured
    timings: dict[str, list[float]] = {"batched": [], "naive": []}
    trips = {}
    for _ in range(ROUNDS):
        before = remote.round_trips
        start = time.perf_counter()
        check_host(env, host, remote)
        timings["batched"].append(time.perf_counter() - start)
        trips["batched"] = remote.round_trips - before
        start = time.perf_counter()
        trips["naive"] = naive(remote, env, host)
        timings["naive"].append(time.perf_counter() - start)
    remote.close()
    b, n = (statistics.median(timings[k]) for k in ("batched", "naive"))
    print(f"health of {host.name}, median of {ROUNDS} rounds on one connection:")
    print(f"  batched: {trips['batched']:3d} round trips  {b * 1000:7.0f} ms")
    print(f"  naive:   {trips['naive']:3d} round trips  {n * 1000:7.0f} ms")
    print(f"  ratio:   {trips['naive'] / trips['batched']:.0f}x fewer round trips, "
          f"{n / b:.1f}x faster")


if __name__ == "__main__":
    main()
