"""Benchmark: a release of the seven services with `inv release` against the same change by
hand (`docker compose up -d --wait` of the new tag over one `ssh`), each under the same bounded
load through the gateway, side by side: time and failed requests.

By hand, compose recreates every service at once (a gap while they start) and the gateway
keeps routing to the stopped replicas' addresses; the suite rolls one service at a time,
health-gated and drained. Needs a deployed sandbox running v1 (bin/quickstart); leaves it on
v1. Talks only to loopback (the sandbox's SSH port and gateway). Not a test.

    .venv/bin/python bench/release.py
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout

from fabfile.commands.compose import up  # noqa: E402
from fabfile.config import load_environment  # noqa: E402
from fabfile.stacks import wait_timeout  # noqa: E402
from tests.support.load import Load  # noqa: E402

GATEWAY = "https://127.0.0.1:8443"
CA = ROOT / ".sandbox" / "tls" / "tls.crt"
PREFIXES = ("/api/", "/auth/", "/wallet/", "/transactions/", "/ledger/", "/notifications/",
            "/risk/")


def under_load(argv: list[str]) -> tuple[float, int, int]:
    """Run argv while the load runs; (seconds, requests sent, requests failed)."""
    with Load(GATEWAY, str(CA), prefixes=PREFIXES, rate=6, max_requests=2000,
              max_seconds=240) as load:
        time.sleep(2)
        start = time.monotonic()
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900)
        seconds = time.monotonic() - start
        time.sleep(2)
    if proc.returncode != 0:
        sys.exit(f"bench: {' '.join(argv[:5])} failed: {proc.stderr.strip()[-600:]}")
    report = load.report()
    return seconds, report.sent, report.failed


def inv(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("inv")), *args, "--host", "sandbox", "--yes"]


def by_hand(tag: str) -> list[str]:
    """What an operator would type: the new tag, compose up, over ssh."""
    env = load_environment("sandbox")
    host = env.hosts_with("core")[0]
    command = up(env, "core", wait_timeout(env)).replace(f"JAFAR_TAG={env.tag}",
                                                          f"JAFAR_TAG={tag}")
    return ["ssh", "-i", str(host.ssh.key), "-p", str(host.ssh.port),
            "-o", f"UserKnownHostsFile={env.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", f"{host.ssh.user}@{host.ssh.address}", command]


def main() -> None:
    rows = [("inv release --tag v2 (7 services)", *under_load(inv("release", "--tag", "v2"))),
            ("inv rollback --to v1 (7 services)", *under_load(inv("rollback", "--to", "v1"))),
            ("by hand: compose up -d --wait, tag v2", *under_load(by_hand("v2")))]
    # the host still records v1: core.up puts v1 back (pinned) and the routes right
    subprocess.run(inv("core.up"), cwd=ROOT, capture_output=True, timeout=900, check=True)
    print("release benchmark on the sandbox, one run each under the same load (6 requests/s "
          "through the gateway, GET and POST on all seven routes; /auth/ under its 1/s limit)")
    print(f"{'how':40} {'seconds':>8} {'requests':>9} {'failed':>7}")
    for name, seconds, sent, failed in rows:
        print(f"{name:40} {seconds:8.1f} {sent:9d} {failed:7d}")


if __name__ == "__main__":
    main()
