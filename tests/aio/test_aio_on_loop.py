"""AsyncFleet.handle_callback applies callbacks on the event loop only when nothing of them can
block it: a MemoryStore itself, stops sent by the Fleet's workers, no hooks of the Fleet's own.
Otherwise, a durable store above all, they go to the callbacks lane, off the loop."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamlife import Fleet, ManualClock, OutcomeKind, Policy
from streamlife.aio import LOOP_BATCH, AsyncFleet
from streamlife.errors import CallbackError
from streamlife.protocol import segment_callback
from streamlife.sim import SimTransport, SimulatedService
from streamlife.store import MemoryStore, SqliteStore, Store

THREADED = Policy(stop_concurrency=2)


class Watched:
    """Which thread applied each callback, and in batches of how many."""

    def __init__(self, fleet: Fleet) -> None:
        self.threads: list[int] = []
        self.batches: list[int] = []
        one, many = fleet.handle_callback, fleet.handle_callbacks

        def handle_callback(payload: Any, *, key: str | None = None) -> Any:
            self.threads.append(threading.get_ident())
            self.batches.append(1)
            return one(payload, key=key)

        def handle_callbacks(payloads: Any, *, keys: Any = None) -> Any:
            payloads = list(payloads)
            self.threads += [threading.get_ident()] * len(payloads)
            self.batches.append(len(payloads))
            return many(payloads, keys=keys)

        fleet.handle_callback = handle_callback  # type: ignore[method-assign]
        fleet.handle_callbacks = handle_callbacks  # type: ignore[method-assign]


def made(store: Store | None = None, policy: Policy = THREADED, tasks: int = 2) -> tuple[Fleet, list[str]]:
    clock = ManualClock()
    fleet = Fleet(SimTransport(SimulatedService(clock=clock)), clock=clock, policy=policy, store=store)
    ids = [
        str(fleet.start("audio", audio_url=f"rtmp://example.invalid/{n}", provider="assemblyai").task_id)
        for n in range(tasks)
    ]
    return fleet, ids


def bodies(ids: list[str], per_task: int) -> list[bytes]:
    return [json.dumps(segment_callback(task_id, n)).encode() for n in range(per_task) for task_id in ids]


async def applied(fleet: AsyncFleet, payloads: list[bytes]) -> tuple[list[Any], int]:
    """Every payload handed over in the same turn of the loop; the outcomes, and the loop's thread."""
    outcomes = await asyncio.gather(*(fleet.handle_callback(body) for body in payloads))
    return outcomes, threading.get_ident()


def test_a_memory_store_s_callbacks_are_applied_on_the_loop_in_batches_and_in_order() -> None:
    fleet, ids = made()
    watched = Watched(fleet)
    front = AsyncFleet.from_fleet(fleet)
    outcomes, loop_thread = asyncio.run(applied(front, bodies(ids, 50)))
    assert [outcome.kind for outcome in outcomes] == [OutcomeKind.APPLIED] * 100
    assert set(watched.threads) == {loop_thread}
    assert max(watched.batches) == LOOP_BATCH  # in a row at most that many: the loop serves others between
    assert sum(watched.batches) == 100
    for task in fleet.tasks():
        assert [segment.index for segment in task.transcript] == list(range(50))
    front.close()
    fleet.close()


async def applied_before_the_loop_turned(
    front: AsyncFleet, watched: Watched, payloads: list[bytes]
) -> list[int]:
    """Hand ``payloads`` over in one turn of the loop: the batch sizes applied by the time the loop
    next turned."""
    seen: list[list[int]] = []
    handed = [asyncio.ensure_future(front.handle_callback(body)) for body in payloads]
    # After the calls' first steps, in the same turn: before a turn's end could be.
    asyncio.get_running_loop().call_soon(lambda: seen.append(list(watched.batches)))
    outcomes = await asyncio.gather(*handed)
    assert [outcome.kind for outcome in outcomes] == [OutcomeKind.APPLIED] * len(payloads)
    return seen[0]


def test_a_memory_store_s_first_callback_of_a_turn_is_applied_at_once_the_rest_at_its_end() -> None:
    fleet, ids = made()
    watched = Watched(fleet)
    front = AsyncFleet.from_fleet(fleet)

    async def turns() -> tuple[list[int], list[int]]:
        alone = await applied_before_the_loop_turned(front, watched, bodies(ids[:1], 1))
        watched.batches.clear()
        return alone, await applied_before_the_loop_turned(front, watched, bodies(ids, 3)[1:])

    alone, together = asyncio.run(turns())
    assert alone == [1]
    assert together == [1]  # the first of the turn, alone
    assert watched.batches == [1, 4]  # the four that followed it, together at the turn's end
    for task in fleet.tasks():
        assert [segment.index for segment in task.transcript] == [0, 1, 2]
    front.close()
    fleet.close()


def test_a_payload_that_is_no_callback_raises_on_the_loop_as_in_the_lane() -> None:
    fleet, ids = made()
    front = AsyncFleet.from_fleet(fleet)

    async def both() -> tuple[Any, Any]:
        good = json.dumps(segment_callback(ids[0], 0)).encode()
        return await asyncio.gather(front.handle_callback(b'{"task_id": 7}'), front.handle_callback(good),
                                    return_exceptions=True)  # fmt: skip

    bad, good = asyncio.run(both())
    assert isinstance(bad, CallbackError)
    assert good.kind is OutcomeKind.APPLIED
    front.close()
    fleet.close()


class StallingMemory(MemoryStore):
    """A MemoryStore that may do I/O of its own: a subclass is not known not to block."""


def _sqlite(tmp_path: Path) -> tuple[Fleet, list[str]]:
    return made(SqliteStore(str(tmp_path / "tasks.db")))


def _subclass(tmp_path: Path) -> tuple[Fleet, list[str]]:
    return made(StallingMemory())


def _inline_stops(tmp_path: Path) -> tuple[Fleet, list[str]]:
    return made(policy=Policy(stop_concurrency=0))  # an inferred end's stop would go out on the loop


def _own_hook(tmp_path: Path) -> tuple[Fleet, list[str]]:
    fleet, ids = made()
    fleet.on_segment(lambda task, segment: None)  # runs on the thread applying: never the loop
    return fleet, ids


@pytest.mark.parametrize("making", [_sqlite, _subclass, _inline_stops, _own_hook])
def test_callbacks_that_may_block_are_never_applied_on_the_loop(
    making: Callable[[Path], tuple[Fleet, list[str]]], tmp_path: Path
) -> None:
    fleet, ids = making(tmp_path)
    watched = Watched(fleet)
    front = AsyncFleet.from_fleet(fleet)
    outcomes, loop_thread = asyncio.run(applied(front, bodies(ids, 10)))
    assert [outcome.kind for outcome in outcomes] == [OutcomeKind.APPLIED] * 20
    assert watched.threads, "applied somewhere"
    assert loop_thread not in watched.threads
    front.close()
    fleet.close()


def test_a_hook_of_the_fleet_s_own_added_before_the_turn_sends_its_callbacks_to_the_lane() -> None:
    fleet, ids = made()
    watched = Watched(fleet)
    front = AsyncFleet.from_fleet(fleet)
    heard: list[int] = []

    async def racing() -> int:
        first, second = (
            asyncio.ensure_future(front.handle_callback(json.dumps(segment_callback(task_id, 0)).encode()))
            for task_id in ids
        )
        await asyncio.sleep(0)  # both handed over: the first applied at once, the second's turn not yet
        fleet.on_segment(lambda task, segment: heard.append(threading.get_ident()))
        assert (await first).kind is OutcomeKind.APPLIED
        assert (await second).kind is OutcomeKind.APPLIED
        return threading.get_ident()

    loop_thread = asyncio.run(racing())
    assert len(heard) == 1  # the second's, on the thread that applied it
    assert watched.threads[0] == loop_thread
    assert loop_thread not in heard + watched.threads[1:]
    front.close()
    fleet.close()
