"""What the tests of several Fleet processes on one store share: the store, and a way to read it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from streamlife.store import Store, open_store


@pytest.fixture(params=["postgres", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The shared store: a fresh PostgreSQL database (``pg_store_dsn``), or a SQLite file."""
    if request.param == "postgres":
        dsn: str = request.getfixturevalue("pg_store_dsn")
        return f"postgres:{dsn}"
    return f"sqlite:{tmp_path / 'shared.db'}"


@contextmanager
def opened(url: str) -> Iterator[Store]:
    """The store at ``url``, open for the block, as one more process would open it."""
    store = open_store(url)
    try:
        yield store
    finally:
        store.close()
