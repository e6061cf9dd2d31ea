"""The Fleet, one rule at a time: plain examples against the simulator, each readable as documentation.

Each test builds a ``Rig`` (tests/conftest.py): a simulator of streamlife's pytest plugin whose
faults are switched fully on or off, and a Fleet on it with small timeouts. ``r.sim.advance(n)``
lets n virtual seconds pass, one at a time, the Fleet ticking after each (one reaper pass a
second). The tests assert what the tasks say (state, flags, history) and what the simulator's
ledger says: which streams still bill, and which stops the service was asked for.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest
from structlog.testing import capture_logs

from streamlife import (
    DEFAULT_STATUSES,
    CallbackError,
    Fleet,
    HistoryEntry,
    ManualClock,
    Orphan,
    Outcome,
    Policy,
    Segment,
    StreamKind,
    StreamTask,
    TaskState,
    UnknownTaskError,
)
from streamlife._events import StartResult, StopResult
from streamlife._journal import rebuild
from streamlife.errors import ParkingFullError, RateLimitedError, StopAllError, StoreError
from streamlife.protocol import SEGMENT_SECONDS, segment_callback, status_callback
from streamlife.sim import Faults, SimTransport, SimulatedService
from streamlife.sim._records import SOURCE_ENDED
from streamlife.store import MemoryStore, TaskRow
from streamlife.transport import HttpTransport, Transport
from tests.conftest import POLICY, URL, rig, state_of
from tests.scripted_server import ScriptedServer, Stall, Step, error, ok, scripted_server

# The rig's timeouts, by name, so that each test's timeline reads at a glance.
PARK_TTL = POLICY.park_ttl
UNCERTAIN_TTL = POLICY.uncertain_ttl
FINAL_CALLBACK_WAIT = POLICY.final_callback_wait
SILENCE_AFTER = POLICY.silence_after
STOP_RETRY_CAP = POLICY.stop_retry_cap


def tid(task: StreamTask) -> str:
    assert task.task_id is not None, f"{task!r} has no task_id"
    return task.task_id


def error_of(task: StreamTask) -> str:
    assert task.last_error is not None, f"{task!r} has no last_error"
    return task.last_error


def stalled(task: StreamTask) -> bool:
    """The flag, read through a call so that mypy forgets what an earlier assert narrowed."""
    return task.stalled


def triggers(task: StreamTask) -> list[str]:
    return [entry.trigger for entry in task.history]


def last(task: StreamTask, trigger: str) -> HistoryEntry:
    """The task's latest history entry for ``trigger``."""
    found: HistoryEntry = next(entry for entry in reversed(task.history) if entry.trigger == trigger)
    return found


def wait_until(condition: Callable[[], bool], timeout: float = 2.0) -> bool:
    """Poll ``condition`` for up to ``timeout`` real seconds; say whether it came true."""
    give_up_at = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > give_up_at:
            return False
        time.sleep(0.005)
    return True


@contextmanager
def http_fleet(clock: ManualClock, *script: Step) -> Iterator[tuple[ScriptedServer, Fleet]]:
    """A Fleet on HttpTransport, against a loopback server that answers from ``script``."""
    with scripted_server() as server:
        server.then(*script)
        http = HttpTransport("sk-mai-test-key", base_url=server.url)  # a 15 s read timeout by default
        try:
            yield server, Fleet(http, clock=clock, policy=POLICY)
        finally:
            http.close()


# -- starting ----------------------------------------------------------------------------------------
def test_start_returns_a_running_task_named_by_the_service_which_bills_it(clock: ManualClock) -> None:
    r = rig(clock)
    task = r.start()
    assert state_of(task) is TaskState.RUNNING
    assert task.kind is StreamKind.AUDIO
    assert list(r.sim.service.streams) == [tid(task)]  # the task_id is the one the service made
    assert r.sim.billing() == [tid(task)]
    assert r.fleet.get(tid(task)) is task
    assert triggers(task) == ["start", "start_ok"]


def test_callbacks_build_the_transcript(clock: ManualClock) -> None:
    r = rig(clock)
    task = r.start()
    r.sim.advance(15)  # three 5-second segments, each a partial then its final
    assert task.transcript_text() == " ".join(f"segment {i} of {tid(task)[:8]}" for i in range(3))
    assert triggers(task) == ["start", "start_ok"] + ["segment"] * 6


def test_segments_that_arrive_out_of_order_read_in_index_order(clock: ManualClock) -> None:
    r = rig(clock)
    task = r.start()
    for index in (2, 0, 1):
        assert r.fleet.handle_callback(segment_callback(tid(task), index, f"word{index}")) == Outcome.APPLIED
    assert task.transcript_text() == "word0 word1 word2"


@pytest.mark.parametrize(
    ("kind", "params", "complaint"),
    [
        ("podcast", {"audio_url": URL}, "podcast"),
        ("audio", {}, "audio_url"),
        ("audio", {"audio_url": ""}, "audio_url"),
        ("audio", {"url": URL}, "audio_url"),
        ("video", {"audio_url": URL}, "url="),
    ],
)
def test_start_refuses_an_unknown_kind_or_a_missing_url_and_sends_nothing(
    clock: ManualClock, kind: str, params: dict[str, str], complaint: str
) -> None:
    r = rig(clock)
    with pytest.raises(ValueError, match=complaint):
        r.fleet.start(kind, **params)
    assert r.sim.service.start_requests == 0
    assert r.fleet.tasks() == []


def test_a_start_refused_for_capacity_fails_the_task_and_nothing_bills(clock: ManualClock) -> None:
    r = rig(clock, Faults(capacity=1.0), start_retry_window=0)
    task = r.start()
    assert state_of(task) is TaskState.FAILED
    assert triggers(task) == ["start", "start_rejected"]
    assert error_of(task).startswith("CapacityError: audio.start: Capacity Reached")
    assert task.task_id is None
    assert r.sim.service.start_requests == 1
    assert r.sim.billing() == []


@pytest.mark.parametrize("refusal", ["capacity", "rate_limited"])
def test_a_start_refused_for_now_is_retried_with_backoff_within_the_window(
    clock: ManualClock, refusal: str
) -> None:
    window = 20
    wrap = RefusesStarts if refusal == "rate_limited" else None
    r = rig(
        clock, Faults(capacity=1.0 if refusal == "capacity" else 0.0), wrap=wrap, start_retry_window=window
    )
    task = r.start()
    assert (state_of(task), task.task_id) == (TaskState.PENDING, None)  # nothing was created
    assert r.fleet.unsettled() == []  # nothing to stop: no stream exists
    r.sim.advance(window + 1)
    attempts = triggers(task).count("start")
    assert attempts >= 3  # backoff from 1 s, doubling: a few tries fit in the window
    assert triggers(task) == ["start", "start_deferred"] * (attempts - 1) + ["start", "start_rejected"]
    assert state_of(task) is TaskState.FAILED
    assert r.sim.billing() == []


def test_a_start_refused_for_now_then_accepted_runs(clock: ManualClock) -> None:
    r = rig(clock, Faults(capacity=1.0))
    task = r.start()
    r.sim.service.faults = Faults()  # the account has room again
    r.sim.advance(5)
    assert state_of(task) is TaskState.RUNNING
    assert triggers(task)[:4] == ["start", "start_deferred", "start", "start_ok"]


def test_a_start_waiting_for_capacity_stops_without_a_request(clock: ManualClock) -> None:
    r = rig(clock, Faults(capacity=1.0))
    task = r.start()
    assert r.fleet.stop(task) is task
    assert state_of(task) is TaskState.STOPPED
    r.sim.advance(30)
    assert (r.sim.service.start_requests, r.sim.service.stop_log) == (
        1,
        [],
    )  # never tried again, never stopped


def test_max_live_holds_a_start_until_a_stream_ends(clock: ManualClock) -> None:
    r = rig(clock, max_live=2)
    first, second = r.start(), r.start()
    third = r.start()
    assert (state_of(first), state_of(second), state_of(third)) == (
        TaskState.RUNNING,
        TaskState.RUNNING,
        TaskState.PENDING,
    )
    assert error_of(third) == (
        "LiveCapError: 2 streams of audio, video and understand together are live already (Policy.max_live)"
    )
    assert r.sim.service.start_requests == 2  # the third was never sent
    r.fleet.stop(first)
    r.sim.advance(5)
    assert (state_of(first), state_of(third)) == (TaskState.STOPPED, TaskState.RUNNING)
    assert r.sim.service.live_count() == 2


def test_max_live_without_a_retry_window_refuses_at_once(clock: ManualClock) -> None:
    r = rig(clock, max_live=1, start_retry_window=0)
    r.start()
    refused = r.start()
    assert state_of(refused) is TaskState.FAILED
    assert error_of(refused).startswith("LiveCapError")


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"audio_url": URL}, "provider='assemblyai' or 'elevenlabs', got None"),
        ({"audio_url": URL, "provider": "whisper"}, "got 'whisper'"),
        ({"provider": "assemblyai"}, "needs audio_url="),
    ],
)
def test_an_audio_start_without_a_known_provider_is_refused_before_anything_is_sent(
    clock: ManualClock, params: dict[str, Any], problem: str
) -> None:
    r = rig(clock)
    with pytest.raises(ValueError, match=re.escape(problem)):
        r.fleet.start("audio", **params)
    assert (r.fleet.tasks(), r.sim.service.start_requests) == ([], 0)


def test_a_start_answered_5xx_is_uncertain_and_one_refused_4xx_is_failed(clock: ManualClock) -> None:
    answers = (error(500, "Internal server error"), error(400, "Invalid request parameters"))
    with http_fleet(clock, *answers) as (server, fleet):
        maybe_created = fleet.start("audio", audio_url=URL, provider="assemblyai")
        refused = fleet.start("audio", audio_url=URL, provider="assemblyai")
        assert len(server.requests) == 2  # a start is never sent twice
    # The service failed after taking the request: a stream may exist, so the start is not "failed".
    assert state_of(maybe_created) is TaskState.UNCERTAIN
    assert error_of(maybe_created).startswith("ServerError")
    assert state_of(refused) is TaskState.FAILED
    assert error_of(refused).startswith("RejectedError")


def test_a_start_whose_answer_is_lost_is_uncertain_then_failed_and_its_stream_is_adopted_and_stopped(
    clock: ManualClock,
) -> None:
    r = rig(clock)
    orphans: list[Orphan] = []
    r.fleet.on_orphan(orphans.append)
    started = clock.now()
    r.sim.service.lose_next_start_answer()
    task = r.start()
    assert state_of(task) is TaskState.UNCERTAIN
    assert error_of(task).startswith("OutcomeUnknownError")
    (stream_id,) = r.sim.service.streams  # the stream exists, and bills, though nobody was told its name
    assert r.sim.billing() == [stream_id]

    r.sim.advance(5 + PARK_TTL - 1)  # its callbacks come (a partial and a final at 5 s and 10 s) and wait
    assert r.fleet.stats().callbacks["parked"] == 4
    assert r.fleet.get(stream_id) is None
    assert orphans == []

    r.sim.advance(1)  # the first of them has waited park_ttl: the stream is an orphan, adopted and stopped
    (orphan,) = orphans
    adopted = orphan.task
    assert adopted is not task
    assert adopted.adopted
    assert r.fleet.get(stream_id) is adopted
    assert triggers(adopted)[0] == "adopt"
    assert (orphan.callbacks, orphan.first_parked) == (4, started + 5)
    assert state_of(adopted) is TaskState.STOPPING
    assert [stop.task_id for stop in r.sim.service.stop_log] == [stream_id]
    assert r.fleet.stats().orphans == 1

    r.sim.advance(1)
    assert state_of(adopted) is TaskState.STOPPED
    assert r.sim.billing() == []
    assert state_of(task) is TaskState.UNCERTAIN  # the start itself is not known to have failed yet

    r.sim.advance(UNCERTAIN_TTL - 5 - PARK_TTL - 1)
    assert state_of(task) is TaskState.FAILED
    assert last(task, "uncertain_deadline").at == started + UNCERTAIN_TTL
    assert r.sim.billing() == []


def test_a_callback_that_beats_its_start_answer_is_parked_then_replayed_into_the_task(
    clock: ManualClock,
) -> None:
    r = rig(clock, Faults(early_callback=1.0))
    task = r.start()
    stats = r.fleet.stats()
    assert stats.callbacks["parked"] == 1
    assert stats.parked == 0  # claimed by the start answer
    assert triggers(task) == ["start", "start_ok", "segment"]
    replayed = task.history[-1]
    assert replayed.outcome == Outcome.APPLIED
    assert replayed.data == {"index": 0, "final": False}
    assert task.transcript_text(include_partials=True) != ""


def test_with_reap_orphans_off_an_orphan_is_adopted_and_reported_but_left_running(
    clock: ManualClock,
) -> None:
    r = rig(clock, reap_orphans=False)
    orphans: list[Orphan] = []
    r.fleet.on_orphan(orphans.append)
    r.sim.service.lose_next_start_answer()
    r.start()
    (stream_id,) = r.sim.service.streams
    r.sim.advance(5 + PARK_TTL)
    (orphan,) = orphans
    assert state_of(orphan.task) is TaskState.RUNNING
    assert r.sim.service.stop_log == []
    assert r.sim.billing() == [stream_id]  # the caller's to stop
    r.fleet.stop(orphan.task)
    r.sim.advance(1)
    assert state_of(orphan.task) is TaskState.STOPPED
    assert r.sim.billing() == []


class PassesThrough:
    """A transport that hands every call to ``inner``: a test's transport changes the one it needs."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner

    def start(self, kind: StreamKind, params: Mapping[str, Any]) -> StartResult:
        return self.inner.start(kind, params)

    def stop(self, kind: StreamKind, task_id: str, *, within: float | None = None) -> StopResult:
        return self.inner.stop(kind, task_id, within=within)

    def close(self) -> None:
        self.inner.close()


class RefusesStarts(PassesThrough):
    """Answers every start with 429 and Retry-After 2 s, as a rate-limited service does: nothing made."""

    def start(self, kind: StreamKind, params: Mapping[str, Any]) -> StartResult:
        operation = f"{StreamKind(kind).value}.start"
        raise RateLimitedError(
            "Rate limit exceeded", operation=operation, status=429, code="429", retry_after=2.0
        )


class AnswersWithoutAStrId(PassesThrough):
    """A transport with a bug: the stream is made, and its StartResult names it with an int."""

    def start(self, kind: StreamKind, params: Mapping[str, Any]) -> StartResult:
        made = self.inner.start(kind, params)
        return StartResult(12345, made.message, made.raw)  # type: ignore[arg-type]


def test_a_start_answered_with_an_id_that_is_no_str_raises_and_its_stream_is_reaped(
    clock: ManualClock,
) -> None:
    """The stream may bill: the task is uncertain, so its stream is adopted and stopped as any
    whose answer was lost."""
    r = rig(clock, wrap=AnswersWithoutAStrId)
    with pytest.raises(TypeError, match="task_id is not a str: 12345"):
        r.start()
    (task,) = r.fleet.tasks()
    assert state_of(task) is TaskState.UNCERTAIN
    assert r.fleet.next_deadline() is not None
    r.sim.advance(5 + PARK_TTL + 10)
    assert r.sim.billing() == []


class StopsWhileStarting(PassesThrough):
    """A transport on which another thread (played by ``start`` itself) stops the task being started."""

    def __init__(self, inner: Transport) -> None:
        super().__init__(inner)
        self.fleet: Fleet | None = None
        self.stopped_while_starting: list[StreamTask] = []

    def start(self, kind: StreamKind, params: Mapping[str, Any]) -> StartResult:
        assert self.fleet is not None
        for task in self.fleet.tasks(TaskState.STARTING):
            self.stopped_while_starting.append(self.fleet.stop(task))
            assert state_of(task) is TaskState.STARTING  # remembered, not sent: there is no task_id yet
        return self.inner.start(kind, params)


def test_a_stop_asked_for_while_starting_is_sent_once_the_task_id_arrives(clock: ManualClock) -> None:
    r = rig(clock, wrap=StopsWhileStarting)
    transport = r.fleet.transport
    assert isinstance(transport, StopsWhileStarting)
    transport.fleet = r.fleet
    task = r.start()
    assert transport.stopped_while_starting == [task]
    assert state_of(task) is TaskState.STOPPING
    assert triggers(task) == ["start", "stop", "start_ok", "stop", "stop_ok"]
    assert [stop.task_id for stop in r.sim.service.stop_log] == [tid(task)]
    r.sim.advance(1)
    assert state_of(task) is TaskState.STOPPED
    assert r.sim.billing() == []


# -- stopping ----------------------------------------------------------------------------------------
def test_stop_sends_one_request_and_the_status_14_callback_files_the_task_as_stopped(
    clock: ManualClock,
) -> None:
    r = rig(clock)
    task = r.start()
    r.sim.advance(6)
    assert r.fleet.stop(task) is task
    assert state_of(task) is TaskState.STOPPING
    assert task.stop_acknowledged
    assert triggers(task)[-2:] == ["stop", "stop_ok"]
    assert not r.sim.service.streams[tid(task)].live  # the service stopped billing on the request
    assert r.sim.billing() == []

    r.fleet.stop(task)  # again, while stopping: already in effect
    assert task.history[-1].outcome == Outcome.DUPLICATE

    r.sim.advance(1)
    assert state_of(task) is TaskState.STOPPED
    assert task.history[-1].trigger == "stopped"
    assert task.end_status == 14
    assert not task.final_callback_missing

    r.fleet.stop(tid(task))  # by task_id, once terminal
    assert (task.history[-1].trigger, task.history[-1].outcome) == ("stop", Outcome.DUPLICATE)
    assert len(r.sim.service.stop_log) == 1


def test_stop_of_a_task_that_never_started_sends_nothing(clock: ManualClock) -> None:
    r = rig(clock, Faults(capacity=1.0), start_retry_window=0)
    task = r.start()
    assert r.fleet.stop(task) is task
    assert state_of(task) is TaskState.FAILED
    assert (task.history[-1].trigger, task.history[-1].outcome) == ("stop", Outcome.DUPLICATE)
    assert r.sim.service.stop_log == []


def test_stop_refuses_a_task_this_fleet_does_not_hold_and_a_negative_wait(clock: ManualClock) -> None:
    r = rig(clock)
    stranger = rig(clock).start()  # held by another Fleet
    for unknown in ("no-such-task", tid(stranger), stranger):
        with pytest.raises(UnknownTaskError) as raised:
            r.fleet.stop(unknown)
        assert isinstance(raised.value, LookupError)
    task = r.start()
    for wait in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="wait"):
            r.fleet.stop(task, wait=wait)
    with pytest.raises(ValueError, match="wait"):
        r.fleet.stop_all(wait=-1.0)
    assert state_of(task) is TaskState.RUNNING
    assert state_of(stranger) is TaskState.RUNNING
    assert r.sim.service.stop_log == []


def test_a_stop_answered_not_found_files_the_task_as_stopped(clock: ManualClock) -> None:
    r = rig(clock, Faults(stop_not_found=1.0))
    task = r.start()
    r.fleet.stop(task)
    assert state_of(task) is TaskState.STOPPED
    assert task.history[-1].trigger == "stop_not_found"
    assert [stop.status for stop in r.sim.service.stop_log] == [400]
    assert r.sim.billing() == []


def test_a_failing_stop_is_retried_with_growing_waits_for_as_long_as_it_takes(clock: ManualClock) -> None:
    r = rig(clock, Faults(stop_500=1.0))
    task = r.start()
    r.fleet.stop(task)
    r.sim.advance(40)  # eight times final_callback_wait
    sent = [stop.at for stop in r.sim.service.stop_log]
    waits = [later - earlier for earlier, later in itertools.pairwise(sent)]
    assert all(stop.status == 500 for stop in r.sim.service.stop_log)
    assert len(sent) >= 5
    # The wait after failure n + 1 is between half and all of min(cap, base * 2**n); sent on 1 s ticks.
    ceilings = [min(STOP_RETRY_CAP, 2.0**n) for n in range(len(waits))]
    assert all(ceiling / 2 <= wait <= ceiling for wait, ceiling in zip(waits, ceilings, strict=True))
    assert waits[-1] > waits[0]
    # Unacknowledged, it stays stopping and listed: no final-callback deadline files it as stopped.
    assert state_of(task) is TaskState.STOPPING
    assert r.fleet.unsettled() == [task]
    assert task.stop_failures == len(sent) == r.fleet.stats().stop_failures
    assert error_of(task).startswith("ServerError")
    assert "final_deadline" not in triggers(task)
    assert not task.final_callback_missing
    assert r.sim.billing() == [tid(task)]  # which is why: it still bills

    r.sim.service.faults = Faults()  # the service recovers
    r.sim.advance(STOP_RETRY_CAP)
    assert state_of(task) is TaskState.STOPPED
    assert task.end_status == 14
    assert r.sim.service.stop_log[-1].status == 200
    assert r.fleet.unsettled() == []
    assert r.sim.billing() == []


def test_a_rate_limited_stop_is_not_sent_again_before_retry_after(clock: ManualClock) -> None:
    r = rig(clock, Faults(stop_429=1.0, retry_after=7))
    task = r.start()
    r.fleet.stop(task)
    r.sim.advance(6)
    assert len(r.sim.service.stop_log) == 1
    r.sim.advance(15)
    sent = [stop.at for stop in r.sim.service.stop_log]
    # Retry-After outweighs the backoff, which is at most 1, 2 and 4 s after the first three failures.
    assert [later - earlier for earlier, later in itertools.pairwise(sent)] == [7.0, 7.0, 7.0]
    assert error_of(task).startswith("RateLimitedError")
    assert state_of(task) is TaskState.STOPPING


def test_a_stop_asked_for_again_while_a_retry_after_runs_waits_for_it_too(clock: ManualClock) -> None:
    r = rig(clock, Faults(stop_429=1.0, retry_after=7))
    task = r.start()
    r.fleet.stop(task)
    r.sim.advance(1)
    r.fleet.stop(task)  # asked again, as a caller may: stop is safe to repeat
    r.fleet.stop_all()  # and again, as at shutdown
    assert len(r.sim.service.stop_log) == 1, (
        f"stops sent at {[s.at - r.sim.service.stop_log[0].at for s in r.sim.service.stop_log]}"
    )


def test_a_stop_that_fails_for_more_than_a_thousand_tries_is_still_tried_again(clock: ManualClock) -> None:
    """The backoff doubles per failure up to its cap; past 1,024 doublings the doubling itself
    overflowed, and no retry was armed: at the default cap, a day of a failing service."""
    r = rig(clock, Faults(stop_500=1.0), stop_retry_base=1.0, stop_retry_cap=1.0)
    task = r.start()
    r.fleet.stop(task)
    r.sim.advance(1_100)
    assert task.stop_failures > 1_025
    r.sim.service.faults = Faults()
    r.sim.advance(5)
    assert state_of(task) is TaskState.STOPPED
    assert r.sim.billing() == []


# -- the final callback ------------------------------------------------------------------------------
def test_a_missing_final_callback_files_the_task_as_stopped_after_final_callback_wait(
    clock: ManualClock,
) -> None:
    r = rig(clock, Faults(drop=1.0))
    task = r.start()
    r.fleet.stop(task)
    assert task.stop_acknowledged
    r.sim.advance(FINAL_CALLBACK_WAIT - 1)
    assert state_of(task) is TaskState.STOPPING
    r.sim.advance(1)
    assert state_of(task) is TaskState.STOPPED
    assert task.history[-1].trigger == "final_deadline"
    assert task.final_callback_missing
    assert task.end_status is None
    assert r.sim.billing() == []


def test_the_final_callback_wait_counts_from_the_acknowledged_stop_not_from_the_request(
    clock: ManualClock,
) -> None:
    r = rig(clock, Faults(drop=1.0, stop_500=1.0))
    task = r.start()
    r.fleet.stop(task)
    asked = clock.now()
    r.sim.advance(3 * FINAL_CALLBACK_WAIT)
    assert state_of(task) is TaskState.STOPPING  # not filed as stopped, with or without a callback

    r.sim.service.faults = Faults(drop=1.0)  # stops land again; callbacks are still lost
    r.sim.advance(STOP_RETRY_CAP + FINAL_CALLBACK_WAIT)
    assert state_of(task) is TaskState.STOPPED
    assert task.final_callback_missing
    acknowledged = last(task, "stop_ok").at
    assert acknowledged - asked > FINAL_CALLBACK_WAIT
    assert last(task, "final_deadline").at - acknowledged == FINAL_CALLBACK_WAIT
    assert r.sim.billing() == []


# -- silence -----------------------------------------------------------------------------------------
def test_a_stream_that_goes_quiet_is_marked_stalled_after_silence_after(clock: ManualClock) -> None:
    r = rig(clock, Faults(stall=1.0))
    seen: list[HistoryEntry] = []
    r.fleet.on_transition(lambda task, entry: seen.append(entry))
    task = r.start()
    r.sim.advance(SILENCE_AFTER - 1)
    assert not stalled(task)
    r.sim.advance(1)
    assert stalled(task)
    assert state_of(task) is TaskState.RUNNING
    assert task.history[-1].trigger == "silence"
    assert seen[-1] == task.history[-1]  # (made when read: equal, not the same object)
    assert r.sim.billing() == [tid(task)]  # stalled and billing on: stopping it is the caller's call


def test_a_segment_after_a_stall_clears_it_and_the_silence_window_starts_again(clock: ManualClock) -> None:
    r = rig(clock, Faults(stall=1.0))
    task = r.start()
    r.sim.advance(SILENCE_AFTER)
    assert stalled(task)
    assert r.fleet.handle_callback(segment_callback(tid(task), 7, "back again")) == Outcome.APPLIED
    assert not stalled(task)
    r.sim.advance(SILENCE_AFTER - 1)
    assert triggers(task).count("silence") == 1
    r.sim.advance(1)
    assert triggers(task).count("silence") == 2
    assert stalled(task)


def test_once_a_stall_clears_the_next_deadline_is_the_end_of_the_new_silence_window(
    clock: ManualClock,
) -> None:
    r = rig(clock, Faults(stall=1.0))
    task = r.start()
    r.sim.advance(SILENCE_AFTER)
    r.fleet.handle_callback(segment_callback(tid(task), 7, "back again"))
    assert r.fleet.next_deadline() == clock.now() + SILENCE_AFTER
    assert r.fleet.tick() == 0  # nothing is due


def test_with_stop_when_stalled_a_stalled_task_is_stopped(clock: ManualClock) -> None:
    r = rig(clock, Faults(stall=1.0), stop_when_stalled=True)
    task = r.start()
    r.sim.advance(SILENCE_AFTER)
    assert triggers(task)[-3:] == ["silence", "stop", "stop_ok"]
    assert state_of(task) is TaskState.STOPPING
    r.sim.advance(1)
    assert state_of(task) is TaskState.STOPPED
    assert r.sim.billing() == []


# -- stop_all ----------------------------------------------------------------------------------------
def test_stop_all_stops_every_task_and_returns_those_not_yet_terminal(clock: ManualClock) -> None:
    r = rig(clock)
    tasks = [r.start() for _ in range(3)]
    r.sim.advance(5)
    left = r.fleet.stop_all()
    assert left == tasks  # acknowledged, each waiting for its status-14 callback
    assert all(state_of(task) is TaskState.STOPPING for task in left)
    assert sorted(stop.task_id for stop in r.sim.service.stop_log) == sorted(tid(task) for task in tasks)
    assert r.sim.billing() == []
    r.sim.advance(1)
    assert all(state_of(task) is TaskState.STOPPED for task in tasks)
    assert r.fleet.stop_all() == []
    assert len(r.sim.service.stop_log) == 3


def test_stop_all_leaves_out_the_tasks_its_stops_ended(clock: ManualClock) -> None:
    r = rig(clock, Faults(stop_not_found=1.0))  # each stop files its task as stopped at once
    tasks = [r.start() for _ in range(2)]
    assert r.fleet.stop_all() == []
    assert all(state_of(task) is TaskState.STOPPED for task in tasks)


class StopsMeet(PassesThrough):
    """A transport whose stops wait for one another: it shows how many are in flight at once."""

    def __init__(self, inner: Transport, *, at_once: int) -> None:
        super().__init__(inner)
        self.meeting = threading.Barrier(at_once, timeout=2.0)  # broken unless ``at_once`` stops meet
        self.threads: set[str] = set()

    def stop(self, kind: StreamKind, task_id: str, *, within: float | None = None) -> StopResult:
        self.threads.add(threading.current_thread().name)
        self.meeting.wait()
        return self.inner.stop(kind, task_id, within=within)


def test_stop_all_sends_stop_concurrency_requests_at_once(clock: ManualClock) -> None:
    r = rig(clock, wrap=lambda inner: StopsMeet(inner, at_once=3), stop_concurrency=3)
    tasks = [r.start() for _ in range(3)]
    assert r.fleet.stop_all() == tasks
    transport = r.fleet.transport
    assert isinstance(transport, StopsMeet)
    assert len(transport.threads) == 3
    assert all(name.startswith("streamlife-stop") for name in transport.threads)
    assert r.sim.billing() == []


def test_stop_all_with_no_wait_returns_at_once_and_leaves_the_requests_to_tick(clock: ManualClock) -> None:
    r = rig(clock)
    tasks = [r.start() for _ in range(2)]
    assert r.fleet.stop_all(wait=0) == tasks
    assert r.sim.service.stop_log == []  # no time to wait on a request, so none was sent yet
    assert r.fleet.unsettled() == tasks
    assert r.fleet.next_deadline() == clock.now()  # the next tick sends them
    r.sim.advance(2)
    assert all(state_of(task) is TaskState.STOPPED for task in tasks)
    assert r.sim.billing() == []


# -- bounded stops, in real time ---------------------------------------------------------------------
def test_a_bounded_stop_over_http_returns_in_time_and_leaves_a_retry_armed(clock: ManualClock) -> None:
    with http_fleet(clock, ok("tid-http"), Stall(1.5)) as (server, fleet):  # the stop hangs
        task = fleet.start("audio", audio_url=URL, provider="assemblyai")
        assert state_of(task) is TaskState.RUNNING
        began = time.monotonic()
        returned = fleet.stop(task, wait=0.5)
        elapsed = time.monotonic() - began
        assert [seen.path for seen in server.requests] == ["/audio-stream/start", "/audio-stream/stop"]
    assert returned is task
    assert elapsed < 1.5, f"stop(wait=0.5) took {elapsed:.2f} s"
    assert state_of(task) is TaskState.STOPPING
    assert fleet.unsettled() == [task]
    assert task.stop_failures == 1
    assert fleet.next_deadline() is not None  # the stop retry


def test_stop_with_a_wait_returns_as_soon_as_the_task_is_terminal(clock: ManualClock) -> None:
    r = rig(clock)
    task = r.start()
    # The status-14 callback comes from another thread, 50 ms after the stop is acknowledged.
    status_14 = threading.Timer(0.05, r.sim.service.advance, args=(6.0,))

    def on_acknowledged(_task: StreamTask, entry: HistoryEntry) -> None:
        if entry.trigger == "stop_ok":
            status_14.start()

    r.fleet.on_transition(on_acknowledged)
    began = time.monotonic()
    r.fleet.stop(task, wait=5)
    elapsed = time.monotonic() - began
    status_14.join(timeout=5)
    assert state_of(task) is TaskState.STOPPED
    assert elapsed < 2.5, f"stop(wait=5) took {elapsed:.2f} s after the task was stopped"


# -- hooks -------------------------------------------------------------------------------------------
def test_hooks_see_each_transition_and_each_new_segment_in_order(clock: ManualClock) -> None:
    r = rig(clock)
    transitions: list[tuple[StreamTask, HistoryEntry]] = []
    segments: list[Segment] = []
    r.fleet.on_transition(lambda task, entry: transitions.append((task, entry)))
    r.fleet.on_segment(lambda task, segment: segments.append(segment))
    task = r.start()
    r.sim.advance(10)
    first = next(delivery.payload for delivery in r.sim.service.deliveries if delivery.task_id == tid(task))
    assert r.fleet.handle_callback(first) == Outcome.DUPLICATE  # not new: no hook
    r.fleet.stop(task)
    r.sim.advance(1)
    assert [entry.trigger for _, entry in transitions] == ["start", "start_ok", "stop", "stop_ok", "stopped"]
    assert [entry for _, entry in transitions] == [e for e in task.history if e.trigger != "segment"]
    assert all(seen is task for seen, _ in transitions)
    assert [(s.index, s.final) for s in segments] == [(0, False), (0, True), (1, False), (1, True)]


def test_a_hook_of_the_wrong_shape_is_refused_by_the_type_checker(clock: ManualClock) -> None:
    """Each registration below is a type error, and says so with an ignore. mypy runs strict, so an
    ignore that is no longer needed fails ``make typecheck``: should a hook decorator lose its
    signature, the wrong hook would pass unseen and fail on every event."""
    r = rig(clock)

    def takes_the_task_only(task: StreamTask) -> None:
        pass

    def takes_an_orphan(orphan: Orphan) -> None:
        pass

    r.fleet.on_transition(takes_the_task_only)  # type: ignore[type-var]
    r.fleet.on_segment(takes_the_task_only)  # type: ignore[type-var]
    r.fleet.on_orphan(takes_the_task_only)  # type: ignore[type-var]
    r.fleet.on_foreign(takes_an_orphan)  # type: ignore[type-var]
    assert r.fleet.on_orphan(takes_an_orphan) is takes_an_orphan  # the right shape passes, as it is


def test_a_hook_that_raises_is_logged_and_the_fleet_goes_on(clock: ManualClock) -> None:
    r = rig(clock)

    def broken(*_args: object) -> None:
        raise RuntimeError("a bug in the user's hook")

    seen: list[str] = []
    r.fleet.on_transition(broken)
    r.fleet.on_segment(broken)
    r.fleet.on_transition(lambda task, entry: seen.append(entry.trigger))
    with capture_logs() as logs:
        task = r.start()
        r.sim.advance(5)
        r.fleet.stop(task)
        r.sim.advance(1)
    assert state_of(task) is TaskState.STOPPED
    assert task.transcript_text() != ""
    assert seen == ["start", "start_ok", "stop", "stop_ok", "stopped"]  # the next hook was still called
    failures = [log for log in logs if log["event"] == "streamlife.hook_failed"]
    assert len(failures) == 5 + 2  # five transitions, a partial and a final
    assert all(log["log_level"] == "error" and log["hook"].endswith("broken") for log in failures)


# -- callbacks ---------------------------------------------------------------------------------------
def test_handle_callback_takes_bytes_text_or_a_mapping(clock: ManualClock) -> None:
    r = rig(clock)
    task = r.start()
    as_bytes = json.dumps(segment_callback(tid(task), 0, "zero")).encode()
    as_text = json.dumps(segment_callback(tid(task), 1, "one"))
    as_mapping = segment_callback(tid(task), 2, "two")
    for payload in (as_bytes, as_text, as_mapping):
        assert r.fleet.handle_callback(payload) == Outcome.APPLIED
    assert task.transcript_text() == "zero one two"


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xfe not UTF-8",
        "not JSON",
        "[1, 2]",
        {"message": "SUCCESS"},  # no task_id, no code, no data: no envelope
        {"data": {"status": 14}},  # no task_id
        {"task_id": "t", "data": {"status": 14, "transcript": 5}},
    ],
)
def test_a_malformed_callback_raises_and_changes_nothing(
    clock: ManualClock, payload: bytes | str | dict[str, Any]
) -> None:
    r = rig(clock)
    task = r.start()
    before = list(task.history)
    with pytest.raises(CallbackError):
        r.fleet.handle_callback(payload)
    assert r.fleet.stats().malformed == 1
    assert sum(r.fleet.stats().callbacks.values()) == 0
    assert task.history == before
    assert state_of(task) is TaskState.RUNNING


def test_another_products_result_is_foreign_and_changes_nothing(clock: ManualClock) -> None:
    """The webhook URL is the account's: every product's results come to it."""
    r = rig(clock)
    task = r.start()
    before = list(task.history)
    clip = {"code": 200, "task_id": "2f9b", "data": {"video_url": "https://cdn.example.invalid/c.mp4"}}
    unknown = {**clip, "task_id": "1e8ae1075e054e8abb58e7598c53cbf1"}
    assert r.fleet.handle_callback(clip) is Outcome.FOREIGN
    assert r.fleet.handle_callbacks([unknown, segment_callback(tid(task), 0)]) == [
        Outcome.FOREIGN,
        Outcome.APPLIED,
    ]
    stats = r.fleet.stats()
    assert (stats.callbacks["foreign"], stats.callbacks["applied"], stats.parked, stats.malformed) == (
        2,
        1,
        0,
        0,
    )
    assert task.history[: len(before)] == before
    assert [entry.trigger for entry in task.history[len(before) :]] == ["segment"]


def test_an_undeclared_status_is_logged_and_the_end_it_implies_confirmed_by_a_stop(
    clock: ManualClock,
) -> None:
    r = rig(clock)
    task = r.start()
    with capture_logs() as logs:
        assert r.fleet.handle_callback(status_callback(tid(task), 12)) == Outcome.APPLIED
    assert [log["status"] for log in logs if log["event"] == "streamlife.unknown_status"] == [12]
    # The stream may bill on: the status said nothing the docs confirm. A stop went out at once.
    assert [stop.task_id for stop in r.sim.service.stop_log] == [tid(task)]
    assert (state_of(task), task.end_status, task.stop_acknowledged) == (TaskState.ENDING, 12, True)
    assert r.fleet.unsettled() == [task]
    r.sim.advance(1)  # the status-14 callback of the stop: the stream lived, and was stopped
    assert state_of(task) is TaskState.STOPPED
    assert r.sim.billing() == []
    assert r.fleet.unsettled() == []


def test_a_status_declared_ongoing_leaves_the_task_running_and_counts_as_news(clock: ManualClock) -> None:
    r = rig(clock, Faults(stall=1.0), statuses=DEFAULT_STATUSES.with_status(12, "ongoing"))
    task = r.start()
    r.sim.advance(SILENCE_AFTER - 2)
    with capture_logs() as logs:
        assert r.fleet.handle_callback(status_callback(tid(task), 12)) == Outcome.APPLIED
    assert state_of(task) is TaskState.RUNNING
    assert task.end_status is None
    assert [log for log in logs if log["event"] == "streamlife.unknown_status"] == []
    r.sim.advance(SILENCE_AFTER - 1)  # the silence window started again from the status callback
    assert not stalled(task)
    r.sim.advance(1)
    assert stalled(task)


def test_with_max_parked_reached_a_callback_for_one_more_unknown_task_id_is_refused_retryably(
    clock: ManualClock,
) -> None:
    """A callback that finds no room is not answered "rejected" (the sender would never send it
    again): ParkingFullError, and nothing of it is kept, so its redelivery parks it once there is
    room. Nothing parked is dropped to make room."""
    r = rig(clock, max_parked=1)
    assert r.fleet.handle_callback(segment_callback("ghost-1", 0, "boo")) == Outcome.PARKED
    assert r.fleet.handle_callback(segment_callback("ghost-1", 1, "boo")) == Outcome.PARKED  # same id
    with pytest.raises(ParkingFullError, match="1 unknown task_ids parked"):
        r.fleet.handle_callback(segment_callback("ghost-2", 0, "boo"))
    assert [kept.task_id for kept in r.fleet.store.parked()] == ["ghost-1", "ghost-1"]
    stats = r.fleet.stats()
    assert (stats.parked, stats.callbacks["parked"], stats.callbacks["rejected"]) == (1, 2, 0)


def test_a_redelivery_storm_of_one_parked_callback_is_kept_once_and_pushes_out_nothing(
    clock: ManualClock,
) -> None:
    """With room for three callbacks under a task_id, a thousand redeliveries of one segment are
    kept once: the other segment parked beside it is still there when the start answer comes."""
    r = rig(clock, max_parked_per_task=3)
    first, other = segment_callback("ghost", 0, "first"), segment_callback("ghost", 1, "other")
    assert r.fleet.handle_callback(first) is Outcome.PARKED
    assert r.fleet.handle_callback(other) is Outcome.PARKED
    for _ in range(1_000):
        assert r.fleet.handle_callback(first) is Outcome.PARKED_ALREADY
    assert len(r.fleet.store.parked("ghost")) == 2  # stored once each
    assert r.fleet.handle_callback(segment_callback("ghost", 2, "third")) is Outcome.PARKED
    with pytest.raises(ParkingFullError, match="3 callbacks parked for this task_id"):
        r.fleet.handle_callback(segment_callback("ghost", 3, "fourth"))
    r.sim.advance(PARK_TTL + 1)  # adopted as an orphan: every parked segment reaches it
    orphan = r.fleet.get("ghost")
    assert orphan is not None
    assert [segment.text for segment in orphan.transcript.finals()] == ["first", "other", "third"]


# -- timers on a background thread -------------------------------------------------------------------
def test_run_timers_fires_deadlines_on_its_own(clock: ManualClock) -> None:
    sim = SimulatedService(clock=clock, faults=Faults(drop=1.0))  # no status-14 callback will come
    fleet = Fleet(SimTransport(sim), policy=Policy(final_callback_wait=0.05, stop_concurrency=1, seed=0))
    sim.on_callback(fleet.handle_callback)
    task = fleet.start("audio", audio_url=URL, provider="assemblyai")
    fleet.stop(task)
    assert state_of(task) is TaskState.STOPPING  # the deadline is due soon, but nobody ticks
    with fleet.run_timers(interval=0.01):
        wait_until(lambda: task.terminal)
    assert state_of(task) is TaskState.STOPPED
    assert task.final_callback_missing
    with pytest.raises(ValueError, match="interval"), fleet.run_timers(interval=0):
        pass


# -- reading -----------------------------------------------------------------------------------------
def test_tasks_filter_by_state_and_stats_count_by_state_and_outcome(clock: ManualClock) -> None:
    r = rig(clock, start_retry_window=0)
    running, stopped = r.start(), r.start()
    r.sim.service.faults = Faults(capacity=1.0)
    failed = r.start()
    r.sim.advance(5)
    r.fleet.stop(stopped)
    r.sim.advance(1)
    again = next(
        delivery.payload for delivery in r.sim.service.deliveries if delivery.task_id == tid(running)
    )
    assert r.fleet.handle_callback(again) == Outcome.DUPLICATE
    assert (
        r.fleet.handle_callback(segment_callback(tid(stopped), 9, "after the end", final=False))
        == Outcome.LATE
    )

    assert r.fleet.tasks() == [running, stopped, failed]
    assert r.fleet.tasks(TaskState.RUNNING) == [running]
    assert r.fleet.tasks("stopped") == [stopped]
    assert r.fleet.tasks(TaskState.STOPPING) == []
    stats = r.fleet.stats()
    assert stats.tasks == {"running": 1, "stopped": 1, "failed": 1}
    assert stats.callbacks == {
        "applied": len(
            r.sim.service.deliveries
        ),  # every callback the simulator sent: segments and one status 14
        "duplicate": 1,
        "late": 1,
        "parked": 0,
        "rejected": 0,
        "foreign": 0,
    }
    assert (stats.stops_sent, stats.stop_failures, stats.orphans, stats.malformed) == (1, 0, 0, 0)


# -- Policy ------------------------------------------------------------------------------------------
DURATIONS = [
    "park_ttl",
    "uncertain_ttl",
    "final_callback_wait",
    "silence_after",
    "stop_retry_base",
    "stop_retry_cap",
]


@pytest.mark.parametrize("field", DURATIONS)
@pytest.mark.parametrize("value", [0, -1.0, float("nan")])
def test_policy_refuses_a_duration_that_is_not_positive_naming_it(field: str, value: float) -> None:
    settings: dict[str, Any] = {field: value}
    with pytest.raises(ValueError, match=f"Policy.{field} must be positive"):
        Policy(**settings)


@pytest.mark.parametrize("field", DURATIONS)
@pytest.mark.parametrize("value", ["60", None, True])
def test_policy_refuses_a_duration_that_is_no_number_naming_it(field: str, value: object) -> None:
    settings: dict[str, Any] = {field: value}
    with pytest.raises(TypeError, match=f"Policy.{field} must be seconds"):
        Policy(**settings)


@pytest.mark.parametrize(
    ("field", "value"), [("stop_concurrency", -1), ("max_parked", 0), ("history_limit", 0)]
)
def test_policy_refuses_a_count_below_its_least(field: str, value: int) -> None:
    settings: dict[str, Any] = {field: value}
    with pytest.raises(ValueError, match=f"Policy.{field} must be at least"):
        Policy(**settings)


@pytest.mark.parametrize(
    ("field", "value"), [("reap_orphans", 1), ("stop_when_stalled", "yes"), ("seed", 1.5)]
)
def test_policy_refuses_switches_and_seeds_of_the_wrong_type(field: str, value: object) -> None:
    settings: dict[str, Any] = {field: value}
    with pytest.raises(TypeError, match=f"Policy.{field}"):
        Policy(**settings)


def test_policy_refuses_a_retry_cap_below_its_base() -> None:
    with pytest.raises(ValueError, match="stop_retry_cap"):
        Policy(stop_retry_base=10.0, stop_retry_cap=5.0)


def test_policy_refuses_statuses_that_are_no_status_table() -> None:
    with pytest.raises(TypeError, match="StatusTable"):
        Policy(statuses={14: "stopped"})  # type: ignore[arg-type]


def test_policy_refuses_a_fractional_count() -> None:
    with pytest.raises(TypeError, match="stop_concurrency"):
        Policy(stop_concurrency=2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="history_limit"):
        Policy(history_limit=2.5)  # type: ignore[arg-type]
    assert Policy(history_limit=None).history_limit is None  # None keeps every entry


# -- ends the Fleet only infers: confirmed by a stop before the task is terminal ---------------------
def test_a_status_0_callback_without_a_transcript_is_a_silent_segment_not_an_end(clock: ManualClock) -> None:
    r = rig(clock)
    task = r.start()
    assert r.fleet.handle_callback(status_callback(tid(task), 0)) == Outcome.APPLIED
    assert (state_of(task), task.end_status) == (TaskState.RUNNING, None)
    assert r.sim.service.stop_log == []
    assert r.sim.billing() == [tid(task)]


def test_an_end_the_service_announced_is_confirmed_by_a_stop_it_answers_not_found(clock: ManualClock) -> None:
    r = rig(clock, Faults(spontaneous_end=1.0))
    task = r.start()
    r.sim.advance(int(SEGMENT_SECONDS))  # the first segment, then the stream ends with an undocumented status
    assert [stop.status for stop in r.sim.service.stop_log] == [400]
    assert (state_of(task), task.end_status) == (TaskState.ENDED, SOURCE_ENDED)
    assert r.fleet.unsettled() == []


def test_a_status_16_callback_on_a_live_stream_is_stopped_for_certain(clock: ManualClock) -> None:
    r = rig(clock)
    task = r.start()
    r.fleet.handle_callback(status_callback(tid(task), 16))
    r.sim.advance(1)
    assert [stop.status for stop in r.sim.service.stop_log] == [200]
    assert state_of(task) is TaskState.STOPPED
    assert r.sim.billing() == []


def test_a_confirming_stop_that_fails_is_retried_until_the_end_is_confirmed(clock: ManualClock) -> None:
    r = rig(clock, Faults(stop_500=1.0))
    task = r.start()
    r.fleet.handle_callback(status_callback(tid(task), 12))
    assert (state_of(task), task.stop_failures) == (TaskState.ENDING, 1)
    assert r.fleet.unsettled() == [task]
    r.sim.service.faults = Faults()
    r.sim.advance(STOP_RETRY_CAP)
    assert state_of(task) is TaskState.STOPPED  # the stream lived on: the stop stopped it
    assert r.sim.billing() == []


def test_the_providers_termination_after_our_stop_is_its_echo(clock: ManualClock) -> None:
    r = rig(clock)
    task = r.start()
    r.sim.advance(6)  # segment 0
    r.fleet.stop(task)  # acknowledged; the status-14 callback waits in the simulator's outbox
    termination = {"code": "200", "message": "SUCCESS", "task_id": tid(task), "data": {"type": "Termination"}}
    assert r.fleet.handle_callback(termination) == Outcome.APPLIED
    assert state_of(task) is TaskState.STOPPED
    r.sim.advance(2)  # the status-14 callback that follows: it ends nothing more, and names the last segment
    assert [entry.to_state for entry in task.history if entry.trigger == "stopped"] == [TaskState.STOPPED]
    assert task.transcript.last_index == 0
    assert len(r.sim.service.stop_log) == 1


def test_another_products_result_goes_to_the_foreign_hooks_and_never_becomes_an_orphan(
    clock: ManualClock,
) -> None:
    r = rig(clock)
    heard: list[Any] = []
    r.fleet.on_foreign(heard.append)

    @r.fleet.on_foreign
    def failing(callback: Any) -> None:  # a failing hook is logged; the others still run
        raise ZeroDivisionError

    transcription = {  # an async transcription's result: an int status, and keys no stream sends
        "code": 200,
        "message": "SUCCESS",
        "task_id": "1e8ae1075e054e8abb58e7598c53cbf1",
        "data": {"status": 1, "text": "a finished transcription", "duration": 12.5},
    }
    with capture_logs() as logs:
        assert r.fleet.handle_callback(transcription) is Outcome.FOREIGN
    assert [callback.task_id for callback in heard] == [transcription["task_id"]]
    assert heard[0].raw == transcription
    assert [log["event"] for log in logs if log["log_level"] == "error"] == ["streamlife.hook_failed"]
    r.sim.advance(int(POLICY.park_ttl) + 5)  # past the parking TTL: nothing was parked, nothing adopted
    stats = r.fleet.stats()
    assert (stats.parked, stats.orphans, r.fleet.tasks(), r.sim.service.stop_log) == (0, 0, [], [])


# -- a second reader's findings, each a test ----------------------------------------------------------
def test_a_callback_of_ours_with_a_field_the_docs_do_not_list_is_applied_not_foreign(
    clock: ManualClock,
) -> None:
    r = rig(clock)
    task = r.start()
    segment = segment_callback(tid(task), 0, "hello")
    segment["data"]["language_code"] = "en"
    assert r.fleet.handle_callback(segment) == Outcome.APPLIED
    assert task.transcript_text() == "hello"
    ended = status_callback(tid(task), 12)
    ended["data"]["reason"] = "source ended"
    assert r.fleet.handle_callback(ended) == Outcome.APPLIED
    assert state_of(task) is TaskState.ENDING  # and its confirming stop went out
    assert [stop.task_id for stop in r.sim.service.stop_log] == [tid(task)]


def test_a_callback_of_ours_in_no_stream_shape_is_refused_and_kept(clock: ManualClock) -> None:
    r = rig(clock)
    task = r.start()
    stringly = status_callback(tid(task), 14)
    stringly["data"]["status"] = "14"
    with pytest.raises(CallbackError):
        r.fleet.handle_callback(stringly)
    assert [letter.field for letter in r.fleet.store.dead_letters()] == ["data"]
    assert state_of(task) is TaskState.RUNNING


def test_a_stop_asked_for_while_the_start_was_refused_for_now_starts_nothing(clock: ManualClock) -> None:
    class StopsThenRefuses(PassesThrough):
        fleet: Fleet | None = None

        def start(self, kind: StreamKind, params: Mapping[str, Any]) -> StartResult:
            assert self.fleet is not None
            (task,) = self.fleet.tasks()
            self.fleet.stop(task)  # from another thread, as it were: remembered
            return RefusesStarts(self.inner).start(kind, params)

    r = rig(clock, wrap=StopsThenRefuses)
    assert isinstance(r.transport, StopsThenRefuses)
    r.transport.fleet = r.fleet
    task = r.start()
    assert state_of(task) is TaskState.STOPPED
    r.sim.advance(30)
    assert triggers(task) == ["start", "stop", "start_deferred", "stop"]
    assert r.sim.service.start_requests == 0


def test_a_status_other_than_14_cannot_be_declared_stopped() -> None:
    with pytest.raises(ValueError, match="only status 14 means stopped"):
        DEFAULT_STATUSES.with_status(12, "stopped")


def test_a_wall_clock_that_steps_back_leaves_every_task_rebuildable(clock: ManualClock) -> None:
    class WallClock:  # one NTP may step back
        def __init__(self) -> None:
            self.t = clock.now()

        def now(self) -> float:
            return self.t

    wall = WallClock()
    sim = SimulatedService(clock=clock)
    fleet = Fleet(SimTransport(sim), clock=wall, policy=POLICY)
    sim.on_callback(fleet.handle_callback)
    task = fleet.start("video", url=URL)  # started, with its start answer at t
    wall.t -= 0.5
    task2 = fleet.start("video", url=URL)  # its start answer stamped before the last entry's time
    fleet.stop(task2)
    sim.advance(1)
    wall.t -= 0.5
    sim.advance(1)
    for each in (task, task2):
        row = fleet.store.row(each.key or "")
        assert row is not None
        rebuilt = rebuild(row, fleet.store.journal(row.key), clock=wall)
        assert (rebuilt.started_at, rebuilt.ended_at) == (each.started_at, each.ended_at)


def test_a_max_duration_beyond_any_float_is_refused_before_anything_is_made(clock: ManualClock) -> None:
    r = rig(clock)
    with pytest.raises(ValueError, match="max_duration"):
        r.fleet.start("video", url=URL, max_duration=10**400)
    assert (r.fleet.tasks(), r.sim.service.start_requests) == ([], 0)


def test_an_elevenlabs_error_on_a_live_stream_is_an_end_a_stop_confirms(clock: ManualClock) -> None:
    r = rig(clock, Faults(provider_termination=1.0), mode="passthrough")
    task = r.fleet.start("audio", audio_url=URL, provider="elevenlabs")
    r.sim.advance(7)
    assert [stop.task_id for stop in r.sim.service.stop_log] == [tid(task)]  # the error was not news
    assert state_of(task) is TaskState.STOPPED  # the stream had lived on: the stop stopped it
    assert r.sim.billing() == []


def test_segment_hooks_get_an_unindexed_transcript_with_the_number_it_took(clock: ManualClock) -> None:
    r = rig(clock, mode="passthrough")
    heard: list[tuple[int | None, bool]] = []
    r.fleet.on_segment(lambda task, segment: heard.append((segment.index, segment.final)))
    task = r.fleet.start("audio", audio_url=URL, provider="elevenlabs")
    r.sim.service.advance(11)  # callbacks only: no tick
    assert heard == [(0, False), (0, True), (1, False), (1, True)]
    assert [(s.index, s.final) for s in task.transcript] == [(0, True), (1, True)]


def delivering(fleet: Fleet, callback: Mapping[str, Any]) -> tuple[threading.Thread, list[StoreError]]:
    """Deliver ``callback`` on a thread of its own; the StoreError it meets, if any, is kept."""
    failed: list[StoreError] = []

    def deliver() -> None:
        try:
            fleet.handle_callback(callback)
        except StoreError as error:
            failed.append(error)

    thread = threading.Thread(target=deliver)
    thread.start()
    return thread, failed


class SlowThenFailingPark(MemoryStore):
    """A store whose first park waits for a signal and then fails, as a slow store that times out."""

    def __init__(self) -> None:
        super().__init__()
        self.first_park_began, self.fail_it = threading.Event(), threading.Event()
        self._parks = 0

    def park(self, task_id: str, at: float, payload: Mapping[str, Any]) -> None:
        self._parks += 1
        if self._parks == 1:
            self.first_park_began.set()
            self.fail_it.wait(10)
            raise StoreError("the store timed out")
        super().park(task_id, at, payload)


def test_a_redelivery_while_the_first_store_write_is_on_its_way_is_kept_whatever_that_write_does(
    clock: ManualClock,
) -> None:
    """The first delivery parks a callback and is still writing it when the sender, tired of
    waiting, delivers it again. The redelivery must not be answered on the strength of the first
    write: it writes the callback too, so when the first write fails the callback is still kept."""
    store = SlowThenFailingPark()
    fleet = rig(clock, store=store).fleet
    callback = segment_callback("ghost", 0, "early")
    thread, first = delivering(fleet, callback)
    assert store.first_park_began.wait(10)
    assert fleet.handle_callback(callback) is Outcome.PARKED_ALREADY  # written by this delivery
    store.fail_it.set()
    thread.join(10)
    assert [str(error) for error in first] == ["the store timed out"]  # answered 503: a retry is harmless
    assert [kept.task_id for kept in store.parked()] == ["ghost"]
    assert fleet.stats().parked == 1  # still in the lot
    clock.advance(POLICY.park_ttl + 1)
    fleet.tick()  # adopted: the parked callback reaches its task
    orphan = fleet.get("ghost")
    assert orphan is not None
    assert orphan.transcript_text() == "early"


class FindFailsOnce(MemoryStore):
    """A store whose next ``find`` fails (an outage a moment long) once ``failing`` is set."""

    failing = False

    def find(self, task_id: str) -> TaskRow | None:
        if self.failing:
            self.failing = False
            raise StoreError("the store is down")
        return super().find(task_id)


@pytest.mark.parametrize("by", ["tick", "stop_all"])
def test_an_orphan_whose_adoption_fails_at_once_keeps_its_callbacks_parked_for_the_next_try(
    clock: ManualClock, by: str
) -> None:
    store = FindFailsOnce()
    fleet = rig(clock, store=store).fleet
    assert fleet.handle_callback(segment_callback("ghost", 0, "early")) is Outcome.PARKED
    clock.advance(POLICY.park_ttl + 1)
    store.failing = True
    if by == "tick":
        fleet.tick()  # (the failure is logged)
    else:
        with pytest.raises(StopAllError):
            fleet.stop_all()
    assert fleet.stats().parked == 1
    assert fleet.next_deadline() is not None  # its adoption is due again
    fleet.tick()
    orphan = fleet.get("ghost")
    assert orphan is not None
    assert orphan.transcript_text() == "early"


class HangingParkAndFind(MemoryStore):
    """One outage: the first park waits, then fails; ``find`` fails while ``find_fails``."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.release = threading.Event(), threading.Event()
        self.hang, self.find_fails = True, False

    def park(self, task_id: str, at: float, payload: Mapping[str, Any]) -> None:
        if self.hang:
            self.hang = False
            self.entered.set()
            assert self.release.wait(10)
            raise StoreError("the store is down")
        super().park(task_id, at, payload)

    def find(self, task_id: str) -> TaskRow | None:
        if self.find_fails:
            raise StoreError("the store is down")
        return super().find(task_id)


def test_a_parked_callback_handed_back_while_its_write_is_on_its_way_is_kept_by_its_redelivery(
    clock: ManualClock,
) -> None:
    """Its adoption fails while its store write is still on its way, so the lot takes it back;
    then that write fails (503). The redelivery must write it, not be answered "parked already"
    on the strength of a write that failed."""
    store = HangingParkAndFind()
    fleet = rig(clock, store=store).fleet
    callback = segment_callback("ghost", 0, "early")
    thread, first = delivering(fleet, callback)
    assert store.entered.wait(10)
    clock.advance(POLICY.park_ttl + 1)
    store.find_fails = True
    fleet.tick()  # its adoption fails: the lot takes the callback back
    store.find_fails = False
    store.release.set()
    thread.join(10)
    assert len(first) == 1  # answered 503
    assert fleet.handle_callback(callback) is Outcome.PARKED  # written, this time
    assert [kept.task_id for kept in store.parked()] == ["ghost"]
