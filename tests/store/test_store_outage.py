"""A Fleet whose store fails, and then fails again when the task is read back.

A write that fails puts the task back as the store holds it. If reading it back fails too (the
store is down), the task is ahead of its store until its next event, which must put it back first:
nothing answered may rest on an event the journal does not hold.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from streamlife import Fleet, ManualClock, Outcome, Policy, TaskState
from streamlife.errors import StoreError
from streamlife.protocol import segment_callback, status_callback
from streamlife.sim import Faults, SimTransport, SimulatedService
from streamlife.store import NO_DUE, Due, JournalEntry, MemoryStore, TaskRow
from streamlife.store.memory import _Txn

URL = "rtmp://sim.invalid/live"
POLICY = Policy(stop_concurrency=0, seed=0)


class Outage(MemoryStore):
    """A MemoryStore that fails task writes and row reads while ``down``, and unparks while
    ``unpark_fails``."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.unpark_fails = False
        self.fail_when: Callable[[JournalEntry], bool] | None = None  # fail the writes it picks

    def lock(self, key: str) -> _Txn:
        return _OutageTxn(self, key)

    def row(self, key: str) -> TaskRow | None:
        if self.down:
            raise StoreError("the store is down (a test)")
        return super().row(key)

    def unpark(self, task_id: str, *, upto: int | None = None) -> None:
        if self.unpark_fails:
            raise StoreError("the store is down (a test)")
        super().unpark(task_id, upto=upto)


class _OutageTxn(_Txn):
    __slots__ = ()

    def write(self, entries: Sequence[JournalEntry], row: TaskRow | None, due: Due = NO_DUE) -> None:
        assert isinstance(self.store, Outage)
        picks = self.store.fail_when
        if self.store.down or (picks is not None and picks(entries[-1])):
            raise StoreError("the store is down (a test)")
        super().write(entries, row, due)


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


def run(service: SimulatedService, fleet: Fleet, seconds: int) -> None:
    for _ in range(seconds):
        service.advance(1.0)
        fleet.tick()


def take(fleet: Fleet, payload: Mapping[str, Any]) -> None:
    with contextlib.suppress(StoreError):  # (answered 503: the simulator does not redeliver)
        fleet.handle_callback(payload)


def fleet_on(store: Outage, service: SimulatedService, clock: ManualClock) -> Fleet:
    fleet = Fleet(SimTransport(service), clock=clock, policy=POLICY, store=store)
    service.on_callback(lambda payload: take(fleet, payload))
    return fleet


def test_a_stop_refused_while_the_store_is_down_goes_out_once_it_is_back() -> None:
    """The stop's write fails and so does reading the task back: the task is ahead of its store
    (it looks stopping). The stop must still go out, journaled, once the store is back."""
    clock = ManualClock(1_000.0)
    service, store = SimulatedService(clock=clock), Outage()
    fleet = fleet_on(store, service, clock)
    task = fleet.start("audio", audio_url=URL, provider="assemblyai")
    store.down = True
    with pytest.raises(StoreError):
        fleet.stop(task)
    store.down = False
    run(service, fleet, 60)
    assert service.billing() == []
    assert task.state is TaskState.STOPPED


def test_a_stop_asked_for_while_starting_goes_out_though_a_parked_callback_cannot_be_journaled() -> None:
    clock = ManualClock(1_000.0)
    service, store = SimulatedService(clock=clock), Outage()
    fleet: Fleet

    class StopsWhileStarting(SimTransport):
        def start(self, kind: Any, params: Mapping[str, Any]) -> Any:
            result = super().start(kind, params)
            assert fleet.handle_callback(segment_callback(result.task_id, 0, "early")) is Outcome.PARKED
            fleet.stop(fleet.tasks()[0])  # journaled: a stop asked for while it starts
            store.fail_when = lambda entry: entry.trigger == "segment"
            return result

    fleet = Fleet(StopsWhileStarting(service), clock=clock, policy=POLICY, store=store)
    service.on_callback(lambda payload: take(fleet, payload))
    with pytest.raises(StoreError):
        fleet.start("audio", audio_url=URL, provider="assemblyai")
    store.fail_when = None
    (task,) = fleet.tasks()
    run(service, fleet, 120)
    assert service.billing() == []
    assert "early" in task.transcript_text()


def test_an_orphan_whose_reaping_stop_cannot_be_journaled_is_stopped_all_the_same() -> None:
    clock = ManualClock(1_000.0)
    service, store = SimulatedService(clock=clock, faults=Faults(start_timeout_created=1.0)), Outage()
    fleet = fleet_on(store, service, clock)
    fleet.start("audio", audio_url=URL, provider="assemblyai")  # its answer is lost: an orphan
    refused: list[bool] = []

    def first_stop(entry: JournalEntry) -> bool:
        if entry.trigger == "stop" and not refused:
            refused.append(True)
            return True
        return False

    store.fail_when = first_stop
    run(service, fleet, 300)
    assert refused == [True]
    assert service.billing() == []


def test_a_callback_for_a_start_answer_whose_write_fails_is_parked_not_rejected() -> None:
    """A start answer names its task before it is journaled. A callback that comes meanwhile waits
    for the task's lock; if the write then fails, the task lets the id go (it is uncertain), and
    the callback must be parked (its stream is caught as an orphan), not rejected with a 200."""
    clock = ManualClock(1_000.0)
    service, store = SimulatedService(clock=clock), Outage()
    writing, go = threading.Event(), threading.Event()
    outcomes: list[Outcome] = []

    def start_ok_hangs_then_fails(entry: JournalEntry) -> bool:
        if entry.trigger != "start_ok":
            return False
        writing.set()
        assert go.wait(10)
        return True

    store.fail_when = start_ok_hangs_then_fails
    fleet = Fleet(SimTransport(service), clock=clock, policy=POLICY, store=store)

    def start() -> None:
        with contextlib.suppress(StoreError):
            fleet.start("audio", audio_url=URL, provider="assemblyai")

    starter = threading.Thread(target=start)
    starter.start()
    assert writing.wait(10)
    (task_id,) = service.streams
    deliverer = threading.Thread(
        target=lambda: outcomes.append(fleet.handle_callback(segment_callback(task_id, 0, "kept")))
    )
    deliverer.start()
    time.sleep(0.2)  # the callback now waits for the task's lock
    go.set()
    starter.join(10)
    deliverer.join(10)
    store.fail_when = None
    assert outcomes == [Outcome.PARKED]
    run(service, fleet, int(POLICY.park_ttl) + 5)  # adopted as an orphan, and stopped
    orphan = fleet.get(task_id)
    assert orphan is not None
    assert orphan.transcript_text() == "kept"
    assert service.billing() == []
