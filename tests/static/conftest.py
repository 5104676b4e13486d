"""Fixtures of the static checks: a .env.ec2 made from .env.ec2.example with dummy values."""

from __future__ import annotations

from pathlib import Path

import pytest
from static_helpers import dummy_value, example_values


@pytest.fixture(scope="session")
def env_values() -> dict[str, str]:
    return {k: dummy_value(k, v) for k, v in example_values().items()}


@pytest.fixture(scope="session")
def env_file(tmp_path_factory: pytest.TempPathFactory, env_values: dict[str, str]) -> Path:
    """A .env.ec2 made from .env.ec2.example with dummy values (mode 0600, like the real one)."""
    path = tmp_path_factory.mktemp("envfile") / ".env.ec2"
    path.write_text("".join(f"{k}={v}\n" for k, v in env_values.items()))
    path.chmod(0o600)
    return path
