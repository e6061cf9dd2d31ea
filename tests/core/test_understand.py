"""Live Video Understanding in the core: its callbacks read, its results keyed by timestamp, and
its stop answer settling a task, with no wait for a final callback."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamlife import (
    CallbackError,
    ForeignCallback,
    ManualClock,
    Outcome,
    Segment,
    StatusCallback,
    StatusMeaning,
    StreamKind,
    StreamTask,
    TaskState,
)
from streamlife._callbacks import parse_callback
from streamlife._journal import decode_event, encode_event
from streamlife.lifecycle import KIND_RULES, ResultKey
from streamlife.protocol import understand_result
from tests.conftest import state_of

TASK_ID = "5347085a-0000-4000-8000-000000000001"
AT = "2026-12-05T19:00:05Z"


def running_task() -> StreamTask:
    task = StreamTask(StreamKind.UNDERSTAND, {"url": "rtmp://x.invalid/live"}, clock=ManualClock(1.0))
    task.start()
    task.start_ok(TASK_ID)
    return task


def test_a_result_in_the_documented_shape_is_a_segment_keyed_by_its_timestamp() -> None:
    event = parse_callback(understand_result(TASK_ID, "A person walks in", AT))
    assert isinstance(event, Segment)  # (was a ForeignCallback: the task never heard its results)
    assert (event.task_id, event.index, event.final, event.text, event.stamp) == (
        TASK_ID,
        None,
        True,
        "A person walks in",
        AT,
    )


def test_a_result_with_its_text_at_the_top_is_read_too() -> None:
    event = parse_callback({"status": 0, "task_id": TASK_ID, "text": "Nothing moves", "timestamp": AT})
    assert isinstance(event, Segment)
    assert (event.text, event.stamp) == ("Nothing moves", AT)
    bare = parse_callback({"status": 0, "task_id": TASK_ID, "text": "Nothing moves"})
    assert isinstance(bare, Segment)
    assert bare.stamp is None


@pytest.mark.parametrize(
    ("status", "meaning"),
    [(14, StatusMeaning.STOPPED), (-1, StatusMeaning.UNKNOWN), (5000, StatusMeaning.UNKNOWN)],
)
def test_a_callback_with_another_status_is_a_status(status: int, meaning: StatusMeaning) -> None:
    event = parse_callback({"status": status, "task_id": TASK_ID, "text": "words"})
    assert isinstance(event, StatusCallback)
    assert (event.status, event.meaning, event.message) == (status, meaning, "words")


def test_status_0_with_no_text_is_a_stream_heard() -> None:
    event = parse_callback({"status": 0, "task_id": TASK_ID})
    assert isinstance(event, StatusCallback)
    assert event.meaning is StatusMeaning.ONGOING


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"status": 0, "task_id": TASK_ID, "data": {"text": 5, "timestamp": AT}}, "data.text"),
        ({"status": 0, "task_id": TASK_ID, "data": {"text": "x", "timestamp": 17}}, "data.timestamp"),
        ({"status": 0, "task_id": TASK_ID, "text": ["x"]}, "text"),
        ({"status": 0, "data": {"text": "x", "timestamp": AT}}, "task_id"),
        ({"status": 0, "task_id": TASK_ID, "data": {"task_id": "other", "text": "x"}}, "data.task_id"),
        ({"status": 2**40, "task_id": TASK_ID, "text": "x"}, "status"),
    ],
)
def test_a_malformed_result_names_its_field(payload: dict[str, Any], field: str) -> None:
    with pytest.raises(CallbackError) as raised:
        parse_callback(payload)
    assert raised.value.field == field


def test_another_shape_with_a_top_level_status_is_not_taken_for_a_result() -> None:
    event = parse_callback({"status": 0, "task_id": TASK_ID, "data": {"clip_url": "https://x.invalid/c"}})
    assert isinstance(event, ForeignCallback)


def test_results_are_keyed_by_timestamp_as_the_kind_rules_say() -> None:
    assert KIND_RULES[StreamKind.UNDERSTAND].result_key is ResultKey.TIMESTAMP
    task = running_task()
    first = parse_callback(understand_result(TASK_ID, "A person walks in", AT))
    again = parse_callback(understand_result(TASK_ID, "A person walks in.", AT))  # same moment, reworded
    later = parse_callback(understand_result(TASK_ID, "The person sits", "2026-12-05T19:00:10Z"))
    assert isinstance(first, Segment)
    assert isinstance(again, Segment)
    assert isinstance(later, Segment)
    assert task.segment(later) is Outcome.APPLIED  # delivered out of order: kept all the same
    assert task.segment(first) is Outcome.APPLIED
    assert task.segment(again) is Outcome.DUPLICATE
    assert task.segment(later) is Outcome.DUPLICATE
    assert task.transcript_text() == "The person sits A person walks in"  # delivery order
    assert task.gaps == []


def test_results_without_a_timestamp_are_keyed_by_their_payload() -> None:
    task = running_task()
    payload = {"status": 0, "task_id": TASK_ID, "text": "A dog"}
    assert task.segment(parse_callback(payload)) is Outcome.APPLIED  # type: ignore[arg-type]
    assert task.segment(parse_callback(dict(payload))) is Outcome.DUPLICATE  # type: ignore[arg-type]
    assert task.segment(parse_callback({**payload, "text": "A cat"})) is Outcome.APPLIED  # type: ignore[arg-type]


@given(st.text(max_size=30), st.text(max_size=30))
def test_the_journal_keeps_a_results_stamp(text: str, stamp: str) -> None:
    event = parse_callback(understand_result(TASK_ID, text, stamp))
    assert decode_event(encode_event(event)) == event


def test_a_final_stop_answer_settles_a_stopping_task_with_no_final_wait() -> None:
    task = running_task()
    task.stop()
    assert task.stop_confirmed() is Outcome.APPLIED
    assert task.state is TaskState.STOPPED
    assert task.stop_acknowledged
    assert not task.final_callback_missing
    assert task.stop_confirmed() is Outcome.LATE


def test_a_final_stop_answer_confirms_an_inferred_end() -> None:
    task = running_task()
    ended = parse_callback({"status": -1, "task_id": TASK_ID, "text": "gone"})
    assert isinstance(ended, StatusCallback)
    assert task.ended(ended) is Outcome.APPLIED
    assert state_of(task) is TaskState.ENDING
    assert task.stop_confirmed() is Outcome.APPLIED
    assert state_of(task) is TaskState.ENDED


def test_a_final_stop_answer_is_refused_before_any_stop() -> None:
    task = running_task()
    outcome = task.stop_confirmed()
    assert outcome.kind.value == "rejected"
    assert task.state is TaskState.RUNNING
