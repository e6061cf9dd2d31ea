"""The log events are public API: their names, keys and levels are documented in the README."""

from __future__ import annotations

import contextlib
import logging

import structlog
from structlog.testing import capture_logs

from streamlife import LocalTransitionError, Outcome, Segment, StreamTask, TaskState
from streamlife._task import replaying
from tests.conftest import TASK_ID, task_in

TRANSITION_KEYS = {"task", "task_id", "kind", "trigger", "source", "from", "to", "outcome"}


def test_one_transition_event_per_fire_with_the_documented_keys() -> None:
    task = StreamTask("audio")
    with capture_logs() as logs:
        task.start()
        task.start_ok(TASK_ID)
    assert [entry["event"] for entry in logs] == ["streamlife.transition"] * 2
    start_ok = logs[1]
    assert set(start_ok) - {"event", "log_level"} == TRANSITION_KEYS
    assert start_ok == {
        "event": "streamlife.transition",
        "log_level": "info",
        "task": task.ref,
        "task_id": TASK_ID,
        "kind": "audio",
        "trigger": "start_ok",
        "source": "transport",
        "from": "starting",
        "to": "running",
        "outcome": "applied",
    }


def test_segments_log_at_debug_and_rejections_at_warning_with_a_reason() -> None:
    task = task_in(TaskState.RUNNING)
    with capture_logs() as logs:
        task.segment(Segment(TASK_ID, 0, final=True, text="hi"))
        task.start_rejected(RuntimeError("refused"))  # (a stream that is running was created)
    segment, rejected = logs
    assert (segment["log_level"], segment["trigger"]) == ("debug", "segment")
    assert rejected["log_level"] == "warning"
    assert rejected["outcome"] == "rejected"
    assert rejected["reason"] == "start_rejected is impossible while running"


def test_a_replayed_journal_logs_nothing() -> None:
    """History told again is not news: a task rebuilt from its journal logs none of its events,
    the segment's own path included."""
    task = StreamTask("audio")
    with capture_logs() as logs, replaying():
        task.start()
        task.start_ok(TASK_ID)
        task.segment(Segment(TASK_ID, 0, final=True, text="hi"))
        task.segment(Segment(TASK_ID, 0, final=True, text="hi"))
    assert [entry.outcome for entry in task.history][2:] == [Outcome.APPLIED, Outcome.DUPLICATE]
    assert logs == []


def test_a_refused_local_call_logs_nothing() -> None:
    task = task_in(TaskState.RUNNING)
    with capture_logs() as logs, contextlib.suppress(LocalTransitionError):
        task.start()
    assert logs == []


def test_a_conflicting_final_is_logged() -> None:
    task = task_in(TaskState.RUNNING)
    task.segment(Segment(TASK_ID, 4, final=True, text="one"))
    with capture_logs() as logs:
        task.segment(Segment(TASK_ID, 4, final=True, text="two"))
    assert {"event": "streamlife.transcript_conflict", "log_level": "warning"}.items() <= logs[0].items()
    assert logs[0]["index"] == 4


def test_the_params_never_reach_a_log_line() -> None:
    task = StreamTask("audio", {"audio_url": "rtmp://host/live/SECRET-STREAM-KEY"})
    with capture_logs() as logs:
        task.start()
        task.start_ok(TASK_ID)
        task.stop()
    assert "SECRET-STREAM-KEY" not in repr(logs)


def test_the_segment_event_follows_the_level_configured_after_import() -> None:
    """The hot path skips building a debug event its logger would drop; which it would is read from
    structlog's configuration at each event, so an application may configure it at any time."""
    task = task_in(TaskState.RUNNING)
    configured = structlog.get_config()
    try:
        with capture_logs() as logs:
            structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
            task.segment(Segment(TASK_ID, 1, final=True, text="dropped"))
            structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
            task.segment(Segment(TASK_ID, 2, final=True, text="kept"))
    finally:
        structlog.configure(**configured)
    assert [entry["log_level"] for entry in logs] == ["debug"]
    assert len(task.transcript) == 2, "the events applied all the same"
