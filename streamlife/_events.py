"""The values that flow into and out of a task: what a fire returned, and what a callback said.

All frozen and slotted: they are shared between threads and kept in histories and journals.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final


class StreamKind(enum.StrEnum):
    """Which memories.ai stream product a task runs."""

    AUDIO = "audio"  # /audio-stream/start|stop: transcription
    VIDEO = "video"  # /stream/start|stop: moderation and logo detection
    UNDERSTAND = "understand"  # stream.memories.ai /v1/understand/streamConnect|stop: video understanding


class StatusMeaning(enum.StrEnum):
    """What a callback's status says about its stream, as ``streamlife._callbacks.StatusTable`` reads it.

    ``streamlife.lifecycle.STATUS_TRIGGERS`` says which task trigger each one fires: every end but
    STOPPED is inferred, and confirmed by a stop before the task is terminal.
    """

    STOPPED = "stopped"  # stopped by our stop (14): fire ``stopped``
    CAPACITY = "capacity"  # the account's stream capacity is full (16): fire ``capacity``
    ENDED = "ended"  # the service ended the stream by itself (as far as we can tell): fire ``ended``
    PROVIDER_ENDED = "provider_ended"  # the provider ended its session (AssemblyAI ``Termination``)
    ONGOING = "ongoing"  # a status the user declared harmless: the stream goes on, nothing to fire
    UNKNOWN = "unknown"  # not in the table: kept on the event and surfaced, never guessed


class OutcomeKind(enum.StrEnum):
    """What became of one event fired at a task."""

    APPLIED = "applied"
    """The event changed the task: its state, or its data (a new segment, a flag)."""
    DUPLICATE = "duplicate"
    """The event repeats what the task already knows; nothing changed."""
    LATE = "late"
    """The event arrived after the task reached a terminal state; recorded, never applied."""
    PARKED = "parked"
    """A callback for a task_id nobody knows yet; held until its start answer arrives."""
    REJECTED = "rejected"
    """The event is impossible for the task in its state; recorded with the reason, nothing changed."""
    FOREIGN = "foreign"
    """A well-formed callback that is not a stream event: another product's result."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of every fire: never a bare bool.

    Compare with the shared values (``outcome is Outcome.APPLIED`` or ``==``); a rejection
    carries its reason: ``Outcome.rejected("stop_ok is impossible while pending")``.
    """

    kind: OutcomeKind
    reason: str | None = None

    APPLIED: ClassVar[Outcome]
    DUPLICATE: ClassVar[Outcome]
    LATE: ClassVar[Outcome]
    PARKED: ClassVar[Outcome]
    FOREIGN: ClassVar[Outcome]
    PARKED_ALREADY: ClassVar[Outcome]

    @classmethod
    def rejected(cls, reason: str) -> Outcome:
        return cls(OutcomeKind.REJECTED, reason)

    def __str__(self) -> str:
        return self.kind.value if self.reason is None else f"{self.kind.value}: {self.reason}"


Outcome.APPLIED = Outcome(OutcomeKind.APPLIED)
Outcome.DUPLICATE = Outcome(OutcomeKind.DUPLICATE)
Outcome.LATE = Outcome(OutcomeKind.LATE)
Outcome.PARKED = Outcome(OutcomeKind.PARKED)
Outcome.FOREIGN = Outcome(OutcomeKind.FOREIGN)
# A callback equal to one parked for the same unknown task_id (a redelivery): kept once, so it is
# in no task's history when the task is known.
Outcome.PARKED_ALREADY = Outcome(OutcomeKind.DUPLICATE, "parked already")


@dataclass(frozen=True, slots=True)
class Segment:
    """One transcript (or moderation) result for one 5-second segment of a stream.

    ``final`` is False for a partial result that a later final for the same index replaces.
    ``index`` is None for a message that carries none (ElevenLabs transcripts forwarded as they
    came, Live Video Understanding results): the task's transcript numbers it when the task
    applies it (``Transcript.numbered``), in the order the task applied them.
    ``formatted`` is True for a final in its formatted form (AssemblyAI's ``turn_is_formatted``,
    sent after the unformatted final of the same turn when the stream formats turns): it replaces
    that final, and an unformatted final after it is a repeat.
    """

    task_id: str
    index: int | None
    final: bool
    text: str | None = None
    start: float | None = None
    end: float | None = None
    raw: Mapping[str, Any] | None = None
    formatted: bool = False
    stamp: str | None = None
    """The result's own key, where its product gives one and no index (a Live Video Understanding
    result's timestamp, as sent): a result with the stamp of one applied before is a repeat."""

    @property
    def key(self) -> tuple[int | None, bool]:
        return (self.index, self.final)

    @property
    def moderation(self) -> Moderation | None:
        """The video moderation result this segment carries, read from ``raw`` when asked; None
        for a transcript (a segment with text) and for a payload with no ``data.data`` object."""
        return None if self.text is not None else _moderation_of(self.raw)


def _slot_setters(cls: type, names: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(cls.__dict__[name].__set__ for name in names)


# Every field of a Segment, in the order ``new_segment`` sets them (a test holds it to the class's).
SEGMENT_FIELDS: Final = ("task_id", "index", "final", "text", "start", "end", "raw", "formatted", "stamp")
_SET_SEGMENT: Final = _slot_setters(Segment, SEGMENT_FIELDS)
_new_object: Final = object.__new__


def new_segment(
    task_id: str, index: int | None, final: bool, text: str | None, start: float | None,
    end: float | None, raw: Mapping[str, Any] | None,
) -> Segment:  # fmt: skip
    """``Segment(task_id, index, final, text, start, end, raw)``, made for the parser's usual path,
    which makes one for most callbacks: a frozen dataclass's ``__init__`` sets each field through
    ``object.__setattr__``, which costs more than the rest of that path's checks; this sets the
    slots themselves. The same object, every field set."""
    segment = _new_object(Segment)
    task_id_, index_, final_, text_, start_, end_, raw_, formatted_, stamp_ = _SET_SEGMENT
    task_id_(segment, task_id)
    index_(segment, index)
    final_(segment, final)
    text_(segment, text)
    start_(segment, start)
    end_(segment, end)
    raw_(segment, raw)
    formatted_(segment, False)
    stamp_(segment, None)
    return segment


@dataclass(frozen=True, slots=True)
class Moderation:
    """A video moderation segment's result: the fields the stream/start page documents, typed.

    Read from the callback's payload, where the page puts them: ``data.data.content_moderation``
    holds ``has_unsafe_content`` and ``frames_processed`` (the page's table is cut off after
    "frames_process"; we assume the name it reads as), ``data.data.video_url`` is the processed
    clip, and ``data.token`` the usage. The docs are silent on logo detection's result: it has no
    field of its own here, and ``result`` is the whole of ``data.data``, the logos included.
    A field missing, null or of another type reads as None: a view never refuses a payload that
    the parser took.
    """

    has_unsafe_content: bool | None
    frames_processed: int | None
    video_url: str | None
    token: Mapping[str, Any] | None
    result: Mapping[str, Any]  # (never None: with no ``data.data`` object there is no Moderation)


def _moderation_of(raw: Mapping[str, Any] | None) -> Moderation | None:
    data = None if raw is None else raw.get("data")
    result = data.get("data") if isinstance(data, Mapping) else None
    if not isinstance(data, Mapping) or not isinstance(result, Mapping):
        return None
    checks = result.get("content_moderation")
    unsafe = checks.get("has_unsafe_content") if isinstance(checks, Mapping) else None
    frames = checks.get("frames_processed") if isinstance(checks, Mapping) else None
    url, token = result.get("video_url"), data.get("token")
    return Moderation(
        has_unsafe_content=unsafe if isinstance(unsafe, bool) else None,
        frames_processed=frames if isinstance(frames, int) and not isinstance(frames, bool) else None,
        video_url=url if isinstance(url, str) else None,
        token=token if isinstance(token, Mapping) else None,
        result=result,
    )


@dataclass(frozen=True, slots=True)
class StatusCallback:
    """A callback that reports a status of the stream itself: stopped (14), capacity (16), or another end.

    ``meaning`` is what the status table said when the callback was parsed (UNKNOWN for a status
    it does not list); None for a StatusCallback built by hand rather than by ``parse_callback``.
    ``last_index`` is the index of the stream's last segment, where the callback names it (the
    stop callback's ``segment_index``): a task that applies the callback counts every segment up
    to it as expected, so one with no final shows in its gaps.
    """

    task_id: str
    status: int
    message: str | None = None
    raw: Mapping[str, Any] | None = None
    meaning: StatusMeaning | None = None
    last_index: int | None = None


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    """A provider message forwarded by memories.ai that is neither a transcript nor an end of session.

    AssemblyAI ``Begin`` or ``SpeechStarted``, ElevenLabs ``session_started`` or one of its error
    messages: worth a log line, never a transition. Whether a provider error ends the stream is not
    documented, so it is not guessed; the end arrives as a status callback (or the silence timer fires).
    """

    task_id: str
    provider: str  # "assemblyai" or "elevenlabs"
    message_type: str  # the provider's own name for the message: "Begin", "session_started", "error"
    raw: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ForeignCallback:
    """A well-formed callback that is not a stream event: another product's result.

    The webhook URL is one per account, and memories.ai posts every product's async results to it
    (clips, edits, generated audio, summaries), beside the streams' callbacks. Such a result has
    the envelope (a ``task_id`` or a ``code``, and a ``data`` object or null) but not a stream's
    shape. No stream task handles it: the application routes it, or acknowledges it and drops it.
    ``task_id`` is the one the envelope names, if any (the product's own).
    """

    task_id: str | None
    raw: Mapping[str, Any] | None = None
    stream: Segment | StatusCallback | None = None
    """The payload read as a stream callback, when it has an integer ``status`` beside keys that no
    stream callback documents. memories.ai's field lists are incomplete, so its task_id may name a
    stream of ours after all: the Fleet then applies this. Otherwise the callback is another
    product's."""


@dataclass(frozen=True, slots=True)
class StartResult:
    """The service accepted a start: the stream exists and bills from now on."""

    task_id: str
    message: str | None = None
    raw: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class StopResult:
    """The service acknowledged a stop; the status-14 callback should follow, unless ``final``:
    the answer itself says the stream stopped (Live Video Understanding's status 14)."""

    task_id: str
    message: str | None = None
    raw: Mapping[str, Any] | None = None
    final: bool = False
