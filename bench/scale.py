"""Benchmark: `inv scale api=3` against the same work by hand, and a no-change `inv scale`.

The floor is what an operator would type: one `ssh` to the host running
`docker compose ... up -d --no-recreate --no-deps --wait --scale api-service=N api-service`
(start the replicas and wait until healthy; it neither drains nor updates the gateway's
routes, which is exactly what the suite adds). Each figure is the median of ROUNDS runs in
this one run, with the SSH round trips the suite reports. Needs a deployed sandbox with
api-service at 1 (bin/quickstart); leaves it at 1 and re-routes with `inv core.up`. Talks only
to the sandbox's loopback SSH port. Not a test: nothing is asserted.

    .venv/bin/python bench/scale.py
"""

from __future__ import annotations

import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout

from fabfile.commands.compose import scale_up  # noqa: E402
from fabfile.config import load_environment  # noqa: E402
from fabfile.stacks import wait_timeout  # noqa: E402

ROUNDS = 3


def timed(argv: list[str]) -> tuple[float, int | None]:
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"bench: {' '.join(argv[:4])} failed: {proc.stderr.strip()[-500:]}")
    trips = re.search(r"(\d+) SSH round trips", proc.stderr)
    return seconds, int(trips.group(1)) if trips else None


def inv(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("inv")), *args, "--host", "sandbox"]


def by_hand(count: int) -> list[str]:
    env = load_environment("sandbox")
    host = env.hosts_with("core")[0]
    command = scale_up(env, "api-service", count, wait_timeout(env))
    return ["ssh", "-i", str(host.ssh.key), "-p", str(host.ssh.port),
            "-o", f"UserKnownHostsFile={env.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", f"{host.ssh.user}@{host.ssh.address}", command]


def main() -> None:
    runs: dict[str, list[tuple[float, int | None]]] = {}
    for _ in range(ROUNDS):
        runs.setdefault("by hand: up 1 -> 3", []).append(timed(by_hand(3)))
        runs.setdefault("by hand: down 3 -> 1", []).append(timed(by_hand(1)))
        timed(inv("core.up"))  # the hand-made replicas are not routed: put routing right
        runs.setdefault("inv scale api=3 (1 -> 3)", []).append(timed(inv("scale", "api=3")))
        runs.setdefault("inv scale api=3 (no change)", []).append(timed(inv("scale", "api=3")))
        runs.setdefault("inv scale api=1 (3 -> 1)", []).append(timed(inv("scale", "api=1")))
    floor_up = statistics.median(s for s, _ in runs["by hand: up 1 -> 3"])
    floor_down = statistics.median(s for s, _ in runs["by hand: down 3 -> 1"])
    print(f"scale benchmark on the sandbox, medians of {ROUNDS} runs (one run of this script)")
    print(f"{'operation':34} {'median s':>9} {'x floor':>8} {'round trips':>12}")
    for name, results in runs.items():
        median = statistics.median(s for s, _ in results)
        floor = floor_down if "down" in name or "3 -> 1" in name else floor_up
        trips = {t for _, t in results}
        shown = "1 (ssh)" if name.startswith("by hand") else "/".join(
            str(t) for t in sorted(t for t in trips if t is not None))
        print(f"{name:34} {median:9.2f} {median / floor:8.2f} {shown:>12}")
    print("the suite's extra time is the drain (the gateway's old workers finish) before a stop,"
          " the health-gated routing update, the lock and the signed audit record;\nby hand, "
          "the gateway keeps routing to stopped replicas and never routes to new ones: "
          + shlex.quote("inv core.up") + " repaired it after each hand-made run")


if __name__ == "__main__":
    main()
