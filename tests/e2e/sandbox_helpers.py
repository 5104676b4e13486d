"""Helpers for the end-to-end tests on the sandbox."""

from __future__ import annotations

import subprocess

HOST = "jafar-sandbox-1"


def on_host(*argv: str, timeout: int = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command on the test host as root, through the local engine (not over SSH)."""
    return subprocess.run(["docker", "exec", HOST, *argv], capture_output=True, text=True,
                          timeout=timeout, check=check)


def inner(*argv: str, timeout: int = 60) -> str:
    """Run a docker command on the test host's own daemon."""
    return on_host("docker", *argv, timeout=timeout).stdout


def host_ip() -> str:
    return subprocess.run(["docker", "inspect", "--format",
                           "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", HOST],
                          capture_output=True, text=True, timeout=30, check=True).stdout.strip()
