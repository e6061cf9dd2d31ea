"""The receiver's ASGI face over an AsyncFleet: the same answers as over a Fleet, the loop free while
a store write stalls, callbacks queued together applied with one store commit (and, if that commit
fails, one by one, each with its own answer), and the blocking faces served by the Fleet underneath."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from streamlife import Policy, StreamTask, TaskState
from streamlife.aio import AsyncFleet
from streamlife.protocol import segment_callback
from streamlife.sim import SimTransport, SimulatedService
from streamlife.store import MemoryStore, StoreError
from streamlife.webhook import WebhookReceiver
from tests.store.test_store_outage import Outage
from tests.wire.test_handoff import BatchlessStore
from tests.wire.test_webhook import TOKEN, URL, encoded, tid
from tests.wire.test_webhook_asgi import StallingStore, beats_while_the_write_stalls, exchange, until

POLICY = Policy(stop_concurrency=2, seed=0)


def async_fleet(store: MemoryStore, callback_threads: int = 8) -> tuple[AsyncFleet, list[StreamTask]]:
    """An AsyncFleet on the simulator and ``store``, with three running tasks (started before any
    loop, through the Fleet underneath)."""
    fleet = AsyncFleet(
        SimTransport(SimulatedService()), policy=POLICY, store=store, callback_threads=callback_threads
    )
    tasks = [fleet.fleet.start("audio", audio_url=URL, provider="assemblyai") for _ in range(3)]
    assert all(task.state is TaskState.RUNNING for task in tasks)
    return fleet, tasks


class CountingBatches(StallingStore):
    """A StallingStore that counts its batches (one store commit each)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches = 0

    @contextmanager
    def batch(self) -> Iterator[None]:
        self.batches += 1
        with super().batch():
            yield


def test_asgi_awaits_an_async_fleet_with_the_answers_a_fleet_gets() -> None:
    store = MemoryStore()
    fleet, (task, *_) = async_fleet(store)
    receiver = WebhookReceiver(fleet, token=TOKEN)

    async def run() -> list[tuple[int, bytes]]:
        async with fleet:
            answers = [
                await exchange(receiver, [encoded(segment_callback(tid(task), 0))]),
                await exchange(receiver, [encoded(segment_callback(tid(task), 0))]),
                await exchange(receiver, [b"{"]),
                await exchange(receiver, [b"{}"], headers=(("Content-Type", "text/plain"),)),
            ]
        return [(answer.status, answer.body) for answer in answers]

    statuses = [status for status, _ in asyncio.run(run())]
    assert statuses == [200, 200, 400, 415]
    assert task.transcript_text() == "hello there"
    assert len(store.dead_letters()) == 1  # the malformed one, kept
    assert fleet.stats().callbacks["duplicate"] == 1


def test_asgi_answers_503_when_the_async_fleets_store_is_down() -> None:
    store = Outage()
    fleet, (task, *_) = async_fleet(store)
    receiver = WebhookReceiver(fleet, token=TOKEN)
    store.down = True

    async def run() -> int:
        async with fleet:
            return (await exchange(receiver, [encoded(segment_callback(tid(task), 0))])).status

    assert asyncio.run(run()) == 503
    store.down = False
    assert [entry.trigger for entry in store.journal(task.key or "")] == ["start", "start_ok"]  # not kept


def test_asgi_answers_an_async_fleet_s_refusals_from_the_loop_as_from_the_lane() -> None:
    """An AsyncFleet that applies callbacks on the loop (a MemoryStore's) hands the ASGI face each
    error as a result: a store that is down is 503, a payload that is no callback 400, and nothing
    went to a thread."""
    store = MemoryStore()
    front, (task, *_) = async_fleet(store)
    receiver = WebhookReceiver(front, token=TOKEN)
    lock = store.lock

    def down(key: str) -> Any:
        raise StoreError("the store is down (a test)")

    applied_on: set[int] = set()
    one, many = front.fleet.handle_callback, front.fleet.handle_callbacks

    def watched_one(payload: Any, **key: Any) -> Any:
        applied_on.add(threading.get_ident())
        return one(payload, **key)

    def watched_many(payloads: Any, **keys: Any) -> Any:
        applied_on.add(threading.get_ident())
        return many(payloads, **keys)

    front.fleet.handle_callback = watched_one  # type: ignore[method-assign]
    front.fleet.handle_callbacks = watched_many  # type: ignore[method-assign]

    async def run() -> tuple[list[int], int]:
        async with front:
            store.lock = down  # type: ignore[method-assign]  # (on the instance: still a MemoryStore)
            refused = await exchange(receiver, [encoded(segment_callback(tid(task), 0))])
            store.lock = lock  # type: ignore[method-assign]
            malformed = await exchange(receiver, [b'{"data": 1}'])
            kept = await exchange(receiver, [encoded(segment_callback(tid(task), 0))])
        return [refused.status, malformed.status, kept.status], threading.get_ident()

    statuses, loop_thread = asyncio.run(run())
    assert statuses == [503, 400, 200]
    assert applied_on == {loop_thread}
    assert task.transcript_text() == "hello there"


def test_the_loop_runs_on_while_an_async_fleets_write_stalls() -> None:
    store = StallingStore()
    fleet, (task, *_) = async_fleet(store)
    receiver = WebhookReceiver(fleet, token=TOKEN)
    store.stalling = True

    async def run() -> int:
        async with fleet:
            body = encoded(segment_callback(tid(task), 0))
            return await beats_while_the_write_stalls(receiver, body, store)

    assert asyncio.run(run()) >= 3
    assert store.released_in_time
    assert task.transcript_text() == "hello there"


def test_callbacks_queued_behind_a_stalled_write_share_one_commit() -> None:
    store = CountingBatches()
    fleet, tasks = async_fleet(store, callback_threads=1)
    receiver = WebhookReceiver(fleet, token=TOKEN)
    bodies = [encoded(segment_callback(tid(task), index)) for index in range(4) for task in tasks]

    async def run() -> list[int]:
        async with fleet:
            store.stalling = True
            first = asyncio.create_task(exchange(receiver, [bodies[0]]))
            await until(store.writing.is_set)  # the one thread waits in the first write
            store.stalling = False
            rest = [asyncio.create_task(exchange(receiver, [body])) for body in bodies[1:]]
            await asyncio.sleep(0.05)  # every one of them queued behind it
            store.release.set()
            answers = [await first, *[await answer for answer in rest]]
        return [answer.status for answer in answers]

    assert asyncio.run(run()) == [200] * len(bodies)
    assert store.batches == 1  # the eleven queued ones: one batch, one commit
    assert all(task.transcript_text() == " ".join(["hello there"] * 4) for task in tasks)


def test_a_batch_the_store_refuses_is_applied_one_by_one_through_an_async_fleet() -> None:
    store = BatchlessStore()
    fleet, tasks = async_fleet(store, callback_threads=1)
    bodies = [encoded(segment_callback(tid(task), 0)) for task in tasks] + [b"{"]
    gate = threading.Event()

    async def run() -> list[object]:
        async with fleet:
            # The one thread is held, so that the four queue up together behind it.
            held = asyncio.create_task(fleet._callbacks.call(gate.wait))
            calls = [asyncio.create_task(fleet.handle_callback(body)) for body in bodies]
            await asyncio.sleep(0.05)
            gate.set()
            await held
            return list(await asyncio.gather(*calls, return_exceptions=True))

    results = asyncio.run(run())
    assert [getattr(result, "kind", None) for result in results[:3]] == ["applied"] * 3
    assert type(results[3]).__name__ == "CallbackError"  # raised for its own call only
    assert all(task.transcript_text() == "hello there" for task in tasks)


def test_the_blocking_faces_over_an_async_fleet_call_the_fleet_underneath() -> None:
    fleet, (task, *_) = async_fleet(MemoryStore())
    receiver = WebhookReceiver(fleet, token=TOKEN)
    assert receiver.sink is fleet.fleet
    response = receiver.handle(encoded(segment_callback(tid(task), 0)), {}, f"/hooks/{TOKEN}")
    assert response.status == 200
    assert task.transcript_text() == "hello there"
    fleet.close()
