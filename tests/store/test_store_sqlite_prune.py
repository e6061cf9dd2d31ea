"""SqliteStore's prune, paced: batches sized to a time on an injected clock, pauses a writer waiting
in SQLite's busy handler cannot miss, the WAL checkpointed between batches, and a prune stopped
half-way that leaves every task whole."""

from __future__ import annotations

import multiprocessing
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamlife.store import JournalEntry, PruneResult, SqliteStore, TaskRow
from streamlife.store._prune_pacing import BUSY_SLEEPS, FIRST_ENTRIES, GROWTH, LAST_SLEEP, Pacer, writer_sleep


def tries(upto: float) -> list[float]:
    """When a writer that began waiting at 0 tries for the lock again, up to ``upto`` seconds."""
    found, at = [], 0.0
    sleeps = iter(BUSY_SLEEPS)
    while at <= upto:
        at += next(sleeps, LAST_SLEEP)
        found.append(at)
    return found


def test_the_writer_sleeps_are_sqlites_busy_handler_schedule() -> None:
    assert [round(at * 1000) for at in tries(0.33)] == [1, 3, 8, 18, 33, 53, 78, 103, 128, 178, 228, 328, 428]
    assert writer_sleep(0.0) == 0.001
    assert writer_sleep(0.005) == 0.005  # waited 5 ms: in the sleep from 3 to 8 ms
    assert writer_sleep(0.008) == 0.010
    assert writer_sleep(10.0) == LAST_SLEEP


@given(held=st.floats(0.0, 1.0), began=st.floats(0.0, 1.0))
def test_a_writer_that_began_waiting_during_a_batch_tries_again_within_the_pause(
    held: float, began: float
) -> None:
    waited = held * began  # when the batch lets go, this writer has waited this long
    pause = Pacer().pause_after(held)
    next_try = next(at for at in tries(waited + 1.0) if at > waited)
    assert next_try - waited < pause
    late = next_try - waited  # woken late by as much as the sleep itself: still within the pause
    assert next_try + late - waited < pause
    assert pause > held  # and writers get at least half the time


def test_a_batch_takes_what_the_last_rate_deletes_in_the_hold_growing_at_most_twofold() -> None:
    pacer = Pacer(hold=0.005)
    assert pacer.budget == FIRST_ENTRIES
    pacer.learn(FIRST_ENTRIES, 0.0001)  # quick: grows, at most twofold
    assert pacer.budget == GROWTH * FIRST_ENTRIES
    pacer.learn(2_000, 0.004)  # 2,000 entries in 4 ms: 2,500 in 5 ms
    assert pacer.budget == 2_500
    pacer.learn(2_500, 0.025)  # five times slower: shrinks at once
    assert pacer.budget == 500
    pacer.learn(1, 10.0)  # never below one entry: a batch takes one task at least
    assert pacer.budget == 1
    pacer.learn(0, 0.001)  # nothing deleted: nothing learnt
    assert pacer.budget == 1


def test_a_batch_takes_the_first_task_whatever_its_size_and_then_what_fits() -> None:
    pacer = Pacer()
    pacer.budget = 10
    assert pacer.take([("big", 50), ("small", 1)]) == ["big"]
    assert pacer.take([("a", 4), ("b", 6), ("c", 1)]) == ["a", "b"]
    assert pacer.take([]) == []


@given(sizes=st.lists(st.integers(1, 400), min_size=1, max_size=200), cost=st.floats(1e-7, 1e-3))
def test_at_a_steady_cost_every_batch_after_the_first_holds_within_the_bound(
    sizes: list[int], cost: float
) -> None:
    pacer = Pacer(hold=0.005)
    left = [(f"k{n}", size) for n, size in enumerate(sizes)]
    first = True
    while left:
        keys = pacer.take(left)
        taken, left = left[: len(keys)], left[len(keys) :]
        entries = sum(size for _, size in taken)
        held = entries * cost
        assert first or held <= pacer.hold + 1e-12 or len(keys) == 1
        assert entries <= max(pacer.budget, taken[0][1])
        pacer.learn(entries, held)
        first = False


# The store, paced on a clock of the test's.


def test_what_runs_after_the_sleep_without_the_lock_counts_as_pause_up_to_half_of_it() -> None:
    slept: list[float] = []
    pacer = Pacer(timer=lambda: 0.0, sleep=slept.append)
    whole = pacer.pause_after(0.005)
    pacer.pause(0.005, 0.0)
    pacer.pause(0.005, 0.0, ahead=0.002)
    pacer.pause(0.005, 0.0, ahead=1.0)
    assert slept == pytest.approx([whole, whole - 0.002, whole / 2])


def fill(path: Path, sizes: Sequence[int]) -> None:
    """Stopped tasks last updated at 10.0, ``sizes[n]`` journal entries each."""
    store = SqliteStore(path)
    for n, size in enumerate(sizes):
        entries = [JournalEntry(v, 10.0, "segment", "running", "stopped", None) for v in range(1, size + 1)]
        store.create(TaskRow(f"k{n:03}", "audio", f"tid-{n}", "stopped", size, 5.0, 10.0, {}), entries)
    store.close()


def journal_entries(path: Path) -> int:
    with closing(sqlite3.connect(path)) as db:
        (count,) = db.execute("SELECT count(*) FROM journal").fetchone()
    return int(count)


def letter_pages(path: Path) -> int:
    """What the dead letters weigh for the pacing: a page of body each (one at least)."""
    with closing(sqlite3.connect(path)) as db:
        (count,) = db.execute("SELECT total(1 + length(body) / 4096) FROM dead_letters").fetchone()
    return int(count)


class Paced(Pacer):
    """A pacer on a clock that moves ``cost`` seconds for each unit ``count`` finds gone from the
    file (as another connection sees it), with a sleep that only notes what it was asked for."""

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


def pace(monkeypatch: pytest.MonkeyPatch, store: SqliteStore, *pacers: Pacer) -> None:
    """``store``'s prunes paced by ``pacers`` in turn (the tasks', then the letters'), then as usual."""
    turns = iter(pacers)
    monkeypatch.setattr(store, "_pacer", lambda: next(turns, None) or Pacer())


def assert_paced(pacer: Paced) -> None:
    """Each batch after the first held the lock within the bound; after each but the last, the
    lock was let go for as long as the pacing says."""
    (first, *rest) = pacer.batches
    assert first[0] <= FIRST_ENTRIES
    assert len(rest) > 10
    for entries, budget, held in rest:
        assert entries <= budget
        assert held <= pacer.hold + 1e-9
    assert len(pacer.pauses) == len(pacer.batches) - 1
    for held, slept in pacer.pauses:
        assert slept >= pacer.pause_after(held) - 1e-9  # (the clock stands still while nothing is deleted)


SIZES = [(n * 7) % 23 + 1 for n in range(120)]  # 1 to 23 entries each


def test_each_batch_holds_the_lock_within_the_bound_on_the_stores_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "streams.db"
    fill(path, SIZES)
    store = SqliteStore(path)
    pacer = Paced(
        lambda: journal_entries(path), cost=0.0002
    )  # 25 entries in the 5 ms hold: more than a task has
    pace(monkeypatch, store, pacer)
    assert store.prune(100.0) == PruneResult(len(SIZES), sum(SIZES), 0)
    assert journal_entries(path) == 0
    assert_paced(pacer)
    store.close()


def test_dead_letters_go_in_batches_paced_by_the_pages_their_bodies_take(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "streams.db"
    store = SqliteStore(path)
    old = [store.dead_letter(10.0, "r", None, b"x" * (n % 5 * 12_000)) for n in range(400)]
    kept = store.dead_letter(200.0, "r", None, b"new")
    tasks, letters = Pacer(), Paced(lambda: letter_pages(path), cost=0.0002)
    pace(monkeypatch, store, tasks, letters)
    assert store.prune(100.0) == PruneResult(0, 0, len(old))
    assert [letter.id for letter in store.dead_letters()] == [kept]
    assert_paced(letters)
    store.close()


def test_a_prune_stopped_between_batches_leaves_every_task_whole_and_the_next_one_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "streams.db"
    fill(path, SIZES)
    store = SqliteStore(path)
    pace(monkeypatch, store, Paced(lambda: journal_entries(path), cost=0.0001, stop_after=3))
    with pytest.raises(KeyboardInterrupt):
        store.prune(100.0)
    kept = [(n, store.row(f"k{n:03}"), store.journal(f"k{n:03}")) for n in range(len(SIZES))]
    gone = [n for n, row, journal in kept if row is None]
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
    store.close()


def wal_pages(path: Path) -> int:
    """How long the WAL is, in pages (a PASSIVE checkpoint's answer; it copies, and cuts nothing)."""
    with closing(sqlite3.connect(path)) as db:
        (_, pages, _) = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(pages)


def test_a_prune_leaves_the_wal_copied_so_the_next_writer_starts_it_again(tmp_path: Path) -> None:
    """Left uncopied, the prune's pages stay in the WAL until a commit reaches wal_autocheckpoint
    and copies them all: a writer's, as likely as not."""
    path = tmp_path / "streams.db"
    fill(path, [20] * 200)
    store = SqliteStore(path)
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert store.prune(100.0).tasks == 200
    store.park("tid-late", 200.0, {"late": True})  # the next write: one page or two
    assert wal_pages(path) <= 4
    store.close()


def keep_writing(path: str, started: Any, stop: Any, results: Any) -> None:
    """The writing process: moves the running task "live" on until told to stop; puts the last
    version it committed."""
    store = SqliteStore(path)
    version = 1
    try:
        while not stop.is_set() or version < 50:
            with store.lock("live") as txn:
                txn.write([JournalEntry(txn.version + 1, 50.0, "segment", "running", "running", None)], None)
                version = txn.version + 1
            started.set()
        results.put(version)
    finally:
        store.close()


def test_a_writer_process_loses_nothing_to_the_checkpoints_between_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "streams.db"
    fill(path, [10] * 300)
    store = SqliteStore(path)
    store.create(
        TaskRow("live", "audio", "tid-live", "running", 1, 5.0, 5.0, {}),
        [JournalEntry(1, 5.0, "start_ok", "starting", "running", None)],
    )
    monkeypatch.setattr("streamlife.store._prune_pacing.FIRST_ENTRIES", 10)  # many batches
    monkeypatch.setattr("streamlife.store.sqlite.PRUNE_BATCH", 3)
    context = multiprocessing.get_context("spawn")
    started, stop, results = context.Event(), context.Event(), context.Queue()
    writer = context.Process(target=keep_writing, args=(str(path), started, stop, results))
    writer.start()
    try:
        assert started.wait(60)
        assert store.prune(100.0) == PruneResult(300, 3000, 0)
    finally:
        stop.set()
    last = results.get(timeout=60)
    writer.join(timeout=30)
    assert writer.exitcode == 0
    store.close()

    reopened = SqliteStore(path)  # (the last connection closed: the WAL is in the file)
    assert [e.version for e in reopened.journal("live")] == list(range(1, last + 1))
    assert list(reopened.rows(terminal=True)) == [reopened.row("live")]
    reopened.close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def wal_restarts(path: Path) -> int:
    """How many times the WAL has been started again from its top: the checkpoint sequence number
    in its header, which the transaction that starts it again writes (and syncs)."""
    with open(f"{path}-wal", "rb") as wal:
        header = wal.read(16)
    assert len(header) == 16
    return int.from_bytes(header[12:16], "big")


class WritingInPauses(Pacer):
    """A pacer whose pauses each hold one write by another connection, as another process's would
    be: it notes whether that write's commit started the WAL again."""

    def __init__(self, path: Path, writer: SqliteStore) -> None:
        super().__init__(sleep=self.write)
        self.path, self.writer = path, writer
        self.restarted: list[bool] = []

    def write(self, seconds: float) -> None:
        before = wal_restarts(self.path)
        with self.writer.lock("live") as txn:
            txn.write([JournalEntry(txn.version + 1, 50.0, "segment", "running", "running", None)], None)
        self.restarted.append(wal_restarts(self.path) != before)


def test_a_write_between_batches_never_starts_the_wal_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starting the WAL again syncs it: the commit that does so, after the prune copied the WAL
    whole, waits on the disk for the prune's doing. It is the prune's next batch that does it."""
    path = tmp_path / "streams.db"
    fill(path, [10] * 60)
    writer = SqliteStore(path)
    writer.create(
        TaskRow("live", "audio", "tid-live", "running", 1, 5.0, 5.0, {}),
        [JournalEntry(1, 5.0, "start_ok", "starting", "running", None)],
    )
    store = SqliteStore(path)
    monkeypatch.setattr("streamlife.store.sqlite.PRUNE_BATCH", 3)  # many batches
    pacer = WritingInPauses(path, writer)
    pace(monkeypatch, store, pacer)
    assert store.prune(100.0) == PruneResult(60, 600, 0)
    assert len(pacer.restarted) >= 10
    assert not any(pacer.restarted)
    store.close()
    writer.close()


class MeasuringTheWal(Pacer):
    """A pacer that notes, at each pause, how long the WAL file is."""

    def __init__(self, path: Path) -> None:
        super().__init__(sleep=self.measure)
        self.path = path
        self.lengths: list[int] = []

    def measure(self, seconds: float) -> None:
        self.lengths.append(Path(f"{self.path}-wal").stat().st_size)


def test_a_prune_cuts_the_wal_back_once_done_not_at_each_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cut back at each batch, the WAL grows again at the next: the batch that starts it again
    then syncs its new length, with the write lock held."""
    monkeypatch.setattr("streamlife.store._sqlite_connection.WAL_SIZE_LIMIT", 8192)  # two pages
    path = tmp_path / "streams.db"
    fill(path, [10] * 60)
    store = SqliteStore(path)
    (limit,) = store._db.execute("PRAGMA journal_size_limit").fetchone()
    monkeypatch.setattr("streamlife.store.sqlite.PRUNE_BATCH", 3)  # many batches
    pacer = MeasuringTheWal(path)
    pace(monkeypatch, store, pacer)
    assert store.prune(100.0) == PruneResult(60, 600, 0)
    assert len(pacer.lengths) >= 10
    assert pacer.lengths == sorted(pacer.lengths)  # never cut back during the prune
    assert store._db.execute("PRAGMA journal_size_limit").fetchone() == (limit,)
    store.park("tid-late", 200.0, {"late": True})  # the next write starts the WAL again, cut back
    assert Path(f"{path}-wal").stat().st_size <= 8192 + 3 * 4096 + 32
    store.close()
