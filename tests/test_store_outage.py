"""A Fleet whose store fails, and then fails again when the task is read back.

A write that fails puts the task back as the store holds it. If reading it back fails too (the
store is down), the task is ahead of its store until its next event, which must put it back first:
nothing answered may rest on an event the journal does not hold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from streamlife import Fleet, ManualClock, Outcome, Policy, TaskState
from streamlife.errors import StoreError
from streamlife.sim import SimTransport, SimulatedService
from streamlife.store import JournalEntry, MemoryStore, TaskRow
from streamlife.store.memory import _Txn

from .payloads import segment_callback, status_callback

URL = "rtmp://sim.invalid/live"
POLICY = Policy(stop_concurrency=0, seed=0)


class Outage(MemoryStore):
    """A MemoryStore that fails task writes and row reads while ``down``, and unparks while
    ``unpark_fails``."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.unpark_fails = False

    def lock(self, key: str) -> _Txn:
        return _OutageTxn(self, key)

    def row(self, key: str) -> TaskRow | None:
        if self.down:
            raise StoreError("the store is down (a test)")
        return super().row(key)

    def unpark(self, task_id: str) -> None:
        if self.unpark_fails:
            raise StoreError("the store is down (a test)")
        super().unpark(task_id)


class _OutageTxn(_Txn):
    __slots__ = ()

    def write(self, entries: Sequence[JournalEntry], row: TaskRow | None) -> None:
        assert isinstance(self.store, Outage)
        if self.store.down:
            raise StoreError("the store is down (a test)")
        super().write(entries, row)


def test_a_callback_not_journaled_is_never_answered_as_a_duplicate_after_the_outage() -> None:
    clock = ManualClock(1_000.0)
    store = Outage()
    fleet = Fleet(SimTransport(SimulatedService(clock=clock)), clock=clock, policy=POLICY, store=store)
    task = fleet.start("audio", audio_url=URL, provider="assemblyai")
    tid = task.task_id or ""
    store.down = True
    with pytest.raises(StoreError):
        fleet.handle_callback(segment_callback(tid, 0, "lost?"))
    with pytest.raises(StoreError):  # still down: answered 503 again, never "duplicate"
        fleet.handle_callback(segment_callback(tid, 0, "lost?"))
    store.down = False
    assert fleet.handle_callback(segment_callback(tid, 0, "lost?")) is Outcome.APPLIED
    assert task.transcript_text() == "lost?"
    assert [entry.trigger for entry in fleet.journal(task)][-1] == "segment"


def test_an_end_not_journaled_leaves_no_row_the_journal_cannot_replay() -> None:
    """A status 14 during the outage is refused (503); a late final after it must not write a row
    built from the unjournaled end, or a restart's replay would disagree with it."""
    clock = ManualClock(1_000.0)
    store = Outage()
    fleet = Fleet(SimTransport(SimulatedService(clock=clock)), clock=clock, policy=POLICY, store=store)
    task = fleet.start("audio", audio_url=URL, provider="assemblyai")
    tid = task.task_id or ""
    store.down = True
    with pytest.raises(StoreError):
        fleet.handle_callback(status_callback(tid, 14))
    store.down = False
    assert fleet.handle_callback(segment_callback(tid, 0, "late")) is Outcome.APPLIED
    assert task.state is TaskState.RUNNING  # as journaled: the end is yet to be delivered again
    restarted = Fleet(SimTransport(SimulatedService(clock=clock)), clock=clock, policy=POLICY, store=store)
    (recovered,) = restarted.recover()  # no JournalMismatch
    assert recovered.transcript_text() == "late"


def test_a_start_whose_parked_callbacks_cannot_be_unparked_still_returns_its_task() -> None:
    """The start is journaled: raising would leave the caller without a handle on a billing
    stream. The parked rows left behind replay as duplicates later."""
    clock = ManualClock(1_000.0)
    service = SimulatedService(clock=clock)
    store = Outage()
    early: list[Mapping[str, Any]] = []

    class EarlyCallback(SimTransport):
        def start(self, kind: Any, params: Mapping[str, Any]) -> Any:
            result = super().start(kind, params)
            early.append(segment_callback(result.task_id, 0, "early"))
            assert fleet.handle_callback(early[0]) is Outcome.PARKED
            store.unpark_fails = True
            return result

    fleet = Fleet(EarlyCallback(service), clock=clock, policy=POLICY, store=store)
    task = fleet.start("audio", audio_url=URL, provider="assemblyai")
    assert task.state is TaskState.RUNNING
    assert task.transcript_text() == "early"
