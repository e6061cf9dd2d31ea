"""PostgresStore's write of one event: one statement that moves the row on and appends the entry,
with no savepoint of its own, so that an event costs as few round trips as it can.

Each check the statement makes is made to fail for real, on the test server of tests/pg.py: a row
not at the version the lock read, a journal version another writer took (a second connection that
skipped the row lock). Each refusal keeps nothing, and a block that catches the refusal and goes on
is not committed as if nothing had happened: the server would have rolled all of it back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import suppress

import psycopg
import pytest

from streamlife.errors import StoreConflict, StoreError
from streamlife.store import TaskRow
from streamlife.store._postgres_schema import MIGRATIONS
from streamlife.store.postgres import PostgresStore

from .test_store_contract import advance, entry, make, task_row


@pytest.fixture
def store(pg_store_dsn: str) -> Iterator[PostgresStore]:
    opened = PostgresStore(pg_store_dsn)
    yield opened
    opened.close()


def take_version(dsn: str, key: str, version: int) -> None:
    """A writer that skipped the row lock appends entry ``version`` to the task's journal, on a
    connection of its own, and leaves the row as it was."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO streamlife_journal (key, version, at, trigger, from_state, to_state)"
            " VALUES (%s, %s, 0.0, 'segment', 'running', 'running')",
            (key, version),
        )


ROWS: dict[str, Callable[[int], TaskRow | None]] = {
    "no-row": lambda version: None,  # a segment while running: the row only moves on
    "row": lambda version: task_row("k", version, state="stopping"),
}


@pytest.mark.parametrize("row", list(ROWS), ids=list(ROWS))
def test_a_version_another_writer_took_is_refused_and_nothing_is_kept(
    store: PostgresStore, pg_store_dsn: str, row: str
) -> None:
    made = make(store, "k")
    take_version(pg_store_dsn, "k", 2)
    with pytest.raises(StoreConflict, match="is taken"), store.lock("k") as txn:
        txn.write([entry(2)], ROWS[row](2))
    assert store.row("k") == made
    assert [e.version for e in store.journal("k")] == [1, 2]  # the other writer's, not ours
    assert store.journal("k")[1].at == 0.0


@pytest.mark.parametrize("row", list(ROWS), ids=list(ROWS))
def test_a_row_not_at_the_locked_version_is_neither_moved_nor_appended_to(
    store: PostgresStore, row: str
) -> None:
    """The statement checks the version itself: the row lock is not all that stands between a stale
    writer and a second effect."""
    make(store, "k")
    with store.lock("k") as txn:
        # The row moves under the block (on its own connection: the lock keeps everyone else out).
        txn._conn.execute("UPDATE streamlife_tasks SET version = 7 WHERE key = 'k'")
        with pytest.raises(StoreConflict, match="no longer at version 1"):
            txn.write([entry(2)], ROWS[row](2))
        assert [e.version for e in store.journal("k")] == [1]
        found = store.row("k")
        assert found is not None
        assert (found.version, found.state) == (7, "running")


def test_a_block_that_goes_on_after_the_server_refused_its_write_keeps_nothing_and_says_so(
    store: PostgresStore, pg_store_dsn: str
) -> None:
    made = make(store, "k")
    take_version(pg_store_dsn, "k", 2)
    # The refusal is caught, and the block ends as if it had not failed.
    with (
        pytest.raises(StoreError, match="nothing of it is kept"),
        store.lock("k") as txn,
        suppress(StoreConflict),
    ):
        txn.write([entry(2)], task_row("k", 2, state="stopping"))
    assert store.row("k") == made
    with store.lock("k") as txn:  # the task is not held: its next lock is had at once
        assert txn.version == 1


def test_inside_a_batch_a_write_the_server_refused_is_rolled_back_alone(
    store: PostgresStore, pg_store_dsn: str
) -> None:
    for key in ("a", "k", "z"):
        make(store, key)
    take_version(pg_store_dsn, "k", 2)
    with store.batch():
        advance(store, "a")
        with pytest.raises(StoreConflict), store.lock("k") as txn:
            txn.write([entry(2)], None)
        with (
            pytest.raises(StoreError, match="nothing of it is kept"),
            store.lock("k") as txn,
            suppress(StoreConflict),
        ):
            txn.write([entry(2)], None)
        advance(store, "z")  # the batch goes on
    assert [e.version for e in store.journal("a")] == [1, 2]
    assert [e.version for e in store.journal("z")] == [1, 2]
    row = store.row("k")
    assert row is not None
    assert row.version == 1


def test_a_batch_that_went_on_after_a_failed_statement_keeps_nothing(store: PostgresStore) -> None:
    """A statement of the batch fails between two blocks, and whoever ran it goes on: the next block
    is refused, and so is the batch, whole (the block before the failure included)."""
    for key in ("a", "z"):
        make(store, key)

    def going_on() -> None:
        with store.batch():
            advance(store, "a")
            with suppress(psycopg.Error):
                store._local.batch.execute("SELECT 1 / 0")  # a statement that fails, caught
            with pytest.raises(StoreError, match="failed before it"):
                advance(store, "z")

    with pytest.raises(StoreError, match="nothing of it is kept"):
        going_on()
    for key in ("a", "z"):
        assert [e.version for e in store.journal(key)] == [1]


def test_a_block_with_no_entry_keeps_what_else_it_wrote(store: PostgresStore) -> None:
    """A block that writes no entry (a duplicate) is not committed, for it has nothing to keep; one
    that wrote something else through the store all the same is."""
    made = make(store, "k")
    with store.lock("k"):
        store.park("tid-1", 5.0, {"n": 1})
        letter = store.dead_letter(5.0, "refused", None, b"{}")
    with store.lock("k"):
        store.unpark("tid-1")
    with store.lock("k") as txn:
        assert txn.version == 1
    assert store.row("k") == made
    assert store.parked() == []
    assert [kept.id for kept in store.dead_letters()] == [letter]


@pytest.mark.parametrize(
    "key",
    [
        "0123456789abcdef0123456789abcdef",
        "plain-key_1",
        "it's",
        "a'; DROP TABLE streamlife_tasks; --",
        "k\\'x",
        "ключ",
    ],
)
def test_any_key_is_locked_and_written_as_itself(store: PostgresStore, key: str) -> None:
    """lock() quotes the key itself (a key of letters and digits by hand, any other through psycopg):
    every key locks its own row, and no other."""
    make(store, key)
    make(store, "other")
    with store.batch():
        advance(store, key)
    advance(store, key)
    assert [e.version for e in store.journal(key)] == [1, 2, 3]
    assert [e.version for e in store.journal("other")] == [1]


def test_a_database_from_before_the_lock_function_gains_it_and_its_tasks_lock_as_before(
    pg_store_dsn: str,
) -> None:
    """The row lock goes through the schema's function (migration 5): a database a streamlife before
    it made (schema version 4, no function) gains it when a store opens, and its tasks take writes."""
    old = PostgresStore(pg_store_dsn)
    made = make(old, "k")
    old.close()
    with psycopg.connect(pg_store_dsn, autocommit=True) as conn:
        conn.execute("DROP FUNCTION streamlife_lock_task")
        conn.execute("DROP INDEX streamlife_tasks_look")  # (and what came after: migrations 6 and 7)
        conn.execute("ALTER TABLE streamlife_tasks DROP COLUMN look_at")
        conn.execute("DROP INDEX streamlife_parked_at")
        conn.execute("UPDATE streamlife_schema SET version = 4")
    store = PostgresStore(pg_store_dsn)
    try:
        with store.lock("k") as txn:
            assert txn.version == made.version
        advance(store, "k")
        with store.lock("no-such-task") as txn:
            assert txn.version == 0
        assert [e.version for e in store.journal("k")] == [1, 2]
    finally:
        store.close()
    with psycopg.connect(pg_store_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT version FROM streamlife_schema").fetchone() == (len(MIGRATIONS),)


def test_a_block_that_writes_nothing_leaves_the_prepared_statements_prepared(pg_store_dsn: str) -> None:
    """A lock() block that writes nothing (a duplicate callback: one in ten, in the bench) ends in a
    rollback. psycopg drops every prepared statement of the connection at a ROLLBACK it runs, so the
    events after each duplicate would be parsed and planned again, and one round trip more spent on
    DEALLOCATE ALL: the store's rollback keeps them."""
    store = PostgresStore(pg_store_dsn, max_size=1)  # one connection: the one every block uses
    try:
        make(store, "k")
        for version in range(2, 10):  # more writes than psycopg's prepare threshold
            with store.lock("k") as txn:
                txn.write([entry(version)], None)

        def prepared() -> set[str]:
            with store._pool.connection() as conn:
                return {name for (name,) in conn.execute("SELECT statement FROM pg_prepared_statements")}

        before = prepared()
        assert any("INSERT INTO streamlife_journal" in statement for statement in before)
        with store.lock("k") as txn:
            assert txn.version == 9  # and nothing written
        assert prepared() == before
        with store.lock("k") as txn:  # and the connection goes on as before
            txn.write([entry(10)], None)
        assert [e.version for e in store.journal("k")] == list(range(1, 11))
    finally:
        store.close()
