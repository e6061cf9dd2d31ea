"""Prunes racing each other and a writer, each in a process of its own, on one SQLite file and on one
PostgreSQL database: the prunes share the old tasks out between them and each ends, and no live,
young or written task loses anything."""

from __future__ import annotations

import itertools
import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import streamlife.store.postgres
import streamlife.store.sqlite
from streamlife.store.base import Due, JournalEntry, PruneResult, TaskRow
from tests.store.test_store_contract import Backend, ended, open_store

CUTOFF = 100.0
OLD = [f"old{n:03}" for n in range(400)]  # terminal, last updated before the cutoff: they go
YOUNG = [f"young{n}" for n in range(5)]  # terminal, updated after it: they stay
LIVE = [f"live{n}" for n in range(4)]  # running: written to all along
ENDING = [f"ending{n}" for n in range(6)]  # running, then ended while the prunes run (at 500.0)
OLD_LETTERS = 60
PRUNERS = 2


@pytest.fixture(params=["sqlite", "postgres"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    location = (
        str(tmp_path / "streams.db") if request.param == "sqlite" else request.getfixturevalue("pg_store_dsn")
    )
    backend = Backend(request.param, location)
    yield backend
    backend.close_all()


def old_entries(n: int) -> int:
    return 1 + n % 4


def fill(store: Any) -> None:
    for n, key in enumerate(OLD):
        ended(store, key, 10.0 + n / 10, task_id=f"tid-{key}", claim=f"tid-{key}", entries=old_entries(n))
    for key in YOUNG:
        ended(store, key, 150.0, task_id=f"tid-{key}", claim=f"tid-{key}")
    for key in LIVE + ENDING:
        row = TaskRow(key, "audio", f"tid-{key}", "running", 1, 5.0, 5.0, {"stop_failures": 0})
        store.create(row, [JournalEntry(1, 5.0, "make", "pending", "running", None)], due=Due(at=0.0))
    for n in range(OLD_LETTERS):
        store.dead_letter(1.0 + n, "old", None, b"{}")
    store.dead_letter(200.0, "young", None, b"{}")


def pruner(kind: str, location: str, ready: Any, go: Any, results: Any) -> None:
    """One prune, in small batches, once every process is ready."""
    streamlife.store.sqlite.PRUNE_BATCH = 2  # type: ignore[attr-defined]
    streamlife.store.postgres.PRUNE_BATCH = 2  # type: ignore[attr-defined]
    try:
        store = open_store(kind, location)
        try:
            ready.release()
            assert go.wait(60)
            results.put(("pruned", tuple(store.prune(CUTOFF)), None))
        finally:
            store.close()
    except BaseException as exc:
        results.put(("pruned", None, repr(exc)))
        raise


def writer(kind: str, location: str, ready: Any, go: Any, stop: Any, results: Any) -> None:
    """Round after round until ``stop``: a segment for each live task, a dry run (an ENDING task is
    ended as the old tasks it counts fall past each of its shares), a claim of the due tasks."""
    written: dict[str, list[int]] = {}
    claimed: set[str] = set()
    counted: list[PruneResult] = []  # the dry runs' counts, in turn
    ended_at: list[int] = []  # the old tasks the dry run counted as each ENDING task was ended
    try:
        store = open_store(kind, location)
        try:
            ready.release()
            assert go.wait(60)
            while len(ended_at) < len(ENDING) or not stop.is_set():
                for key in LIVE:
                    with store.lock(key) as txn:
                        late = JournalEntry(txn.version + 1, 600.0, "segment", "running", "running", None)
                        txn.write([late], None)
                    written.setdefault(key, []).append(late.version)
                counted.append(store.prune(CUTOFF, dry_run=True))
                left = counted[-1][0]
                if len(ended_at) < len(ENDING) and left <= len(OLD) * (len(ENDING) - len(ended_at)) // (
                    len(ENDING) + 1
                ):
                    key = ENDING[len(ended_at)]
                    with store.lock(key) as txn:
                        last = JournalEntry(txn.version + 1, 500.0, "stop", "running", "stopped", None)
                        row = TaskRow(key, "audio", f"tid-{key}", "stopped", last.version, 5.0, 500.0, {})
                        txn.write([last], row)
                    written.setdefault(key, []).append(last.version)
                    ended_at.append(left)
                claimed.update(store.claim_due(700.0, until=700.0, limit=50))
            # A round's dry run may come before the prunes end; this one comes after, as ``stop`` is
            # set only once they have.
            counted.append(store.prune(CUTOFF, dry_run=True))
        finally:
            store.close()
        results.put(("written", (written, claimed, counted, ended_at), None))
    except BaseException as exc:
        results.put(("written", (written, claimed, counted, ended_at), repr(exc)))
        raise


def test_two_prunes_and_a_writer_in_processes_share_the_old_tasks_and_touch_nothing_else(
    shared: Backend,
) -> None:
    store = shared.open()
    fill(store)
    context = multiprocessing.get_context("spawn")
    ready, go, stop, results = context.Semaphore(0), context.Event(), context.Event(), context.Queue()
    location = (shared.kind, shared.location)
    prunes = [context.Process(target=pruner, args=(*location, ready, go, results)) for _ in range(PRUNERS)]
    writes = context.Process(target=writer, args=(*location, ready, go, stop, results))
    processes = [*prunes, writes]
    for process in processes:
        process.start()
    try:
        for _ in processes:
            assert ready.acquire(timeout=60)
        go.set()
        pruned: list[PruneResult] = []
        for _ in prunes:
            what, result, error = results.get(timeout=120)
            assert (what, error) == ("pruned", None)
            pruned.append(PruneResult(*result))
        stop.set()
        what, (written, claimed, counted, ended_at), error = results.get(timeout=120)
        assert (what, error) == ("written", None)
        for process in processes:
            process.join(30)
            assert process.exitcode == 0
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()

    # Each old task and letter went once, counted by the prune that deleted it.
    assert all(result.tasks > 0 for result in pruned), pruned  # the prunes ran at once
    assert sum(result.tasks for result in pruned) == len(OLD)
    assert sum(result.entries for result in pruned) == sum(old_entries(n) for n in range(len(OLD)))
    assert sum(result.dead_letters for result in pruned) == OLD_LETTERS
    for key in OLD:
        assert (store.row(key), store.journal(key), store.find(f"tid-{key}")) == (None, [], None)
    assert [letter.reason for letter in store.dead_letters()] == ["young"]

    # Every other task is whole, with every entry written to it, and was never claimed ended.
    assert sorted(row.key for row in store.rows(terminal=True)) == sorted(LIVE + ENDING + YOUNG)
    for key in YOUNG:
        assert [e.version for e in store.journal(key)] == [1, 2, 3]
    for key in LIVE + ENDING:
        row = store.row(key)
        assert row is not None
        assert written[key] == list(range(2, row.version + 1))
        assert [e.version for e in store.journal(key)] == list(range(1, row.version + 1))
        assert (row.state == "stopped") == (key in ENDING)
        assert store.find(f"tid-{key}") == row
    assert claimed <= set(LIVE + ENDING)

    # The dry runs racing the prunes counted old tasks only, fewer as they went, and some of the
    # ENDING tasks ended while the old tasks were half gone.
    assert counted[0][0] <= len(OLD)
    fewer = (
        now <= then for was, nxt in itertools.pairwise(counted) for then, now in zip(was, nxt, strict=True)
    )
    assert all(fewer), counted
    assert counted[-1] == (0, 0, 0)
    assert any(0 < left < len(OLD) for left in ended_at), ended_at
