"""Containers the fast tests start run with a small CPU weight: they share the machine with
the end-to-end drills, which count a request slower than 5 s as failed (bin/test also nices
the fast tests' own processes)."""

from __future__ import annotations

SHARES = "--cpu-shares=128"  # the sandbox's containers have Docker's default, 1024


def low_priority(args: tuple[str, ...]) -> tuple[str, ...]:
    """`docker run ...` with the small weight; any other docker command as it is."""
    return ("run", SHARES, *args[1:]) if args[:1] == ("run",) else args
