"""``stop_all`` sends every stop it can, even when the journal cannot keep some of them.

A stream left running bills, so a store that fails for one task must not keep the other tasks'
stops from going out, nor that task's own: its stop goes out unjournaled, and ``StopAllError``
names it once every request is sent.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from streamlife import Fleet, ManualClock, Policy, StreamKind, StreamTask, TaskState
from streamlife._events import StartResult, StopResult
from streamlife.errors import RateLimitedError, StopAllError, StoreError
from streamlife.sim import SimTransport, SimulatedService
from streamlife.store import SqliteStore

URL = "rtmp://sim.invalid/live"


def state_of(task: StreamTask) -> TaskState:
    """Read through a call, so that mypy forgets what an earlier assert narrowed."""
    return task.state


def refuse_stopping(path: Path, key: str) -> None:
    """Make the real SQLite file refuse to move one task's row to stopping, as a failing disk or a
    constraint would: the store raises, and nothing of that write is kept."""
    with sqlite3.connect(path) as db:
        db.execute(
            f"""CREATE TRIGGER refuse BEFORE UPDATE ON tasks
                WHEN NEW.key = '{key}' AND NEW.state = 'stopping'
                BEGIN SELECT RAISE(ABORT, 'the disk says no'); END"""
        )
    db.close()


@contextmanager
def twenty_streams(
    path: Path, transport: SimTransport, clock: ManualClock, workers: int
) -> Iterator[tuple[SqliteStore, Fleet, list[StreamTask]]]:
    """Twenty streams started through ``transport`` by a Fleet journaling in the SQLite file ``path``."""
    store = SqliteStore(path)
    try:
        fleet = Fleet(
            transport,
            clock=clock,
            policy=Policy(stop_concurrency=workers, seed=0, final_callback_wait=5),
            store=store,
        )
        transport.service.on_callback(fleet.handle_callback)
        yield store, fleet, [fleet.start("audio", audio_url=URL, provider="assemblyai") for _ in range(20)]
    finally:
        store.close()


@pytest.mark.parametrize("workers", [0, 4])
def test_one_task_whose_stop_cannot_be_journaled_keeps_no_stream_billing(
    tmp_path: Path, workers: int
) -> None:
    path = tmp_path / "journal.db"
    clock = ManualClock(1_000.0)
    service = SimulatedService(clock=clock)
    with twenty_streams(path, SimTransport(service), clock, workers) as (store, fleet, tasks):
        broken = tasks[0]
        assert broken.key is not None
        refuse_stopping(path, broken.key)
        with pytest.raises(StopAllError) as raised:
            fleet.stop_all()
        ((failed, error),) = raised.value.failures
        assert failed is broken
        assert isinstance(error, StoreError)
        assert "the disk says no" in str(error)
        assert "1 task(s)" in str(raised.value)
        assert service.stop_requests == 20  # every stream's stop went out, the unjournaled one too
        assert service.billing() == []
        assert store.row(broken.key).state == "running"  # type: ignore[union-attr]  # as journaled
        service.advance(1.0)  # the status-14 callbacks come: the journal learns the end from them
        assert {task.state for task in tasks} == {TaskState.STOPPED}


class DefersStarts:
    """The simulator's transport, but every start is refused for now (429) while ``refusing``."""

    def __init__(self, inner: SimTransport) -> None:
        self.inner, self.refusing, self.starts = inner, True, 0

    def start(self, kind: StreamKind, params: Mapping[str, Any]) -> StartResult:
        self.starts += 1
        if self.refusing:
            raise RateLimitedError(
                "slow down", operation="audio.start", status=429, code="429", retry_after=1.0
            )
        return self.inner.start(kind, params)

    def stop(self, kind: StreamKind, task_id: str, *, within: float | None = None) -> StopResult:
        return self.inner.stop(kind, task_id, within=within)

    def close(self) -> None:
        self.inner.close()


def refuse_state(path: Path, key: str, state: str) -> None:
    with sqlite3.connect(path) as db:
        db.execute(
            f"""CREATE TRIGGER refuse BEFORE UPDATE ON tasks WHEN NEW.key = '{key}' AND NEW.state = '{state}'
                BEGIN SELECT RAISE(ABORT, 'the disk says no'); END"""
        )
    db.close()


def lift_refusal(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("DROP TRIGGER refuse")
    db.close()


def test_a_deferred_start_whose_stop_cannot_be_journaled_never_goes_out(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    clock = ManualClock(1_000.0)
    service = SimulatedService(clock=clock)
    transport = DefersStarts(SimTransport(service))
    store = SqliteStore(path)
    try:
        fleet = Fleet(transport, clock=clock, policy=Policy(stop_concurrency=0, seed=0), store=store)
        task = fleet.start("audio", audio_url=URL, provider="assemblyai")
        assert task.state is TaskState.PENDING
        assert task.key is not None
        refuse_state(path, task.key, "stopped")
        with pytest.raises(StopAllError):
            fleet.stop_all()
        transport.refusing = False
        for _ in range(30):  # its retry comes due: the stop is journaled instead, or nothing happens
            clock.advance(1.0)
            fleet.tick()
        assert transport.starts == 1
        assert task.state is TaskState.PENDING
        lift_refusal(path)
        for _ in range(5):
            clock.advance(1.0)
            fleet.tick()
        assert transport.starts == 1
        assert state_of(task) is TaskState.STOPPED
        assert service.billing() == []
    finally:
        store.close()


class GatedStarts(SimTransport):
    """Starts wait at a gate: a stop can be asked for while one is in flight."""

    def __init__(self, service: SimulatedService) -> None:
        super().__init__(service)
        self.entered, self.gate = threading.Event(), threading.Event()

    def start(self, kind: StreamKind, params: Mapping[str, Any]) -> StartResult:
        self.entered.set()
        assert self.gate.wait(10)
        return super().start(kind, params)


def test_a_start_in_flight_whose_stop_cannot_be_journaled_is_stopped_when_its_answer_comes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.db"
    clock = ManualClock(1_000.0)
    service = SimulatedService(clock=clock)
    transport = GatedStarts(service)
    store = SqliteStore(path)
    try:
        fleet = Fleet(transport, clock=clock, policy=Policy(stop_concurrency=0, seed=0), store=store)
        started: list[StreamTask] = []
        starter = threading.Thread(
            target=lambda: started.append(fleet.start("audio", audio_url=URL, provider="assemblyai"))
        )
        starter.start()
        assert transport.entered.wait(10)
        (task,) = fleet.tasks()
        assert task.key is not None
        with sqlite3.connect(path) as db:  # a stop while starting is kept as a fact on the row
            db.execute(
                f"""CREATE TRIGGER refuse BEFORE UPDATE ON tasks WHEN NEW.key = '{task.key}'
                    AND NEW.state = 'starting' BEGIN SELECT RAISE(ABORT, 'the disk says no'); END"""
            )
        db.close()
        with pytest.raises(StopAllError):
            fleet.stop_all()
        lift_refusal(path)
        transport.gate.set()
        starter.join(10)
        assert task.state is TaskState.STOPPING  # its stop went out with the answer
        service.advance(1.0)
        assert service.billing() == []
    finally:
        store.close()


class SlowStops(SimTransport):
    """Each stop takes a tenth of a second: a wait of half a second sends only some of twenty."""

    def stop(self, kind: StreamKind, task_id: str, *, within: float | None = None) -> StopResult:
        time.sleep(0.1)
        return super().stop(kind, task_id, within=within)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_stop_refused_by_the_store_with_no_time_left_to_send_it_is_sent_by_a_later_tick(
    tmp_path: Path, workers: int
) -> None:
    path = tmp_path / "journal.db"
    clock = ManualClock(1_000.0)
    service = SimulatedService(clock=clock)
    with twenty_streams(path, SlowStops(service), clock, workers) as (_, fleet, tasks):
        assert tasks[0].key is not None
        refuse_stopping(path, tasks[0].key)
        with pytest.raises(StopAllError):
            fleet.stop_all(wait=0.5)
        for _ in range(120):  # the store still refuses: its stop goes out unjournaled, on a tick
            clock.advance(1.0)
            fleet.tick()
        deadline = time.monotonic() + 30
        while service.billing() and time.monotonic() < deadline:
            clock.advance(1.0)
            fleet.tick()
            time.sleep(0.05)
        assert service.billing() == []
