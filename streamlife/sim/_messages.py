"""What a simulated stream sends: its callbacks, built by ``streamlife.protocol`` in the simulator's
words. Where the docs leave a value open (a message's words, a session's config), the value here is
the simulator's guess, and says so.

Each function is given what it depends on: the stream, the segment, and any dice thrown already,
so the service alone decides when a fault happens.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Final

from streamlife._events import StreamKind
from streamlife.protocol import (
    SEGMENT_SECONDS,
    STATUS_MESSAGES,
    Payload,
    assemblyai_begin,
    assemblyai_termination,
    assemblyai_turn,
    elevenlabs_error,
    elevenlabs_session_started,
    elevenlabs_transcript,
    envelope,
    moderation_callback,
    segment_callback,
    silent_segment_callback,
    status_callback,
    understand_result,
)

from ._records import CREDIT_EXHAUSTED, SOURCE_ENDED, SimStream

# data.message of a status callback: the docs' words, and the simulator's for its stand-in statuses.
SIM_STATUS_MESSAGES: Final = {
    **STATUS_MESSAGES,
    SOURCE_ENDED: "Stream source ended",
    CREDIT_EXHAUSTED: "Insufficient balance",
}

# A callback, and the segment index it is the final of (None: no final).
Message = tuple[Payload, int | None]


def segment_messages(stream: SimStream, index: int) -> list[Message]:
    """The callbacks of one segment with something in it, in order."""
    if stream.kind is StreamKind.UNDERSTAND:
        return [(understanding(stream, index), None)]
    if stream.kind is StreamKind.VIDEO:
        return [(moderation(stream, index), index)]
    if stream.passthrough:
        return [(envelope(stream.task_id, m), final_of) for m, final_of in _provider_turn(stream, index)]
    return [(transcript(stream, index, final=False), None), (transcript(stream, index, final=True), index)]


def final_message(stream: SimStream, index: int) -> Message:
    """The last callback of a segment's: its final (a formatted turn, where turns are formatted)."""
    if stream.kind is StreamKind.UNDERSTAND:
        return understanding(stream, index), None
    if stream.kind is StreamKind.VIDEO:
        return moderation(stream, index), index
    if stream.passthrough:
        message, final_of = _provider_turn(stream, index)[-1]
        return envelope(stream.task_id, message), final_of
    return transcript(stream, index, final=True), index


def transcript(stream: SimStream, index: int, *, final: bool) -> Payload:
    """Segments mode: a partial (the first half of the words) or a final transcript."""
    words = _words(stream, index)
    return segment_callback(stream.task_id, index, words if final else words[: len(words) // 2], final=final)


def silent_segment(stream: SimStream, index: int) -> Payload:
    """Segments mode: a segment with nothing transcribed, in the simulator's words."""
    return silent_segment_callback(stream.task_id, index, "No speech detected")


def moderation(stream: SimStream, index: int) -> Payload:
    """Video moderation: one result per segment, the message in the simulator's words, every
    seventh segment unsafe, ``fps`` frames analysed for each second."""
    return moderation_callback(
        stream.task_id,
        index,
        video_url=f"https://storage.sim.invalid/{stream.task_id}/{index}.mp4",
        unsafe=index % 7 == 3,
        frames_processed=stream.fps * int(SEGMENT_SECONDS),
        message="Segment processed",
    )


def understanding(stream: SimStream, index: int) -> Payload:
    """Live Video Understanding: one result per 5-second window, in the shape a third party
    documents (the official page is cut off), stamped with the window's end as ISO 8601 UTC, the
    words the simulator's. It names no index: the stamp is its key."""
    end = stream.started_at + (index + 1) * SEGMENT_SECONDS
    stamp = datetime.fromtimestamp(end, UTC).isoformat().replace("+00:00", "Z")
    return understand_result(stream.task_id, f"window {index}: {_words(stream, index)}", stamp)


def status_message(stream: SimStream, status: int) -> Payload:
    """The status callback ``status``, in the docs' words or the simulator's."""
    message = SIM_STATUS_MESSAGES[status]
    if stream.kind is StreamKind.VIDEO:
        return status_callback(stream.task_id, status, kind=StreamKind.VIDEO, message=message)
    # In pass-through mode there are no memories-side segments to name, and the docs are silent
    # on the segment fields of a stop callback there: the simulator sends none. Nor does it for
    # a stream that sent no segment (the docs are silent on that case too).
    named = stream.next_index > 0 and not stream.passthrough
    last_index = stream.next_index - 1 if named else None
    return status_callback(stream.task_id, status, message=message, last_index=last_index)


# -- pass-through: the providers' own messages, forwarded in the webhook envelope ------------------
def opening(stream: SimStream, session: uuid.UUID, now: float) -> Payload:
    """The provider's first message, as its session opens (AssemblyAI v3 ``Begin``, ElevenLabs
    ``session_started``), forwarded."""
    if stream.provider == "assemblyai":
        # expires_at: AssemblyAI's expiry of the session, in Unix seconds; how far off is a guess.
        expires_at = int(now + 3 * 3600)
        return envelope(stream.task_id, assemblyai_begin(str(session), expires_at))
    # ElevenLabs echoes the session's config: which keys it holds here is a guess (the model, and
    # the audio format memories.ai streams).
    config = {"model_id": "scribe_v2_realtime", "sample_rate": 16000, "audio_format": "pcm_16000"}
    return envelope(stream.task_id, elevenlabs_session_started(session.hex, config))


def session_end(stream: SimStream, at: float) -> Payload:
    """The provider's word that its session ended, forwarded: AssemblyAI's Termination, or
    ElevenLabs' error message, which it sends before it closes its socket."""
    if stream.provider == "assemblyai":
        return termination(stream, at)
    return envelope(
        stream.task_id, elevenlabs_error("session_time_limit_exceeded", "Session time limit exceeded")
    )


def termination(stream: SimStream, at: float) -> Payload:
    """AssemblyAI's Termination, forwarded."""
    return envelope(stream.task_id, assemblyai_termination(int(at - stream.started_at)))


def _provider_turn(stream: SimStream, index: int) -> list[Message]:
    """One 5-second cycle's provider messages, unwrapped: one turn (or commit) per cycle."""
    text = _words(stream, index)
    spoken = text.split()
    partial = " ".join(spoken[: len(spoken) // 2])
    if stream.provider == "elevenlabs":
        # ElevenLabs numbers nothing: its transcripts carry no index of any kind.
        return [
            (elevenlabs_transcript(partial, committed=False), None),
            (elevenlabs_transcript(text, committed=True), None),
        ]
    turns: list[Message] = [
        (assemblyai_turn(index, partial, end_of_turn=False, formatted=False), None),
        (assemblyai_turn(index, text, end_of_turn=True, formatted=False), index),
    ]
    if stream.format_turns:  # the same turn again, formatted: AssemblyAI's format_turns
        turns.append((assemblyai_turn(index, _formatted(text), end_of_turn=True, formatted=True), index))
    return turns


# -- the other products --------------------------------------------------------------------------
def foreign_results(task_id: str) -> list[Payload]:
    """What another memories.ai product's callback may hold in ``data``: the simulator's guesses,
    some with no ``status``, some with an integer ``status`` beside the product's own keys."""
    return [
        {"frames": [{"timestamp": "0.0", "url": f"https://storage.sim.invalid/{task_id}/0.jpg"}]},
        {"video_url": f"https://storage.sim.invalid/{task_id}/clip.mp4", "duration": "12.5"},
        {
            "status": 0,
            "message": "Transcription completed",
            "transcriptions": [{"start_time": "0.0", "end_time": "2.4", "text": "Hello there."}],
        },
        {"status": 0, "summary": "A short talk.", "video_no": f"VI{task_id[:12]}"},
    ]


def _words(stream: SimStream, index: int) -> str:
    return f"segment {index} of {stream.task_id[:8]}"


def _formatted(text: str) -> str:
    """Text as AssemblyAI formats a turn: capitalised and punctuated."""
    return text[:1].upper() + text[1:] + "."
