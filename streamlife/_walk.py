"""A guided walk: a few tasks taken through the lifecycle on virtual time, told as one timeline.

Each scenario is one of the stories the table exists for: a clean stop, a stop asked for
before the start answered, a start whose answer was lost, a stream the service ended, a
start refused for capacity, and a local mistake refused without touching the task.
"""

from __future__ import annotations

from collections.abc import Callable

from ._clock import ManualClock
from ._events import Segment, StatusCallback, StreamKind
from ._history import HistoryEntry
from ._task import StreamTask
from .errors import LocalTransitionError

Scenario = Callable[[StreamTask, ManualClock], list[str]]


def _segments(task: StreamTask, clock: ManualClock, first: int, count: int) -> None:
    assert task.task_id is not None
    for index in range(first, first + count):
        clock.advance(5)
        task.segment(Segment(task.task_id, index, final=False, text=f"words {index}"))
        task.segment(Segment(task.task_id, index, final=True, text=f"Words {index}."))


def clean_stop(task: StreamTask, clock: ManualClock) -> list[str]:
    task.start()
    clock.advance(0.4)
    task.start_ok("660e8400-aaaa")
    _segments(task, clock, 0, 2)
    task.segment(Segment("660e8400-aaaa", 1, final=True, text="Words 1."))  # delivered twice
    task.stop()
    clock.advance(0.2)
    task.stop_ok()
    clock.advance(1.0)
    task.stopped(StatusCallback("660e8400-aaaa", 14, "Stream stopped by user"))
    task.segment(Segment("660e8400-aaaa", 2, final=True, text="Words 2."))  # after the end
    return []


def stop_while_starting(task: StreamTask, clock: ManualClock) -> list[str]:
    task.start()
    clock.advance(0.1)
    task.stop()  # remembered: there is no task_id to stop yet
    clock.advance(0.5)
    task.start_ok("660e8400-bbbb")
    task.stop()  # the Fleet sends the remembered stop the moment the task_id arrives
    clock.advance(0.3)
    task.stop_ok()
    clock.advance(10)
    task.final_deadline()  # no status-14 callback came
    return []


def lost_start_answer(task: StreamTask, clock: ManualClock) -> list[str]:
    task.start()
    clock.advance(10)
    task.start_unknown(TimeoutError("read timed out after the request was sent"))
    task.stop()  # remembered; the orphan reaper stops any stream the start made
    clock.advance(60)
    task.uncertain_deadline()
    return []


def service_ends_it(task: StreamTask, clock: ManualClock) -> list[str]:
    task.start()
    clock.advance(0.3)
    task.start_ok("660e8400-cccc")
    _segments(task, clock, 0, 1)
    clock.advance(30)
    task.silence()
    task.ended(StatusCallback("660e8400-cccc", 12, "source ended"))  # inferred: the stream may bill
    task.stop()  # the confirming stop is already on its way
    clock.advance(0.2)
    task.stop_not_found()  # stop is safe on a stream that has already ended, as this one had
    return []


def capacity_refused(task: StreamTask, clock: ManualClock) -> list[str]:
    task.start()
    clock.advance(0.2)
    task.start_deferred(RuntimeError("capacity reached (status 16)"))  # nothing was created
    clock.advance(30)
    task.start()  # the Fleet tries again after a backoff
    clock.advance(0.2)
    task.start_rejected(RuntimeError("capacity reached (status 16), past the retry window"))
    return []


def started_twice(task: StreamTask, clock: ManualClock) -> list[str]:
    task.start()
    try:
        task.start()
    except LocalTransitionError as refused:
        # The task is untouched: no history entry, same state.
        return [f"start again: refused with LocalTransitionError: {refused}"]
    finally:
        task.stop()
    raise AssertionError("a second start must be refused")


SCENARIOS: dict[str, Scenario] = {
    "clean stop": clean_stop,
    "stop while starting": stop_while_starting,
    "lost start answer": lost_start_answer,
    "service ends it": service_ends_it,
    "capacity refused": capacity_refused,
    "started twice": started_twice,
}


def _line(task: StreamTask, entry: HistoryEntry) -> str:
    move = (
        entry.from_state.value
        if entry.from_state is entry.to_state
        else f"{entry.from_state.value} -> {entry.to_state.value}"
    )
    details = "" if not entry.data else "  " + ", ".join(f"{k}={v}" for k, v in entry.data.items())
    return (
        f"  t={entry.at:6.1f}s  task {task.ref:<3} {entry.source.value:<9} "
        f"{entry.trigger:<19}{move:<24} {entry.outcome}{details}"
    )


def timeline() -> str:
    """Run every scenario and return its story followed by the task's final flags."""
    blocks = []
    for title, scenario in SCENARIOS.items():
        clock = ManualClock()
        task = StreamTask(StreamKind.AUDIO, {"audio_url": "rtmp://example.invalid/live"}, clock=clock)
        notes = scenario(task, clock)
        lines = [f"{title}:"] + [_line(task, entry) for entry in task.history]
        lines += [f"  note: {note}" for note in notes]
        flags = [
            name for name in ("stop_requested", "final_callback_missing", "stalled") if getattr(task, name)
        ]
        lines.append(
            f"  => {task.state.value}; flags: {', '.join(flags) or 'none'}; "
            f"transcript: {task.transcript_text()!r}"
        )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
