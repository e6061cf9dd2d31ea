"""memories.ai's stream protocol as streamlife relies on it: paths, fields, statuses, message shapes.

docs/memories-api.md says which of these facts memories.ai's docs state and which streamlife
assumes. Each fact has its home here. The transport, the callback parser, the simulator, the
tests and the benchmarks all take it from here, so a change to the protocol is made in one place.
"""

from __future__ import annotations

from typing import Final

from .events import StreamKind

PATHS: Final = {  # (start, stop), relative to the base URL
    StreamKind.AUDIO: ("/audio-stream/start", "/audio-stream/stop"),
    StreamKind.VIDEO: ("/stream/start", "/stream/stop"),
}
URL_FIELD: Final = {StreamKind.AUDIO: "audio_url", StreamKind.VIDEO: "url"}  # the stream to pull
# The transcription providers an audio start names in its required ``provider`` field.
PROVIDERS: Final = ("assemblyai", "elevenlabs")
# memories.ai cuts a stream into segments this long, and bills it for every one begun.
SEGMENT_SECONDS: Final = 5.0

STOPPED_BY_USER: Final = 14  # the status of the stop callback
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
