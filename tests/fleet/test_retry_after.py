"""The service's Retry-After holds a stop back, but never for long and never in one process only.

A wait the service asks for is capped by ``Policy.max_retry_after``: a Retry-After of a year (or
of infinity, from a transport that parsed it loosely) must not leave a stream billing, and an
explicit ``stop`` is held back no longer than the cap either. The wait is journaled with the
failed stop, so another process on the same store, and a restart, honour it too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from streamlife import Fleet, ManualClock, Policy, StreamKind, StreamTask, TaskState
from streamlife._events import StartResult, StopResult
from streamlife.errors import RateLimitedError
from streamlife.sim import SimTransport, SimulatedService
from streamlife.store import MemoryStore, SqliteStore, Store

URL = "rtmp://sim.invalid/live"
CAP = 300.0


class RateLimitsStops:
    """The simulator's transport, but every stop is answered 429 with ``retry_after`` while
    ``limiting`` is on (and counted, sent or not)."""

    def __init__(self, inner: SimTransport, retry_after: float) -> None:
        self.inner, self.retry_after, self.limiting, self.stops = inner, retry_after, True, 0

    def start(self, kind: StreamKind, params: Mapping[str, Any]) -> StartResult:
        return self.inner.start(kind, params)

    def stop(self, kind: StreamKind, task_id: str, *, within: float | None = None) -> StopResult:
        self.stops += 1
        if self.limiting:
            raise RateLimitedError(
                "Rate limit exceeded",
                operation="audio.stop",
                status=429,
                code="429",
                retry_after=self.retry_after,
            )
        return self.inner.stop(kind, task_id, within=within)

    def close(self) -> None:
        self.inner.close()


def policy(**changes: Any) -> Policy:
    fields: dict[str, Any] = {
        "stop_concurrency": 0,
        "seed": 0,
        "stop_retry_base": 1.0,
        "stop_retry_cap": 8.0,
        "final_callback_wait": 5,
        "max_retry_after": CAP,
    }
    return Policy(**{**fields, **changes})


def run(clock: ManualClock, service: SimulatedService, seconds: int, *fleets: Fleet) -> None:
    for _ in range(seconds):
        service.advance(1.0)
        for fleet in fleets:
            fleet.tick()


def state_of(task: StreamTask) -> TaskState:
    return task.state


@pytest.mark.parametrize("retry_after", [1e12, math.inf, 10 * 365 * 86_400.0])
def test_a_retry_after_beyond_the_cap_holds_a_stop_back_only_as_long_as_the_cap(retry_after: float) -> None:
    clock = ManualClock(1_000.0)
    service = SimulatedService(clock=clock)
    transport = RateLimitsStops(SimTransport(service), retry_after)
    fleet = Fleet(transport, clock=clock, policy=policy())
    service.on_callback(fleet.handle_callback)
    task = fleet.start("audio", audio_url=URL, provider="assemblyai")
    fleet.stop(task)
    assert transport.stops == 1
    transport.limiting = False
    run(clock, service, 100, fleet)
    fleet.stop(task)  # an explicit stop, within the service's wait: held back too, but not for long
    assert transport.stops == 1
    run(clock, service, int(CAP) - 100 - 1, fleet)
    assert transport.stops == 1
    assert state_of(task) is TaskState.STOPPING
    run(clock, service, 2, fleet)
    assert transport.stops == 2
    run(clock, service, 10, fleet)
    assert state_of(task) is TaskState.STOPPED
    assert service.billing() == []


def test_a_nan_retry_after_from_a_loose_transport_is_no_wait_at_all() -> None:
    clock = ManualClock(1_000.0)
    service = SimulatedService(clock=clock)
    transport = RateLimitsStops(SimTransport(service), math.nan)
    fleet = Fleet(transport, clock=clock, policy=policy())
    task = fleet.start("audio", audio_url=URL, provider="assemblyai")
    fleet.stop(task)
    transport.limiting = False
    run(clock, service, 2, fleet)  # the backoff alone: its first wait is at most stop_retry_base
    assert transport.stops == 2
    assert task.stop_acknowledged


def shared_pair(
    store: Store, retry_after: float
) -> tuple[ManualClock, SimulatedService, Fleet, Fleet, RateLimitsStops]:
    clock = ManualClock(1_000.0)
    service = SimulatedService(clock=clock)
    transport = RateLimitsStops(SimTransport(service), retry_after)
    first = Fleet(transport, clock=clock, policy=policy(), store=store)
    second = Fleet(transport, clock=clock, policy=policy(), store=store)
    return clock, service, first, second, transport


def test_another_process_honours_the_wait_a_failed_stop_journaled() -> None:
    """One process's stop is answered 429 with Retry-After 120 s. Another process that is asked to
    stop the same stream 2 s later waits for the same 120 s, having read the wait from the journal."""
    clock, service, first, second, transport = shared_pair(MemoryStore(shared=True), 120.0)
    task = first.start("audio", audio_url=URL, provider="assemblyai")
    assert task.task_id is not None
    first.stop(task)
    assert transport.stops == 1
    transport.limiting = False
    run(clock, service, 2)
    other = second.stop(task.task_id)
    assert other.stop_not_before == 1_000.0 + 120.0
    assert transport.stops == 1
    run(clock, service, 117, second)
    assert transport.stops == 1
    run(clock, service, 2, second)
    assert transport.stops == 2
    assert other.stop_acknowledged


def test_a_restart_honours_the_wait_a_failed_stop_journaled(tmp_path: Path) -> None:
    """The process that got the 429 dies; the one that recovers its tasks from the SQLite file 6 s
    later does not send the stop before the service's wait is over."""
    path = tmp_path / "journal.db"
    clock = ManualClock(1_000.0)
    service = SimulatedService(clock=clock)
    transport = RateLimitsStops(SimTransport(service), 120.0)
    store = SqliteStore(path)
    dead = Fleet(transport, clock=clock, policy=policy(), store=store)
    task = dead.start("audio", audio_url=URL, provider="assemblyai")
    dead.stop(task)
    store.close()
    assert transport.stops == 1
    transport.limiting = False
    run(clock, service, 6)
    store = SqliteStore(path)
    try:
        restarted = Fleet(transport, clock=clock, policy=policy(), store=store)
        (recovered,) = restarted.recover()
        assert recovered.stop_not_before == 1_000.0 + 120.0
        run(clock, service, 113, restarted)
        assert transport.stops == 1
        run(clock, service, 2, restarted)
        assert transport.stops == 2
        assert recovered.stop_acknowledged
    finally:
        store.close()


@pytest.mark.parametrize("value", [math.inf, math.nan, 0, -1.0])
def test_max_retry_after_must_be_a_positive_finite_number_of_seconds(value: float) -> None:
    with pytest.raises(ValueError, match="max_retry_after"):
        Policy(max_retry_after=value)


class FailsStopsWordily(RateLimitsStops):
    """Every stop fails with an error of four million characters, as a transport of one's own may raise."""

    def stop(self, kind: StreamKind, task_id: str, *, within: float | None = None) -> StopResult:
        self.stops += 1
        raise RuntimeError("upstream said: " + "x" * 4_000_000)


def test_a_huge_error_is_journaled_cut_however_often_the_stop_fails(tmp_path: Path) -> None:
    """Each failed stop journals its error: a transport's error of megabytes must not grow the
    SQLite file by megabytes a retry."""
    clock = ManualClock(1_000.0)
    service = SimulatedService(clock=clock)
    transport = FailsStopsWordily(SimTransport(service), 0.0)
    store = SqliteStore(tmp_path / "journal.db")
    try:
        fleet = Fleet(transport, clock=clock, policy=policy(stop_retry_cap=1.0), store=store)
        task = fleet.start("audio", audio_url=URL, provider="assemblyai")
        with pytest.raises(RuntimeError):
            fleet.stop(task)
        run(clock, service, 20, fleet)
        assert transport.stops > 10
        errors = [
            (entry.args or {})["error"] for entry in fleet.journal(task) if entry.trigger == "stop_error"
        ]
        assert len(errors) == task.stop_failures > 10
        assert all(len(text) < 2_100 and text.endswith("more characters cut]") for text in errors)
        assert task.last_error == errors[-1]
        assert (tmp_path / "journal.db").stat().st_size < 1_000_000
    finally:
        store.close()


@pytest.mark.parametrize("how", ["another process", "a restart"])
def test_a_wait_journaled_by_a_clock_a_day_fast_holds_no_stop_past_the_cap(tmp_path: Path, how: str) -> None:
    """The journaled wait is a time on the writer's clock. A reader whose clock is a day behind
    caps it again from its own now: no stop waits longer than ``max_retry_after``."""
    clock, fast = ManualClock(1_000.0), ManualClock(1_000.0 + 86_400)
    service = SimulatedService(clock=clock)
    transport = RateLimitsStops(SimTransport(service), 120.0)
    store = SqliteStore(tmp_path / "journal.db")
    try:
        writer = Fleet(transport, clock=fast, policy=policy(), store=store)
        task = writer.start("audio", audio_url=URL, provider="assemblyai")
        assert task.task_id is not None
        writer.stop(task)
        transport.limiting = False
        reader = Fleet(transport, clock=clock, policy=policy(), store=store)
        if how == "a restart":
            reader.recover()
        else:
            reader.stop(task.task_id)
        run(clock, service, int(CAP) + 2, reader)
        assert transport.stops == 2
    finally:
        store.close()
