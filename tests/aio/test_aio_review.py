"""AsyncFleet under adversarial use: a shared store's wait while other tasks settle; what a closed
AsyncFleet leaves in the Fleet it fronted; the hooks of whatever is under way when it closes
(callbacks, stop answers, the stops its last hooks ask for); a hook's own CancelledError; a start
whose await is cancelled; a request answered while its thread takes the next; each task's hooks
in journal order under concurrent callbacks; closing twice; timers outliving the AsyncFleet."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from streamlife import (
    HistoryEntry,
    MisroutedCallbackError,
    OutcomeKind,
    Policy,
    Segment,
    StreamKind,
    StreamTask,
    TaskState,
)
from streamlife._events import StopResult
from streamlife._handoff import Handoff
from streamlife.aio import AsyncFleet
from streamlife.fleet import Fleet
from streamlife.protocol import segment_callback, status_callback
from streamlife.sim import SimTransport, SimulatedService
from streamlife.store import MemoryStore, SqliteStore
from streamlife.testing import MemoriesSim
from tests.wire.test_webhook_asgi import StallingStore

URL = "rtmp://sim.invalid/live"
REAL_SECONDS = 30.0  # a wait no step of these tests comes near, unless something hangs


def test_a_wait_on_a_shared_store_reads_it_while_other_tasks_keep_settling() -> None:
    """The status 14 reaches another process; meanwhile this process's other tasks settle more
    often than ``shared_poll``. The wait must still read the store every ``shared_poll``, as
    ``Fleet.stop(wait=)`` does, not only after a ``shared_poll`` in which nothing else settled."""
    sim = MemoriesSim.new()
    store = MemoryStore(shared=True)
    poll = 0.5
    here = Fleet(
        sim.transport,
        clock=sim.clock,
        policy=Policy(seed=0, stop_concurrency=2, shared_poll=poll),
        store=store,
    )
    there = sim.fleet(Policy(seed=0, stop_concurrency=0), store=store)  # hears the callbacks
    fleet = AsyncFleet.from_fleet(here)
    heard_there = threading.Event()
    seen: list[bool] = []

    def settle_others(task: StreamTask) -> None:
        """Settle one task of this process after another, for ten polls after the status 14 was
        heard there: the wait sees the store long before, while they are still settling."""
        assert heard_there.wait(REAL_SECONDS)
        until = time.monotonic() + 10 * poll
        while time.monotonic() < until and not task.terminal:
            other = here.start("audio", audio_url=URL, provider="assemblyai")
            here.stop(other)
            here.handle_callback(status_callback(other.task_id or "", 14))
            assert other.terminal
        seen.append(task.terminal)

    async def run() -> StreamTask:
        async with fleet:
            task = await fleet.start("audio", audio_url=URL, provider="assemblyai")
            waiting = asyncio.create_task(fleet.stop(task, wait=REAL_SECONDS))
            async with asyncio.timeout(REAL_SECONDS):
                while not task.stop_acknowledged:
                    await asyncio.sleep(0.001)
            settling = asyncio.create_task(asyncio.to_thread(settle_others, task))
            there.handle_callback(status_callback(task.task_id or "", 14))
            heard_there.set()
            await settling
            return await waiting

    task = asyncio.run(run())
    assert seen == [True], "the wait did not read the store while other tasks were settling"
    assert task.state is TaskState.STOPPED
    sim.close()
    here.close()


def test_an_async_fleet_closed_in_front_of_a_fleet_is_let_go() -> None:
    """``from_fleet``'s Fleet outlives it (``serve``, or one AsyncFleet per event loop): once
    closed, the AsyncFleet must leave nothing in the Fleet that keeps it, or that every later event
    adds to (its hook queue, which no loop takes any more)."""
    sim = MemoriesSim.new()
    underneath = sim.fleet(Policy(seed=0, stop_concurrency=2))
    heard: list[str] = []
    gone = []
    for _ in range(3):  # one AsyncFleet after another, as asyncio.run after asyncio.run
        fleet = AsyncFleet.from_fleet(underneath)
        fleet.on_transition(lambda task, entry: heard.append(entry.trigger))
        fleet.on_segment(lambda task, segment: None)

        async def run(fleet: AsyncFleet = fleet) -> None:
            async with fleet:
                await fleet.start("audio", audio_url=URL, provider="assemblyai")

        asyncio.run(run())
        gone.append(weakref.ref(fleet))
        del fleet, run
    for _ in range(2):  # the Fleet goes on, on its own
        task = underneath.start("audio", audio_url=URL, provider="assemblyai")
        sim.advance(12.0)
        underneath.stop(task)
        sim.advance(10.0)
        assert task.terminal
    gc.collect()
    assert [ref() for ref in gone] == [None, None, None]
    assert heard == ["start", "start_ok"] * 3  # and none of the Fleet's own later events
    underneath.close()
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


def test_closing_hears_the_answers_of_the_stops_it_waits_for() -> None:
    """``aclose`` waits for the stop requests in flight: the events their answers apply are
    journaled then, and their hooks run before it returns, as every applied event's do."""
    sim = MemoriesSim.new()
    transport = HeldStops(sim.transport)
    fleet = AsyncFleet(transport, clock=sim.clock, policy=Policy(seed=0, stop_concurrency=2))
    sim.service.on_callback(fleet.fleet.handle_callback)
    heard: list[str] = []

    @fleet.on_transition
    async def transition(task: StreamTask, entry: HistoryEntry) -> None:
        heard.append(entry.trigger)

    async def run() -> StreamTask:
        async with fleet:
            task = await fleet.start("audio", audio_url=URL, provider="assemblyai")
            waiting = asyncio.create_task(fleet.stop(task, wait=REAL_SECONDS))
            assert await asyncio.to_thread(transport.out.wait, REAL_SECONDS)
            waiting.cancel()  # the request is out, with a worker
            threading.Timer(0.05, transport.gate.set).start()  # answered while closing
        return task

    task = asyncio.run(run())
    assert task.stop_acknowledged
    assert heard == [entry.trigger for entry in task.history if entry.outcome.kind is OutcomeKind.APPLIED]
    assert heard[-1] == "stop_ok"
    sim.close()


def test_closing_waits_for_the_stops_its_last_hooks_ask_for() -> None:
    """A hook run while closing (here, on a stop's answer) may stop another task: its request goes
    out before ``aclose`` returns, and leaves no stop worker behind."""
    sim = MemoriesSim.new()
    transport = HeldStops(sim.transport)
    transport.gate.set()
    fleet = AsyncFleet(transport, clock=sim.clock, policy=Policy(seed=0, stop_concurrency=2))
    sim.service.on_callback(fleet.fleet.handle_callback)
    tasks: list[StreamTask] = []

    @fleet.on_transition
    async def stop_the_next(task: StreamTask, entry: HistoryEntry) -> None:
        if entry.trigger == "stop_ok" and task is tasks[0]:
            await fleet.stop(tasks[1], wait=0.5)  # handed to a stop worker

    before = set(threading.enumerate())

    async def run() -> None:
        async with fleet:
            tasks.extend([await fleet.start("audio", audio_url=URL, provider="assemblyai") for _ in range(2)])
            transport.gate.clear()
            waiting = asyncio.create_task(fleet.stop(tasks[0], wait=REAL_SECONDS))
            assert await asyncio.to_thread(transport.out.wait, REAL_SECONDS)
            waiting.cancel()
            threading.Timer(0.05, transport.gate.set).start()  # answered while closing

    asyncio.run(run())
    assert [task.stop_acknowledged for task in tasks] == [True, True]
    workers = {thread.name for thread in set(threading.enumerate()) - before}
    assert {name for name in workers if name.startswith("streamlife-stop")} == set()
    sim.close()


def test_a_hook_that_awaits_something_cancelled_is_logged_and_the_next_hooks_run() -> None:
    """A hook may await a task someone else cancelled: the CancelledError it raises is its own
    failure, not the dispatcher's cancellation, and must not end every later hook call."""
    sim = MemoriesSim.new()
    fleet = AsyncFleet.from_fleet(sim.fleet(Policy(seed=0, stop_concurrency=2)))
    heard: list[str] = []

    @fleet.on_transition
    async def awaits_a_cancelled_task(task: StreamTask, entry: HistoryEntry) -> None:
        if entry.trigger == "start":
            other = asyncio.create_task(asyncio.sleep(REAL_SECONDS))
            await asyncio.sleep(0)
            other.cancel()
            await other
        heard.append(entry.trigger)

    async def run() -> None:
        async with fleet:
            await fleet.start("audio", audio_url=URL, provider="assemblyai")

    with capture_logs() as logs:
        asyncio.run(run())
    assert heard == ["start_ok"]
    failed = [log["hook"] for log in logs if log["event"] == "streamlife.hook_failed"]
    assert failed == [awaits_a_cancelled_task.__qualname__]
    sim.close()


class HeldStarts(HeldStops):
    """The simulator's transport, whose starts wait at a gate (its stops do not)."""

    def start(self, kind: StreamKind, params: Mapping[str, Any]) -> Any:
        self.out.set()
        assert self.gate.wait(REAL_SECONDS)
        return self.inner.start(kind, params)

    def stop(self, kind: StreamKind, task_id: str, *, within: float | None = None) -> StopResult:
        return self.inner.stop(kind, task_id, within=within)


def test_a_start_whose_await_is_cancelled_is_journaled_and_stopped_by_stop_all() -> None:
    """Cancelling ``await fleet.start(...)`` while its request is out cancels the await only: the
    task is the Fleet's, journaled, and ``stop_all`` stops the stream it started."""
    sim = MemoriesSim.new()
    transport = HeldStarts(sim.transport)
    fleet = AsyncFleet.from_fleet(sim.fleet(Policy(seed=0, stop_concurrency=2), transport=transport))

    async def run() -> list[StreamTask]:
        async with fleet:
            starting = asyncio.create_task(fleet.start("audio", audio_url=URL, provider="assemblyai"))
            assert await asyncio.to_thread(transport.out.wait, REAL_SECONDS)
            starting.cancel()
            transport.gate.set()
            with pytest.raises(asyncio.CancelledError):
                await starting
            async with asyncio.timeout(REAL_SECONDS):
                while not fleet.tasks(TaskState.RUNNING):  # its answer lands all the same
                    await asyncio.sleep(0.001)
            (task,) = fleet.tasks()
            assert [entry.trigger for entry in await fleet.journal(task)] == ["start", "start_ok"]
            assert await fleet.stop_all() == [task]
            await asyncio.to_thread(sim.advance, 10.0)
            return fleet.tasks()

    (task,) = asyncio.run(run())
    assert task.state is TaskState.STOPPED
    assert sim.billing() == []
    sim.close()


class GatedStarts(HeldStops):
    """The simulator's transport, each start waiting at a gate of its own, in the order they come."""

    def __init__(self, inner: SimTransport, gates: int) -> None:
        super().__init__(inner)
        self.gates = [threading.Event() for _ in range(gates)]
        self.arrived = [threading.Event() for _ in range(gates)]
        self._count = 0
        self._lock = threading.Lock()

    def start(self, kind: StreamKind, params: Mapping[str, Any]) -> Any:
        with self._lock:
            n, self._count = self._count, self._count + 1
        self.arrived[n].set()
        assert self.gates[n].wait(REAL_SECONDS)
        return self.inner.start(kind, params)


def test_a_request_answered_returns_without_waiting_for_the_next_one_its_thread_takes() -> None:
    """A thread of the requests lane that has answered one call and takes the next one queued (a
    start, which waits on the network) must hand the first answer back at once, not after the
    second is answered too: a stop's await would otherwise wait for the starts queued behind it."""
    sim = MemoriesSim.new()
    transport = GatedStarts(sim.transport, 2)
    fleet = AsyncFleet.from_fleet(
        sim.fleet(Policy(seed=0, stop_concurrency=2), transport=transport), threads=1
    )

    async def run() -> None:
        async with fleet:
            first = asyncio.create_task(fleet.start("audio", audio_url=URL, provider="assemblyai"))
            assert await asyncio.to_thread(transport.arrived[0].wait, REAL_SECONDS)
            second = asyncio.create_task(fleet.start("audio", audio_url=URL, provider="assemblyai"))
            await asyncio.sleep(0)  # (its call queued behind the first, on the lane's one thread)
            transport.gates[0].set()
            assert await asyncio.to_thread(transport.arrived[1].wait, REAL_SECONDS)
            async with asyncio.timeout(REAL_SECONDS):
                task = await first  # answered: the second start is still out
            assert task.state is TaskState.RUNNING
            assert not second.done()
            transport.gates[1].set()
            await second

    asyncio.run(run())
    sim.close()


def test_each_tasks_hooks_run_in_the_order_of_its_journal_under_concurrent_callbacks(tmp_path: Path) -> None:
    """Callbacks for many tasks at once, through the callbacks lane (batched, on an SQLite file), a
    task's own in parallel too: each task's hooks run in the order its journal holds its events."""
    sim = MemoriesSim.new()
    store = SqliteStore(tmp_path / "order.db")
    fleet = AsyncFleet.from_fleet(
        sim.fleet(Policy(seed=0, stop_concurrency=2), store=store), callback_threads=4
    )
    heard: dict[str, list[tuple[str, int | None]]] = {}

    @fleet.on_transition
    async def transition(task: StreamTask, entry: HistoryEntry) -> None:
        await asyncio.sleep(0)  # (were hooks run side by side, this would let others overtake it)
        heard.setdefault(task.key or "", []).append((entry.trigger, None))

    @fleet.on_segment
    def segment(task: StreamTask, segment: Segment) -> None:
        heard.setdefault(task.key or "", []).append(("segment", segment.index))

    async def run() -> list[StreamTask]:
        async with fleet:
            tasks = list(
                await asyncio.gather(
                    *(fleet.start("audio", audio_url=URL, provider="assemblyai") for _ in range(12))
                )
            )
            await asyncio.gather(
                *(
                    fleet.handle_callback(segment_callback(task.task_id or "", index, f"w{index}"))
                    for index in range(8)
                    for task in tasks
                )
            )
            await asyncio.gather(
                *(fleet.handle_callback(status_callback(task.task_id or "", 14)) for task in tasks)
            )
            return tasks

    tasks = asyncio.run(run())
    for task in tasks:
        journal = fleet.store.journal(task.key or "")
        expected = [(entry.trigger, (entry.args or {}).get("segment", {}).get("index")) for entry in journal]
        assert [trigger for trigger, _ in expected].count("segment") == 8
        assert heard[task.key or ""] == expected
        assert task.state is TaskState.STOPPED
    store.close()
    sim.close()


def test_closing_makes_the_hooks_of_a_callback_it_finds_being_applied() -> None:
    """A callback handed to the callbacks lane before ``aclose`` and journaled while it runs: its
    hooks run before ``aclose`` returns, as every journaled event's do."""
    store = StallingStore()
    fleet = AsyncFleet(
        SimTransport(SimulatedService()), policy=Policy(seed=0, stop_concurrency=2), store=store
    )
    task = fleet.fleet.start("audio", audio_url=URL, provider="assemblyai")
    heard: list[int] = []
    fleet.on_segment(lambda task, segment: heard.append(segment.index))

    async def run() -> OutcomeKind:
        async with fleet:
            store.stalling = True
            applying = asyncio.create_task(fleet.handle_callback(segment_callback(task.task_id or "", 0)))
            assert await asyncio.to_thread(store.writing.wait, REAL_SECONDS)
            threading.Timer(0.05, store.release.set).start()  # journaled while closing
        assert heard == [0]
        return (await applying).kind

    assert asyncio.run(run()) is OutcomeKind.APPLIED
    assert store.released_in_time


def test_every_wait_for_an_idle_lane_ends_when_its_calls_are_handed_back() -> None:
    """Two waits for a lane's calls at once (two ``aclose`` racing) both end with its last call."""
    lane = Handoff(1, "review-lane")
    gate = threading.Event()

    async def run() -> None:
        call = asyncio.create_task(lane.call(gate.wait, REAL_SECONDS))
        await asyncio.sleep(0)  # (handed over)
        waits = [asyncio.create_task(lane.idle()) for _ in range(2)]
        await asyncio.sleep(0)  # (both waiting)
        gate.set()
        async with asyncio.timeout(REAL_SECONDS):
            await asyncio.gather(call, *waits)

    asyncio.run(run())
    lane.close()


def test_closing_twice_is_closing_once() -> None:
    """``aclose`` inside ``async with`` (or ``close`` then ``aclose``): the second does nothing."""
    sim = MemoriesSim.new()
    fleet = AsyncFleet(sim.transport, clock=sim.clock, policy=Policy(seed=0, stop_concurrency=2))
    other = AsyncFleet(sim.transport, clock=sim.clock, policy=Policy(seed=0, stop_concurrency=2))

    async def run() -> None:
        async with fleet:
            await fleet.start("audio", audio_url=URL, provider="assemblyai")
            await fleet.aclose()
        await other.tick()
        other.close()
        await other.aclose()

    asyncio.run(run())
    sim.close()


def test_timers_run_around_the_async_fleet_stop_when_their_block_ends() -> None:
    """``run_timers()``'s block outliving the AsyncFleet's (closed inside it): leaving the block
    still stops the timer thread, which would tick on for good."""
    sim = MemoriesSim.new()
    fleet = AsyncFleet(sim.transport, clock=sim.clock, policy=Policy(seed=0, stop_concurrency=2))
    before = set(threading.enumerate())

    async def run() -> None:
        async with fleet.run_timers(interval=0.01), fleet:
            await fleet.start("audio", audio_url=URL, provider="assemblyai")

    asyncio.run(run())
    timers = [thread for thread in set(threading.enumerate()) - before if thread.name == "streamlife-timers"]
    assert timers == []
    sim.close()


def test_an_empty_key_is_routed_on_the_loop_as_the_fleet_routes_it() -> None:
    # A MemoryStore's callbacks are applied on the loop: an empty key is a key there too.
    sim = SimulatedService()

    async def main() -> None:
        fleet = AsyncFleet(SimTransport(sim), clock=sim.clock, policy=Policy(seed=0, stop_concurrency=2))
        async with fleet:
            task = await fleet.start("audio", audio_url="rtmp://sim.invalid/live", provider="assemblyai")
            payload = json.dumps(segment_callback(task.task_id or "", 0)).encode()
            with pytest.raises(MisroutedCallbackError):
                await fleet.handle_callback(payload, key="")
            assert len(task.transcript) == 0

    asyncio.run(main())
