"""memories.ai's stream protocol as streamlife relies on it: paths, fields, statuses, message shapes.

docs/memories-api.md says which of these facts memories.ai's docs state and which streamlife
assumes. Each fact has its home here. The transport, the callback parser, the simulator, the
tests and the benchmarks all take it from here, so a change to the protocol is made in one place.
The builders below write the callbacks and answers the simulator sends and the tests post.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, TypeAlias
from urllib.parse import quote

from ._events import StreamKind

Payload: TypeAlias = dict[str, Any]  # a callback's body, or an answer's, as decoded JSON

MAVI_BASE_URL: Final = "https://mavi-backend.memories.ai/serve/api/v2"  # audio and video
UNDERSTAND_BASE_URL: Final = "https://stream.memories.ai"  # Live Video Understanding, a host of its own
BASE_URLS: Final = {
    StreamKind.AUDIO: MAVI_BASE_URL,
    StreamKind.VIDEO: MAVI_BASE_URL,
    StreamKind.UNDERSTAND: UNDERSTAND_BASE_URL,
}
PATHS: Final = {  # (start, stop), relative to the product's base URL; see stop_request
    StreamKind.AUDIO: ("/audio-stream/start", "/audio-stream/stop"),
    StreamKind.VIDEO: ("/stream/start", "/stream/stop"),
    StreamKind.UNDERSTAND: ("/v1/understand/streamConnect", "/v1/understand/stop/{task_id}"),
}
URL_FIELD: Final = {  # the stream to pull
    StreamKind.AUDIO: "audio_url",
    StreamKind.VIDEO: "url",
    StreamKind.UNDERSTAND: "url",
}
# The transcription providers an audio start names in its required ``provider`` field.
PROVIDERS: Final = ("assemblyai", "elevenlabs")
# memories.ai cuts a stream into segments this long, and bills it for every one begun.
SEGMENT_SECONDS: Final = 5.0

# Live Video Understanding's start body: the RTMP URL, the prompt applied to each frame window,
# the model's role, the URL its results are posted to (one per request, not the account's webhook),
# and reasoning mode. The docs do not say which are required; streamlife requires ``url`` and
# ``user_prompt`` (without a prompt there is nothing to apply) and ``callback`` (without it the
# results go nowhere, and the stream bills all the same).
UNDERSTAND_FIELDS: Final = ("url", "user_prompt", "system_prompt", "callback", "thinking")
UNDERSTAND_REQUIRED: Final = ("url", "user_prompt", "callback")
# Its answers are an envelope ``{status, task_id, text}``, read by ``status``. 0, 14, -1 and 5000
# are documented; 1001 and 2001 only in a third party's code comments ("from API docs").
UNDERSTAND_OK: Final = 0  # started (a start's answer), or a result (a callback)
UNDERSTAND_INVALID: Final = -1  # invalid request, or task_id not found
UNDERSTAND_SERVER_ERROR: Final = 5000
UNDERSTAND_CONCURRENCY: Final = 1001  # [third party only] the cap of concurrent tasks per key
UNDERSTAND_CREDIT: Final = 2001  # [third party only] a credit deduction failed
UNDERSTAND_MAX_TASKS: Final = 4  # concurrent tasks per API key (documented)

STOPPED_BY_USER: Final = 14  # the status of the stop callback (and of Live Video Understanding's stop answer)
CAPACITY_REACHED: Final = 16  # the account's concurrent streams are full: in an answer, or a callback
STATUS_MESSAGES: Final = {  # data.message of a status callback, as the docs word it
    STOPPED_BY_USER: "Stream stopped by user",
    CAPACITY_REACHED: "Capacity Reached",
}
START_MESSAGES: Final = {  # data.message of a start answer
    StreamKind.AUDIO: "Audio stream transcription started",
    StreamKind.VIDEO: "Stream processing started successfully",
}
STOP_MESSAGES: Final = {  # data.message of a stop answer
    StreamKind.AUDIO: "Audio stream stopped successfully",
    StreamKind.VIDEO: "Stream stopped successfully",
}

# The keys of ``data`` in the stream callbacks: the audio stop page's, the video moderation page's
# (``data.data`` and ``data.token``), ``msg`` for ``message`` and ``task_id`` (read leniently, as
# everywhere), and ``start_time``/``end_time`` beside ``data.data`` (as seen in examples; the docs'
# table puts them inside it). A ``data`` with any other key beside its status is another product's.
STREAM_KEYS: Final = frozenset(
    {
        "status",
        "message",
        "msg",
        "segment_index",
        "segment_start_time",
        "segment_end_time",
        "start_time",
        "end_time",
        "transcript",
        "data",
        "token",
        "task_id",
    }
)
# The keys a Live Video Understanding result may have, beside its top-level ``status`` and
# ``task_id``. Its callback is not documented (the page is cut off): a third party documents
# ``{"status": 0, "task_id", "data": {"text", "timestamp"}}``; the start answer's own envelope puts
# ``text`` at the top. Both are read, the top level first.
UNDERSTAND_RESULT_KEYS: Final = frozenset({"text", "timestamp"})
# ElevenLabs' transcript messages, and whether each is final.
ELEVENLABS_TRANSCRIPTS: Final = {
    "partial_transcript": False,
    "committed_transcript": True,
    "committed_transcript_with_timestamps": True,
}
# ElevenLabs' error messages (its realtime event reference, and its SDK's class names for the last
# five). ElevenLabs sends one before it closes its socket: the provider's session has ended, as
# AssemblyAI's ``Termination`` says, and memories.ai may pull the stream (and bill) all the same.
ELEVENLABS_ENDS: Final = frozenset(
    {
        "error",
        "auth_error",
        "quota_exceeded",
        "rate_limited",
        "transcriber_error",
        "commit_throttled",
        "queue_overflow",
        "resource_exhausted",
        "session_time_limit_exceeded",
        "chunk_size_exceeded",
        "insufficient_audio_activity",
        "input_error",
        "unaccepted_terms",
    }
)


# -- the shapes of callbacks and answers, as the docs give them ---------------------------------
# Each builder writes one documented shape; where the docs are silent it takes the value from its
# caller, so the simulator and the tests can choose their own.
def envelope(task_id: str, data: Payload | None) -> Payload:
    """The webhook envelope every callback comes in: ``task_id`` at the top, the result in ``data``.

    A forwarded provider message comes in it too, under ``data``. The docs say "verbatim" and not
    how: the envelope is the only way a webhook could learn the task_id (an assumption).
    """
    return {"code": "200", "message": "SUCCESS", "task_id": task_id, "data": data}


def segment_fields(index: int) -> Payload:
    """An audio segment's fields under ``data``: its index from 0, and its times in seconds as text."""
    start = index * SEGMENT_SECONDS
    return {
        "segment_index": index,
        "segment_start_time": f"{start:.1f}",
        "segment_end_time": f"{start + SEGMENT_SECONDS:.1f}",
    }


def segment_callback(task_id: str, index: int, text: str = "hello there", *, final: bool = True) -> Payload:
    """An audio transcript callback of segments mode: a final, or a partial with ``final=False``.

    The docs' table of these callbacks is lost: the shape is inferred from the audio stop callback,
    segment fields under ``data`` and the transcript as ``{"text", "is_final"}``.
    """
    transcript = {"text": text, "is_final": final}
    data = {**segment_fields(index), "status": 0, "message": "final" if final else "partial"}
    return envelope(task_id, {**data, "transcript": transcript})


def silent_segment_callback(task_id: str, index: int, message: str) -> Payload:
    """A segment with nothing transcribed. The docs are silent on one: status 0 and a null
    transcript are assumed, as for a result."""
    return envelope(task_id, {**segment_fields(index), "status": 0, "message": message, "transcript": None})


def moderation_callback(
    task_id: str, index: int, *, video_url: str, unsafe: bool, frames_processed: int, message: str
) -> Payload:
    """A video moderation result: segment fields under ``data.data``, as the video start page
    documents them. Its table cuts the last name off at "frames_process": ``frames_processed`` is
    assumed. The docs give ``data.token`` and no contents: it is left empty, with no logo results."""
    start = index * SEGMENT_SECONDS
    result = {
        "segment_index": index,
        "start_time": f"{start:.1f}",
        "end_time": f"{start + SEGMENT_SECONDS:.1f}",
        "video_url": video_url,
        "content_moderation": {"has_unsafe_content": unsafe, "frames_processed": frames_processed},
    }
    return envelope(task_id, {"status": 0, "message": message, "data": result, "token": {}})


def status_callback(
    task_id: str,
    status: int,
    *,
    kind: StreamKind = StreamKind.AUDIO,
    message: str | None = None,
    last_index: int | None = None,
) -> Payload:
    """A status callback: no result, ``status`` under ``data``; the stop callback is status 14.

    Audio: ``data.transcript`` null, and the last segment's fields when ``last_index`` is given (the
    audio stop page; a stream that sent no segment has none). Video: ``data.data`` and
    ``data.token`` null (the video stop page). ``message`` defaults to the docs' words for the status.
    """
    words = STATUS_MESSAGES.get(status, f"status {status}") if message is None else message
    if kind is StreamKind.VIDEO:
        return envelope(task_id, {"status": status, "message": words, "data": None, "token": None})
    fields = {} if last_index is None else segment_fields(last_index)
    return envelope(task_id, {**fields, "status": status, "message": words, "transcript": None})


def success_answer(task_id: str, message: str) -> Payload:
    """The body of a start's or a stop's success: the task_id, and what happened in ``data.message``."""
    return {"code": 200, "message": "success", "data": {"task_id": task_id, "message": message}}


def error_answer(code: int, message: str) -> Payload:
    """The body of an error answer, status 16 included: the code, ``msg``, and a null ``data``."""
    return {"code": code, "msg": message, "data": None}


def understand_body_problem(params: Mapping[str, Any]) -> str | None:
    """What is wrong with a Live Video Understanding start body, or None. The fields the docs give
    are checked by type; the docs do not say which are required (see ``UNDERSTAND_REQUIRED``)."""
    for name in UNDERSTAND_REQUIRED:
        value = params.get(name)
        if not isinstance(value, str) or not value.strip():
            return f"an understand stream needs {name}=<{_UNDERSTAND_HINTS[name]}>"
    system = params.get("system_prompt")
    if system is not None and not isinstance(system, str):
        return f"system_prompt must be text, got {type(system).__name__}"
    thinking = params.get("thinking")
    if thinking is not None and not isinstance(thinking, bool):
        return f"thinking must be True or False, got {type(thinking).__name__}"
    return None


_UNDERSTAND_HINTS: Final = {
    "url": "the RTMP stream's URL",
    "user_prompt": "the instruction applied to each frame window",
    "callback": "the URL its results are posted to",
}


def stop_request(kind: StreamKind, task_id: str) -> tuple[str, Payload | None]:
    """A stop's path and body: the task_id in the body (audio, video), or in the path with no
    body at all (Live Video Understanding)."""
    path = PATHS[kind][1]
    if kind is StreamKind.UNDERSTAND:
        return path.format(task_id=quote(task_id, safe="")), None
    return path, {"task_id": task_id}


def understand_answer(status: int, task_id: str | None = None, text: str | None = "") -> Payload:
    """A Live Video Understanding answer: ``{status, task_id, text}``; the stop's documented
    ``{status: 14, task_id}`` has no text (``text=None``)."""
    answer: Payload = {"status": status}
    if task_id is not None:
        answer["task_id"] = task_id
    return answer if text is None else {**answer, "text": text}


def understand_result(task_id: str, text: str, timestamp: str) -> Payload:
    """A Live Video Understanding result, as a third party documents it: status 0 and the task_id
    at the top, the text and an ISO timestamp under ``data``. The official page is cut off here."""
    return {"status": UNDERSTAND_OK, "task_id": task_id, "data": {"text": text, "timestamp": timestamp}}


# -- the providers' own messages, which pass-through mode forwards in the envelope ---------------
def assemblyai_begin(session_id: str, expires_at: int) -> Payload:
    """AssemblyAI v3 ``Begin``: its session opened; ``expires_at`` in Unix seconds."""
    return {"type": "Begin", "id": session_id, "expires_at": expires_at}


def assemblyai_turn(index: int, text: str, *, end_of_turn: bool, formatted: bool) -> Payload:
    """AssemblyAI v3 ``Turn``: the turn so far (a partial), or whole (``end_of_turn``), with its words
    spread over segment ``index``'s seconds."""
    spoken = text.split()
    step = SEGMENT_SECONDS * 1000 / max(len(spoken), 1)
    base = index * SEGMENT_SECONDS * 1000
    words = [
        {
            "text": word,
            "start": int(base + n * step),
            "end": int(base + (n + 1) * step),
            "confidence": 0.9,
            "word_is_final": end_of_turn or n < len(spoken) - 1,  # the partial's last word may change
        }
        for n, word in enumerate(spoken)
    ]
    return {
        "type": "Turn",
        "turn_order": index,
        "turn_is_formatted": formatted,
        "end_of_turn": end_of_turn,
        "transcript": text,
        "end_of_turn_confidence": 0.95 if end_of_turn else 0.1,
        "words": words,
    }


def assemblyai_termination(seconds: int) -> Payload:
    """AssemblyAI v3 ``Termination``: its session ended, after ``seconds`` of audio."""
    return {"type": "Termination", "audio_duration_seconds": seconds, "session_duration_seconds": seconds}


def elevenlabs_session_started(session_id: str, config: Payload) -> Payload:
    """ElevenLabs ``session_started``, echoing the session's ``config``."""
    return {"message_type": "session_started", "session_id": session_id, "config": config}


def elevenlabs_transcript(text: str, *, committed: bool) -> Payload:
    """ElevenLabs ``partial_transcript`` or ``committed_transcript``: text, and no index of any kind."""
    return {"message_type": "committed_transcript" if committed else "partial_transcript", "text": text}


def elevenlabs_error(message_type: str, error: str) -> Payload:
    """One of ElevenLabs' error messages (``ELEVENLABS_ENDS``), sent before it closes its socket."""
    return {"message_type": message_type, "error": error}
