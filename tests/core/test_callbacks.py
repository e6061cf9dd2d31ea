"""Webhook payloads to events: every documented shape, every refusal naming its field, and fuzzing.

The fixtures below are realistic payloads, one per shape memories.ai sends (or, where the docs have a
gap, the shape docs/memories-api.md says streamlife assumes); the example tests read as documentation.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import sys
from collections.abc import Mapping
from datetime import date
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamlife import (
    DEFAULT_STATUSES,
    PROVIDER_ENDED,
    CallbackError,
    ForeignCallback,
    Moderation,
    ProviderEvent,
    Segment,
    StatusCallback,
    StatusMeaning,
    StatusTable,
    parse_callback,
)
from streamlife._callbacks import _read, _usual_transcript
from streamlife._events import SEGMENT_FIELDS, new_segment
from streamlife._jsontext import _fast_json, _standard_decode
from streamlife.protocol import STREAM_KEYS, segment_callback

TASK = "660e8400-e29b-41d4-a716-446655440001"

# 1. Audio, DOC-old: segment-style, AssemblyAI v2 message under data.transcript.
AUDIO_SEGMENT: dict[str, Any] = {
    "code": "200",
    "message": "SUCCESS",
    "task_id": TASK,
    "data": {
        "segment_index": 3,
        "segment_start_time": "15.0",
        "segment_end_time": "20.0",
        "status": 0,
        "message": "final",
        "transcript": {"message_type": "FinalTranscript", "text": "Hello there.", "confidence": 0.93},
    },
}
# 2. The documented stop callback (audio-stream/stop page).
AUDIO_STOP: dict[str, Any] = {
    "code": "200",
    "message": "SUCCESS",
    "task_id": TASK,
    "data": {
        "segment_index": 7,
        "segment_start_time": "35.0",
        "segment_end_time": "40.0",
        "status": 14,
        "message": "Stream stopped by user",
        "transcript": None,
    },
}
# 3. Provider pass-through (DOC-new), wrapped in memories.ai's envelope or bare with task_id on top.
ASSEMBLYAI_TURN: dict[str, Any] = {
    "task_id": TASK,
    "data": {
        "type": "Turn",
        "turn_order": 2,
        "turn_is_formatted": False,
        "end_of_turn": True,
        "transcript": "how are you",
        "end_of_turn_confidence": 0.87,
        "words": [{"text": "how", "start": 10240, "end": 10400, "confidence": 0.99, "word_is_final": True}],
    },
}
ASSEMBLYAI_TERMINATION: dict[str, Any] = {
    "task_id": TASK,
    "type": "Termination",
    "audio_duration_seconds": 62,
    "session_duration_seconds": 63,
}
ASSEMBLYAI_BEGIN: dict[str, Any] = {
    "task_id": TASK,
    "data": {"type": "Begin", "id": "de5d9927-73a6-4be8-b52d-b4c07be37e6b", "expires_at": 1759796682},
}
ELEVENLABS_PARTIAL: dict[str, Any] = {
    "task_id": TASK,
    "segment_index": 4,
    "data": {"message_type": "partial_transcript", "text": "the quick brown"},
}
ELEVENLABS_COMMITTED: dict[str, Any] = {
    "task_id": TASK,
    "segment_index": 4,
    "data": {"message_type": "committed_transcript", "text": "The quick brown fox."},
}
ELEVENLABS_SESSION: dict[str, Any] = {
    "task_id": TASK,
    "data": {"message_type": "session_started", "session_id": "0b7c", "config": {"sample_rate": 16000}},
}
# 4. Video moderation: the layout seen in examples (segment fields beside data.data), and the one
# memories.ai documents (inside it).
VIDEO_SEGMENT: dict[str, Any] = {
    "code": 200,
    "message": "SUCCESS",
    "task_id": TASK,
    "data": {
        "segment_index": 0,
        "start_time": "0",
        "end_time": "5",
        "status": 0,
        "message": "ok",
        "data": {
            "video_url": "https://cdn.example.invalid/seg0.mp4",
            "content_moderation": {"has_unsafe_content": False, "frames_processed": 5},
        },
        "token": {"input": 1200, "output": 40},
    },
}
VIDEO_SEGMENT_NESTED: dict[str, Any] = {
    "code": "200",
    "message": "SUCCESS",
    "task_id": TASK,
    "data": {
        "status": 0,
        "message": "ok",
        "data": {
            "segment_index": 1,
            "start_time": "5",
            "end_time": "10",
            "content_moderation": {"has_unsafe_content": True},
        },
    },
}
VIDEO_STOP: dict[str, Any] = {
    "code": "200",
    "message": "SUCCESS",
    "task_id": TASK,
    "data": {"status": 14, "message": "Stream stopped by user", "data": None, "token": None},
}

# 5. Another product's result, posted to the same account-wide webhook URL (the webhooks guide's envelope).
CLIP_RESULT: dict[str, Any] = {
    "code": 200,
    "message": "SUCCESS",
    "task_id": "1e8ae1075e054e8abb58e7598c53cbf1",
    "data": {"video_url": "https://cdn.example.invalid/clip.mp4", "duration": 12.5},
}

VALID = [
    AUDIO_SEGMENT,
    AUDIO_STOP,
    ASSEMBLYAI_TURN,
    ASSEMBLYAI_TERMINATION,
    ASSEMBLYAI_BEGIN,
    ELEVENLABS_PARTIAL,
    ELEVENLABS_COMMITTED,
    ELEVENLABS_SESSION,
    VIDEO_SEGMENT,
    VIDEO_SEGMENT_NESTED,
    VIDEO_STOP,
    CLIP_RESULT,
]


DROP = object()


def with_changes(payload: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of ``payload`` with changes at dotted paths (``data__status=16``); DROP removes."""
    result = copy.deepcopy(dict(payload))
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        target = result
        for key in parents:
            target = target[key]
        if value is DROP:
            del target[last]
        else:
            target[last] = value
    return result


# -- the shapes, one by one ------------------------------------------------------------------------
def test_an_audio_segment_callback_is_a_segment_with_its_times_in_seconds() -> None:
    event = parse_callback(json.dumps(AUDIO_SEGMENT).encode())
    assert event == Segment(TASK, 3, final=True, text="Hello there.", start=15.0, end=20.0, raw=AUDIO_SEGMENT)
    assert event.raw is not None
    assert event.raw["data"]["status"] == 0  # a segment's status stays in raw


@pytest.mark.parametrize(
    "transcript",
    [
        {"text": "hel", "is_final": False},
        {"text": "hel", "final": False},
        {"text": "hel", "type": "partial"},
        {"text": "hel", "message_type": "PartialTranscript"},
        {"text": "hel", "message_type": "partial_transcript"},
    ],
)
def test_an_audio_transcript_that_says_partial_is_a_partial(transcript: dict[str, Any]) -> None:
    event = parse_callback(with_changes(AUDIO_SEGMENT, data__transcript=transcript))
    assert isinstance(event, Segment)
    assert (event.final, event.text) == (False, "hel")


@pytest.mark.parametrize(
    "transcript",
    [
        "Hello there.",
        {"text": "Hello there."},
        {"text": "Hello there.", "is_final": True},
        {"text": "Hello there.", "type": "final"},
        {"text": "Hello there.", "message_type": "FinalTranscript"},
    ],
)
def test_an_audio_transcript_is_final_unless_it_says_partial(transcript: str | dict[str, Any]) -> None:
    event = parse_callback(with_changes(AUDIO_SEGMENT, data__transcript=transcript))
    assert isinstance(event, Segment)
    assert (event.final, event.text) == (True, "Hello there.")


def test_the_documented_stop_callback_is_status_14_stopped() -> None:
    event = parse_callback(json.dumps(AUDIO_STOP))
    assert event == StatusCallback(
        TASK, 14, "Stream stopped by user", AUDIO_STOP, StatusMeaning.STOPPED, last_index=7
    )


def test_the_stop_callbacks_segment_index_is_the_streams_last_index() -> None:
    """The audio stop page documents ``data.segment_index`` as the index of the last segment."""
    event = parse_callback(AUDIO_STOP)
    assert isinstance(event, StatusCallback)
    assert event.last_index == 7
    video = parse_callback(VIDEO_STOP)  # the video stop callback documents none
    assert isinstance(video, StatusCallback)
    assert video.last_index is None


@pytest.mark.parametrize("odd", [DROP, None, -1, 2**31, "7", 7.0, True, [7]])
def test_a_stop_callback_is_never_refused_over_its_last_index(odd: Any) -> None:
    """A hint of another type or out of range reads as no index: the stop itself must land."""
    event = parse_callback(with_changes(AUDIO_STOP, data__segment_index=odd))
    assert isinstance(event, StatusCallback)
    assert (event.status, event.meaning, event.last_index) == (14, StatusMeaning.STOPPED, None)


def test_status_16_means_capacity() -> None:
    event = parse_callback(with_changes(AUDIO_STOP, data__status=16, data__message="Capacity reached"))
    assert isinstance(event, StatusCallback)
    assert (event.status, event.meaning, event.message) == (16, StatusMeaning.CAPACITY, "Capacity reached")


def test_an_unknown_status_is_kept_and_surfaced_never_guessed() -> None:
    event = parse_callback(with_changes(AUDIO_STOP, data__status=12, data__message="Stream source ended"))
    assert isinstance(event, StatusCallback)
    assert (event.status, event.meaning) == (12, StatusMeaning.UNKNOWN)


def test_envelopes_are_read_leniently() -> None:
    # code as an int, msg for message, task_id under data only, times as numbers.
    payload = with_changes(
        AUDIO_STOP, code=200, message=DROP, msg="SUCCESS", task_id=DROP, data__task_id=TASK
    )
    payload["data"]["msg"] = payload["data"].pop("message")
    assert parse_callback(payload) == StatusCallback(
        TASK, 14, "Stream stopped by user", payload, StatusMeaning.STOPPED, last_index=7
    )
    numbers = with_changes(AUDIO_SEGMENT, data__segment_start_time=15, data__segment_end_time=20.0)
    event = parse_callback(numbers)
    assert isinstance(event, Segment)
    assert (event.start, event.end) == (15.0, 20.0)


def test_a_status_callback_without_its_own_message_falls_back_to_the_envelopes() -> None:
    event = parse_callback(with_changes(AUDIO_STOP, data__message=DROP))
    assert isinstance(event, StatusCallback)
    assert event.message == "SUCCESS"


def test_an_assemblyai_turn_is_a_segment_indexed_by_turn_order() -> None:
    assert parse_callback(ASSEMBLYAI_TURN) == Segment(TASK, 2, True, "how are you", raw=ASSEMBLYAI_TURN)
    partial = with_changes(ASSEMBLYAI_TURN, data__end_of_turn=False, data__transcript="how are")
    assert parse_callback(partial) == Segment(TASK, 2, False, "how are", raw=partial)


def test_an_assemblyai_formatted_turn_is_a_formatted_final() -> None:
    """With ``format_turns``, a turn ends twice: unformatted, then formatted."""
    formatted = with_changes(ASSEMBLYAI_TURN, data__turn_is_formatted=True, data__transcript="How are you?")
    assert parse_callback(formatted) == Segment(TASK, 2, True, "How are you?", raw=formatted, formatted=True)
    event = parse_callback(ASSEMBLYAI_TURN)
    assert isinstance(event, Segment)
    assert event.formatted is False
    for unsaid in (None, DROP):
        event = parse_callback(with_changes(ASSEMBLYAI_TURN, data__turn_is_formatted=unsaid))
        assert isinstance(event, Segment)
        assert event.formatted is False


def test_a_bare_provider_message_carries_its_task_id_at_the_top() -> None:
    bare = {"task_id": TASK, **ASSEMBLYAI_TURN["data"]}
    assert parse_callback(bare) == Segment(TASK, 2, True, "how are you", raw=bare)


def test_an_assemblyai_termination_is_a_status_callback_with_the_provider_ended_status() -> None:
    event = parse_callback(ASSEMBLYAI_TERMINATION)
    assert event == StatusCallback(
        TASK, PROVIDER_ENDED, "assemblyai: Termination", ASSEMBLYAI_TERMINATION, StatusMeaning.PROVIDER_ENDED
    )


def test_assemblyai_begin_is_a_provider_event_to_log() -> None:
    assert parse_callback(ASSEMBLYAI_BEGIN) == ProviderEvent(TASK, "assemblyai", "Begin", ASSEMBLYAI_BEGIN)


def test_elevenlabs_transcripts_are_segments_indexed_by_the_wrapper() -> None:
    assert parse_callback(ELEVENLABS_PARTIAL) == Segment(
        TASK, 4, False, "the quick brown", raw=ELEVENLABS_PARTIAL
    )
    assert parse_callback(ELEVENLABS_COMMITTED) == Segment(
        TASK, 4, True, "The quick brown fox.", raw=ELEVENLABS_COMMITTED
    )
    stamped = with_changes(
        ELEVENLABS_COMMITTED,
        data__message_type="committed_transcript_with_timestamps",
        data__words=[{"text": "The", "start": 0.0, "end": 0.2, "type": "word"}],
    )
    assert parse_callback(stamped) == Segment(TASK, 4, True, "The quick brown fox.", raw=stamped)


def test_an_elevenlabs_transcript_forwarded_with_no_index_is_a_segment_the_task_numbers() -> None:
    """Forwarded verbatim, ElevenLabs messages carry no index: the parser invents none."""
    committed = with_changes(ELEVENLABS_COMMITTED, segment_index=DROP)
    assert parse_callback(committed) == Segment(TASK, None, True, "The quick brown fox.", raw=committed)
    partial = with_changes(ELEVENLABS_PARTIAL, segment_index=None)
    assert parse_callback(partial) == Segment(TASK, None, False, "the quick brown", raw=partial)
    bare = {
        "task_id": TASK,
        "message_type": "committed_transcript_with_timestamps",
        "text": "Hi.",
        "words": [],
    }
    assert parse_callback(bare) == Segment(TASK, None, True, "Hi.", raw=bare)


def test_elevenlabs_session_started_is_a_provider_event() -> None:
    assert parse_callback(ELEVENLABS_SESSION) == ProviderEvent(
        TASK, "elevenlabs", "session_started", ELEVENLABS_SESSION
    )
    unknown = {"task_id": TASK, "data": {"message_type": "something_new"}}
    assert parse_callback(unknown) == ProviderEvent(TASK, "elevenlabs", "something_new", unknown)


@pytest.mark.parametrize("kind", ["error", "quota_exceeded", "session_time_limit_exceeded", "auth_error"])
def test_an_elevenlabs_error_ends_the_providers_session(kind: str) -> None:
    """ElevenLabs sends an error before it closes its socket: an end the task infers (or our stop's
    echo), as AssemblyAI's Termination is."""
    error = {"task_id": TASK, "data": {"message_type": kind, "error": "it went wrong"}}
    assert parse_callback(error) == StatusCallback(
        TASK, PROVIDER_ENDED, f"elevenlabs: {kind}", error, StatusMeaning.PROVIDER_ENDED
    )


def test_a_video_moderation_callback_is_a_final_segment_with_its_result_in_raw() -> None:
    event = parse_callback(json.dumps(VIDEO_SEGMENT))
    assert event == Segment(TASK, 0, final=True, text=None, start=0.0, end=5.0, raw=VIDEO_SEGMENT)
    assert event.raw is not None
    assert event.raw["data"]["data"]["content_moderation"] == {
        "has_unsafe_content": False,
        "frames_processed": 5,
    }


def test_a_video_segment_reads_its_moderation_result_as_documented() -> None:
    event = parse_callback(VIDEO_SEGMENT)
    assert isinstance(event, Segment)
    assert event.moderation == Moderation(
        has_unsafe_content=False,
        frames_processed=5,
        video_url="https://cdn.example.invalid/seg0.mp4",
        token={"input": 1200, "output": 40},
        result=VIDEO_SEGMENT["data"]["data"],
    )
    nested = parse_callback(VIDEO_SEGMENT_NESTED)
    assert isinstance(nested, Segment)
    assert nested.moderation == Moderation(True, None, None, None, VIDEO_SEGMENT_NESTED["data"]["data"])


def test_a_transcript_has_no_moderation_result() -> None:
    for payload in (AUDIO_SEGMENT, ASSEMBLYAI_TURN, ELEVENLABS_COMMITTED):
        event = parse_callback(payload)
        assert isinstance(event, Segment)
        assert event.moderation is None
    assert Segment(TASK, 0, True).moderation is None  # made by hand: no payload


def test_a_logo_result_is_not_read_but_stays_in_the_whole_result() -> None:
    """The docs are silent on the logo detection result's shape: no field is invented for it."""
    logos = {"logo_detection": {"logos": [{"name": "Acme", "confidence": 0.9}]}, "video_url": "u"}
    event = parse_callback(with_changes(VIDEO_SEGMENT, data__data=logos, data__token=DROP))
    assert isinstance(event, Segment)
    assert event.moderation == Moderation(None, None, "u", None, logos)


@pytest.mark.parametrize(
    ("change", "unread"),
    [
        ({"data__data__content_moderation": "unsafe"}, ("has_unsafe_content", "frames_processed")),
        ({"data__data__content_moderation__has_unsafe_content": 1}, ("has_unsafe_content",)),
        ({"data__data__content_moderation__frames_processed": True}, ("frames_processed",)),
        ({"data__data__content_moderation__frames_processed": "5"}, ("frames_processed",)),
        ({"data__data__video_url": 7}, ("video_url",)),
        ({"data__token": [1200, 40]}, ("token",)),
    ],
)
def test_a_moderation_field_of_another_type_reads_as_none(change: dict[str, Any], unread: tuple[str]) -> None:
    payload = with_changes(VIDEO_SEGMENT, **change)
    event = parse_callback(payload)
    assert isinstance(event, Segment)
    expected = Moderation(False, 5, "https://cdn.example.invalid/seg0.mp4", {"input": 1200, "output": 40}, {})
    nones: dict[str, Any] = dict.fromkeys(unread)
    assert event.moderation == dataclasses.replace(expected, result=payload["data"]["data"], **nones)


def test_video_segment_fields_may_sit_inside_data_data_as_the_docs_table_says() -> None:
    event = parse_callback(VIDEO_SEGMENT_NESTED)
    assert event == Segment(TASK, 1, True, None, 5.0, 10.0, VIDEO_SEGMENT_NESTED)


def test_a_video_callback_with_a_null_result_is_a_status_callback() -> None:
    assert parse_callback(VIDEO_STOP) == StatusCallback(
        TASK, 14, "Stream stopped by user", VIDEO_STOP, StatusMeaning.STOPPED
    )
    error = with_changes(VIDEO_SEGMENT, data__status=13, data__data=None, data__message="pull failed")
    assert parse_callback(error) == StatusCallback(
        TASK, 13, "pull failed", error, StatusMeaning.UNKNOWN, last_index=0
    )


# -- the account-wide webhook: every product's results come to it ---------------------------------
def test_another_products_result_is_a_foreign_callback_not_an_error() -> None:
    assert parse_callback(json.dumps(CLIP_RESULT).encode()) == ForeignCallback(
        CLIP_RESULT["task_id"], CLIP_RESULT
    )


@pytest.mark.parametrize(
    ("payload", "task_id"),
    [
        ({"task_id": TASK, "code": 200}, TASK),  # no data
        ({"code": 500, "message": "generation failed", "data": None}, None),  # no task_id: a code will do
        ({"data": {"task_id": TASK, "clips": []}}, TASK),  # the task_id under data, as everywhere
        ({"task_id": TASK, "data": {}}, TASK),
        ({"task_id": TASK, "data": {"status": "completed", "summary": "..."}}, TASK),  # no int status
        ({"task_id": TASK, "data": {"status": True}}, TASK),
        (with_changes(AUDIO_STOP, data__status=DROP), TASK),
        (with_changes(AUDIO_STOP, data__status="14"), TASK),
        ({"task_id": TASK, "data": {"status": 0, "summary": "A talk."}}, TASK),  # a key no stream has
        (with_changes(AUDIO_SEGMENT, data__speakers=["A", "B"]), TASK),
        (with_changes(VIDEO_SEGMENT, data__frames=[]), TASK),
    ],
)
def test_a_well_formed_envelope_that_holds_no_stream_event_is_foreign(
    payload: dict[str, Any], task_id: str | None
) -> None:
    for event in (parse_callback(payload), parse_callback(json.dumps(payload).encode())):
        assert isinstance(event, ForeignCallback)
        assert (event.task_id, event.raw) == (task_id, payload)


def test_the_raw_payload_is_the_decoded_object() -> None:
    for payload in VALID:
        assert parse_callback(json.dumps(payload).encode()).raw == payload
        assert parse_callback(payload).raw == payload


def frozen(value: Any) -> Any:
    """``value`` with its dicts as read-only mappings and its lists as tuples."""
    if isinstance(value, dict):
        return MappingProxyType({key: frozen(item) for key, item in value.items()})
    if isinstance(value, list):
        return tuple(frozen(item) for item in value)
    return value


def plain_all_the_way(value: Any) -> bool:
    if isinstance(value, dict):
        return type(value) is dict and all(plain_all_the_way(item) for item in value.values())
    if isinstance(value, list):
        return all(plain_all_the_way(item) for item in value)
    return not isinstance(value, (Mapping, tuple))


def test_a_payload_handed_over_as_objects_is_copied_as_json_would_decode_it() -> None:
    for payload in VALID:
        event = parse_callback(frozen(payload))
        assert event == parse_callback(json.dumps(payload))
        assert plain_all_the_way(event.raw)
        handed = copy.deepcopy(payload)
        event = parse_callback(handed)
        if isinstance(handed.get("data"), dict):
            handed["data"].clear()
        handed.clear()
        assert event.raw == payload


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"data__segment_start_time": math.nan}, "data.segment_start_time"),
        ({"data__confidence": math.inf}, "data.confidence"),
        ({"data__transcript__words": [{"start": -math.inf}]}, "data.transcript.words[0].start"),
        ({"data__when": date(2026, 11, 25)}, "data.when"),
        ({"data__blob": b"bytes"}, "data.blob"),
        ({"data__tags": {"a", "b"}}, "data.tags"),
        ({"data__transcript__by": {1: "key"}}, "data.transcript.by"),
    ],
)
def test_a_payload_handed_over_as_objects_holds_json_or_is_refused(
    change: dict[str, Any], field: str
) -> None:
    # No store could keep such a value: refused here, a webhook answers 400 rather than a 500 that
    # the sender would retry for ever.
    with pytest.raises(CallbackError) as refused:
        parse_callback(with_changes(USUAL, **change))
    assert refused.value.field == field
    assert "not JSON" in str(refused.value)


def nested_in_all(levels: int, form: str) -> Any:
    """A usual callback with one more field, arrays within arrays: ``levels`` deep in all (the top
    object is a level), handed over as objects, as JSON text, or as its bytes."""
    arrays = levels - 1
    if form == "objects":
        extra: list[Any] = []
        for _ in range(arrays - 1):
            extra = [extra]
        return with_changes(USUAL, extra=extra)
    text = json.dumps(USUAL)[:-1] + ', "extra": ' + "[" * arrays + "]" * arrays + "}"
    return text if form == "text" else text.encode()


@pytest.mark.parametrize("form", ["objects", "text", "bytes"])
def test_a_callback_may_nest_300_levels_and_no_more(form: str) -> None:
    """One limit whatever the form, well within the interpreter's recursion limit."""
    deepest = parse_callback(nested_in_all(300, form))
    assert isinstance(deepest, Segment)
    assert deepest.raw == parse_callback(nested_in_all(300, "text")).raw
    with pytest.raises(CallbackError, match="nested deeper than 300 levels"):
        parse_callback(nested_in_all(301, form))
    with pytest.raises(CallbackError, match=r"nested deeper|not JSON"):  # text: the stack's own limit
        parse_callback(nested_in_all(sys.getrecursionlimit() + 10, form))


# -- the status table ------------------------------------------------------------------------------
def test_the_default_table_holds_only_what_the_docs_confirm() -> None:
    assert dict(DEFAULT_STATUSES) == {
        0: StatusMeaning.ONGOING,
        14: StatusMeaning.STOPPED,
        16: StatusMeaning.CAPACITY,
        PROVIDER_ENDED: StatusMeaning.PROVIDER_ENDED,
    }
    assert DEFAULT_STATUSES.meaning(12) is StatusMeaning.UNKNOWN
    assert 12 not in DEFAULT_STATUSES
    assert len(DEFAULT_STATUSES) == 4


@pytest.mark.parametrize("silent", [AUDIO_STOP, VIDEO_STOP], ids=["audio", "video"])
def test_a_status_0_callback_with_no_result_is_a_silent_segment_that_ends_nothing(
    silent: dict[str, Any],
) -> None:
    event = parse_callback(with_changes(silent, data__status=0, data__message="ok"))
    assert isinstance(event, StatusCallback)
    assert (event.status, event.meaning) == (0, StatusMeaning.ONGOING)


def test_a_user_extended_table_changes_what_a_status_means() -> None:
    table = DEFAULT_STATUSES.with_status(12, StatusMeaning.ENDED).with_status(PROVIDER_ENDED, "ongoing")
    source_ended = with_changes(AUDIO_STOP, data__status=12)
    by_default, by_the_user = parse_callback(source_ended), parse_callback(source_ended, statuses=table)
    assert isinstance(by_default, StatusCallback)
    assert isinstance(by_the_user, StatusCallback)
    assert (by_default.meaning, by_the_user.meaning) == (StatusMeaning.UNKNOWN, StatusMeaning.ENDED)
    termination = parse_callback(ASSEMBLYAI_TERMINATION, statuses=table)
    assert isinstance(termination, StatusCallback)
    assert termination.meaning is StatusMeaning.ONGOING
    assert DEFAULT_STATUSES.meaning(12) is StatusMeaning.UNKNOWN  # the default is never changed
    assert table == {**DEFAULT_STATUSES, 12: StatusMeaning.ENDED, PROVIDER_ENDED: StatusMeaning.ONGOING}


def test_a_status_table_refuses_what_is_not_a_status_or_a_meaning() -> None:
    with pytest.raises(TypeError, match="a status is an int"):
        DEFAULT_STATUSES.with_status(True, StatusMeaning.ENDED)
    with pytest.raises(ValueError, match="'finished' is not a valid StatusMeaning"):
        StatusTable({12: "finished"})
    assert repr(StatusTable({12: "ended"})) == "StatusTable({12: <StatusMeaning.ENDED: 'ended'>})"


# -- refusals: each names its field ----------------------------------------------------------------
REFUSALS: list[tuple[str, Any, str | None]] = [
    ("not UTF-8", b'{"task_id": "\xff"}', None),
    ("not JSON", b'{"task_id": ', None),
    ("NaN is not JSON", '{"task_id": "t", "data": {"status": NaN}}', None),
    ("digits beyond Python's int limit", '{"code": ' + "9" * 5000 + "}", None),
    ("nested past the stack", "[" * 100_000 + "]" * 100_000, None),
    ("a list", b"[1, 2]", None),
    ("a string", '"hello"', None),
    ("not a payload type", 42, None),
    ("code a list", with_changes(AUDIO_STOP, code=[200]), "code"),
    ("code a bool", with_changes(AUDIO_STOP, code=True), "code"),
    ("no data, no provider type, no envelope", {"message": "SUCCESS"}, "data"),
    ("an empty object", {}, "data"),
    ("no task_id, no code", {"data": {"clips": []}}, "task_id"),
    ("foreign, task_id an int", with_changes(CLIP_RESULT, task_id=7), "task_id"),
    ("foreign, data.task_id disagrees", with_changes(CLIP_RESULT, data__task_id="other"), "data.task_id"),
    ("foreign, data a list", with_changes(CLIP_RESULT, data=[]), "data"),
    ("foreign, code a float", with_changes(CLIP_RESULT, code=200.0), "code"),
    ("data a string", with_changes(AUDIO_STOP, data="oops"), "data"),
    ("no task_id", with_changes(AUDIO_STOP, task_id=DROP), "task_id"),
    ("task_id an int", with_changes(AUDIO_STOP, task_id=7), "task_id"),
    ("task_id empty", with_changes(AUDIO_STOP, task_id=""), "task_id"),
    ("data.task_id disagrees", with_changes(AUDIO_STOP, data__task_id="other"), "data.task_id"),
    ("data.task_id a list", with_changes(AUDIO_STOP, data__task_id=[TASK]), "data.task_id"),
    ("status huge", with_changes(AUDIO_STOP, data__status=10**30), "data.status"),
    ("status message an int", with_changes(AUDIO_STOP, data__message=5), "data.message"),
    ("segment_index missing", with_changes(AUDIO_SEGMENT, data__segment_index=DROP), "data.segment_index"),
    ("segment_index a bool", with_changes(AUDIO_SEGMENT, data__segment_index=False), "data.segment_index"),
    ("segment_index a string", with_changes(AUDIO_SEGMENT, data__segment_index="3"), "data.segment_index"),
    ("segment_index a float", with_changes(AUDIO_SEGMENT, data__segment_index=3.0), "data.segment_index"),
    ("segment_index negative", with_changes(AUDIO_SEGMENT, data__segment_index=-1), "data.segment_index"),
    ("segment_index huge", with_changes(AUDIO_SEGMENT, data__segment_index=2**31), "data.segment_index"),
    (
        "start not a number",
        with_changes(AUDIO_SEGMENT, data__segment_start_time="15s"),
        "data.segment_start_time",
    ),
    ("start nan", with_changes(AUDIO_SEGMENT, data__segment_start_time="nan"), "data.segment_start_time"),
    (
        "start a NaN float",
        with_changes(AUDIO_SEGMENT, data__segment_start_time=math.nan),
        "data.segment_start_time",
    ),
    (
        "start infinite",
        with_changes(AUDIO_SEGMENT, data__segment_start_time="1e999"),
        "data.segment_start_time",
    ),
    (
        "start beyond floats",
        with_changes(AUDIO_SEGMENT, data__segment_start_time=10**400),
        "data.segment_start_time",
    ),
    ("start negative", with_changes(AUDIO_SEGMENT, data__segment_start_time="-5"), "data.segment_start_time"),
    ("start a bool", with_changes(AUDIO_SEGMENT, data__segment_start_time=True), "data.segment_start_time"),
    ("end before start", with_changes(AUDIO_SEGMENT, data__segment_end_time="10.0"), "data.segment_end_time"),
    ("transcript a list", with_changes(AUDIO_SEGMENT, data__transcript=["hi"]), "data.transcript"),
    (
        "transcript no text",
        with_changes(AUDIO_SEGMENT, data__transcript={"is_final": True}),
        "data.transcript.text",
    ),
    ("text a number", with_changes(AUDIO_SEGMENT, data__transcript={"text": 1}), "data.transcript.text"),
    (
        "is_final a string",
        with_changes(AUDIO_SEGMENT, data__transcript={"text": "", "is_final": "no"}),
        "data.transcript.is_final",
    ),
    (
        "type unknown",
        with_changes(AUDIO_SEGMENT, data__transcript={"text": "", "type": "SessionBegins"}),
        "data.transcript.type",
    ),
    (
        "partial and final at once",
        with_changes(AUDIO_SEGMENT, data__transcript={"text": "", "final": True, "type": "partial"}),
        "data.transcript",
    ),
    ("video result a list", with_changes(VIDEO_SEGMENT, data__data=[1]), "data.data"),
    (
        "video end nested and early",
        with_changes(VIDEO_SEGMENT_NESTED, data__data__end_time="1"),
        "data.data.end_time",
    ),
    ("turn_order a bool", with_changes(ASSEMBLYAI_TURN, data__turn_order=True), "data.turn_order"),
    ("turn transcript missing", with_changes(ASSEMBLYAI_TURN, data__transcript=DROP), "data.transcript"),
    ("end_of_turn missing", with_changes(ASSEMBLYAI_TURN, data__end_of_turn=DROP), "data.end_of_turn"),
    ("end_of_turn a number", with_changes(ASSEMBLYAI_TURN, data__end_of_turn=1), "data.end_of_turn"),
    (
        "turn_is_formatted a string",
        with_changes(ASSEMBLYAI_TURN, data__turn_is_formatted="yes"),
        "data.turn_is_formatted",
    ),
    (
        "bare turn_order missing",
        {"task_id": TASK, "type": "Turn", "transcript": "", "end_of_turn": True},
        "turn_order",
    ),
    ("type a number", with_changes(ASSEMBLYAI_BEGIN, data__type=3), "data.type"),
    ("type empty", with_changes(ASSEMBLYAI_BEGIN, data__type=""), "data.type"),
    ("message_type a list", with_changes(ELEVENLABS_SESSION, data__message_type=["x"]), "data.message_type"),
    ("elevenlabs text missing", with_changes(ELEVENLABS_PARTIAL, data__text=DROP), "data.text"),
    ("elevenlabs index a bool", with_changes(ELEVENLABS_PARTIAL, segment_index=True), "segment_index"),
]


@pytest.mark.parametrize(("payload", "field"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_every_refusal_is_a_callback_error_naming_its_field(payload: Any, field: str | None) -> None:
    with pytest.raises(CallbackError) as caught:
        parse_callback(payload)
    assert caught.value.field == field
    assert isinstance(caught.value, ValueError)  # a webhook handler may catch ValueError
    assert len(str(caught.value)) < 300  # never the offending value itself: it may be huge


# -- fuzzing: an event or a CallbackError, nothing else --------------------------------------------
EVENTS = (Segment, StatusCallback, ProviderEvent, ForeignCallback)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
KEYS = st.sampled_from(
    ["task_id", "data", "code", "message", "msg", "status", "segment_index", "transcript", "text",
     "type", "message_type", "turn_order", "end_of_turn", "start_time", "segment_end_time", "is_final"]
)  # fmt: skip


def parses_or_refuses(payload: Any) -> None:
    try:
        result: object = parse_callback(payload)
    except CallbackError as error:
        result = error
    assert isinstance(result, (*EVENTS, CallbackError))
    if isinstance(result, CallbackError):
        assert result.field is None or isinstance(result.field, str)


@given(st.binary(max_size=200))
def test_arbitrary_bytes(payload: bytes) -> None:
    parses_or_refuses(payload)


@given(JSON | st.dictionaries(KEYS, JSON, max_size=6))
def test_arbitrary_json_values_as_text_and_as_objects(value: Any) -> None:
    parses_or_refuses(json.dumps(value))  # allow_nan: NaN and Infinity reach the parser as text
    parses_or_refuses(value)


def paths(value: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key path in nested objects."""
    if not isinstance(value, dict):
        return []
    found = []
    for key, inner in value.items():
        found.append((*prefix, key))
        found.extend(paths(inner, (*prefix, key)))
    return found


@given(JSON, st.sampled_from(["data", "data__data", "data__data__content_moderation", "data__token"]))
def test_a_moderation_view_never_raises(value: Any, where: str) -> None:
    segment = Segment(TASK, 0, True, None, raw=with_changes(VIDEO_SEGMENT, **{where: value}))
    moderation = segment.moderation
    assert moderation is None or isinstance(moderation, Moderation)


PROVIDER_KEYS = ("type", "message_type")  # a provider message: read as one, tried first
# What JSON holds: no NaN and no infinity, which no store could keep (refused, as not JSON).
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


@given(
    st.dictionaries(
        st.text(max_size=12).filter(lambda key: key not in PROVIDER_KEYS), JSON_VALUES, max_size=5
    ),
    st.sampled_from([{"task_id": TASK}, {"code": 200}, {"code": "200", "task_id": TASK}]),
)
def test_a_data_with_no_int_status_in_an_envelope_is_always_foreign(
    data: dict[str, Any], envelope: dict[str, Any]
) -> None:
    data.pop("task_id", None)
    if isinstance(data.get("status"), int) and not isinstance(data["status"], bool):
        del data["status"]
    payload = {**envelope, "data": data}
    assert parse_callback(payload) == ForeignCallback(envelope.get("task_id"), payload)


@given(
    st.sampled_from([AUDIO_STOP, AUDIO_SEGMENT, VIDEO_SEGMENT, VIDEO_STOP]),
    st.text(min_size=1, max_size=12).filter(lambda key: key not in STREAM_KEYS and key not in PROVIDER_KEYS),
    JSON_VALUES,
)
def test_an_int_status_beside_a_key_no_stream_callback_documents_is_foreign(
    payload: dict[str, Any], key: str, value: Any
) -> None:
    extended = copy.deepcopy(payload)
    extended["data"][key] = value
    event = parse_callback(extended)
    assert isinstance(event, ForeignCallback)
    assert (event.task_id, event.raw) == (TASK, extended)
    # What it means if the task_id is a stream of ours after all: the callback, its new key aside.
    assert event.stream is not None
    assert dataclasses.replace(event.stream, raw=payload) == parse_callback(payload)


@given(st.sampled_from(VALID), st.data())
def test_mutated_valid_payloads(payload: dict[str, Any], data: st.DataObject) -> None:
    mutated = copy.deepcopy(payload)
    for _ in range(data.draw(st.integers(1, 3))):
        options = paths(mutated)
        if not options:
            break
        *parents, last = data.draw(st.sampled_from(options))
        target = mutated
        for key in parents:
            target = target[key]
        if data.draw(st.booleans()):
            del target[last]
        else:
            target[last] = data.draw(JSON | st.integers(min_value=2**63) | st.just(True))
    parses_or_refuses(mutated)
    parses_or_refuses(json.dumps(mutated).encode())


# -- round trips: fields drawn, payload built, parsed, compared --------------------------------------
# (NUL and lone surrogates: refused, as no store can keep them.)
TASK_IDS = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=40)
INDEXES = st.integers(0, 2**31 - 1)
TEXTS = st.text(max_size=40)
SECONDS = st.floats(0, 1e9, allow_nan=False, allow_infinity=False)


@given(
    TASK_IDS, INDEXES, TEXTS, SECONDS, SECONDS, st.booleans(), st.booleans(), st.sampled_from([200, "200"])
)
def test_audio_segments_round_trip(
    task_id: str, index: int, text: str, start: float, length: float, final: bool, as_text: bool, code: Any
) -> None:
    end = start + length
    transcript: Any = text if as_text and final else {"text": text, "is_final": final}
    payload = {
        "code": code,
        "message": "SUCCESS",
        "task_id": task_id,
        "data": {
            "segment_index": index,
            "segment_start_time": str(start),
            "segment_end_time": repr(end),
            "status": 0,
            "transcript": transcript,
        },
    }
    assert parse_callback(json.dumps(payload)) == Segment(task_id, index, final, text, start, end, payload)


@given(TASK_IDS, INDEXES, SECONDS, SECONDS, st.booleans())
def test_video_segments_round_trip(
    task_id: str, index: int, start: float, length: float, nested: bool
) -> None:
    fields = {"segment_index": index, "start_time": str(start), "end_time": str(start + length)}
    result: dict[str, Any] = {"content_moderation": {"has_unsafe_content": False}}
    data: dict[str, Any] = {"status": 0, "data": result}
    (result if nested else data).update(fields)
    payload = {"code": 200, "message": "SUCCESS", "task_id": task_id, "data": data}
    assert parse_callback(payload) == Segment(task_id, index, True, None, start, start + length, payload)


@given(TASK_IDS, st.integers(-(2**31), 2**31 - 1), st.text(max_size=40), st.sampled_from(["message", "msg"]))
def test_status_callbacks_round_trip(task_id: str, status: int, message: str, key: str) -> None:
    payload = {
        "code": "200",
        "task_id": task_id,
        "data": {"status": status, key: message, "transcript": None},
    }
    meaning = DEFAULT_STATUSES.meaning(status)
    assert parse_callback(json.dumps(payload)) == StatusCallback(task_id, status, message, payload, meaning)


@given(TASK_IDS, INDEXES, TEXTS, st.booleans(), st.booleans())
def test_provider_transcripts_round_trip(
    task_id: str, index: int, text: str, final: bool, bare: bool
) -> None:
    turn = {"type": "Turn", "turn_order": index, "transcript": text, "end_of_turn": final}
    assembly = {"task_id": task_id, **turn} if bare else {"task_id": task_id, "data": turn}
    assert parse_callback(assembly) == Segment(task_id, index, final, text, raw=assembly)
    kind = "committed_transcript" if final else "partial_transcript"
    eleven = {"task_id": task_id, "segment_index": index, "data": {"message_type": kind, "text": text}}
    assert parse_callback(json.dumps(eleven)) == Segment(task_id, index, final, text, raw=eleven)
    forwarded = {"task_id": task_id, "data": {"message_type": kind, "text": text}}
    assert parse_callback(json.dumps(forwarded)) == Segment(task_id, None, final, text, raw=forwarded)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b'{"task_id": "a\\u0000b", "data": {"status": 14}}', "task_id"),
        (b'{"task_id": "a", "data": {"task_id": "a\\u0000", "status": 14}}', "data.task_id"),
    ],
)
def test_a_task_id_with_a_nul_character_is_refused(payload: bytes, field: str) -> None:
    with pytest.raises(CallbackError) as refused:
        parse_callback(payload)
    assert refused.value.field == field


def test_a_number_beyond_any_float_is_refused_as_one_no_journal_could_keep() -> None:
    body = b'{"task_id": "a", "data": {"status": 0, "segment_index": 1, "transcript": "x", "c": 1e400}}'
    with pytest.raises(CallbackError, match="beyond any float"):
        parse_callback(body)


# -- the usual transcript, read in one pass ----------------------------------------------------------
USUAL = segment_callback(TASK, 3, "Hello there.")
# Where the usual shape may differ, and values that could fool a one-pass reader: other types (a
# bool for an int, an int for a string), edges of the ranges, numbers a float reads but JSON's
# grammar does not, times out of order or beyond any float.
USUAL_FIELDS = (
    "code", "task_id", "data", "data__task_id", "data__type", "data__message_type", "data__status",
    "data__transcript", "data__transcript__text", "data__transcript__is_final", "data__transcript__final",
    "data__transcript__type", "data__transcript__message_type", "data__segment_index",
    "data__segment_start_time", "data__segment_end_time", "data__start_time", "data__end_time",
    "data__summary",
)  # fmt: skip
ODD_VALUES: list[Any] = [
    *(None, True, False, 0, -1, 2**31 - 1, 2**31, -(2**31) - 1, 1.0, -0.0, math.inf, "", "\x00", "x", {}, []),
    *("1.5", "7", ".5", "5.", "-1", "+2", "1e400", "nan", "inf", "1_0", " 1", "\u0661", "20.0", "15.0"),
    *("partial", "Final", "200", TASK, TASK + "\x00", {"text": "x", "is_final": True}),
]


def changed(changes: list[tuple[str, Any]]) -> dict[str, Any]:
    """The usual payload with values put at (or, DROP, taken from) dotted paths that exist."""
    payload = copy.deepcopy(USUAL)
    for dotted, value in changes:
        *parents, last = dotted.split("__")
        target: Any = payload
        for key in parents:
            target = target.get(key) if isinstance(target, dict) else None
        if isinstance(target, dict):
            if value is DROP:
                target.pop(last, None)
            else:
                target[last] = copy.deepcopy(value)
    return payload


def reads_as_field_by_field(payload: dict[str, Any]) -> bool:
    """Whether the one-pass reader took the payload; if it did, ``_read`` must read the same."""
    fast = _usual_transcript(payload)
    if fast is not None:
        assert fast == _read(payload, DEFAULT_STATUSES)
        if holds_no_infinity(payload):  # (handed over as objects, an infinity is refused: no JSON has it)
            assert parse_callback(payload) == fast
    return fast is not None


def holds_no_infinity(payload: dict[str, Any]) -> bool:
    try:
        json.dumps(payload, allow_nan=False)
    except ValueError:
        return False
    return True


def test_each_field_of_the_usual_transcript_changed_alone_reads_as_field_by_field() -> None:
    taken = [
        (dotted, value)
        for dotted in USUAL_FIELDS
        for value in (DROP, *ODD_VALUES)
        if reads_as_field_by_field(changed([(dotted, value)]))
    ]
    # The one-pass reader is not a stub that refuses everything: shapes like these it takes.
    assert ("data__segment_end_time", "20.0") in taken
    assert ("data__transcript__is_final", False) in taken
    assert ("code", DROP) in taken


@given(st.lists(st.tuples(st.sampled_from(USUAL_FIELDS), st.sampled_from([DROP, *ODD_VALUES])), max_size=4))
def test_the_usual_transcript_changed_anyhow_reads_as_field_by_field(changes: list[tuple[str, Any]]) -> None:
    reads_as_field_by_field(changed(changes))


def test_the_usual_transcript_takes_the_one_pass_way() -> None:
    """What the property above rests on: the shape most callbacks have is read in one pass."""
    assert _usual_transcript(USUAL) == Segment(TASK, 3, True, "Hello there.", 15.0, 20.0, USUAL)
    assert _usual_transcript(with_changes(USUAL, data__transcript__is_final=False)) is not None


# -- JSON bodies, read by orjson where that is sure to read as the standard library does ------------
def standard_reading(body: bytes) -> Any:
    try:
        return _standard_decode(body)
    except CallbackError as error:
        return error


def reads_as_the_standard_library(body: bytes) -> bool:
    """Whether orjson's reading was taken; if it was, the standard library's must be the same value,
    to the type and the order of the keys (repr tells 1 from 1.0, -0.0 from 0.0, and the order)."""
    fast = _fast_json(body)
    if fast is not None:
        assert repr(fast) == repr(standard_reading(body))
    return fast is not None


# Every character, lone surrogates included (JSON escapes them; UTF-8 cannot hold them).
ANY_TEXT = st.text(st.characters(codec=None, categories=None), max_size=12)
# The edges of 64 bits, signed and unsigned.
EDGE_INTEGERS = [2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, -(2**64)]
NUMBERS = st.integers() | st.floats() | st.sampled_from(EDGE_INTEGERS)
VALUES = st.recursive(
    st.none() | st.booleans() | NUMBERS | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=16,
)
# How the same value may be written: ASCII escapes or raw UTF-8 (a lone surrogate then becomes
# bytes no UTF-8 reader takes), compact or spread out, with or without a byte order mark.
WRITINGS = st.fixed_dictionaries(
    {"ascii": st.booleans(), "indent": st.sampled_from([None, 0, 2]), "bom": st.booleans()}
)


def written(value: Any, ascii: bool, indent: int | None, bom: bool) -> bytes:
    text = json.dumps(value, ensure_ascii=ascii, indent=indent)  # NaN and Infinity as JSON's extensions
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8", "surrogatepass")


@given(st.dictionaries(ANY_TEXT, VALUES, max_size=5) | VALUES, WRITINGS)
def test_a_json_body_reads_as_the_standard_library_reads_it(value: Any, writing: dict[str, Any]) -> None:
    reads_as_the_standard_library(written(value, **writing))


CALLBACK_BODIES = [json.dumps(USUAL).encode(), *(written(payload, True, None, False) for payload in VALID)]
# An edit: where (taken modulo the length), the bytes to put there, how many to cut after them.
EDITS = st.tuples(st.integers(0, 2_000), st.binary(max_size=3), st.integers(0, 3))


@given(st.sampled_from(CALLBACK_BODIES), st.lists(EDITS, max_size=3))
def test_a_callback_body_changed_byte_by_byte_reads_as_the_standard_library_reads_it(
    body: bytes, edits: list[tuple[int, bytes, int]]
) -> None:
    """Bytes changed, put in or cut out anywhere: numbers that grow digits, strings cut short."""
    for where, put, cut in edits:
        at = where % (len(body) + 1)
        body = body[:at] + put + body[at + cut :]
    reads_as_the_standard_library(body)


@pytest.mark.parametrize(
    "literal",
    [b"9223372036854775807", b"-9223372036854775808", b"18446744073709551615", b"18446744073709551616",
     b"-9223372036854775809", b"123456789012345678901234567890", b"-0", b"-0.0", b"1E2", b"1e-400",
     b"2.2250738585072011e-308", b"4.9e-324", b"0.1", b"1.7976931348623157e308", b"1e400", b"NaN"],
)  # fmt: skip
def test_numbers_at_the_edges_read_as_the_standard_library_reads_them(literal: bytes) -> None:
    reads_as_the_standard_library(b'{"task_id": "a", "n": ' + literal + b"}")


@pytest.mark.parametrize("depth", [1, 40, 150, 299, 301, 995, 1_010, 1_030])
def test_a_field_nested_deep_reads_as_the_standard_library_reads_it(depth: int) -> None:
    """orjson takes 1,024 levels, the standard library runs out of stack near 1,000: a body with
    many brackets goes the standard way, refusal included."""
    nested = json.dumps(USUAL)[:-1].encode() + b', "x": ' + b"[" * depth + b"]" * depth + b"}"
    reads_as_the_standard_library(nested)
    if isinstance(standard_reading(nested), CallbackError):
        with pytest.raises(CallbackError):
            parse_callback(nested)


def test_a_usual_body_is_read_by_orjson_and_the_odd_ones_by_the_standard_library() -> None:
    """What the properties above rest on: orjson reads the usual body (the fast way is not a stub
    that declines everything), and declines where its reading could differ."""
    usual = json.dumps(USUAL).encode()
    assert reads_as_the_standard_library(usual)
    assert parse_callback(usual) == parse_callback(json.dumps(USUAL))
    declined = [
        usual[:-1] + b', "big": 18446744073709551616}',  # beyond 64 bits: orjson would make it a float
        b"\xef\xbb\xbf" + usual,  # a byte order mark
        usual[:-1] + b', "s": "\\ud800"}',  # an escaped lone surrogate
        b"[" + usual + b"]",  # not an object
        usual[:-1] + b", }",  # not JSON
    ]
    assert [reads_as_the_standard_library(body) for body in declined] == [False] * len(declined)


@pytest.mark.parametrize(
    "body",
    [
        b'{"task_id": "\\ud800", "data": {"status": 14, "transcript": null}}',
        b'{"task_id": "t-\\udfff", "data": {"segment_index": 0, "status": 0, "transcript": "hi"}}',
        b'{"data": {"task_id": "\\ud800", "status": 14}}',
        b'{"code": 200, "task_id": "\\ud800", "data": {"clips": []}}',
    ],
)
def test_a_task_id_with_a_lone_surrogate_is_refused(body: bytes) -> None:
    with pytest.raises(CallbackError, match="lone surrogate"):
        parse_callback(body)


def test_a_task_id_outside_ascii_that_utf8_holds_is_taken() -> None:
    assert parse_callback('{"task_id": "café", "data": {"status": 14}}'.encode()).task_id == "café"


# -- the usual path's Segment, made without the dataclass's __init__ ----------------------------------
def test_new_segment_sets_every_field_of_a_segment() -> None:
    assert tuple(field.name for field in dataclasses.fields(Segment)) == SEGMENT_FIELDS


@given(
    st.text(max_size=8),
    st.none() | st.integers(),
    st.booleans(),
    st.none() | st.text(max_size=8),
    st.none() | st.floats(allow_nan=False),
    st.none() | st.floats(allow_nan=False),
    st.none() | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
def test_new_segment_is_the_segment_the_constructor_makes(
    task_id: str,
    index: int | None,
    final: bool,
    text: str | None,
    start: float | None,
    end: float | None,
    raw: dict[str, int] | None,
) -> None:
    made = new_segment(task_id, index, final, text, start, end, raw)
    expected = Segment(task_id, index, final, text, start, end, raw)
    assert type(made) is Segment
    assert made == expected
    assert repr(made) == repr(expected)
    assert [getattr(made, name) for name in SEGMENT_FIELDS] == [
        getattr(expected, name) for name in SEGMENT_FIELDS
    ]
