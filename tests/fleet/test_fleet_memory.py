"""What a Fleet holds in memory depends on its live tasks, not on how long they ran or how many
ended: a task's transcript keeps a bounded tail (``Policy.transcript_limit``) and reads the rest
back from the store, and ended tasks leave after ``Policy.keep_terminal``."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from streamlife import ManualClock, Outcome, Policy, TaskState
from streamlife.protocol import segment_callback
from streamlife.store import MemoryStore, SqliteStore, Store
from tests.conftest import rig

SEGMENTS = 1_500
LIMIT = Policy().transcript_limit


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    return MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "streams.db")


def words(index: int) -> str:
    return f"words of segment {index}"


def test_a_long_stream_holds_a_bounded_transcript_that_reads_back_whole(
    clock: ManualClock, store: Store
) -> None:
    assert LIMIT is not None
    r = rig(clock, store=store)
    task = r.fleet.start("audio", audio_url="rtmp://example.invalid/x", provider="assemblyai")
    task_id = task.task_id or ""
    for index in range(SEGMENTS):
        assert r.fleet.handle_callback(segment_callback(task_id, index, words(index))) is Outcome.APPLIED
    held = task.transcript.held()
    assert held <= 2 * LIMIT + 2  # a tail of segments and one run of finals: not one per segment
    assert task.transcript_text() == " ".join(words(index) for index in range(SEGMENTS))
    assert task.gaps == []
    assert len(task.transcript) == SEGMENTS

    # An old segment delivered again is still a duplicate, told from the compact record; one whose
    # text differs is a conflict, told by reading the store, and never applied.
    assert r.fleet.handle_callback(segment_callback(task_id, 3, words(3))) is Outcome.DUPLICATE
    assert r.fleet.handle_callback(segment_callback(task_id, 3, "other", final=False)) is Outcome.DUPLICATE
    with capture_logs() as logs:
        assert r.fleet.handle_callback(segment_callback(task_id, 3, "other words")) is Outcome.DUPLICATE
    warnings = [log["event"] for log in logs if log["log_level"] == "warning"]
    assert warnings == ["streamlife.transcript_conflict"]
    assert task.transcript.held() == held

    # A late final for an index never heard fills its gap, and is journaled.
    assert r.fleet.handle_callback(segment_callback(task_id, SEGMENTS + 1, "after a gap")) is Outcome.APPLIED
    assert task.gaps == [range(SEGMENTS, SEGMENTS + 1)]
    assert r.fleet.handle_callback(segment_callback(task_id, SEGMENTS, "the gap")) is Outcome.APPLIED
    assert task.gaps == []


def test_a_recovered_task_holds_the_same_bounded_transcript(clock: ManualClock, tmp_path: Path) -> None:
    assert LIMIT is not None
    r = rig(clock, store=SqliteStore(tmp_path / "streams.db"))
    task = r.fleet.start("audio", audio_url="rtmp://example.invalid/x", provider="assemblyai")
    task_id = task.task_id or ""
    for index in range(0, SEGMENTS, 2):  # every other segment: half of them gaps
        r.fleet.handle_callback(segment_callback(task_id, index, words(index)))
    text, gaps = task.transcript_text(), task.gaps
    fleet = r.restart()
    (back,) = fleet.recover()
    assert back.transcript.held() <= task.transcript.held() + 2
    assert (back.transcript_text(), back.gaps) == (text, gaps)
    assert fleet.handle_callback(segment_callback(task_id, 2, words(2))) is Outcome.DUPLICATE
    assert fleet.handle_callback(segment_callback(task_id, 1, words(1))) is Outcome.APPLIED  # a gap filled


def test_ended_tasks_leave_memory_by_default_and_the_fleet_holds_only_live_ones(
    clock: ManualClock, tmp_path: Path
) -> None:
    keep = Policy().keep_terminal
    assert keep is not None  # minutes by default: ended tasks do not pile up
    r = rig(clock, store=SqliteStore(tmp_path / "streams.db"), keep_terminal=keep)
    live = r.fleet.start("audio", audio_url="rtmp://example.invalid/live", provider="assemblyai")
    for round_ in range(3):  # streams start and end; the Fleet's indexes follow the live ones
        ended = [
            r.fleet.start("audio", audio_url=f"rtmp://example.invalid/{round_}/{n}", provider="assemblyai")
            for n in range(20)
        ]
        r.sim.advance(10)
        for task in ended:
            r.fleet.stop(task)
        r.sim.advance(2)  # the status-14 callbacks come
        assert all(task.state is TaskState.STOPPED for task in ended)
        r.sim.advance(int(keep) + 5)
        assert r.fleet.tasks() == [live]
        assert r.fleet.stats().tasks == {"running": 1}
        registry = r.fleet._registry
        assert (len(registry.by_ref), len(registry.by_key), len(registry.by_id)) == (1, 1, 1)
    assert r.fleet.exposure().tasks == 61  # what the ended ones cost is still counted
    assert r.fleet.get(ended[0].task_id or "") is not None  # and each comes back when asked


def test_an_unbounded_policy_keeps_every_segment(clock: ManualClock) -> None:
    r = rig(clock, transcript_limit=None)
    task = r.fleet.start("audio", audio_url="rtmp://example.invalid/x", provider="assemblyai")
    for index in range(200):
        r.fleet.handle_callback(segment_callback(task.task_id or "", index, words(index)))
    assert task.transcript.held() == 200


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_transcript_limit_is_checked(bad: object) -> None:
    with pytest.raises((TypeError, ValueError), match="transcript_limit"):
        Policy(transcript_limit=bad)  # type: ignore[arg-type]
