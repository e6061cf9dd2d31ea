"""Stops another process owes, taken over the moment a catch-up finds them.

A copy that catches up with another process's entries decides then, from what it found, whether
a stop is owed that nobody may send: before its own trigger fires, and whether or not that
trigger's write lands. Decided later, from the state the trigger left, the stop was missed (a
stream billing on) or held back by a retry armed for nothing (a stream billing longer).

Two Fleets on one SQLite file stand for two processes. ``FailsOnce`` refuses the one write its
``fail_next`` names, as a full disk would for a moment.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from streamlife import Fleet, ManualClock, Policy, TaskState
from streamlife.errors import StoreError
from streamlife.protocol import segment_callback, status_callback
from streamlife.sim import SimTransport, SimulatedService
from streamlife.store import NO_DUE, Due, JournalEntry, SqliteStore, TaskRow
from tests.conftest import state_of

URL = "rtmp://sim.invalid/live"
POLICY = Policy(stop_concurrency=0, seed=0, stop_retry_base=1.0, stop_retry_cap=8, final_callback_wait=5)


class _FailingTxn:
    """A row lock whose ``write`` of the trigger ``store.fail_next`` names fails, once."""

    def __init__(self, txn: Any, store: FailsOnce) -> None:
        self._txn, self._store = txn, store

    @property
    def version(self) -> int:
        return int(self._txn.version)

    def entries_after(self, version: int) -> list[JournalEntry]:
        return list(self._txn.entries_after(version))

    def write(self, entries: Sequence[JournalEntry], row: TaskRow | None, due: Due = NO_DUE) -> None:
        if self._store.fail_next is not None and entries[-1].trigger == self._store.fail_next:
            self._store.fail_next = None
            self._store.failed += 1
            raise StoreError("disk full for a moment (a test)")
        self._txn.write(entries, row, due)


class FailsOnce(SqliteStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.fail_next: str | None = None
        self.failed = 0  # writes refused so far
        self.fail_next_row_read = False  # the next read of a row fails too: the store is down

    def row(self, key: str) -> TaskRow | None:
        if self.fail_next_row_read:
            self.fail_next_row_read = False
            raise StoreError("the store is down for a moment (a test)")
        return super().row(key)

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[Any]:
        with super().lock(key) as txn:
            yield _FailingTxn(txn, self)


def take(fleet: Fleet, payload: Mapping[str, Any]) -> None:
    with contextlib.suppress(StoreError):  # (answered 503: the simulator does not redeliver)
        fleet.handle_callback(payload)


@pytest.mark.parametrize("read_back", ["works", "fails"])
def test_a_stop_another_process_left_unsent_is_taken_over_though_the_catching_up_write_fails(
    clock: ManualClock, tmp_path: Path, read_back: str
) -> None:
    """The other process journals a stop and ends before sending it. The next callback here
    catches this copy up (stopping, unacknowledged), and its own write fails. The stop is owed
    all the same: this Fleet must take it over, or the stream bills on. (If reading the task back
    fails too, the copy stays ahead of its store until its next event: the stop is owed still.)"""
    service = SimulatedService(clock=clock)
    store = FailsOnce(tmp_path / "shared.db")
    here = Fleet(SimTransport(service), clock=clock, policy=POLICY, store=store)
    gone = Fleet(SimTransport(service), clock=clock, policy=POLICY, store=SqliteStore(tmp_path / "shared.db"))
    service.on_callback(lambda payload: take(here, payload))  # every webhook reaches this process
    task = here.start("audio", audio_url=URL, provider="assemblyai")
    task_id = task.task_id or ""
    gone.stop(task_id, wait=0)  # journaled; no time left to send it, and that process ends now
    store.fail_next = "segment"
    store.fail_next_row_read = read_back == "fails"
    take(here, segment_callback(task_id, 0, "caught up, not kept"))
    assert store.failed == 1
    assert not store.fail_next_row_read  # (read when the write failed)
    assert state_of(task) is TaskState.STOPPING
    for _ in range(60):
        service.advance(1)
        here.tick()
    assert service.billing() == []
    assert state_of(task) is TaskState.STOPPED


def test_a_cost_ceiling_stop_after_catching_up_goes_out_at_once(clock: ManualClock, tmp_path: Path) -> None:
    """A worker starts the stream with a cost ceiling; a receiver takes its webhooks, so the
    worker's copy is behind. When the ceiling comes due, the worker catches up and stops the
    stream: that stop goes out on the tick that decided it, not a stop retry later (the stream
    bills meanwhile)."""
    service = SimulatedService(clock=clock)
    slow_retries = Policy(stop_concurrency=0, seed=0, stop_retry_base=30.0, stop_retry_cap=60)
    worker, receiver = (
        Fleet(SimTransport(service), clock=clock, policy=slow_retries, store=SqliteStore(tmp_path / "s.db"))
        for _ in range(2)
    )
    service.on_callback(lambda payload: take(receiver, payload))  # every webhook reaches the receiver
    task = worker.start("audio", audio_url=URL, provider="assemblyai", max_duration=20)
    while state_of(task) is TaskState.RUNNING:
        service.advance(1)
        worker.tick()
        receiver.tick()
    assert worker.stats().stops_sent == 1
    assert task.stop_acknowledged


def test_the_stop_confirming_an_inferred_end_goes_out_at_once_after_catching_up(
    clock: ManualClock, tmp_path: Path
) -> None:
    """The status-16 callback reaches a process whose copy is behind what another process applied.
    It catches up, infers the end, and owes the confirming stop now, not a stop retry later."""
    service = SimulatedService(clock=clock)
    slow_retries = Policy(stop_concurrency=0, seed=0, stop_retry_base=30.0, stop_retry_cap=60)
    worker, receiver = (
        Fleet(SimTransport(service), clock=clock, policy=slow_retries, store=SqliteStore(tmp_path / "s.db"))
        for _ in range(2)
    )
    task = worker.start("audio", audio_url=URL, provider="assemblyai")
    task_id = task.task_id or ""
    take(receiver, segment_callback(task_id, 0, "the receiver holds a copy"))
    take(worker, segment_callback(task_id, 1, "the receiver's copy is behind this one"))
    take(receiver, status_callback(task_id, 16))
    assert receiver.stats().stops_sent == 1
    assert service.billing() == []
