"""SqliteStore's batches: one transaction, which keeps nothing of a batch that fails, even when
SQLite rolled it back by itself."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from streamlife.errors import StoreError
from streamlife.store.sqlite import SqliteStore

from .test_store_contract import advance, make


@pytest.mark.parametrize(
    "write",
    [lambda store: advance(store, "b"), lambda store: store.park("tid-b", 1.0, {"n": 1})],
    ids=["event", "park"],
)
def test_a_batch_that_sqlite_rolled_back_keeps_no_later_write(
    tmp_path: Path, write: Callable[[SqliteStore], object]
) -> None:
    # SQLite may roll a whole transaction back by itself when a statement fails with SQLITE_FULL,
    # SQLITE_IOERR or SQLITE_NOMEM. A write after that must not run on its own: it would be kept,
    # outside the batch, while the batch fails.
    store = SqliteStore(tmp_path / "streams.db")
    make(store, "a")
    make(store, "b")

    def batch_after_a_rollback() -> None:
        with store.batch():
            advance(store, "a")
            store._db.execute("ROLLBACK")  # what SQLite does after such a failure
            write(store)

    with pytest.raises(StoreError, match="rolled back"):
        batch_after_a_rollback()
    assert [e.version for e in store.journal("a")] == [1]
    assert [e.version for e in store.journal("b")] == [1]
    assert store.parked() == []
    advance(store, "b")  # and the store goes on
    assert [e.version for e in store.journal("b")] == [1, 2]
    store.close()
