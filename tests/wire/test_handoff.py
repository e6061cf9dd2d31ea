"""Callbacks handed from the event loop to threads and back (``_handoff``), and applied together
(``WebhookReceiver.apply_many``): every request answered as it would be alone, and to its own
awaiter."""

from __future__ import annotations

import asyncio
import contextvars
import json
import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamlife import Fleet, ManualClock, Policy
from streamlife._handoff import Handoff
from streamlife.errors import StoreError
from streamlife.protocol import segment_callback
from streamlife.sim import SimTransport, SimulatedService
from streamlife.store import MemoryStore
from streamlife.webhook import WebhookReceiver

TOKEN = "handoff-token-0123456789abcdef"
JSON = {"content-type": "application/json"}


def twin(store: MemoryStore | None = None) -> tuple[Fleet, list[str]]:
    """A Fleet with two running tasks; two twins have the same task_ids."""
    clock = ManualClock()
    fleet = Fleet(
        SimTransport(SimulatedService(clock=clock)),
        clock=clock,
        policy=Policy(stop_concurrency=0),
        store=store,
    )
    ids = [
        str(fleet.start("audio", audio_url=f"rtmp://example.invalid/{n}", provider="assemblyai").task_id)
        for n in range(2)
    ]
    return fleet, ids


def request_for(
    kind: str, task: int, index: int, final: bool, ids: list[str]
) -> tuple[bytes, dict[str, str]]:
    if kind == "malformed":
        return b'{"task_id": 7}', JSON
    if kind == "not-json":
        return b"{}", {"content-type": "text/plain"}
    task_id = ids[task] if kind == "known" else "nobody-started-this-task"
    return json.dumps(segment_callback(task_id, index, final=final)).encode(), JSON


requests = st.lists(
    st.tuples(
        st.sampled_from(["known", "known", "known", "unknown", "malformed", "not-json"]),
        st.integers(0, 1),
        st.integers(0, 3),
        st.booleans(),
    ),
    min_size=0,
    max_size=12,
)


@given(requests)
def test_applied_together_each_request_is_answered_as_alone(drawn: list[tuple[str, int, int, bool]]) -> None:
    alone, ids = twin()
    together, same_ids = twin()
    assert ids == same_ids
    made = [request_for(*spec, ids) for spec in drawn]
    one_by_one = WebhookReceiver(alone, token=TOKEN)
    at_once = WebhookReceiver(together, token=TOKEN)
    assert at_once.apply_many(made) == [one_by_one.apply(body, headers) for body, headers in made]
    assert [task.history[-1:] for task in together.tasks()] == [task.history[-1:] for task in alone.tasks()]


class BatchlessStore(MemoryStore):
    """Fails every batch, as a store whose transaction cannot commit; single writes go through."""

    def batch(self) -> Any:  # (never a context: it raises at once)
        raise StoreError("the batch could not commit")


def test_a_batch_the_store_refuses_is_applied_one_by_one_each_with_its_own_answer() -> None:
    fleet, ids = twin(BatchlessStore())
    receiver = WebhookReceiver(fleet, token=TOKEN)
    made = [request_for("known", 0, 0, True, ids), request_for("known", 1, 0, True, ids)]
    made.append(request_for("malformed", 0, 0, True, ids))
    answers = receiver.apply_many(made)
    assert [answer.status for answer in answers] == [200, 200, 400]
    assert [answer.json["outcome"] for answer in answers[:2]] == ["applied", "applied"]


# -- the hand-off ---------------------------------------------------------------------------------------
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


def test_each_call_gets_its_own_result_or_error_in_its_own_context() -> None:
    handoff = Handoff(3, "test-handoff")

    def work(n: int) -> tuple[int, str]:
        if n % 5 == 0:
            raise ValueError(f"call {n} fails")
        return n * 2, request_id.get()

    async def one(n: int) -> Any:
        request_id.set(f"request-{n}")
        try:
            return await handoff.call(work, n)
        except ValueError as error:
            return str(error)

    async def every() -> list[Any]:
        return await asyncio.gather(*(one(n) for n in range(1, 200)))

    results = asyncio.run(every())
    for n, result in enumerate(results, start=1):
        assert result == (f"call {n} fails" if n % 5 == 0 else (n * 2, f"request-{n}"))


def test_calls_queued_together_are_made_as_one_when_they_say_how() -> None:
    handoff = Handoff(1, "test-handoff-many")
    gate = threading.Event()
    batches: list[list[Any]] = []

    def hold() -> None:
        gate.wait(10)

    def one(n: int) -> int:
        return -n

    def many(calls: list[tuple[Any, ...]]) -> list[int]:
        batches.append([args[0] for args in calls])
        return [args[0] * 10 for args in calls]

    async def run() -> list[Any]:
        held = asyncio.ensure_future(handoff.call(hold))
        await asyncio.sleep(0)  # the only thread takes it, and waits
        calls = [asyncio.ensure_future(handoff.call(one, n, many=many)) for n in range(1, 6)]
        await asyncio.sleep(0)  # all five queued behind it (each puts its call when it starts)
        gate.set()
        await held
        return list(await asyncio.gather(*calls))

    assert asyncio.run(run()) == [10, 20, 30, 40, 50]
    assert batches == [[1, 2, 3, 4, 5]]


def test_a_failed_many_fails_each_of_its_calls() -> None:
    handoff = Handoff(1, "test-handoff-fail")
    gate = threading.Event()

    def many(calls: list[tuple[Any, ...]]) -> list[int]:
        raise StoreError("down")

    async def run() -> list[Any]:
        held = asyncio.ensure_future(handoff.call(gate.wait, 10))
        await asyncio.sleep(0)
        calls = [asyncio.ensure_future(handoff.call(int, n, many=many)) for n in range(3)]
        await asyncio.sleep(0)
        gate.set()
        await held
        return list(await asyncio.gather(*calls, return_exceptions=True))

    results = asyncio.run(run())
    assert len(results) == 3
    assert all(isinstance(result, StoreError) for result in results)


def test_threads_must_be_one_or_more() -> None:
    with pytest.raises(ValueError, match="1 or more"):
        Handoff(0, "none")


def test_the_first_call_starts_one_thread_on_the_loop_whatever_the_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Starting a thread waits until it runs, which takes milliseconds when other threads hold the
    interpreter: a lane of 16 threads started on the loop blocked it that long 16 times over, in
    the burst of a first start. One thread on the loop starts the rest."""
    started_on: list[int] = []
    start = threading.Thread.start

    def noted(thread: threading.Thread) -> None:
        started_on.append(threading.get_ident())
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", noted)
    handoff = Handoff(16, "test-handoff")

    async def first() -> tuple[int, int]:
        loop_thread = threading.get_ident()
        result = await handoff.call(lambda: 7)
        return loop_thread, result

    loop_thread, result = asyncio.run(first())
    handoff.close()
    assert result == 7
    assert started_on.count(loop_thread) == 1
