"""``stop_all`` sends every stop it can, even when the journal cannot keep some of them.

A stream left running bills, so a store that fails for one task must not keep the other tasks'
stops from going out, nor that task's own: its stop goes out unjournaled, and ``StopAllError``
names it once every request is sent.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from streamlife import Fleet, ManualClock, Policy, TaskState
from streamlife.errors import StopAllError, StoreError
from streamlife.sim import SimTransport, SimulatedService
from streamlife.store import SqliteStore

URL = "rtmp://sim.invalid/live"


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


@pytest.mark.parametrize("workers", [0, 4])
def test_one_task_whose_stop_cannot_be_journaled_keeps_no_stream_billing(
    tmp_path: Path, workers: int
) -> None:
    path = tmp_path / "journal.db"
    clock = ManualClock(1_000.0)
    service = SimulatedService(clock=clock)
    store = SqliteStore(path)
    try:
        fleet = Fleet(
            SimTransport(service),
            clock=clock,
            policy=Policy(stop_concurrency=workers, seed=0, final_callback_wait=5),
            store=store,
        )
        service.on_callback(fleet.handle_callback)
        tasks = [fleet.start("audio", audio_url=URL, provider="assemblyai") for _ in range(20)]
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
    finally:
        store.close()
