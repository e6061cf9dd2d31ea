"""Fleet.handle_callbacks: many callbacks, one store commit, the same outcomes as one by one."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamlife import CallbackError, Fleet, ManualClock, Outcome, Policy, Segment, StreamTask, TaskState
from streamlife._journal import facts_of
from streamlife.errors import StoreError
from streamlife.lifecycle import TRIGGERS, Source
from streamlife.protocol import segment_callback, status_callback
from streamlife.store import NO_DUE, Due, JournalEntry, MemoryStore, SqliteStore, Store, TaskRow
from streamlife.store.memory import _Txn
from streamlife.testing import MemoriesSim
from tests.conftest import state_of

URL = "rtmp://sim.invalid/live"
POLICY = Policy(stop_concurrency=0, seed=0, park_ttl=30, silence_after=600)


def fleet_with_tasks(clock: ManualClock, store: Store, count: int = 3) -> tuple[Fleet, list[StreamTask]]:
    fleet = MemoriesSim.new(clock=clock).fleet(POLICY, store=store)
    return fleet, [fleet.start("audio", audio_url=URL, provider="assemblyai") for _ in range(count)]


def described(result: Outcome | CallbackError) -> str:
    return f"malformed: {result}" if isinstance(result, CallbackError) else str(result)


def what_each_task_holds(fleet: Fleet) -> list[Any]:
    """Each task's state, transcript, and what its callbacks did (facts, history, journal).

    What its own stop requests did is left out: the stop that confirms an inferred end goes out once
    the event that called for it is applied, which is after the whole batch in a batch; one by one,
    its answer lands before the next callback."""
    return [
        (
            task.state,
            {name: facts_of(task)[name] for name in ("stop_requested", "stalled", "end_status")},
            list(task.transcript),
            [(e.trigger, e.outcome) for e in task.history if e.source is not Source.TRANSPORT],
            [(e.trigger, e.args) for e in fleet.journal(task) if TRIGGERS[e.trigger] is not Source.TRANSPORT],
        )
        for task in fleet.tasks()
    ]


# One payload of a random batch: a segment (maybe a repeat), an end, garbage, or a stranger's.
PAYLOADS = st.one_of(
    st.tuples(st.just("segment"), st.integers(0, 2), st.integers(0, 4), st.sampled_from(["a", "b"])),
    st.tuples(st.just("status"), st.integers(0, 2), st.sampled_from([14, 16, 1001])),
    st.tuples(st.just("garbage")),
    st.tuples(st.just("stranger"), st.integers(0, 4)),
)


def payload_of(spec: tuple[Any, ...], task_ids: list[str]) -> bytes:
    if spec[0] == "segment":
        _, task, index, text = spec
        return json.dumps(segment_callback(task_ids[task], index, text)).encode()
    if spec[0] == "status":
        _, task, status = spec
        return json.dumps(status_callback(task_ids[task], status)).encode()
    if spec[0] == "garbage":
        return b'{"data": 1}'
    return json.dumps(segment_callback(f"stranger-{spec[1]}", spec[1])).encode()


@given(
    specs=st.lists(PAYLOADS, max_size=40),
    cuts=st.lists(st.integers(1, 8), min_size=1, max_size=40),
)
def test_batches_give_what_one_by_one_gives(specs: list[tuple[Any, ...]], cuts: list[int]) -> None:
    one_fleet, one_tasks = fleet_with_tasks(ManualClock(1_700_000_000.0), MemoryStore())
    batch_fleet, batch_tasks = fleet_with_tasks(ManualClock(1_700_000_000.0), MemoryStore())
    one_ids = [task.task_id or "" for task in one_tasks]
    batch_ids = [task.task_id or "" for task in batch_tasks]

    one_by_one: list[str] = []
    for spec in specs:
        try:
            one_by_one.append(str(one_fleet.handle_callback(payload_of(spec, one_ids))))
        except CallbackError as error:
            one_by_one.append(f"malformed: {error}")
    batched: list[str] = []
    payloads = [payload_of(spec, batch_ids) for spec in specs]
    sizes = iter(cuts * (len(payloads) + 1))
    while payloads:
        size = next(sizes)
        batched += [described(result) for result in batch_fleet.handle_callbacks(payloads[:size])]
        payloads = payloads[size:]

    assert batched == one_by_one
    assert what_each_task_holds(batch_fleet) == what_each_task_holds(one_fleet)
    assert batch_fleet.stats().callbacks == one_fleet.stats().callbacks
    assert batch_fleet.stats().parked == one_fleet.stats().parked


def test_a_batch_is_journaled_in_one_commit_before_it_returns(tmp_path: Path, clock: ManualClock) -> None:
    store = CountingCommits(tmp_path / "streams.db")
    fleet, tasks = fleet_with_tasks(clock, store)
    heard: list[int] = []
    fleet.on_segment(lambda task, segment: heard.append(segment.index))
    payloads = [segment_callback(task.task_id or "", index) for index in range(4) for task in tasks]
    store.commits = 0

    results = fleet.handle_callbacks([*payloads, payloads[0], b"not json"])

    assert results[:12] == [Outcome.APPLIED] * 12
    assert results[12] == Outcome.DUPLICATE
    assert isinstance(results[13], CallbackError)
    assert store.commits == 1
    reopened = SqliteStore(tmp_path / "streams.db")  # what another process reads: all of it
    for task in tasks:
        journal = reopened.journal(task.key or "")
        assert [e.trigger for e in journal] == ["start", "start_ok"] + ["segment"] * 4
    assert sorted(heard) == sorted(list(range(4)) * 3), "hooks hear of each applied segment, once"


def test_a_batch_whose_commit_fails_applies_nothing_and_applies_all_when_sent_again(
    tmp_path: Path, clock: ManualClock
) -> None:
    store = CountingCommits(tmp_path / "streams.db")
    fleet, tasks = fleet_with_tasks(clock, store)
    heard: list[int] = []
    fleet.on_segment(lambda task, segment: heard.append(segment.index))
    before = what_each_task_holds(fleet)
    payloads = [segment_callback(task.task_id or "", 0) for task in tasks]
    payloads.append(status_callback(tasks[0].task_id or "", 14))

    store.fail_commit = True
    with pytest.raises(StoreError, match="disk full"):
        fleet.handle_callbacks(payloads)
    after_failure = what_each_task_holds(fleet)
    assert [held[:3] for held in after_failure] == [held[:3] for held in before], "nothing was kept"
    assert heard == [], "hooks hear of nothing that was not kept"
    assert tasks[0].state is TaskState.RUNNING

    store.fail_commit = False
    assert fleet.handle_callbacks(payloads) == [Outcome.APPLIED] * 4
    assert state_of(tasks[0]) is TaskState.STOPPED  # (read anew: mypy narrowed it above)
    assert [task.transcript_text() for task in tasks] == ["hello there"] * 3
    assert sorted(heard) == [0, 0, 0]


def test_callbacks_for_tasks_not_held_are_parked_or_found_as_one_by_one(clock: ManualClock) -> None:
    store = MemoryStore(shared=True)
    fleet, (task,) = fleet_with_tasks(clock, store, count=1)
    other = MemoriesSim.new(clock=clock).fleet(POLICY, store=store)
    results = other.handle_callbacks(
        [segment_callback(task.task_id or "", 0), segment_callback("nobody-knows", 0)]
    )
    assert results == [Outcome.APPLIED, Outcome.PARKED]  # another process's task, loaded from the store
    assert [e.trigger for e in fleet.journal(task)][-1] == "segment"


def test_tasks_another_process_started_join_the_batch_s_commit(tmp_path: Path, clock: ManualClock) -> None:
    """A task the store holds and this Fleet does not yet (another process started it) is held
    before the batch and applied in its commit, not each alone after it."""
    starter, tasks = fleet_with_tasks(clock, SqliteStore(tmp_path / "streams.db"), count=4)
    store = CountingCommits(tmp_path / "streams.db", lone_writes=True)
    other = MemoriesSim.new(clock=clock).fleet(POLICY, store=store)
    payloads = [segment_callback(task.task_id or "", 0) for task in tasks]

    results = other.handle_callbacks([*payloads, segment_callback("nobody-knows", 0), payloads[0]])

    assert results == [Outcome.APPLIED] * 4 + [Outcome.PARKED, Outcome.DUPLICATE]
    assert store.commits == 1
    assert {task.task_id for task in other.tasks()} == {task.task_id for task in tasks}
    for task in tasks:  # what the starting process reads back
        assert [e.trigger for e in starter.journal(task)][-1] == "segment"


class CountingCommits(SqliteStore):
    """A SqliteStore that counts its batches' commits (with ``lone_writes``, those of lock() blocks
    outside a batch too), and can fail a batch's next one (a full disk)."""

    def __init__(self, path: Path, *, lone_writes: bool = False) -> None:
        super().__init__(path)
        self.commits = 0
        self.fail_commit = False
        self.lone_writes = lone_writes

    @contextmanager
    def lock(self, key: str) -> Iterator[Any]:
        alone = self.lone_writes and not self._open
        with super().lock(key) as txn:
            yield txn
        if alone:
            self.commits += 1

    @contextmanager
    def batch(self) -> Iterator[None]:
        with super().batch():
            yield
            if self.fail_commit:  # raised inside: the batch rolls back, as a failed COMMIT does
                raise StoreError("disk full (a test)")
        self.commits += 1


class FailingNthWrite(MemoryStore):
    """A MemoryStore whose ``fail_at``-th task write (counted from 1) raises StoreError, once."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.fail_at: int | None = None

    def lock(self, key: str) -> _Txn:
        return _CountedTxn(self, key)

    def count_write(self) -> None:
        self.writes += 1
        if self.writes == self.fail_at:
            self.fail_at = None
            raise StoreError("the disk failed on this write (a test)")


class _CountedTxn(_Txn):
    __slots__ = ()

    def write(self, entries: Sequence[JournalEntry], row: TaskRow | None, due: Due = NO_DUE) -> None:
        assert isinstance(self.store, FailingNthWrite)
        self.store.count_write()
        super().write(entries, row, due)


def test_a_batch_failing_at_its_third_write_keeps_nothing_and_applies_once_when_sent_again(
    clock: ManualClock,
) -> None:
    store = FailingNthWrite()
    fleet, tasks = fleet_with_tasks(clock, store)
    heard: list[tuple[str, int]] = []
    fleet.on_segment(lambda task, segment: heard.append((task.task_id or "", segment.index)))
    payloads = [segment_callback(task.task_id or "", 0) for task in tasks]
    before = what_each_task_holds(fleet)
    store.fail_at = store.writes + 3  # the first two tasks' writes succeed, the third's fails

    with pytest.raises(StoreError, match="disk failed"):
        fleet.handle_callbacks(payloads)
    assert what_each_task_holds(fleet) == before, "nothing of the failed batch is held"
    assert [store.journal(task.key or "") for task in tasks] == [fleet.journal(task) for task in tasks]
    assert heard == []

    assert fleet.handle_callbacks(payloads) == [Outcome.APPLIED] * 3
    assert sorted(heard) == sorted((task.task_id or "", 0) for task in tasks), "each heard once"
    assert [task.transcript_text() for task in tasks] == ["hello there"] * 3
    assert fleet.handle_callbacks(payloads) == [Outcome.DUPLICATE] * 3
    assert len(heard) == 3


class FailingCommitMemory(MemoryStore):
    """A MemoryStore whose batches fail at their end while ``fail_commit`` is set."""

    fail_commit = False

    @contextmanager
    def batch(self) -> Iterator[None]:
        with super().batch():
            yield
            if self.fail_commit:
                raise StoreError("the commit failed (a test)")


def test_a_failed_batch_takes_back_only_its_own_hook_calls(clock: ManualClock) -> None:
    """A hook is still busy with one callback on one thread when another thread's callback for the
    same task is applied (its hook call queued behind), and then a batch for the task fails. The
    queued call was journaled and answered: the hook must still hear of it."""
    store = FailingCommitMemory()
    fleet, (task, *_) = fleet_with_tasks(clock, store)
    tid = task.task_id or ""
    busy, release = threading.Event(), threading.Event()
    heard: list[int | None] = []

    def slow_hook(_: StreamTask, segment: Segment) -> None:
        if not heard:
            busy.set()
            assert release.wait(10)
        heard.append(segment.index)

    fleet.on_segment(slow_hook)
    first = threading.Thread(target=fleet.handle_callback, args=(segment_callback(tid, 0),))
    first.start()
    assert busy.wait(10)
    assert fleet.handle_callback(segment_callback(tid, 1)) is Outcome.APPLIED  # queued for the busy thread
    store.fail_commit = True
    with pytest.raises(StoreError, match="commit failed"):
        fleet.handle_callbacks([segment_callback(tid, 2)])
    store.fail_commit = False
    release.set()
    first.join(10)
    assert heard == [0, 1]
    journaled = [entry.args for entry in fleet.journal(task) if entry.trigger == "segment"]
    assert [args["segment"]["index"] for args in journaled if args is not None] == [0, 1]
