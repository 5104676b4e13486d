"""Fixtures of the mongod stand-in tests (helpers live in standin_support.py)."""

from __future__ import annotations

import pytest
from standin_support import TLSFiles, find_mongosh, make_tls_files


@pytest.fixture(scope="session")
def mongosh() -> list[str]:
    """The real mongosh: the tests fail (not skip) when it is missing."""
    return [find_mongosh()]


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A throwaway CA and certificates for the TLS tests (SANs localhost, 127.0.0.1)."""
    return make_tls_files(tmp_path_factory.mktemp("standin-tls"))
