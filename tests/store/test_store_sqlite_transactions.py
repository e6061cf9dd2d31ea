"""SqliteStore's batches: one transaction, which keeps nothing of a batch that fails, even when
SQLite rolled it back by itself."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from streamlife.errors import StoreError
from streamlife.store.sqlite import SqliteStore

from .test_store_contract import advance, entry, make, task_row


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


def test_a_write_sqlite_refuses_in_create_is_a_store_error(tmp_path: Path) -> None:
    """Any sqlite3 failure of a write is the store's error (the receiver answers 503 for it), not
    sqlite3's own. Here the claims table is gone from under the store, so the claim cannot be kept."""
    store = SqliteStore(tmp_path / "streams.db")
    store._db.execute("ALTER TABLE claims RENAME TO claims_gone")
    with pytest.raises(StoreError, match="could not create task 'a'"):
        store.create(task_row("a", 1, task_id="tid-a"), (entry(1, trigger="adopt"),), claim="tid-a")
    assert store.row("a") is None  # nothing of it was kept
    store._db.execute("ALTER TABLE claims_gone RENAME TO claims")
    store.create(
        task_row("a", 1, task_id="tid-a"), (entry(1, trigger="adopt"),), claim="tid-a"
    )  # and the store works on
    assert [e.version for e in store.journal("a")] == [1]


def test_a_read_sqlite_refuses_under_the_row_lock_is_a_store_error(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "streams.db")
    make(store, "a")
    store._db.execute("ALTER TABLE tasks RENAME TO tasks_gone")  # the row lock's read now fails
    with pytest.raises(StoreError, match="could not write task 'a'"), store.lock("a"):
        pass
