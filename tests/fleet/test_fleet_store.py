"""The Fleet and its store: every applied event journaled before it is acknowledged, a restart
taking every task back, a write that fails leaving the task as the store holds it, and two Fleets
sharing one store as two processes share a database.

Each test uses a MemoryStore (``shared=True`` where two Fleets meet) or an SqliteStore on a file:
the Fleet's side of the contract. The stores' own contract is tests/store/test_store_contract.py; real
processes killed mid-stream are tests/fleet/test_crash_recovery.py.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamlife import (
    CallbackError,
    Fleet,
    ManualClock,
    Outcome,
    Segment,
    StatusCallback,
    StreamKind,
    StreamTask,
    TaskState,
)
from streamlife._events import ForeignCallback, ProviderEvent, StartResult, StatusMeaning, StopResult
from streamlife._journal import FACTS, LATER_FACTS, decode_event, encode_event, facts_of, rebuild, row_for
from streamlife._task import STATE_SLOTS
from streamlife.errors import JournalMismatch, StoreError
from streamlife.fleet import INTERRUPTED_START, LOST_START_BODY
from streamlife.lifecycle import StopReason
from streamlife.protocol import segment_callback, status_callback
from streamlife.sim import Faults, SimTransport, SimulatedService
from streamlife.store import NO_DUE, Due, JournalEntry, MemoryStore, SqliteStore, Store, TaskRow
from streamlife.store.memory import _Txn
from streamlife.testing import MemoriesSim
from tests.conftest import POLICY, ROW_FIELDS, URL, rig, state_of


class FailingStore(MemoryStore):
    """A MemoryStore whose next write (or create) fails, as a full disk or a lost database would."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fail_next = False
        self.dead = False  # the process is gone: nothing more is written until a new one opens it

    def _maybe_fail(self) -> None:
        if self.fail_next or self.dead:
            self.fail_next = False
            raise StoreError("disk full (a test)")

    def create(
        self, row: TaskRow, entries: Sequence[JournalEntry], *, claim: str | None = None, due: Due = NO_DUE
    ) -> None:
        self._maybe_fail()
        super().create(row, entries, claim=claim, due=due)

    def lock(self, key: str) -> _Txn:
        return _FailingTxn(self, key)


class _FailingTxn(_Txn):
    """The commit is what fails: nothing staged is kept, and the block's exit raises."""

    def __exit__(self, error_type: type[BaseException] | None, *rest: object) -> None:
        store = self.store
        assert isinstance(store, FailingStore)
        failing = error_type is None and (store.fail_next or store.dead)
        if failing:
            self.staged = None
        super().__exit__(error_type, *rest)
        if failing:
            store._maybe_fail()


def same_task(store: Store, key: str | None, clock: ManualClock) -> Any:
    """What the store rebuilds of a task: its state, task_id, facts and transcript."""
    row = store.row(key or "")
    assert row is not None
    task = rebuild(row, store.journal(row.key), clock=clock)
    return (task.state, task.task_id, facts_of(task), list(task.transcript))


# -- journaled before anyone hears of it -------------------------------------------------------------
def test_start_is_journaled_as_starting_before_the_request_leaves(clock: ManualClock) -> None:
    store = MemoryStore()
    seen: list[TaskRow | None] = []

    class Peeking(SimTransport):
        def start(self, kind: StreamKind, params: Mapping[str, Any]) -> StartResult:
            seen.append(store.rows().__next__())
            return super().start(kind, params)

    fleet = Fleet(Peeking(SimulatedService(clock=clock)), clock=clock, policy=POLICY, store=store)
    task = fleet.start("audio", audio_url=URL, provider="assemblyai")
    assert seen[0] is not None
    assert seen[0].state == "starting"
    assert seen[0].key == task.key
    assert [entry.trigger for entry in fleet.journal(task)] == ["start", "start_ok"]


def test_each_applied_callback_is_journaled_before_handle_callback_returns(clock: ManualClock) -> None:
    r = rig(clock, store=MemoryStore())
    task = r.fleet.start("audio", audio_url=URL, provider="assemblyai")
    task_id = task.task_id or ""
    assert r.fleet.handle_callback(segment_callback(task_id, 0, "one")) is Outcome.APPLIED
    journal = r.fleet.journal(task_id)
    assert journal[-1].trigger == "segment"
    assert journal[-1].args is not None
    assert journal[-1].args["segment"]["text"] == "one"
    assert [entry.version for entry in journal] == [1, 2, 3]
    # A duplicate changes nothing, so nothing is written.
    assert r.fleet.handle_callback(segment_callback(task_id, 0, "one")) is Outcome.DUPLICATE
    assert len(r.fleet.journal(task_id)) == 3
    assert same_task(r.fleet.store, task.key, clock) == (
        task.state,
        task.task_id,
        facts_of(task),
        list(task.transcript),
    )


# -- a write that fails ------------------------------------------------------------------------------
def test_a_start_whose_journal_write_fails_raises_and_sends_nothing(clock: ManualClock) -> None:
    store = FailingStore()
    r = rig(clock, store=store)
    store.fail_next = True
    with pytest.raises(StoreError, match="disk full"):
        r.start()
    assert r.sim.service.streams == {}, "a start that could not be journaled must not leave"
    assert r.fleet.tasks() == []
    assert list(store.rows(terminal=True)) == []


def test_a_callback_whose_write_fails_raises_leaves_the_task_as_stored_and_applies_when_redelivered(
    clock: ManualClock,
) -> None:
    store = FailingStore()
    r = rig(clock, store=store)
    task = r.fleet.start("audio", audio_url=URL, provider="assemblyai")
    task_id = task.task_id or ""
    r.fleet.handle_callback(segment_callback(task_id, 0, "kept"))
    before = (task.state, facts_of(task), list(task.transcript), len(task.history))

    store.fail_next = True
    with pytest.raises(StoreError):
        r.fleet.handle_callback(segment_callback(task_id, 1, "lost with the disk"))
    # The receiver answers 500, so the service sends it again: the task must not think it has it.
    assert (task.state, facts_of(task), list(task.transcript)) == before[:3]
    assert r.fleet.handle_callback(segment_callback(task_id, 1, "lost with the disk")) is Outcome.APPLIED
    assert task.transcript_text() == "kept lost with the disk"
    assert same_task(store, task.key, clock)[3] == list(task.transcript)


def test_a_status_callback_whose_write_fails_does_not_end_the_task(clock: ManualClock) -> None:
    store = FailingStore()
    r = rig(clock, store=store)
    task = r.fleet.start("audio", audio_url=URL, provider="assemblyai")
    store.fail_next = True
    with pytest.raises(StoreError):
        r.fleet.handle_callback(status_callback(task.task_id or "", 14))
    assert task.state is TaskState.RUNNING
    assert task.end_status is None
    assert r.fleet.handle_callback(status_callback(task.task_id or "", 14)) is Outcome.APPLIED
    assert state_of(task) is TaskState.STOPPED


def test_a_bounded_history_lets_entries_go_that_the_journal_keeps(tmp_path: Path) -> None:
    clock = ManualClock(1_700_000_000.0)
    path = tmp_path / "streams.db"
    store = SqliteStore(path)
    r = rig(clock, store=store, history_limit=4, silence_after=600)
    task = r.start()
    r.sim.service.advance(60)  # 12 segments, a partial and a final each (callbacks only: no tick)
    assert 4 <= len(task.history) <= 8
    assert task.history[-1].seq == 2 + 24
    assert len(r.fleet.journal(task)) == 2 + 24  # every applied event, whatever memory kept
    store.close()

    again = r.restart(SqliteStore(path))
    (back,) = again.recover()
    assert 4 <= len(back.history) <= 8, "a task rebuilt from a long journal is bounded too"
    assert (back.state, back.transcript_text(), facts_of(back)) == (
        task.state,
        task.transcript_text(),
        facts_of(task),
    )
    again.store.close()


# -- a restart -------------------------------------------------------------------------------------
def test_a_restart_takes_back_every_task_that_was_not_terminal_as_it_was(tmp_path: Path) -> None:
    clock = ManualClock(1_700_000_000.0)
    path = tmp_path / "streams.db"
    r = rig(clock, store=SqliteStore(path))
    running = [r.fleet.start("audio", audio_url=URL, provider="assemblyai") for _ in range(3)]
    r.sim.advance(12)
    stopped = running.pop()
    r.fleet.stop(stopped)
    r.sim.advance(1)
    assert stopped.state is TaskState.STOPPED
    before = {task.task_id: (task.state, task.transcript_text(), facts_of(task)) for task in running}

    fleet = r.restart(SqliteStore(path))  # the process died; a new one opens the same file
    back = fleet.recover()
    assert {task.task_id: (task.state, task.transcript_text(), facts_of(task)) for task in back} == before
    assert stopped.task_id not in {task.task_id for task in fleet.tasks()}  # terminal: left in the store
    asked = fleet.get(stopped.task_id or "")  # until asked for
    assert asked is not None
    assert asked.state is TaskState.STOPPED
    r.sim.advance(6)  # callbacks keep coming to the new Fleet, and extend the same transcripts
    for task in back:
        assert len(task.transcript_text()) > len(before[task.task_id][1])
    # A late callback for the task that ended before the restart is late, not an orphan.
    assert fleet.handle_callback(segment_callback(stopped.task_id or "", 99, final=False)) is Outcome.LATE
    assert fleet.stats().parked == 0
    fleet.stop_all()
    r.sim.advance(2)
    assert r.sim.billing() == []


def test_a_task_caught_starting_comes_back_uncertain_and_its_stream_is_reaped_as_an_orphan(
    clock: ManualClock,
) -> None:
    store = FailingStore()

    class DiesAfterTheAnswer(SimTransport):
        def start(self, kind: StreamKind, params: Mapping[str, Any]) -> StartResult:
            super().start(kind, params)  # the stream exists and bills; its answer dies with us
            store.dead = True
            raise SystemExit("killed between the start answer and its journal write")

    r = rig(clock, store=store, wrap=lambda sim: DiesAfterTheAnswer(sim.service))
    with pytest.raises(StoreError):
        r.fleet.start("audio", audio_url=URL, provider="assemblyai")
    (row,) = store.rows()
    assert row.state == "starting"

    store.dead = False
    fleet = r.restart()
    (task,) = fleet.recover()
    assert task.state is TaskState.UNCERTAIN
    assert task.last_error == INTERRUPTED_START
    r.sim.advance(5 + POLICY.park_ttl + 1)  # its first callback comes at 5 s, parks, expires, is adopted
    orphans = [t for t in fleet.tasks() if t.adopted]
    assert len(orphans) == 1
    assert orphans[0].stop_requested
    r.sim.advance(POLICY.uncertain_ttl)
    assert state_of(task) is TaskState.FAILED
    assert r.sim.billing() == []


def test_a_stop_not_yet_acknowledged_is_sent_again_after_a_restart(clock: ManualClock) -> None:
    store = FailingStore()

    class DiesOnStop(SimTransport):
        def stop(self, kind: StreamKind, task_id: str, *, within: float | None = None) -> StopResult:
            store.dead = True
            raise SystemExit("killed while the stop was in flight")

    r = rig(clock, store=store, wrap=lambda sim: DiesOnStop(sim.service))
    task = r.fleet.start("audio", audio_url=URL, provider="assemblyai")
    with pytest.raises(StoreError):
        r.fleet.stop(task)
    store.dead = False
    fleet = r.restart()
    (back,) = fleet.recover()
    assert back.state is TaskState.STOPPING
    assert not back.stop_acknowledged
    r.sim.advance(2)
    assert state_of(back) is TaskState.STOPPED
    assert r.sim.billing() == []


def test_callbacks_parked_before_a_restart_are_not_lost(clock: ManualClock) -> None:
    store = MemoryStore()
    r = rig(clock, store=store)
    assert r.fleet.handle_callback(segment_callback("early-1", 0, "first")) is Outcome.PARKED
    fleet = r.restart()
    fleet.recover()
    assert fleet.stats().parked == 1
    clock.advance(POLICY.park_ttl)
    fleet.tick()
    (orphan,) = fleet.tasks()
    assert orphan.adopted
    assert orphan.transcript_text() == "first"
    assert store.parked() == [], "claimed callbacks leave the store's parking lot"


def test_processes_that_split_the_tasks_each_take_back_only_their_own(tmp_path: Path) -> None:
    clock = ManualClock(1_700_000_000.0)
    path = tmp_path / "streams.db"
    r = rig(clock, store=SqliteStore(path))
    tasks = [r.fleet.start("audio", audio_url=URL, provider="assemblyai") for _ in range(4)]
    assert r.fleet.handle_callback(segment_callback("early-1", 0, "first")) is Outcome.PARKED
    ours = {task.key for task in tasks[::2]}

    first = r.restart(SqliteStore(path))
    taken = first.recover(only=lambda row: row.key in ours, parked=False)
    assert {task.key for task in taken} == {task.key for task in first.tasks()} == ours
    assert first.stats().parked == 0  # left to the other process
    second = r.sim.fleet(first.policy, store=SqliteStore(path))
    taken = second.recover(only=lambda row: row.key not in ours)
    assert {task.key for task in taken} == {task.key for task in tasks} - ours
    assert second.stats().parked == 1


def test_processes_that_split_the_parked_callbacks_each_take_back_only_their_own(tmp_path: Path) -> None:
    clock = ManualClock(1_700_000_000.0)
    path = tmp_path / "streams.db"
    r = rig(clock, store=SqliteStore(path))
    early = {task_id: segment_callback(task_id, 0, "first") for task_id in ("early-1", "early-2", "early-3")}
    assert [r.fleet.handle_callback(callback) for callback in early.values()] == [Outcome.PARKED] * 3

    first = r.restart(SqliteStore(path))
    first.recover(parked=lambda task_id: task_id == "early-2")
    second = r.sim.fleet(first.policy, store=SqliteStore(path))
    second.recover(parked=lambda task_id: task_id != "early-2")
    assert (first.stats().parked, second.stats().parked) == (1, 2)
    # Each knows the callbacks it took back: sent again, they are repeats, not new ones.
    assert first.handle_callback(early["early-2"]) is Outcome.PARKED_ALREADY
    assert second.handle_callback(early["early-1"]) is Outcome.PARKED_ALREADY
    assert second.handle_callback(early["early-3"]) is Outcome.PARKED_ALREADY


def test_silence_is_timed_again_after_a_restart(clock: ManualClock) -> None:
    r = rig(clock, Faults(stall=1.0), store=MemoryStore())
    task = r.fleet.start("audio", audio_url=URL, provider="assemblyai")
    fleet = r.restart()
    (back,) = fleet.recover()
    r.sim.advance(POLICY.silence_after + 1)
    assert back.stalled
    assert back.task_id == task.task_id


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_a_callback_handed_over_as_read_only_mappings_is_journaled(
    backend: str, clock: ManualClock, tmp_path: Path
) -> None:
    store: Store = MemoryStore() if backend == "memory" else SqliteStore(tmp_path / "journal.db")
    fleet = rig(clock, store=store).fleet
    task = fleet.start("audio", audio_url=URL, provider="assemblyai")
    payload = segment_callback(task.task_id or "", 0, text="hello")
    handed = MappingProxyType({**payload, "data": MappingProxyType(payload["data"])})
    assert fleet.handle_callback(handed) is Outcome.APPLIED
    (applied,) = [entry for entry in fleet.journal(task) if entry.trigger == "segment"]
    assert applied.args is not None
    assert applied.args["raw"] == payload


def test_a_journal_that_does_not_replay_to_its_row_is_refused(clock: ManualClock, tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    r = rig(clock, store=SqliteStore(path))
    task = r.fleet.start("audio", audio_url=URL, provider="assemblyai")
    with sqlite3.connect(path) as db:  # edited behind the Fleet's back
        db.execute("UPDATE tasks SET state = 'stopping' WHERE key = ?", (task.key,))
    with pytest.raises(JournalMismatch, match="state"):
        r.restart().recover()


# -- two Fleets, one store -------------------------------------------------------------------------
def test_two_fleets_on_one_shared_store_apply_each_callback_once(clock: ManualClock) -> None:
    store = MemoryStore(shared=True)
    r = rig(clock, store=store)
    first, second = r.fleet, r.sim.fleet(POLICY, store=store)
    task = r.start()
    task_id = task.task_id or ""
    outcomes = []
    for index in range(6):  # each callback reaches both processes, alternating who is first
        fleets = (first, second) if index % 2 else (second, first)
        outcomes += [fleet.handle_callback(segment_callback(task_id, index, f"w{index}")) for fleet in fleets]
    assert outcomes.count(Outcome.APPLIED) == 6
    assert outcomes.count(Outcome.DUPLICATE) == 6
    other = second.get(task_id)
    assert other is not None
    assert other is not task
    # A status nobody declared: an end the first Fleet infers, and confirms with a stop at once.
    first.handle_callback(status_callback(task_id, 99))
    assert second.stop(task_id) is other
    assert (other.state, other.stop_acknowledged) == (TaskState.ENDING, True), (
        "the second Fleet caught up before applying its stop"
    )
    assert r.sim.service.stop_requests == 1, "and sent none of its own: the stop was acknowledged already"
    versions = [entry.version for entry in store.journal(task.key or "")]
    assert versions == list(range(1, len(versions) + 1))
    assert [e.trigger for e in store.journal(task.key or "")].count("segment") == 6


def test_many_threads_over_two_fleets_on_a_shared_store_keep_one_journal(clock: ManualClock) -> None:
    store = MemoryStore(shared=True)
    sim = MemoriesSim.new(clock=clock)
    fleets = [sim.fleet(POLICY, store=store) for _ in range(2)]
    tasks = [fleets[0].start("audio", audio_url=URL, provider="assemblyai") for _ in range(5)]
    results: list[Outcome] = []

    def deliver(worker: int) -> None:
        fleet = fleets[worker % 2]
        for index in range(20):
            for task in tasks:
                results.append(fleet.handle_callback(segment_callback(task.task_id or "", index, "x")))

    threads = [threading.Thread(target=deliver, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(Outcome.APPLIED) == 5 * 20
    for task in tasks:
        journal = store.journal(task.key or "")
        assert [entry.version for entry in journal] == list(range(1, len(journal) + 1))
        assert sorted(e.args["segment"]["index"] for e in journal if e.args and "segment" in e.args) == list(
            range(20)
        )


def test_a_stop_that_failed_in_another_process_is_retried_here(clock: ManualClock) -> None:
    store = MemoryStore(shared=True)
    r = rig(clock, Faults(stop_500=1.0), store=store)
    task = r.start()
    there = r.sim.fleet(POLICY, store=store)
    there.stop(task.task_id or "")  # fails with a 500; then that process goes away
    assert r.sim.service.stop_requests == 1
    r.sim.crash(there)
    r.sim.service.faults = Faults()
    r.sim.advance(30)  # its next callback tells this Fleet the task is stopping, unacknowledged
    assert state_of(task) is TaskState.STOPPED
    assert r.sim.billing() == []


# -- the journal's encoding ------------------------------------------------------------------------
def test_the_row_keeps_every_fact_of_a_task_that_replay_must_reproduce() -> None:
    task = StreamTask("audio")
    assert tuple(facts_of(task)) == FACTS
    flags = {*STATE_SLOTS, "ref"}  # (StreamTask.__slots__)
    state_of_its_own = {"_transcript", "clock", "history", "key", "kind", "params", "ref", "state", "task_id"}
    state_of_its_own |= {"_adopted"}  # replay makes it again: the adopt entry
    state_of_its_own |= {"revision"}  # a count of changes, compared within one event only
    assert flags - state_of_its_own == set(FACTS), "a new fact of the task must be journaled"


# A task's row-held fields, each from a few values, so that two draws are often alike.
ROW_HELD = {
    "kind": st.sampled_from(list(StreamKind)),
    "task_id": st.sampled_from([None, "t1", "t2"]),
    "state": st.sampled_from([TaskState.RUNNING, TaskState.STOPPING]),
    "stop_requested": st.booleans(),
    "stop_acknowledged": st.booleans(),
    "final_callback_missing": st.booleans(),
    "stalled": st.booleans(),
    "stop_failures": st.integers(0, 1),
    "stop_not_before": st.sampled_from([None, 7.0]),
    "end_status": st.sampled_from([None, 14]),
    "last_error": st.sampled_from([None, "x"]),
    "started_at": st.sampled_from([None, 5.0]),
    "ended_at": st.sampled_from([None, 9.0]),
    "max_duration": st.sampled_from([None, 60.0]),
    "stop_reason": st.sampled_from([None, StopReason.MAX_DURATION]),
}


def task_with(fields: Mapping[str, Any]) -> StreamTask:
    task = StreamTask("audio")
    for name, value in fields.items():
        setattr(task, name, value)
    return task


@given(st.fixed_dictionaries(ROW_HELD), st.fixed_dictionaries(ROW_HELD))
def test_row_fields_differ_exactly_when_the_rows_would(first: dict[str, Any], second: dict[str, Any]) -> None:
    """ROW_FIELDS, by which the tests hold ``StreamTask.revision`` to the rows a Fleet writes, covers
    everything ``row_for`` takes from a task (but its version and times)."""
    assert set(ROW_HELD) == {"kind", "task_id", "state", *FACTS}
    a, b = task_with(first), task_with(second)
    assert (ROW_FIELDS(a) == ROW_FIELDS(b)) == (row_for(a, "k", 1, 0.0) == row_for(b, "k", 1, 0.0))


# Status 0 is news that a stream lives, so an orphan known by such callbacks is found, and no final
# deadline ends a stop before the test has seen it through.
ORPHAN_POLICY = dataclasses.replace(
    POLICY, statuses=POLICY.statuses.with_status(0, StatusMeaning.ONGOING), final_callback_wait=1_000
)


def test_an_orphan_whose_product_was_guessed_wrong_is_stored_with_the_one_its_stop_found(
    clock: ManualClock,
) -> None:
    """An orphan known only by status callbacks is taken for audio; its stop finds it on the video
    path. The row says video from then on, written with the stop's answer, and stays so through
    events that change nothing else (which write no row)."""
    sim = SimulatedService(clock=clock)  # its own callbacks go nowhere: the test delivers by hand
    store = MemoryStore()
    fleet = Fleet(SimTransport(sim), clock=clock, policy=ORPHAN_POLICY, store=store)
    started = SimTransport(sim).start(StreamKind.VIDEO, {"url": URL})
    task_id = started.task_id

    assert fleet.handle_callback(status_callback(task_id, 0)) is Outcome.PARKED
    clock.advance(POLICY.park_ttl)
    fleet.tick()  # adopted, taken for audio, and stopped: "not found" there, found on the video path
    orphan = fleet.get(task_id)
    assert orphan is not None
    assert (orphan.kind, state_of(orphan)) == (StreamKind.VIDEO, TaskState.STOPPING)
    assert [(stop.task_id, stop.status) for stop in sim.stop_log] == [(task_id, 400), (task_id, 200)]
    row = store.row(orphan.key or "")
    assert row is not None
    assert (row.kind, row.state, row.facts.get("kind_guessed")) == ("video", "stopping", None)

    assert fleet.handle_callback(status_callback(task_id, 0)) is Outcome.APPLIED  # news, no change
    moved_on = store.row(orphan.key or "")
    assert moved_on == row
    rebuilt = Fleet(SimTransport(sim), clock=clock, policy=ORPHAN_POLICY, store=store)
    assert rebuilt.recover()[0].kind is StreamKind.VIDEO


def guessed_orphan(clock: ManualClock, store: Store, kind: StreamKind) -> tuple[Fleet, StreamTask]:
    """An orphan of ``kind``, known only by status callbacks: taken for audio, a guess, and stopped."""
    sim = SimulatedService(clock=clock)  # its own callbacks go nowhere: the test delivers by hand
    fleet = Fleet(SimTransport(sim), clock=clock, policy=ORPHAN_POLICY, store=store)
    params = {"audio_url": URL} if kind is StreamKind.AUDIO else {"url": URL}
    task_id = SimTransport(sim).start(kind, params).task_id
    assert fleet.handle_callback(status_callback(task_id, 0)) is Outcome.PARKED
    clock.advance(POLICY.park_ttl)
    fleet.tick()
    orphan = fleet.get(task_id)
    assert orphan is not None
    return fleet, orphan


def test_a_guessed_orphan_found_where_it_was_guessed_is_no_guess_once_stopped(clock: ManualClock) -> None:
    store = MemoryStore()
    _, orphan = guessed_orphan(clock, store, StreamKind.AUDIO)
    row = store.row(orphan.key or "")
    assert row is not None
    assert (row.kind, row.state, row.facts.get("kind_guessed")) == ("audio", "stopping", None)
    assert store.journal(orphan.key or "")[-1].args == {"kind": "audio"}


def test_a_journal_from_before_stop_ok_carried_the_product_is_rebuilt_with_the_rows(
    clock: ManualClock,
) -> None:
    store = MemoryStore()
    _, orphan = guessed_orphan(clock, store, StreamKind.VIDEO)
    row = store.row(orphan.key or "")
    assert row is not None

    def with_stop_ok_args(args: Mapping[str, Any] | None) -> list[JournalEntry]:
        journal = store.journal(row.key)
        return [entry._replace(args=args) if entry.trigger == "stop_ok" else entry for entry in journal]

    assert rebuild(row, with_stop_ok_args(None), clock=clock).kind is StreamKind.VIDEO
    with pytest.raises(JournalMismatch, match="cannot read"):  # a later version's, say
        rebuild(row, with_stop_ok_args({"kind": "video", "from": "later"}), clock=clock)


def test_another_process_holding_a_guessed_orphan_learns_its_product_from_the_journal(
    clock: ManualClock,
) -> None:
    """One process's stop finds an orphan on the video path; another, which held the task from
    before (taken for audio, a guess), catches up by replaying the journal: it learns video there,
    and the row it writes at the end says video, no guess."""
    sim = SimulatedService(clock=clock, faults=Faults(stop_500=1.0))  # the first stop fails
    store = MemoryStore(shared=True)
    this, other = (Fleet(SimTransport(sim), clock=clock, policy=ORPHAN_POLICY, store=store) for _ in range(2))
    task_id = SimTransport(sim).start(StreamKind.VIDEO, {"url": URL}).task_id

    assert this.handle_callback(status_callback(task_id, 0)) is Outcome.PARKED
    clock.advance(POLICY.park_ttl)
    this.tick()  # adopted, taken for audio; its stop fails, and is retried later
    assert other.handle_callback(status_callback(task_id, 0)) is Outcome.APPLIED  # now held there too
    held_there = other.get(task_id)
    assert held_there is not None
    assert held_there.kind is StreamKind.AUDIO  # a guess

    sim.faults = Faults()
    clock.advance(POLICY.stop_retry_cap)
    this.tick()  # the retry: "not found" on the audio path, found on the video path
    (acknowledged,) = [e for e in store.journal(held_there.key or "") if e.trigger == "stop_ok"]
    assert acknowledged.args == {"kind": "video"}

    assert other.handle_callback(status_callback(task_id, 14)) is Outcome.APPLIED
    assert (held_there.kind, state_of(held_there)) == (StreamKind.VIDEO, TaskState.STOPPED)
    row = store.row(held_there.key or "")
    assert row is not None
    assert (row.kind, row.state, row.facts.get("kind_guessed")) == ("video", "stopped", None)


def test_a_guessed_orphan_whose_found_product_is_not_kept_is_stopped_on_both_paths_again(
    clock: ManualClock,
) -> None:
    """The stop's answer (found on video) cannot be journaled: the task is put back as stored,
    audio and guessed, and the retried stop tries both paths again. (Were it taken for audio
    alone, an audio "not found" would count it stopped whether or not the video stream was.)"""
    sim = SimulatedService(clock=clock, faults=Faults(stop_500=1.0))  # the first stop fails
    store = FailingStore()
    fleet = Fleet(SimTransport(sim), clock=clock, policy=ORPHAN_POLICY, store=store)
    task_id = SimTransport(sim).start(StreamKind.VIDEO, {"url": URL}).task_id
    assert fleet.handle_callback(status_callback(task_id, 0)) is Outcome.PARKED
    clock.advance(POLICY.park_ttl)
    fleet.tick()  # adopted, taken for audio; its stop fails
    orphan = fleet.get(task_id)
    assert orphan is not None

    sim.faults = Faults()
    store.fail_next = True
    clock.advance(POLICY.stop_retry_cap)
    fleet.tick()  # "not found" on audio, stopped on video, and the answer is not kept
    assert (orphan.kind, orphan.stop_acknowledged, state_of(orphan)) == (
        StreamKind.AUDIO,
        False,
        TaskState.STOPPING,
    )
    stops = len(sim.stop_log)
    clock.advance(2 * POLICY.stop_retry_cap)
    fleet.tick()  # both paths again: the video stream is gone now, so "not found" on each
    assert [stop.status for stop in sim.stop_log[stops:]] == [400, 400]
    assert state_of(orphan) is TaskState.STOPPED
    assert sim.billing() == []


texts = st.none() | st.text(max_size=20)
times = st.none() | st.floats(allow_nan=False, allow_infinity=False)
raws = st.none() | st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3)
events = st.one_of(
    st.builds(
        Segment,
        st.text(min_size=1),
        st.none() | st.integers(0, 10**6),
        st.booleans(),
        texts,
        times,
        times,
        raws,
        st.booleans(),
    ),
    st.builds(
        StatusCallback,
        st.text(min_size=1),
        st.integers(),
        texts,
        raws,
        st.none() | st.sampled_from(StatusMeaning),
        st.none() | st.integers(0, 2**31 - 1),
    ),
    st.builds(
        ProviderEvent, st.text(min_size=1), st.sampled_from(["assemblyai", "elevenlabs"]), st.text(), raws
    ),
    st.builds(ForeignCallback, st.none() | st.text(min_size=1), raws),
)


@given(events)
def test_an_event_reads_back_from_its_journal_encoding_as_it_was(
    event: Segment | StatusCallback | ProviderEvent | ForeignCallback,
) -> None:
    assert decode_event(json.loads(json.dumps(encode_event(event)))) == event


def test_a_row_written_before_the_billing_facts_existed_still_rebuilds(clock: ManualClock) -> None:
    r = rig(clock, store=MemoryStore())
    task = r.fleet.start("audio", audio_url=URL, provider="assemblyai", max_duration=60)
    row = r.fleet.store.row(task.key or "")
    assert row is not None
    older = row._replace(facts={k: v for k, v in row.facts.items() if k not in LATER_FACTS})
    rebuilt = rebuild(older, r.fleet.store.journal(row.key), clock=clock)
    assert (rebuilt.started_at, rebuilt.max_duration) == (task.started_at, 60)  # replay has them
    with pytest.raises(JournalMismatch, match="max_duration"):
        rebuild(
            row._replace(facts={**row.facts, "max_duration": 30}),
            r.fleet.store.journal(row.key),
            clock=clock,
        )


def test_a_start_retry_that_cannot_be_journaled_is_tried_again(clock: ManualClock) -> None:
    store = FailingStore()
    r = rig(clock, Faults(capacity=1.0), store=store)
    task = r.fleet.start("audio", audio_url=URL, provider="assemblyai")
    assert state_of(task) is TaskState.PENDING
    r.sim.service.faults = Faults()  # the account has room again
    store.fail_next = True  # the retry's journal write fails: it must not be the last try
    r.sim.advance(3)
    r.sim.advance(3)
    assert state_of(task) is TaskState.RUNNING
    assert [e.trigger for e in store.journal(task.key or "")][:4] == [
        "start",
        "start_deferred",
        "start",
        "start_ok",
    ]


def test_a_deferred_start_found_after_a_restart_fails_and_sends_nothing(
    clock: ManualClock, tmp_path: Path
) -> None:
    """Its start body is not stored (stream URLs carry stream keys), so no other process can send it:
    nothing was created, so it fails, and says why."""
    store = SqliteStore(tmp_path / "tasks.db")
    r = rig(clock, Faults(capacity=1.0), store=store)
    task = r.fleet.start("video", url=URL)
    assert state_of(task) is TaskState.PENDING
    r.sim.service.faults = Faults()
    after = r.restart()  # the first process is gone, and the start body with it
    (back,) = after.recover()
    assert (back.state, back.last_error) == (TaskState.FAILED, LOST_START_BODY)
    r.sim.advance(5)
    assert (r.sim.service.start_requests, r.sim.billing()) == (1, [])
    store.close()


def test_a_task_id_with_a_lone_surrogate_is_refused_and_the_batch_goes_on(
    clock: ManualClock, tmp_path: Path
) -> None:
    """A task_id "\\ud800" is valid JSON, and no store can keep it as text: it is a CallbackError (400), kept
    as a dead letter, and the rest of a batch is applied."""
    store = SqliteStore(tmp_path / "tasks.db")
    r = rig(clock, store=store)
    task = r.fleet.start("audio", audio_url=URL, provider="assemblyai")
    forged = b'{"task_id": "\\ud800", "data": {"status": 14, "transcript": null}}'
    good = json.dumps(segment_callback(task.task_id or "", 0, "hello")).encode()
    results = r.fleet.handle_callbacks([forged, good])
    assert isinstance(results[0], CallbackError)
    assert results[0].field == "task_id"
    assert results[1] == Outcome.APPLIED
    assert [letter.body for letter in store.dead_letters()] == [forged]
    with pytest.raises(CallbackError):
        r.fleet.handle_callback(forged)
    store.close()
