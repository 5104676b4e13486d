"""Fixtures of the mongod stand-in tests (helpers live in standin_support.py)."""

from __future__ import annotations

import pytest
from standin_support import find_mongosh


@pytest.fixture(scope="session")
def mongosh() -> list[str]:
    """The real mongosh: the tests fail (not skip) when it is missing."""
    return [find_mongosh()]
