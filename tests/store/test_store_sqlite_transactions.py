"""SqliteStore's batches: one transaction, which keeps nothing of a batch that fails, even when
SQLite rolled it back by itself."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamlife.errors import StoreConflict, StoreError
from streamlife.store import sqlite as sqlite_store
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


# An event that only moves its row on (write(entries, None), one entry: most events) takes no
# savepoint inside a batch: what it wrote is taken back by hand. Each way it can fail must leave
# the store as a savepoint would.


def plant_entry(store: SqliteStore, key: str, version: int) -> None:
    """A journal entry the row does not count yet: the next write's INSERT finds its version taken."""
    store._db.execute(
        "INSERT INTO journal (key, version, at, trigger, from_state, to_state)"
        " VALUES (?, ?, 1.0, 'x', 'a', 'b')",
        (key, version),
    )


def moved_on(store: SqliteStore, key: str) -> None:
    with store.lock(key) as txn:
        txn.write([entry(txn.version + 1)], None)


def moved_on_then_failed(store: SqliteStore, key: str) -> None:
    with store.lock(key) as txn:
        txn.write([entry(txn.version + 1)], None)
        raise RuntimeError("the event failed after its write")


@pytest.mark.parametrize("batched", [True, False], ids=["in a batch", "alone"])
def test_a_move_on_whose_entry_is_taken_leaves_the_row_as_it_was(tmp_path: Path, batched: bool) -> None:
    store = SqliteStore(tmp_path / "streams.db")
    make(store, "a")
    make(store, "b")
    advance(store, "a")
    plant_entry(store, "a", 3)
    before = store.row("a")

    def events() -> None:
        moved_on(store, "b")
        with store.lock("a") as txn:  # the block goes on after its write was refused
            with pytest.raises(StoreConflict, match="a version of task 'a' is taken"):
                txn.write([entry(3)], None)
            assert store.row("a") == before  # what the rest of the block reads
        with store.lock("a") as txn:  # and a later event
            assert txn.version == 2
        moved_on(store, "b")

    if batched:
        with store.batch():
            events()
    else:
        events()
    assert store.row("a") == before
    assert [e.version for e in store.journal("a")] == [1, 2, 3]  # the planted one
    assert [e.version for e in store.journal("b")] == [1, 2, 3]
    store.close()


def test_a_block_that_raises_after_moving_its_row_on_in_a_batch_is_taken_back(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "streams.db")
    make(store, "a")
    make(store, "b")
    before = store.row("a")

    with store.batch():
        moved_on(store, "b")
        with pytest.raises(RuntimeError):
            moved_on_then_failed(store, "a")
        assert store.row("a") == before  # what the rest of the batch reads
        assert [e.version for e in store.journal("a")] == [1]
        moved_on(store, "b")
    assert store.row("a") == before
    assert [e.version for e in store.journal("a")] == [1]
    assert [e.version for e in store.journal("b")] == [1, 2, 3]
    moved_on(store, "a")  # and the task goes on from where it was
    assert [e.version for e in store.journal("a")] == [1, 2]
    store.close()


@pytest.mark.parametrize("park_first", [True, False], ids=["park, then write", "write, then park"])
def test_what_a_block_in_a_batch_writes_beside_its_event_goes_with_it(
    tmp_path: Path, park_first: bool
) -> None:
    store = SqliteStore(tmp_path / "streams.db")
    make(store, "a")
    before = store.row("a")

    def event_and_park(fail: bool) -> None:
        with store.lock("a") as txn:
            if park_first:
                store.park("tid-x", 1.0, {"n": 1})
            txn.write([entry(txn.version + 1)], None)
            if not park_first:
                store.park("tid-x", 1.0, {"n": 1})
            if fail:
                raise RuntimeError("the event failed after its writes")

    with store.batch():
        with pytest.raises(RuntimeError):
            event_and_park(fail=True)
        assert store.parked() == []
        assert store.row("a") == before
    assert store.parked() == []
    assert [e.version for e in store.journal("a")] == [1]
    with store.batch():
        event_and_park(fail=False)
    assert [p.payload for p in store.parked()] == [{"n": 1}]
    assert [e.version for e in store.journal("a")] == [1, 2]
    store.close()


def test_a_block_in_a_batch_that_only_parks_and_fails_keeps_nothing(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "streams.db")
    make(store, "a")

    def parked_then_failed() -> None:
        with store.lock("a"):
            store.park("tid-x", 1.0, {"n": 1})
            raise RuntimeError("the event failed")

    with store.batch():
        with pytest.raises(RuntimeError):
            parked_then_failed()
        store.park("tid-y", 2.0, {"n": 2})
    assert [p.task_id for p in store.parked()] == ["tid-y"]
    store.close()


@pytest.mark.parametrize(
    ("write", "taken"),
    [
        (lambda txn: txn.write([entry(2)], task_row("a", 2, facts={"changed": True})), 2),
        (lambda txn: txn.write([entry(2), entry(3)], None), 3),  # refused at its second entry
    ],
    ids=["a row", "two entries"],
)
def test_a_write_in_a_batch_refused_midway_keeps_nothing_of_it(
    tmp_path: Path, write: Callable[[Any], None], taken: int
) -> None:
    # These take the block's savepoint: their row, or their entries, are not taken back by hand.
    store = SqliteStore(tmp_path / "streams.db")
    make(store, "a")
    plant_entry(store, "a", taken)
    before = store.row("a"), store.journal("a")
    with store.batch():
        with pytest.raises(StoreConflict, match="a version of task 'a' is taken"), store.lock("a") as txn:
            write(txn)
        assert (store.row("a"), store.journal("a")) == before
    assert (store.row("a"), store.journal("a")) == before
    store.close()


def test_a_move_on_sqlite_rolled_back_whole_is_not_taken_back_outside_the_batch(tmp_path: Path) -> None:
    # SQLite may roll the whole transaction back by itself when a statement fails (SQLITE_FULL, say;
    # here a trigger does it). Nothing is left to take back then, and a statement run to take it
    # back would commit on its own.
    store = SqliteStore(tmp_path / "streams.db")
    make(store, "a")
    store._db.execute(
        "CREATE TRIGGER refuse_3 BEFORE INSERT ON journal WHEN NEW.version = 3"
        " BEGIN SELECT RAISE(ROLLBACK, 'refused'); END"
    )
    before = store.row("a"), store.journal("a")

    def batch() -> None:
        with store.batch():
            moved_on(store, "a")  # version 2, inside the batch
            moved_on(store, "a")  # version 3: SQLite rolls the batch back

    with pytest.raises(StoreError):
        batch()
    assert (store.row("a"), store.journal("a")) == before
    store.close()


def test_a_batch_whose_move_on_cannot_be_taken_back_keeps_nothing(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "streams.db")
    make(store, "a")
    make(store, "b")
    store._db.execute(
        "CREATE TRIGGER no_going_back BEFORE UPDATE OF version ON tasks WHEN NEW.version < OLD.version"
        " BEGIN SELECT RAISE(ABORT, 'no going back'); END"
    )
    before = list(store.rows()), store.journal("a"), store.journal("b")

    def batch() -> None:
        with store.batch():
            moved_on(store, "b")
            with pytest.raises(RuntimeError):
                moved_on_then_failed(store, "a")
            # Taking it back failed: the batch's transaction was rolled back, and it fails.
            with pytest.raises(StoreError, match="rolled back"):
                moved_on(store, "b")

    with pytest.raises(StoreError):
        batch()
    assert (list(store.rows()), store.journal("a"), store.journal("b")) == before
    store.close()


@pytest.mark.parametrize("inserted", [True, False], ids=["after its INSERT", "before it"])
def test_a_move_on_interrupted_midway_in_a_batch_is_taken_back_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inserted: bool
) -> None:
    # An exception that no statement raised (a KeyboardInterrupt, say) may come between two.
    store = SqliteStore(tmp_path / "streams.db")
    make(store, "a")
    make(store, "b")
    before = store.row("a"), store.journal("a")
    insert = sqlite_store._insert_entries

    def interrupted(*args: Any) -> None:
        if inserted:
            insert(*args)
        raise KeyboardInterrupt

    with store.batch():
        moved_on(store, "b")
        monkeypatch.setattr(sqlite_store, "_insert_entries", interrupted)
        with pytest.raises(KeyboardInterrupt):
            moved_on(store, "a")
        monkeypatch.setattr(sqlite_store, "_insert_entries", insert)
        assert (store.row("a"), store.journal("a")) == before
        moved_on(store, "b")
    assert (store.row("a"), store.journal("a")) == before
    assert [e.version for e in store.journal("b")] == [1, 2, 3]
    moved_on(store, "a")  # and the task goes on from where it was
    assert [e.version for e in store.journal("a")] == [1, 2]
    store.close()


@pytest.mark.parametrize("batched", [True, False], ids=["in a batch", "alone"])
def test_a_move_on_from_a_version_the_row_left_changes_nothing(tmp_path: Path, batched: bool) -> None:
    store = SqliteStore(tmp_path / "streams.db")
    make(store, "a")

    def stale_event() -> None:
        with store.lock("a") as txn:
            # The row moves on under the lock (what a writer that kept no lock would do).
            store._db.execute("UPDATE tasks SET version = 5, updated_at = 7.0 WHERE key = 'a'")
            with pytest.raises(StoreConflict, match="no longer at version 1"):
                txn.write([entry(2)], None)

    if batched:
        with store.batch():
            stale_event()
    else:
        stale_event()
    row = store.row("a")
    assert row is not None
    assert (row.version, row.updated_at) == (5, 7.0)  # as it was moved: the refused write took nothing back
    assert [e.version for e in store.journal("a")] == [1]
    store.close()


def test_a_block_whose_batch_sqlite_rolled_back_takes_nothing_back(tmp_path: Path) -> None:
    # Once SQLite rolled the batch back, another writer may write the task before the block fails:
    # taking the block's write back then would undo the other writer's.
    path = tmp_path / "streams.db"
    store, other = SqliteStore(path), SqliteStore(path)
    # A writer that takes no turns (as the sqlite3 shell): one that does waits for the batch's end.
    other._turns.close()
    make(store, "a")

    def block_that_fails_after_a_rollback() -> None:
        with store.lock("a") as txn:
            txn.write([entry(2)], None)
            store._db.execute("ROLLBACK")  # what SQLite does after SQLITE_FULL, say
            advance(other, "a")  # another writer's version 2
            raise RuntimeError("the event failed")

    def batch() -> None:
        with store.batch(), pytest.raises(RuntimeError):
            block_that_fails_after_a_rollback()

    with pytest.raises(StoreError, match="could not write a batch"):
        batch()
    assert store.row("a") == other.row("a")
    row = store.row("a")
    assert row is not None
    assert row.version == 2
    assert [e.version for e in store.journal("a")] == [1, 2]
    store.close()
    other.close()


@pytest.mark.parametrize("batched", [True, False], ids=["in a batch", "alone"])
@pytest.mark.parametrize(
    "write",
    [lambda txn: txn.write([entry(2)], None), lambda txn: txn.write([entry(2)], task_row("a", 2))],
    ids=["moved on", "a row"],
)
def test_a_refused_write_takes_back_itself_alone_not_what_its_block_wrote_before(
    tmp_path: Path, batched: bool, write: Callable[[Any], None]
) -> None:
    # As outside a batch: the block that goes on after its write was refused keeps what it wrote.
    store = SqliteStore(tmp_path / "streams.db")
    make(store, "a")
    plant_entry(store, "a", 2)
    before = store.row("a")

    def event() -> None:
        with store.lock("a") as txn:
            store.park("tid-x", 1.0, {"n": 1})
            with pytest.raises(StoreConflict, match="a version of task 'a' is taken"):
                write(txn)

    if batched:
        with store.batch():
            event()
    else:
        event()
    assert [p.payload for p in store.parked()] == [{"n": 1}]
    assert store.row("a") == before
    store.close()
