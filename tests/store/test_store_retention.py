"""Retention: ``pruning`` prunes a store from a thread, at once and then every turn; ``Policy.retention``
is checked."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from structlog.testing import capture_logs

from streamlife import ManualClock, Policy
from streamlife.store import JournalEntry, MemoryStore, PruneResult, StoreError, TaskRow, pruning


def ended(store: MemoryStore, key: str, at: float) -> None:
    entry = JournalEntry(1, at, "stop", "pending", "stopped", None)
    store.create(TaskRow(key, "audio", None, "stopped", 1, at, at, {}), [entry])


def wait_until(done: Any, timeout: float = 5.0) -> None:
    give_up_at = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < give_up_at, "never happened"
        time.sleep(0.005)


def test_pruning_prunes_at_once_then_every_turn_with_the_cutoff_on_the_clock() -> None:
    clock = ManualClock(10_000.0)
    store = MemoryStore()
    ended(store, "old", 1_000.0)
    ended(store, "later", 9_500.0)
    with capture_logs() as logs, pruning(store, 3_600.0, clock=clock, every=0.01):
        wait_until(lambda: store.row("old") is None)
        assert store.row("later") is not None  # 500 s old: kept
        clock.advance(3_600.0)
        wait_until(lambda: store.row("later") is None)
    pruned = [log for log in logs if log["event"] == "streamlife.pruned"]
    assert [(log["tasks"], log["before"]) for log in pruned] == [(1, 6_400.0), (1, 10_000.0)]


class FailsOnce(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def prune(
        self, before: float, *, dry_run: bool = False, stop: threading.Event | None = None
    ) -> PruneResult:
        self.calls += 1
        if self.calls == 1:
            raise StoreError("the database is away")
        return super().prune(before, dry_run=dry_run, stop=stop)


def test_a_prune_that_fails_is_logged_and_tried_again_at_the_next_turn() -> None:
    store = FailsOnce()
    ended(store, "old", 1_000.0)
    with capture_logs() as logs, pruning(store, 60.0, clock=ManualClock(10_000.0), every=0.01):
        wait_until(lambda: store.row("old") is None)
    assert [log["event"] for log in logs][:2] == ["streamlife.prune_failed", "streamlife.pruned"]


def test_leaving_the_block_stops_the_thread() -> None:
    store = FailsOnce()
    with pruning(store, 60.0, clock=ManualClock(10_000.0), every=3600.0):
        wait_until(lambda: store.calls == 1)
    assert not [thread for thread in threading.enumerate() if thread.name == "streamlife-retention"]
    assert store.calls == 1


@pytest.mark.parametrize(("name", "value"), [("retention", 0), ("retention", float("inf")), ("every", -1.0)])
def test_pruning_wants_positive_seconds(name: str, value: float) -> None:
    arguments = {"retention": 60.0, "every": 1.0, name: value}
    with (
        pytest.raises(ValueError, match=name),
        pruning(MemoryStore(), arguments["retention"], every=arguments["every"]),
    ):
        pass


def test_policy_retention_is_none_or_positive_seconds() -> None:
    assert Policy().retention is None
    assert Policy(retention=30 * 86400).retention == 30 * 86400
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"Policy\.retention must be positive"):
            Policy(retention=bad)
    for wrong in ("30d", True):
        with pytest.raises(TypeError, match=r"Policy\.retention must be seconds"):
            Policy(retention=wrong)  # type: ignore[arg-type]


class PrunesUntilStopped(MemoryStore):
    """A prune that goes on until it is stopped (a store that grew for months): it says when it
    began, and whether it was stopped."""

    def __init__(self) -> None:
        super().__init__()
        self.began = threading.Event()
        self.stopped = False

    def prune(
        self, before: float, *, dry_run: bool = False, stop: threading.Event | None = None
    ) -> PruneResult:
        self.began.set()
        self.stopped = stop is not None and stop.wait(30)
        return PruneResult(0, 0, 0)


def test_leaving_the_block_stops_the_prune_under_way() -> None:
    """A process shutting down waits for the prune's batch under way, not for the whole prune."""
    store = PrunesUntilStopped()
    with pruning(store, 60.0, clock=ManualClock(10_000.0), every=3600.0):
        assert store.began.wait(10)
    assert store.stopped
