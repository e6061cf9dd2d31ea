"""The Fleet when its store fails for a moment, and when other processes share its store.

Each case was found by a second reader, who showed it with a script; here each is a test. Two
Fleets on one ``MemoryStore(shared=True)`` stand for two processes on one database. A
``FlakyStore`` refuses the writes its ``fail_when`` picks (or all, while ``down``), as a lost
database or a full disk would. What every test asks in the end: is anything still billing?
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from streamlife import Fleet, HistoryEntry, ManualClock, Outcome, Policy, StreamKind, StreamTask, TaskState
from streamlife._events import StartResult
from streamlife.errors import StoreError
from streamlife.protocol import segment_callback
from streamlife.sim import Faults, SimTransport, SimulatedService
from streamlife.store import (
    NO_DUE,
    Due,
    JournalEntry,
    MemoryStore,
    ParkedCallback,
    SqliteStore,
    Store,
    TaskRow,
)
from streamlife.store.memory import _Txn
from tests.conftest import state_of

URL = "rtmp://sim.invalid/live"


def policy(**changes: Any) -> Policy:
    fields: dict[str, Any] = {
        "stop_concurrency": 0,
        "seed": 0,
        "park_ttl": 8,
        "uncertain_ttl": 20,
        "final_callback_wait": 5,
        "silence_after": 12,
        "stop_retry_base": 1.0,
        "stop_retry_cap": 8,
    }
    fields.update(changes)
    return Policy(**fields)


class FlakyStore(MemoryStore):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.down = False
        self.fail_when: Callable[[JournalEntry], bool] | None = None

    def refuses(self, entries: Sequence[JournalEntry]) -> bool:
        return self.down or (self.fail_when is not None and self.fail_when(entries[-1]))

    def create(
        self, row: TaskRow, entries: Sequence[JournalEntry], *, claim: str | None = None, due: Due = NO_DUE
    ) -> None:
        if self.refuses(entries):
            raise StoreError("database down (a test)")
        super().create(row, entries, claim=claim, due=due)

    def lock(self, key: str) -> _Txn:
        return _FlakyTxn(self, key)


class _FlakyTxn(_Txn):
    def write(self, entries: Sequence[JournalEntry], row: TaskRow | None, due: Due = NO_DUE) -> None:
        store = self.store
        assert isinstance(store, FlakyStore)
        if store.refuses(entries):
            raise StoreError("database down (a test)")
        super().write(entries, row, due)


def run(service: SimulatedService, seconds: int, *fleets: Fleet) -> None:
    for _ in range(seconds):
        service.advance(1)
        for fleet in fleets:
            fleet.tick()


def triggers(store: Store, task: StreamTask) -> list[str]:
    return [entry.trigger for entry in store.journal(task.key or "")]


# -- a write that fails ----------------------------------------------------------------------------
def test_a_deadline_whose_write_fails_fires_again_once_the_store_is_back(clock: ManualClock) -> None:
    service = SimulatedService(clock=clock)
    store = FlakyStore()
    fleet = Fleet(SimTransport(service), clock=clock, policy=policy(), store=store)
    service.lose_next_start_answer()
    task = fleet.start("audio", audio_url=URL, provider="assemblyai")
    store.fail_when = lambda entry: entry.trigger == "uncertain_deadline"
    run(service, 30, fleet)
    assert state_of(task) is TaskState.UNCERTAIN
    store.fail_when = None
    run(service, 3, fleet)
    assert state_of(task) is TaskState.FAILED


def test_a_start_answer_that_cannot_be_journaled_is_taken_as_lost(clock: ManualClock) -> None:
    service = SimulatedService(clock=clock)
    store = FlakyStore()
    fleet = Fleet(SimTransport(service), clock=clock, policy=policy(), store=store)
    service.on_callback(fleet.handle_callback)
    store.fail_when = lambda entry: entry.trigger == "start_ok"
    with contextlib.suppress(StoreError):
        fleet.start("audio", audio_url=URL, provider="assemblyai")
    store.fail_when = None
    (task,) = fleet.tasks()
    assert state_of(task) is TaskState.UNCERTAIN
    run(service, 60, fleet)  # its callbacks park; the stream is caught as an orphan and stopped
    assert [t.adopted for t in fleet.tasks()] == [False, True]
    assert service.billing() == []


def test_a_stop_answer_that_cannot_be_journaled_is_sent_again(clock: ManualClock) -> None:
    service = SimulatedService(clock=clock, faults=Faults(stop_500=1.0, seed=1))
    store = FlakyStore()
    fleet = Fleet(SimTransport(service), clock=clock, policy=policy(), store=store)
    service.on_callback(fleet.handle_callback)
    task = fleet.start("audio", audio_url=URL, provider="assemblyai")
    store.fail_when = lambda entry: entry.trigger == "stop_error"
    with contextlib.suppress(StoreError):
        fleet.stop(task)
    store.fail_when = None
    service.faults = Faults()
    run(service, 20, fleet)
    assert state_of(task) is TaskState.STOPPED
    assert service.billing() == []


def test_an_orphan_whose_adoption_cannot_be_journaled_is_adopted_later(clock: ManualClock) -> None:
    service = SimulatedService(clock=clock, faults=Faults(start_timeout_created=1.0))
    store = FlakyStore()
    fleet = Fleet(SimTransport(service), clock=clock, policy=policy(), store=store)
    service.on_callback(fleet.handle_callback)
    fleet.start("audio", audio_url=URL, provider="assemblyai")
    store.fail_when = lambda entry: entry.trigger == "adopt"
    run(service, 20, fleet)
    assert not any(task.adopted for task in fleet.tasks())
    assert fleet.stats().parked == 1, "its callbacks wait in the parking lot again"
    store.fail_when = None
    run(service, 5, fleet)
    orphans = [task for task in fleet.tasks() if task.adopted]
    assert len(orphans) == 1
    assert orphans[0].terminal
    assert service.billing() == []


# -- a crash between two writes --------------------------------------------------------------------
def test_a_stop_asked_for_while_starting_and_lost_in_a_crash_is_sent_on_recovery(clock: ManualClock) -> None:
    service = SimulatedService(clock=clock)
    store = FlakyStore()
    stopped_meanwhile: list[StreamTask] = []

    class StopWhileStarting(SimTransport):
        def start(self, kind: StreamKind, params: Mapping[str, Any]) -> StartResult:
            stopped_meanwhile.append(first.stop(first.tasks()[0]))
            return super().start(kind, params)

    first = Fleet(StopWhileStarting(service), clock=clock, policy=policy(), store=store)
    store.fail_when = lambda entry: entry.trigger == "stop" and entry.from_state == "running"
    with contextlib.suppress(StoreError):
        first.start(
            "audio", audio_url=URL, provider="assemblyai"
        )  # start_ok lands; the stop that follows is not journaled
    store.fail_when = None
    second = Fleet(SimTransport(service), clock=clock, policy=policy(), store=store)
    service.on_callback(second.handle_callback)
    (task,) = second.recover()
    run(service, 3, second)
    assert state_of(task) is TaskState.STOPPED
    assert service.billing() == []


# -- two processes, one store ------------------------------------------------------------------------
def test_a_task_heard_from_by_another_process_is_not_silent(clock: ManualClock) -> None:
    service = SimulatedService(clock=clock)
    store = MemoryStore(shared=True)
    worker = Fleet(SimTransport(service), clock=clock, policy=policy(stop_when_stalled=True), store=store)
    receiver = Fleet(SimTransport(service), clock=clock, policy=policy(stop_when_stalled=True), store=store)
    service.on_callback(receiver.handle_callback)  # every webhook reaches the receiver, none the worker
    task = worker.start("audio", audio_url=URL, provider="assemblyai")
    run(service, 40, worker, receiver)
    assert "silence" not in triggers(store, task)
    assert state_of(task) is TaskState.RUNNING


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
def test_a_stop_waited_for_sees_the_status_14_another_process_applied(
    clock: ManualClock, tmp_path: Path, store_kind: str
) -> None:
    """The stop's answer comes here; the status-14 callback that settles the task reaches the other
    process. ``stop(wait=)`` returns once the store says stopped, not when its wait runs out."""
    service = SimulatedService(clock=clock)
    store: Store = MemoryStore(shared=True) if store_kind == "memory" else SqliteStore(tmp_path / "s.db")
    worker = Fleet(SimTransport(service), clock=clock, policy=policy(), store=store)
    receiver = Fleet(SimTransport(service), clock=clock, policy=policy(), store=store)
    service.on_callback(receiver.handle_callback)  # every webhook reaches the receiver, none the worker
    task = worker.start("audio", audio_url=URL, provider="assemblyai")
    run(service, 6, worker, receiver)

    def deliver_the_14_soon() -> None:
        time.sleep(0.3)
        service.advance(1)  # the status-14 callback, to the receiver

    delivering = threading.Thread(target=deliver_the_14_soon)
    delivering.start()
    started = time.monotonic()
    worker.stop(task, wait=10)
    waited = time.monotonic() - started
    delivering.join()
    assert state_of(task) is TaskState.STOPPED
    assert waited < 5  # (the poll is a fraction of a second; the wait's end is 10 s away)
    assert worker.unsettled() == []


def test_unsettled_and_get_show_what_another_process_applied(clock: ManualClock) -> None:
    service = SimulatedService(clock=clock)
    store = MemoryStore(shared=True)
    worker = Fleet(SimTransport(service), clock=clock, policy=policy(), store=store)
    receiver = Fleet(SimTransport(service), clock=clock, policy=policy(), store=store)
    service.on_callback(receiver.handle_callback)
    task = worker.start("audio", audio_url=URL, provider="assemblyai")
    run(service, 6, worker, receiver)
    worker.stop(task)  # answered here: stopping, acknowledged
    assert worker.unsettled() == [task]
    service.advance(1)  # the status-14 callback settles it in the receiver
    assert worker.unsettled() == []
    assert state_of(task) is TaskState.STOPPED
    assert worker.get(task.task_id or "") is task


def test_a_task_put_back_after_a_failed_write_keeps_the_timers_of_what_it_caught_up_with(
    clock: ManualClock,
) -> None:
    """This copy had stalled the task; another process heard from it since. The next callback here
    catches the copy up (running, not stalled), and its own write fails: put back as the store
    holds it, the copy times silence again, though nothing it wrote landed."""
    service = SimulatedService(clock=clock)
    store = FlakyStore(shared=True)
    worker = Fleet(SimTransport(service), clock=clock, policy=policy(), store=store)
    # (Its looks for tasks other processes left overdue, far apart: the test reads the task's timers.)
    takeover_after = 1000.0
    receiver = Fleet(
        SimTransport(service), clock=clock, policy=policy(takeover_after=takeover_after), store=store
    )
    task = worker.start("audio", audio_url=URL, provider="assemblyai")
    task_id = task.task_id or ""
    receiver.handle_callback(segment_callback(task_id, 0))  # the receiver holds a copy from now on
    clock.advance(13)
    receiver.tick()  # silence, here: the receiver's copy is stalled and times nothing
    assert receiver.next_deadline() == clock.now() + takeover_after / 4  # (its next look)
    worker.handle_callback(segment_callback(task_id, 1))  # the stream is heard from, there
    store.fail_when = lambda entry: entry.trigger == "segment"
    with pytest.raises(StoreError):
        receiver.handle_callback(segment_callback(task_id, 2))
    store.fail_when = None
    copy = receiver.get(task_id)
    assert copy is not None
    assert (copy.state, copy.stalled) == (TaskState.RUNNING, False)
    assert receiver.next_deadline() == clock.now() + policy().silence_after


def test_a_task_recovered_while_another_process_starts_it_is_held_once_and_runs(clock: ManualClock) -> None:
    service = SimulatedService(clock=clock)
    store = MemoryStore(shared=True)
    receiver = Fleet(SimTransport(service), clock=clock, policy=policy(stop_when_stalled=True), store=store)

    class RecoverMeanwhile(SimTransport):
        def start(self, kind: StreamKind, params: Mapping[str, Any]) -> StartResult:
            assert [t.state for t in receiver.recover()] == [TaskState.UNCERTAIN]
            return super().start(kind, params)

    starter = Fleet(
        RecoverMeanwhile(service), clock=clock, policy=policy(stop_when_stalled=True), store=store
    )
    service.on_callback(receiver.handle_callback)
    task = starter.start("audio", audio_url=URL, provider="assemblyai")
    run(service, 40, receiver)
    assert [t.key for t in receiver.tasks()] == [task.key], "one task, held once"
    assert receiver.tasks()[0].state is TaskState.RUNNING
    assert receiver.stats().orphans == 0
    assert {"silence", "stop"}.isdisjoint(triggers(store, task))


def test_callbacks_another_process_parked_reach_the_task_when_its_start_answer_comes(
    clock: ManualClock,
) -> None:
    service = SimulatedService(clock=clock)
    store = MemoryStore(shared=True)
    other = Fleet(SimTransport(service), clock=clock, policy=policy(), store=store)

    class EarlyCallbacks(SimTransport):
        def start(self, kind: StreamKind, params: Mapping[str, Any]) -> StartResult:
            result = super().start(kind, params)
            assert other.handle_callback(segment_callback(result.task_id, 0, "one")) is Outcome.PARKED
            return result

    starter = Fleet(EarlyCallbacks(service), clock=clock, policy=policy(), store=store)
    task = starter.start("audio", audio_url=URL, provider="assemblyai")
    assert task.transcript_text() == "one"
    assert store.parked() == [], "that process may restart before its parking TTL: nothing is lost"


def test_a_stop_asked_for_jumps_a_backoff_retry_but_never_retry_after(clock: ManualClock) -> None:
    service = SimulatedService(clock=clock, faults=Faults(stop_500=1.0, seed=1))
    fleet = Fleet(
        SimTransport(service),
        clock=clock,
        policy=policy(stop_retry_base=30.0, stop_retry_cap=60.0),
        store=MemoryStore(),
    )
    task = fleet.start("audio", audio_url=URL, provider="assemblyai")
    fleet.stop(task)
    assert service.stop_requests == 1
    fleet.stop(task)  # asked for again: the caller's stop goes out now, not in 15-30 s
    assert service.stop_requests == 2
    service.faults = Faults(stop_429=1.0, seed=1)  # the service says when: that is honoured
    fleet.stop(task)
    sent = service.stop_requests
    fleet.stop(task)
    assert service.stop_requests == sent


def test_hooks_hear_only_of_what_their_fleet_applied(clock: ManualClock) -> None:
    service = SimulatedService(clock=clock)
    store = MemoryStore(shared=True)
    first = Fleet(SimTransport(service), clock=clock, policy=policy(), store=store)
    second = Fleet(SimTransport(service), clock=clock, policy=policy(), store=store)
    heard: list[tuple[str, str]] = []

    @second.on_transition
    def note(task: StreamTask, entry: HistoryEntry) -> None:
        heard.append((entry.trigger, entry.outcome.kind.value))

    task = first.start("audio", audio_url=URL, provider="assemblyai")
    second.handle_callback(segment_callback(task.task_id or "", 0))  # second holds it now
    first.stop(task)
    service.advance(1)
    first.handle_callback({"task_id": task.task_id, "data": {"status": 14, "segment_index": 0}})
    second.stop(task.task_id or "")  # catches up (stopped), then its own stop is a duplicate
    assert heard == []


def test_two_processes_adopting_one_orphan_at_once_make_one_task(clock: ManualClock) -> None:
    shared = MemoryStore(shared=True)

    class Racing(MemoryStore):
        """This process's view of the shared store: the other process adopts between its look in
        the store and its write."""

        def __init__(self, meanwhile: Callable[[], object] | None) -> None:
            super().__init__(shared=True)
            self.meanwhile = meanwhile

        def __getattribute__(self, name: str) -> Any:
            if name in ("meanwhile", "find", "__class__", "__dict__"):
                return object.__getattribute__(self, name)
            return getattr(shared, name)

        def find(self, task_id: str) -> TaskRow | None:
            row = shared.find(task_id)
            if self.meanwhile is not None:
                meanwhile, self.meanwhile = self.meanwhile, None
                meanwhile()
            return row

    service = SimulatedService(clock=clock)
    other = Fleet(SimTransport(service), clock=clock, policy=policy(), store=shared)
    racing = Racing(None)
    this = Fleet(SimTransport(service), clock=clock, policy=policy(), store=racing)
    orphan = "f00dcafe-0000-4000-8000-000000000001"
    assert this.handle_callback(segment_callback(orphan, 0, "zero")) is Outcome.PARKED
    assert other.handle_callback(segment_callback(orphan, 1, "one")) is Outcome.PARKED
    clock.advance(9)
    racing.meanwhile = other.tick
    this.tick()  # the other adopts in the middle: this one's claim loses, and waits
    this.tick()  # ... and hands its callbacks to the other's task
    adopted = [row for row in shared.rows(terminal=True) if row.task_id == orphan]
    assert len(adopted) == 1
    assert [task.key for task in this.tasks()] == [adopted[0].key], "this one holds the other's task"
    assert this.stats().orphans == 0


def test_both_tasks_that_claim_one_task_id_are_recovered_and_finished(clock: ManualClock) -> None:
    """A start answer slower than the parking TTL: its stream was adopted as an orphan first, and
    both tasks stop it. After a restart (with both stops still failing before it), both are held,
    by key, and both end."""
    service = SimulatedService(clock=clock, faults=Faults(stop_500=1.0))
    store = MemoryStore()

    class SlowAnswer(SimTransport):
        def start(self, kind: StreamKind, params: Mapping[str, Any]) -> StartResult:
            result = super().start(kind, params)
            first.handle_callback(segment_callback(result.task_id, 0, "early"))
            clock.advance(9)
            first.tick()  # parked longer than park_ttl: adopted, and its stop fails
            return result

    first = Fleet(SlowAnswer(service), clock=clock, policy=policy(), store=store)
    first.start("audio", audio_url=URL, provider="assemblyai")
    assert sorted(row.state for row in store.rows()) == ["stopping", "stopping"]
    service.faults = Faults()
    second = Fleet(SimTransport(service), clock=clock, policy=policy(), store=store)
    service.on_callback(second.handle_callback)
    assert len(second.recover()) == 2
    run(service, 30, second)
    assert list(store.rows()) == []
    assert service.billing() == []


class ParksBetweenReadAndUnpark(SqliteStore):
    """Process A's connection to a shared SQLite file: right after A reads a task_id's kept
    callbacks, process B parks one more for it (``between``)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.between: Callable[[], None] | None = None

    def parked(self, task_id: str | None = None, *, before: float | None = None) -> list[ParkedCallback]:
        read = super().parked(task_id, before=before)
        if task_id is not None and self.between is not None:
            between, self.between = self.between, None
            between()
        return read


class LooksEarly(SqliteStore):
    """Process B's connection: ``looked_before`` runs a delivery whose look for the task_id came
    before A journaled its start answer (so B found no task, and parks the callback)."""

    early = False

    def looked_before(self, deliver: Callable[[], object]) -> None:
        self.early = True
        try:
            deliver()
        finally:
            self.early = False

    def find(self, task_id: str) -> TaskRow | None:
        return None if self.early else super().find(task_id)


def test_a_callback_another_process_parks_while_a_start_answer_is_applied_is_not_unparked(
    clock: ManualClock, tmp_path: Path
) -> None:
    path = tmp_path / "shared.db"
    service = SimulatedService(clock=clock)
    a_store, b_store = ParksBetweenReadAndUnpark(path), LooksEarly(path)
    try:
        b = Fleet(SimTransport(service), clock=clock, policy=policy(), store=b_store)

        class EarlyCallbacks(SimTransport):
            def start(self, kind: StreamKind, params: Mapping[str, Any]) -> StartResult:
                result = super().start(kind, params)
                assert b.handle_callback(segment_callback(result.task_id, 0, "one")) is Outcome.PARKED
                a_store.between = lambda: b_store.looked_before(
                    lambda: b.handle_callback(segment_callback(result.task_id, 1, "two"))
                )
                return result

        a = Fleet(EarlyCallbacks(service), clock=clock, policy=policy(), store=a_store)
        task = a.start("audio", audio_url=URL, provider="assemblyai")
        assert task.transcript_text() == "one"
        assert [kept.payload["segment"]["index"] for kept in b_store.parked()] == [1]  # kept for B
        # B dies before its parking TTL; whoever recovers the store applies what B parked.
        c_store = SqliteStore(path)
        try:
            c = Fleet(SimTransport(service), clock=clock, policy=policy(), store=c_store)
            c.recover()
            segments = [entry for entry in c.journal(task.task_id or "") if entry.trigger == "segment"]
        finally:
            c_store.close()
        assert len(segments) == 2
        assert b_store.parked() == []
    finally:
        a_store.close()
        b_store.close()
