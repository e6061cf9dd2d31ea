"""A task named by its own callback URL in one process, on a store another process shares
(PostgreSQL, or one SQLite file): the receiver of any process routes by the URL's key, the name
and the stop it owes are journaled, and every process reads the same task back. And a store that
keeps the name but not the result that brought it: the stop owed goes out all the same."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from streamlife import CallbackUrls, Fleet, ManualClock, Policy, StreamKind, TaskState
from streamlife._events import StartResult, StopResult
from streamlife._journal import rebuild
from streamlife.errors import OutcomeUnknownError, StoreError
from streamlife.protocol import understand_result
from tests.conftest import state_of
from tests.fleet.conftest import opened
from tests.fleet.test_fleet_shared_store import FlakyStore

TOKEN = "shared-task-url-token-0123456789"
URLS = CallbackUrls("https://hooks.example.invalid/memories", token=TOKEN)
POLICY = Policy(stop_concurrency=0, seed=0)


class LostAnswers:
    """Live Video Understanding whose start answers are all lost; its stops are final."""

    def __init__(self) -> None:
        self.stops: list[str] = []

    def start(self, kind: StreamKind, params: Mapping[str, Any]) -> StartResult:
        raise OutcomeUnknownError("no answer within the read timeout", operation="understand.start")

    def stop(self, kind: StreamKind, task_id: str, *, within: float | None = None) -> StopResult:
        self.stops.append(task_id)
        return StopResult(task_id, final=True)

    def close(self) -> None:
        pass


def test_a_task_named_in_another_process_is_stopped_there_and_read_back_alike(store_url: str) -> None:
    first, second = LostAnswers(), LostAnswers()
    with opened(store_url) as store_a, opened(store_url) as store_b, opened(store_url) as store_c:
        a = Fleet(first, policy=POLICY, store=store_a, callback_urls=URLS)
        task = a.start("understand", url="rtmp://sim.invalid/live/k", user_prompt="Describe it")
        a.stop(task)  # remembered: its answer was lost, so no task_id to stop
        assert (task.state, task.stop_requested) == (TaskState.UNCERTAIN, True)
        assert task.key is not None

        # The result comes to the other process's receiver, by the task's own URL.
        b = Fleet(second, policy=POLICY, store=store_b, callback_urls=URLS)
        payload = json.dumps(understand_result("u-1", "a person walks in", "2026-12-05T19:00:05Z"))
        outcome = b.handle_callback(payload, key=task.key)
        assert outcome.kind.value == "applied"
        there = b.get("u-1")
        assert there is not None
        assert there.state is TaskState.STOPPED  # named, and the stop it owed went out from there
        assert (second.stops, first.stops) == (["u-1"], [])

        here = a.get("u-1")  # the first process catches up with what the other applied
        assert here is task
        assert (task.state, task.task_id) == (TaskState.STOPPED, "u-1")
        assert [segment.text for segment in task.transcript] == ["a person walks in"]

        row = store_c.row(task.key)
        assert row is not None
        journal = store_c.journal(task.key)
        assert [entry.trigger for entry in journal] == [
            "start",
            "start_unknown",
            "stop",
            "named",
            "segment",
            "stop",
            "stop_confirmed",
        ]
        again = rebuild(row, journal, clock=a.clock)
        assert (again.state, again.task_id, again.started_at) == (task.state, "u-1", task.started_at)
        assert again.transcript_text() == task.transcript_text()
        assert Fleet(LostAnswers(), policy=POLICY, store=store_c).recover() == []  # nothing left owed


def test_a_stop_asked_for_before_the_name_goes_out_though_the_result_that_named_it_was_not_kept() -> None:
    store = FlakyStore()
    store.fail_when = lambda entry: entry.trigger == "segment"
    service = LostAnswers()
    clock = ManualClock(1_700_000_000.0)
    fleet = Fleet(service, clock=clock, policy=POLICY, store=store, callback_urls=URLS)
    task = fleet.start("understand", url="rtmp://sim.invalid/live/k", user_prompt="Describe it")
    fleet.stop(task)
    payload = json.dumps(understand_result("u-1", "a person walks in", "2026-12-05T19:00:05Z"))
    with pytest.raises(StoreError):  # the receiver answers 503: the result is delivered again
        fleet.handle_callback(payload, key=task.key)
    assert (task.state, task.task_id) == (TaskState.STOPPING, "u-1")  # named, and its stop journaled
    clock.advance(1.0)
    fleet.tick()
    assert service.stops == ["u-1"]
    assert state_of(task) is TaskState.STOPPED
