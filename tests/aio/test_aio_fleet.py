"""AsyncFleet: its hooks on the loop, in the order of their events, a failure logged; a hook that
awaits a stop; a stop's await cancelled, in its wait or while its request is out, leaving the task
as it should be; nothing of it on the loop's thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from streamlife import HistoryEntry, Outcome, OutcomeKind, Policy, Segment, StreamKind, StreamTask, TaskState
from streamlife._events import StopResult
from streamlife._journal import facts_of, rebuild
from streamlife.aio import AsyncFleet
from streamlife.protocol import segment_callback
from streamlife.sim import SimTransport
from streamlife.store import SqliteStore
from streamlife.testing import MemoriesSim

URL = "rtmp://sim.invalid/live"
THREADED = Policy(seed=0, stop_concurrency=2)  # stops from the Fleet's workers, as in production
REAL_SECONDS = 30.0  # a wait no step of these tests comes near, unless something hangs


async def advance(sim: MemoriesSim, seconds: float) -> None:
    """Let virtual time pass, off the loop (the simulator delivers callbacks as it goes)."""
    await asyncio.to_thread(sim.advance, seconds)


async def advance_until(sim: MemoriesSim, done: Callable[[], bool]) -> None:
    """Let virtual time pass, a second at a time, until ``done()``: bounded in real time, for what
    it waits for may be a thread's work (a stop request going out) as much as the simulator's."""
    give_up_at = time.monotonic() + REAL_SECONDS
    while not done():
        assert time.monotonic() < give_up_at, f"not done after {REAL_SECONDS} real seconds"
        await advance(sim, 1.0)
        await asyncio.sleep(0.002)  # (the threads' turn)


async def start(fleet: AsyncFleet) -> StreamTask:
    task = await fleet.start("audio", audio_url=URL, provider="assemblyai")
    assert task.state is TaskState.RUNNING
    return task


def assert_journal_rebuilds(fleet: AsyncFleet, task: StreamTask) -> None:
    row = fleet.store.row(task.key or "")
    assert row is not None
    rebuilt = rebuild(row, fleet.store.journal(row.key), clock=fleet.clock)
    assert (rebuilt.state, rebuilt.task_id) == (task.state, task.task_id)
    assert facts_of(rebuilt) == facts_of(task)


# -- hooks -------------------------------------------------------------------------------------------
def test_hooks_run_on_the_loop_one_at_a_time_in_the_order_of_the_events() -> None:
    sim = MemoriesSim.new()
    fleet = AsyncFleet.from_fleet(sim.fleet(THREADED))
    heard: list[tuple[str, object]] = []
    threads: set[int] = set()

    @fleet.on_transition
    async def transition(task: StreamTask, entry: HistoryEntry) -> None:
        threads.add(threading.get_ident())
        await asyncio.sleep(0.001)  # were hooks run side by side, the segment hooks would overtake it
        heard.append(("transition", entry.trigger))

    @fleet.on_segment
    def segment(task: StreamTask, segment: Segment) -> None:
        threads.add(threading.get_ident())
        heard.append(("segment", segment.index))

    async def run() -> StreamTask:
        async with fleet:
            task = await start(fleet)
            await advance(sim, 22.0)
            await fleet.stop(task)  # (its status 14 comes as virtual time passes)
            await advance_until(sim, lambda: task.terminal)
        return task

    task = asyncio.run(run())
    sim.close()
    applied = [entry for entry in task.history if entry.outcome.kind is OutcomeKind.APPLIED]
    expected = [
        ("segment", entry.data["index"])
        if entry.trigger == "segment" and entry.data
        else ("transition", entry.trigger)
        for entry in applied
    ]
    assert sum(kind == "segment" for kind, _ in expected) >= 4
    assert expected[-1] == ("transition", "stopped")
    assert heard == expected
    assert threads == {threading.get_ident()}  # the loop's: asyncio.run runs it on this thread


def test_a_hook_that_raises_is_logged_and_the_next_one_runs() -> None:
    sim = MemoriesSim.new()
    fleet = AsyncFleet.from_fleet(sim.fleet(THREADED))
    heard: list[str] = []

    @fleet.on_transition
    async def broken_async(task: StreamTask, entry: HistoryEntry) -> None:
        raise RuntimeError("a broken async hook")

    @fleet.on_transition
    def broken(task: StreamTask, entry: HistoryEntry) -> None:
        raise RuntimeError("a broken hook")

    fleet.on_transition(lambda task, entry: heard.append(entry.trigger))

    async def run() -> None:
        async with fleet:
            await start(fleet)

    with capture_logs() as logs:
        asyncio.run(run())
    sim.close()
    assert heard == ["start", "start_ok"]
    failed = [log["hook"] for log in logs if log["event"] == "streamlife.hook_failed"]
    assert failed == [broken_async.__qualname__, broken.__qualname__] * 2


def test_an_async_hook_may_await_a_stop_and_its_wait() -> None:
    sim = MemoriesSim.new()
    fleet = AsyncFleet.from_fleet(sim.fleet(THREADED))
    returned: list[TaskState] = []

    @fleet.on_transition
    async def stop_once_running(task: StreamTask, entry: HistoryEntry) -> None:
        if entry.trigger == "start_ok":
            returned.append((await fleet.stop(task, wait=REAL_SECONDS)).state)

    async def run() -> StreamTask:
        async with fleet:
            # (Not checked as running: the hook may have stopped it before the start returns.)
            task = await fleet.start("audio", audio_url=URL, provider="assemblyai")
            await advance_until(sim, lambda: bool(returned))
        return task

    task = asyncio.run(run())
    sim.close()
    assert returned == [TaskState.STOPPED]  # its own events' hooks queued behind it: no deadlock
    assert task.state is TaskState.STOPPED
    assert sim.billing() == []


def test_foreign_and_orphan_hooks_take_coroutine_functions() -> None:
    sim = MemoriesSim.new()
    fleet = AsyncFleet.from_fleet(sim.fleet(Policy(seed=0, stop_concurrency=2, park_ttl=5.0)))
    heard: list[str] = []

    @fleet.on_foreign
    async def foreign(callback: Any) -> None:
        heard.append(f"foreign {callback.task_id}")

    @fleet.on_orphan
    async def orphan(orphan: Any) -> None:
        heard.append(f"orphan {orphan.task.task_id}")

    async def run() -> None:
        async with fleet:
            other = {"code": 200, "message": "SUCCESS", "task_id": "other-1", "data": {"clips": []}}
            assert (await fleet.handle_callback(other)).kind is OutcomeKind.FOREIGN
            ghost = {
                "task_id": "ghost-1",
                "data": {"segment_index": 0, "status": 0, "transcript": {"text": "x", "is_final": True}},
            }
            assert (await fleet.handle_callback(ghost)).kind is OutcomeKind.PARKED
            await advance(sim, 10.0)
            await fleet.tick()

    asyncio.run(run())
    sim.close()
    assert heard == ["foreign other-1", "orphan ghost-1"]


# -- a stop's await, cancelled ---------------------------------------------------------------------------
def test_cancelling_a_stop_in_its_wait_leaves_the_stop_going() -> None:
    sim = MemoriesSim.new()
    fleet = AsyncFleet.from_fleet(sim.fleet(THREADED))

    async def run() -> StreamTask:
        async with fleet:
            task = await start(fleet)
            waiting = asyncio.create_task(fleet.stop(task, wait=REAL_SECONDS))
            async with asyncio.timeout(REAL_SECONDS):
                while not task.stop_acknowledged:  # journaled and answered; status 14 not yet sent
                    await asyncio.sleep(0.001)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert task.state is TaskState.STOPPING
            assert fleet._waiting == 0  # the cancelled wait let go of its place
            await advance_until(sim, lambda: task.terminal)
            assert (await fleet.stop(task, wait=0.0)) is task  # a stop again: the same, at once
        return task

    task = asyncio.run(run())
    assert task.state is TaskState.STOPPED
    assert_journal_rebuilds(fleet, task)
    assert sim.billing() == []
    sim.close()


class HeldStops:
    """The simulator's transport, whose stops wait at a gate: a stop request still out."""

    def __init__(self, inner: SimTransport) -> None:
        self.inner = inner
        self.out = threading.Event()
        self.gate = threading.Event()

    def start(self, kind: StreamKind, params: Mapping[str, Any]) -> Any:
        return self.inner.start(kind, params)

    def stop(self, kind: StreamKind, task_id: str, *, within: float | None = None) -> StopResult:
        self.out.set()
        assert self.gate.wait(REAL_SECONDS)
        return self.inner.stop(kind, task_id, within=within)

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("wait", [None, REAL_SECONDS])
def test_cancelling_a_stop_while_its_request_is_out_lets_the_answer_land(wait: float | None) -> None:
    sim = MemoriesSim.new()
    transport = HeldStops(sim.transport)
    fleet = AsyncFleet.from_fleet(sim.fleet(THREADED, transport=transport))

    async def run() -> StreamTask:
        async with fleet:
            task = await start(fleet)
            stopping = asyncio.create_task(fleet.stop(task, wait=wait))
            assert await asyncio.to_thread(transport.out.wait, REAL_SECONDS)
            stopping.cancel()
            with pytest.raises(asyncio.CancelledError):
                await stopping
            assert task.state is TaskState.STOPPING  # journaled before the request left
            transport.gate.set()
            async with asyncio.timeout(REAL_SECONDS):
                while not task.stop_acknowledged:  # the answer lands, on the thread that asked
                    await asyncio.sleep(0.001)
            await advance_until(sim, lambda: task.terminal)
        return task

    task = asyncio.run(run())
    assert task.state is TaskState.STOPPED
    assert_journal_rebuilds(fleet, task)
    assert sim.billing() == []
    sim.close()


def test_stop_all_waits_on_the_loop_and_returns_what_is_left() -> None:
    sim = MemoriesSim.new()
    fleet = AsyncFleet.from_fleet(sim.fleet(THREADED))

    async def run() -> tuple[list[StreamTask], list[StreamTask]]:
        async with fleet:
            tasks = [await start(fleet) for _ in range(5)]
            left = await fleet.stop_all(wait=0.05)  # no status 14 without virtual time: all left
            await advance_until(sim, lambda: all(task.terminal for task in tasks))
            return tasks, left

    tasks, left = asyncio.run(run())
    assert {task.ref for task in left} == {task.ref for task in tasks}
    assert all(task.state is TaskState.STOPPED for task in tasks)
    assert sim.billing() == []
    sim.close()


def test_an_async_fleet_serves_one_loop() -> None:
    sim = MemoriesSim.new()
    fleet = AsyncFleet.from_fleet(sim.fleet(THREADED))
    asyncio.run(fleet.tick())
    with pytest.raises(RuntimeError, match="one event loop"):
        asyncio.run(fleet.tick())
    fleet.close()
    sim.close()


def test_recover_takes_back_only_the_share_it_is_given(tmp_path: Path) -> None:
    """``AsyncFleet.recover(only=, parked=)`` as ``Fleet.recover``: of the tasks a dead process left
    in a SQLite file, only those whose row ``only`` accepts, and of the parked callbacks, only
    those whose task_id ``parked`` accepts."""
    sim = MemoriesSim.new()
    path = tmp_path / "streams.db"
    first = sim.fleet(THREADED, store=SqliteStore(path))
    tasks = [first.start("audio", audio_url=URL, provider="assemblyai") for _ in range(3)]
    early = [segment_callback(task_id, 0) for task_id in ("early-1", "early-2")]
    assert [first.handle_callback(callback) for callback in early] == [Outcome.PARKED] * 2
    sim.crash(first)
    fleet = AsyncFleet.from_fleet(sim.fleet(THREADED, store=SqliteStore(path)))
    ours = tasks[1].key

    async def run() -> list[StreamTask]:
        async with fleet:
            return await fleet.recover(
                only=lambda row: row.key == ours, parked=lambda task_id: task_id == "early-2"
            )

    taken = asyncio.run(run())
    assert [task.key for task in taken] == [task.key for task in fleet.fleet.tasks()] == [ours]
    assert fleet.fleet.stats().parked == 1
    assert fleet.fleet.handle_callback(early[1]) is Outcome.PARKED_ALREADY  # the one it took back
    fleet.fleet.close()
    sim.close()
