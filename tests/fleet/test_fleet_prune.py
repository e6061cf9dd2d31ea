"""A Fleet after its store pruned an ended task: what a late callback for that task does."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from streamlife import ManualClock, Outcome, TaskState
from streamlife.errors import MisroutedCallbackError, StoreError
from streamlife.protocol import segment_callback
from streamlife.sim import Faults
from streamlife.store import JournalEntry, PruneResult, SqliteStore
from tests.conftest import POLICY, rig


@pytest.mark.parametrize("stop_ended_ok", [0.0, 1.0], ids=["not-found", "answered-200"])
def test_a_late_callback_for_a_pruned_task_is_an_orphan_whose_stop_ends_it_and_nothing_bills(
    tmp_path: Path, stop_ended_ok: float
) -> None:
    """The task is gone from the store, so its task_id is one no task holds: parked, adopted after
    park_ttl, and stopped. Its stream ended long ago: the stop is answered "not found" (or 200, as
    the docs allow for an ended stream), the orphan's task ends, and nothing bills."""
    clock = ManualClock(1_700_000_000.0)
    path = tmp_path / "streams.db"
    r = rig(clock, Faults(stop_ended_ok=stop_ended_ok), store=SqliteStore(path))
    task = r.start()
    r.sim.advance(12)
    r.fleet.stop(task)
    r.sim.advance(2)
    assert task.state is TaskState.STOPPED
    task_id = task.task_id or ""
    stops_before = r.sim.service.stop_requests
    started_before = r.sim.service.start_requests

    fleet = r.restart(SqliteStore(path))  # a process that holds no copy of the ended task
    fleet.recover()
    assert fleet.store.prune(clock.now()).tasks == 1
    assert fleet.store.find(task_id) is None

    assert fleet.handle_callback(segment_callback(task_id, 99, "late")) is Outcome.PARKED
    r.sim.advance(POLICY.park_ttl + POLICY.final_callback_wait + 2)
    (orphan,) = fleet.tasks()
    assert orphan.adopted
    assert orphan.task_id == task_id
    assert orphan.terminal
    assert orphan.state is TaskState.STOPPED
    assert r.sim.billing() == []
    assert r.sim.service.stop_requests == stops_before + 1  # one stop, safe to send again
    assert r.sim.service.start_requests == started_before
    row = fleet.store.find(task_id)
    assert row is not None  # the orphan's own task: journaled, claimed, and pruned in its turn
    assert row.key == orphan.key
    assert fleet.store.prune(clock.now() + 1) == PruneResult(1, row.version, 0)
    fleet.store.close()


def test_a_late_callback_for_a_pruned_task_this_fleet_still_holds_starts_nothing(tmp_path: Path) -> None:
    clock = ManualClock(1_700_000_000.0)
    r = rig(clock, store=SqliteStore(tmp_path / "streams.db"))
    task = r.start()
    r.sim.advance(12)
    r.fleet.stop(task)
    r.sim.advance(2)
    task_id = task.task_id or ""
    r.fleet.store.prune(clock.now() + 1)

    with contextlib.suppress(StoreError):  # refused: the sender may deliver it again
        r.fleet.handle_callback(segment_callback(task_id, 99, "late"))
    r.sim.advance(POLICY.park_ttl + POLICY.final_callback_wait + 2)
    assert r.sim.service.start_requests == 1  # the copy is let go, never reset to pending and started
    assert r.sim.billing() == []
    assert all(t.terminal for t in r.fleet.tasks())


class PrunedMidRead(SqliteStore):
    """A store whose first read of a journal lets another connection prune the file first: the
    prune lands between the read of a task's row and the read of its journal."""

    def __init__(self, path: Path, before: float) -> None:
        super().__init__(path)
        self.before: float | None = before

    def journal(self, key: str) -> list[JournalEntry]:
        if self.before is not None:
            pruner = SqliteStore(self.path)
            try:
                assert pruner.prune(self.before).tasks == 1
            finally:
                pruner.close()
            self.before = None
        return super().journal(key)


@pytest.mark.parametrize("by", ["task_id", "key"])
def test_a_late_callback_racing_the_prune_of_its_task_finds_it_gone_not_damaged(
    tmp_path: Path, by: str
) -> None:
    """The Fleet reads the ended task's row, a prune deletes the task, and the Fleet reads its
    journal, empty: the task is gone, as if the callback came after the prune, not damaged."""
    clock = ManualClock(1_700_000_000.0)
    path = tmp_path / "streams.db"
    r = rig(clock, store=SqliteStore(path))
    task = r.start()
    r.sim.advance(12)
    r.fleet.stop(task)
    r.sim.advance(2)
    task_id, key = task.task_id or "", task.key or ""
    fleet = r.restart(PrunedMidRead(path, clock.now() + 1))  # holds no copy of the ended task
    late = segment_callback(task_id, 99, "late")
    if by == "task_id":
        assert fleet.handle_callback(late) is Outcome.PARKED
    else:  # by the task's own callback URL: refused, as for any key no task has
        with pytest.raises(MisroutedCallbackError):
            fleet.handle_callback(late, key=key)
    assert fleet.store.row(key) is None
    fleet.store.close()
