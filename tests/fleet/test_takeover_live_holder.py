"""A live, healthy holder keeps its tasks: no other process takes one over in normal operation.

Two Fleets share one SQLite file, as two processes would; each stream's callbacks go to the Fleet
that started it. Whatever that Fleet hears of a stream, and however it is kept busy, the other one
(which only ticks) must never take the task over: a takeover of a live task moves it by deadlines
its holder would not fire (a stall, a failed start), or sends stops its retry policy does not.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from streamlife import Fleet, ManualClock, Policy, StreamKind, TaskState
from streamlife._events import StopResult
from streamlife.errors import StoreError
from streamlife.sim import Faults, SimTransport, SimulatedService
from streamlife.store import MemoryStore, SqliteStore

URL = "rtmp://sim.invalid/live"
POLICY = Policy(
    stop_concurrency=0,
    seed=0,
    silence_after=12,
    stop_when_stalled=True,
    takeover_after=6,
)


def two_fleets(tmp_path: Path, clock: ManualClock, service: SimulatedService, policy: Policy) -> list[Fleet]:
    path = tmp_path / "streams.db"
    return [
        Fleet(SimTransport(service), clock=clock, policy=policy, store=SqliteStore(path)) for _ in range(2)
    ]


def run(service: SimulatedService, fleets: list[Fleet], seconds: float, step: float = 0.5) -> None:
    for _ in range(round(seconds / step)):
        service.advance(step)
        for fleet in fleets:
            fleet.tick()


def test_a_stream_heard_only_through_silent_segments_is_not_taken_for_stalled_by_another_process(
    tmp_path: Path, clock: ManualClock
) -> None:
    """A quiet room: every segment is status 0 with no transcript (ONGOING, journaled as nothing).
    Its holder hears the stream and never stalls it; nor may another process."""
    service = SimulatedService(clock=clock, faults=Faults(silent_segment=1.0))
    holder, other = two_fleets(tmp_path, clock, service, POLICY)
    service.on_callback(lambda payload: holder.handle_callback(payload))
    task = holder.start("audio", audio_url=URL, provider="assemblyai")
    assert task.task_id is not None
    run(service, [other, holder], 120)  # (the other one looks first)
    triggers = [entry.trigger for entry in holder.journal(task)]
    assert "silence" not in triggers, triggers
    assert (task.state, task.stalled) == (TaskState.RUNNING, False)
    assert other.tasks() == []  # never taken over
    assert service.stop_log == []


class SlowStops(SimTransport):
    """Each stop takes ``Policy.stop_timeout`` to answer (the service is slow), during which the
    world goes on: ``meanwhile`` advances it."""

    def __init__(self, service: SimulatedService, meanwhile: Callable[[float], None]) -> None:
        super().__init__(service)
        self.meanwhile = meanwhile

    def stop(self, kind: StreamKind, task_id: str, *, within: float | None = None) -> StopResult:
        self.meanwhile(POLICY.stop_timeout)
        return super().stop(kind, task_id, within=within)


def test_a_stop_all_whose_stops_wait_their_turn_is_not_taken_over(tmp_path: Path, clock: ManualClock) -> None:
    """A process stops all its tasks (shutting down, say) while the service answers each stop
    slowly: the stops go out one after another, and the last wait for the first. The process lives
    and sends each, so no other process may send any of them again."""
    service = SimulatedService(clock=clock)
    path = tmp_path / "streams.db"
    other = Fleet(SimTransport(service), clock=clock, policy=POLICY, store=SqliteStore(path))

    def meanwhile(seconds: float) -> None:
        run(service, [other], seconds)

    holder = Fleet(SlowStops(service, meanwhile), clock=clock, policy=POLICY, store=SqliteStore(path))
    service.on_callback(lambda payload: holder.handle_callback(payload))
    tasks = [holder.start("audio", audio_url=URL, provider="assemblyai") for _ in range(6)]
    run(service, [holder, other], 3)
    holder.stop_all()  # (answered: the last one's status-14 callback comes after)
    run(service, [holder, other], 30)
    assert all(task.terminal for task in tasks)
    assert Counter(request.task_id for request in service.stop_log) == {task.task_id: 1 for task in tasks}
    assert other.tasks() == []  # never taken over


class ClaimsFail(MemoryStore):
    """A shared store whose claims fail (a busy SQLite file past its timeout, a database away)."""

    def claim_due(self, now: float, *, until: float, limit: int) -> list[str]:
        raise StoreError("the claim failed (a test)")


def test_a_claim_that_fails_keeps_no_deadline_of_the_fleets_own_from_firing(clock: ManualClock) -> None:
    """Looking for other processes' overdue tasks is one more thing a tick does: when the store
    refuses the look, the tick fires its own deadlines all the same, as it does when one of
    them fails."""
    service = SimulatedService(clock=clock)
    policy = Policy(stop_concurrency=0, seed=0, silence_after=12, takeover_after=6)
    fleet = Fleet(SimTransport(service), clock=clock, policy=policy, store=ClaimsFail(shared=True))
    task = fleet.start("audio", audio_url=URL, provider="assemblyai")
    clock.advance(13)  # silent: its silence is due
    fleet.tick()
    assert task.stalled


def test_a_task_taken_over_is_not_claimed_again_and_again_while_its_row_stays_as_it_was(
    tmp_path: Path, clock: ManualClock
) -> None:
    """A running task whose row is due (as schema 4 makes every live task of an older file, or a
    holder that paused) while its holder lives, writing segments (which leave a row's deadlines
    as they are): the process that takes it over holds it from then on, with deadlines of its own
    in the row, rather than claiming it again every time its claim runs out."""
    service = SimulatedService(clock=clock)
    holder, other = two_fleets(tmp_path, clock, service, POLICY)
    service.on_callback(lambda payload: holder.handle_callback(payload))
    task = holder.start("audio", audio_url=URL, provider="assemblyai")
    with sqlite3.connect(tmp_path / "streams.db") as db:  # what the migration to schema 4 writes
        db.execute("UPDATE tasks SET due_at = updated_at WHERE terminal = 0")
    claimed: list[str] = []
    claim_due = other.store.claim_due

    def counted(now: float, *, until: float, limit: int) -> list[str]:
        found = claim_due(now, until=until, limit=limit)
        claimed.extend(found)
        return found

    other.store.claim_due = counted  # type: ignore[method-assign]
    run(service, [other, holder], 120)
    assert claimed == [task.key]
    assert (task.state, task.stalled) == (TaskState.RUNNING, False)
