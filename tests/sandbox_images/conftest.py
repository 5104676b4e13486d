"""Fixtures for the sandbox image tests: real images on the machine's Docker Engine.

Everything a test creates (containers, volumes, networks) carries the label
``org.jafar.sandbox.test=<session id>`` and is removed at the end of the session. Tests talk
only to loopback-published ports and to their own containers.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sandbox_images_support import LABEL, SESSION, docker

from sandbox import build


def _engine_answers() -> bool:
    try:
        return docker("info", check=False, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _cleanup() -> None:
    flt = f"label={LABEL}"
    ids = docker("ps", "-aq", "--filter", flt, check=False).stdout.split()
    if ids:
        docker("rm", "-f", "-v", *ids, check=False, timeout=180)
    vols = docker("volume", "ls", "-q", "--filter", flt, check=False).stdout.split()
    if vols:
        docker("volume", "rm", "-f", *vols, check=False)
    nets = docker("network", "ls", "-q", "--filter", flt, check=False).stdout.split()
    if nets:
        docker("network", "rm", *nets, check=False)


@pytest.fixture(scope="session")
def images() -> Iterator[dict[str, str]]:
    """Every sandbox image, built (or found cached) by build_all(); name -> reference."""
    if not _engine_answers():
        pytest.skip("no Docker Engine answers: run `sudo sandbox/setup-engine.sh` first")
    refs = build.build_all()
    try:
        yield refs
    finally:
        _cleanup()


@pytest.fixture
def run(images: dict[str, str]) -> Callable[..., str]:
    """Start a labelled, detached container; return its name."""

    def _run(
        image: str,
        *args: str,
        name: str,
        env: dict[str, str] | None = None,
        cmd: tuple[str, ...] = (),
    ) -> str:
        cname = f"jst-{SESSION}-{name}"
        docker(
            "run",
            "--detach",
            f"--name={cname}",
            f"--label={LABEL}",
            *args,
            images[image],
            *cmd,
            env=env,
        )
        return cname

    return _run


@pytest.fixture
def labelled_volume(images: dict[str, str]) -> Callable[[str], str]:
    def _make(name: str) -> str:
        vname = f"jst-{SESSION}-{name}"
        docker("volume", "create", f"--label={LABEL}", vname)
        return vname

    return _make


@pytest.fixture(scope="session")
def internal_network(images: dict[str, str]) -> str:
    """A labelled Docker network with no way out (``--internal``)."""
    name = f"jst-{SESSION}-net"
    docker("network", "create", "--internal", f"--label={LABEL}", name)
    return name


@pytest.fixture
def tmp_dir(tmp_path: Path) -> Path:
    tmp_path.chmod(0o755)
    return tmp_path
