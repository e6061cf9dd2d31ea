"""Terminal tasks leave a Fleet's memory after ``Policy.keep_terminal``, and come back from the
store when asked: by ``get``, ``journal``, ``stop``, or a late callback."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamlife import ManualClock, Outcome, Policy, TaskState
from streamlife.protocol import segment_callback
from streamlife.store import MemoryStore, SqliteStore, Store
from tests.conftest import rig, state_of

KEEP = 60


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    return MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "streams.db")


def test_an_ended_task_leaves_memory_after_keep_terminal_and_comes_back_when_asked(
    clock: ManualClock, store: Store
) -> None:
    r = rig(clock, store=store, keep_terminal=KEEP)
    ended, live = r.start(), r.start()
    r.sim.advance(12)
    r.fleet.stop(ended)
    r.sim.advance(2)
    assert state_of(ended) is TaskState.STOPPED
    spent = r.fleet.exposure()
    r.sim.advance(KEEP - 5)
    assert ended in r.fleet.tasks()  # kept for KEEP seconds from its last event
    r.sim.advance(10)

    assert r.fleet.tasks() == [live]  # only the live task is walked now
    assert r.fleet.stats().tasks == {"running": 1}
    r.fleet.stop(live)
    r.sim.advance(10)
    exposure = r.fleet.exposure()
    assert exposure.tasks == 2  # what a released task cost is still counted
    assert exposure.billed_seconds >= spent.billed_seconds

    back = r.fleet.get(ended.task_id or "")  # from the store, as it ended
    assert back is not None
    assert back is not ended
    assert back.state is TaskState.STOPPED
    assert [e.trigger for e in r.fleet.journal(ended)][-1] == "stopped"
    assert r.fleet.stop(ended).state is TaskState.STOPPED  # the old object is still understood
    assert r.sim.billing() == []


def test_a_late_callback_for_a_released_task_is_late(clock: ManualClock, store: Store) -> None:
    r = rig(clock, store=store, keep_terminal=KEEP)
    task = r.start()
    r.sim.advance(12)
    r.fleet.stop(task)
    r.sim.advance(KEEP + 10)
    assert r.fleet.tasks() == []
    task_id = task.task_id or ""
    late = r.fleet.handle_callback(segment_callback(task_id, 99, "late partial", final=False))
    assert late == Outcome.LATE  # loaded back from the store, never taken for an orphan
    kept = r.fleet.handle_callback(segment_callback(task_id, 98, "a late final"))
    assert kept == Outcome.APPLIED  # a late final still completes the transcript, journaled
    assert [e.trigger for e in r.fleet.journal(task_id)][-1] == "segment"
    assert r.fleet.stats().orphans == 0
    assert r.sim.service.start_requests == 1
    assert r.sim.billing() == []


def test_without_keep_terminal_every_task_stays(clock: ManualClock) -> None:
    r = rig(clock, keep_terminal=None)
    task = r.start()
    r.sim.advance(12)
    r.fleet.stop(task)
    r.sim.advance(3600)
    assert r.fleet.tasks() == [task]


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "60"])
def test_keep_terminal_is_checked(bad: object) -> None:
    with pytest.raises((TypeError, ValueError), match="keep_terminal"):
        Policy(keep_terminal=bad)  # type: ignore[arg-type]
