"""PostgresStore's prune, paced: batches sized to a time on an injected clock, each followed by a
pause as long as it took, for tasks and dead letters alike; a prune stopped half-way that leaves
every task whole; rows another transaction holds left for a later prune. On the test server of
tests/pg.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamlife.store import JournalEntry, PruneResult, TaskRow
from streamlife.store._prune_pacing import FIRST_ENTRIES, MARGIN, Pacer, ServerPacer
from streamlife.store.postgres import PostgresStore

SIZES = [(n * 7) % 23 + 1 for n in range(120)]  # 1 to 23 entries each


@pytest.fixture
def store(pg_store_dsn: str) -> Iterator[PostgresStore]:
    opened = PostgresStore(pg_store_dsn)
    yield opened
    opened.close()


def fill(store: PostgresStore, sizes: Sequence[int]) -> None:
    """Stopped tasks last updated at 10.0, ``sizes[n]`` journal entries each."""
    for n, size in enumerate(sizes):
        entries = [JournalEntry(v, 10.0, "segment", "running", "stopped", None) for v in range(1, size + 1)]
        row = TaskRow(f"k{n:03}", "audio", f"tid-{n}", "stopped", size, 5.0 + n / 1000, 10.0, {})
        store.create(row, entries)


def journal_entries(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        found = conn.execute("SELECT count(*) FROM streamlife_journal").fetchone()
    assert found is not None
    return int(found[0])


def letter_pages(dsn: str) -> int:
    """What the dead letters weigh for the pacing: a page of body each (one at least)."""
    with psycopg.connect(dsn) as conn:
        found = conn.execute(
            "SELECT coalesce(sum(1 + octet_length(body) / 8192), 0) FROM streamlife_dead_letters"
        ).fetchone()
    assert found is not None
    return int(found[0])


class Paced(ServerPacer):
    """The store's pacer on a clock that moves ``cost`` seconds for each journal entry ``count``
    finds gone (as another connection sees it), with a sleep that only notes what it was asked for."""

    def __init__(self, count: Callable[[], int], cost: float, *, stop_after: int | None = None) -> None:
        self.start = count()
        super().__init__(hold=0.005, timer=lambda: cost * (self.start - count()), sleep=self.slept)
        self.batches: list[tuple[int, int, float]] = []  # (entries, the budget they had, held)
        self.pauses: list[tuple[float, float]] = []  # (held, slept)
        self.stop_after = stop_after

    def learn(self, entries: int, held: float) -> None:
        self.batches.append((entries, self.budget, held))
        super().learn(entries, held)

    def slept(self, seconds: float) -> None:
        self.pauses.append((self.batches[-1][2], seconds))
        if self.stop_after is not None and len(self.batches) >= self.stop_after:
            raise KeyboardInterrupt  # the process stopped between two batches


def pace(monkeypatch: pytest.MonkeyPatch, store: PostgresStore, *pacers: Pacer) -> None:
    """``store``'s prunes paced by ``pacers`` in turn (the tasks', then the letters'), then as usual."""
    turns = iter(pacers)
    monkeypatch.setattr(store, "_pacer", lambda: next(turns, None) or ServerPacer())


def assert_paced(pacer: Paced) -> None:
    """Each batch after the first took what fits the hold; after each but the last, a pause as long."""
    (first, *rest) = pacer.batches
    assert first[0] <= FIRST_ENTRIES
    assert len(rest) > 10  # not one batch of 500 rows, as before the pacing
    for entries, budget, held in rest:
        assert entries <= budget
        assert held <= pacer.hold + 1e-9
    assert len(pacer.pauses) == len(pacer.batches) - 1
    for held, slept in pacer.pauses:
        assert slept >= pacer.pause_after(held) - 1e-9  # (the clock stands still while nothing is deleted)


@given(held=st.floats(0.0, 10.0))
def test_after_a_batch_the_server_is_let_go_for_as_long_as_the_batch_took(held: float) -> None:
    """No busy handler to outlast on PostgreSQL (a waiting writer is woken at once): the pause gives
    writers half the time."""
    assert ServerPacer().pause_after(held) == held + MARGIN


def test_each_batch_takes_what_fits_the_hold_and_is_followed_by_a_pause_as_long(
    store: PostgresStore, pg_store_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(store, SIZES)
    pacer = Paced(lambda: journal_entries(pg_store_dsn), cost=0.0002)  # 25 entries in the 5 ms hold
    pace(monkeypatch, store, pacer)
    assert store.prune(100.0) == PruneResult(len(SIZES), sum(SIZES), 0)
    assert journal_entries(pg_store_dsn) == 0
    assert_paced(pacer)


def test_dead_letters_go_in_batches_paced_by_the_pages_their_bodies_take(
    store: PostgresStore, pg_store_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = [store.dead_letter(10.0, "r", None, b"x" * (n % 5 * 12_000)) for n in range(400)]
    kept = store.dead_letter(200.0, "r", None, b"new")
    tasks, letters = ServerPacer(), Paced(lambda: letter_pages(pg_store_dsn), cost=0.0002)
    pace(monkeypatch, store, tasks, letters)
    assert store.prune(100.0) == PruneResult(0, 0, len(old))
    assert [letter.id for letter in store.dead_letters()] == [kept]
    assert_paced(letters)


def test_a_dead_letter_another_transaction_holds_is_left_for_a_later_prune(
    pg_store_dsn: str,
) -> None:
    """The prune waits for no one: a letter another process is deleting (a purge not yet committed)
    is skipped, not waited for until the lock times out and the whole prune fails."""
    store = PostgresStore(pg_store_dsn, lock_timeout=0.5)
    try:
        old = [store.dead_letter(10.0, "r", None, b"x") for _ in range(5)]
        with psycopg.connect(pg_store_dsn) as other, other.transaction():
            other.execute("SELECT id FROM streamlife_dead_letters WHERE id = %s FOR UPDATE", (old[2],))
            assert store.prune(100.0) == PruneResult(0, 0, 4)
        assert [letter.id for letter in store.dead_letters()] == [old[2]]
        assert store.prune(100.0) == PruneResult(0, 0, 1)
        assert store.dead_letters() == []
    finally:
        store.close()


def test_a_prune_stopped_between_batches_leaves_every_task_whole_and_the_next_one_finishes(
    store: PostgresStore, pg_store_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(store, SIZES)
    pacer = Paced(lambda: journal_entries(pg_store_dsn), cost=0.0001, stop_after=3)
    monkeypatch.setattr(store, "_pacer", lambda: pacer)
    with pytest.raises(KeyboardInterrupt):
        store.prune(100.0)
    kept = [(n, store.row(f"k{n:03}"), store.journal(f"k{n:03}")) for n in range(len(SIZES))]
    gone = [n for n, row, _ in kept if row is None]
    assert 0 < len(gone) < len(SIZES)
    for n, row, journal in kept:
        if row is None:
            assert journal == []
        else:
            assert [e.version for e in journal] == list(range(1, SIZES[n] + 1))
    monkeypatch.undo()
    left = [n for n in range(len(SIZES)) if n not in gone]
    assert store.prune(100.0) == PruneResult(len(left), sum(SIZES[n] for n in left), 0)
    assert list(store.rows(terminal=True)) == []


def test_a_prune_batch_commits_without_waiting_for_the_disk_and_the_session_keeps_its_setting(
    store: PostgresStore,
) -> None:
    """A batch a crash loses is one the next prune deletes again: its commit need not wait for the
    WAL's flush, which would hold it (and the writers behind it) on the disk. Only its own
    transaction: the pooled connection's next writes still commit durably."""
    seen: list[str] = []

    def step(conn: psycopg.Connection[tuple[Any, ...]], pacer: Pacer, limit: int) -> tuple[int, bool]:
        found = conn.execute("SELECT current_setting('synchronous_commit')").fetchone()
        assert found is not None
        seen.append(str(found[0]))
        return 1, len(seen) < 2

    with store._pool.connection() as conn:
        store._in_batches(conn, step)
        after = conn.execute("SELECT current_setting('synchronous_commit')").fetchone()
    assert seen == ["off", "off"]
    assert after == ("on",)


def test_a_prune_batch_writes_back_the_pages_it_evicts_as_it_goes_and_the_session_keeps_its_setting(
    store: PostgresStore,
) -> None:
    """A prune reads more pages than the server's buffers hold, and writes out the ones it dirtied
    to make room: left in the kernel's cache, they reach the disk in bursts that another process's
    commit waits behind. Each batch has the server write them back as it goes (its transaction
    only: the pooled connection's other work keeps the session's setting)."""
    setting = "SELECT current_setting('backend_flush_after')"
    seen: list[str] = []

    def step(conn: psycopg.Connection[tuple[Any, ...]], pacer: Pacer, limit: int) -> tuple[int, bool]:
        found = conn.execute(setting).fetchone()
        assert found is not None
        seen.append(str(found[0]))
        return 1, len(seen) < 2

    with store._pool.connection() as conn:
        before = conn.execute(setting).fetchone()
        store._in_batches(conn, step)
        after = conn.execute(setting).fetchone()
    assert seen == ["256kB", "256kB"]
    assert after == before
