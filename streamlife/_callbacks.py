"""Webhook payload -> event: parse leniently, validate strictly, keep the raw payload on the event.

memories.ai documents its callbacks only in part, so the parser accepts every shape the docs and
the providers describe and refuses anything else with a ``CallbackError`` naming the field (a
dotted path, or None when the whole payload is unreadable). Whatever the input, it raises nothing
else. The webhook URL is one per account, and every product's async results come to it: a
well-formed envelope that holds no stream event is a ``ForeignCallback``, not an error.

Lenient: ``code`` an int or a string; ``message`` or ``msg``; ``task_id`` at the top level or
under ``data`` (both present must agree); times strings of seconds or numbers; a JSON null counts
as absent. Strict: every field the event is built from has the right type and range (a bool is not
an int here), and fields the event is not built from are only kept, in ``raw``.

The message ``m`` is ``data`` in an envelope, or the payload itself when it is a bare provider
message (no ``data``, a ``type`` or ``message_type`` at the top). Rules, first match wins:

    m holds                                          event
    -----------------------------------------------  ----------------------------------------------
    type "Turn" (AssemblyAI v3)                      Segment(index=turn_order, final=end_of_turn,
                                                             formatted=turn_is_formatted)
    type "Termination"                               StatusCallback(PROVIDER_ENDED), meaning per table
    any other type ("Begin", "SpeechStarted")        ProviderEvent("assemblyai", type)
    message_type partial_/committed_transcript[...]  Segment(index=segment_index of the wrapper or m,
                                                             or None: the task numbers it)
    message_type an error ("quota_exceeded", ...)    StatusCallback(PROVIDER_ENDED), meaning per table
    any other message_type ("session_started")       ProviderEvent("elevenlabs", message_type)
    status, transcript a string or object (audio)    Segment, final unless the transcript says partial
    status, data an object (video moderation)        Segment(final=True, text=None), result in raw
    status, transcript/data null or absent           StatusCallback(status, last_index=segment_index),
                                                     meaning per table
    top: int status, no code, text (top or data)     Live Video Understanding: status 0 with text is a
                                                     Segment(index=None, stamp=timestamp); any other,
                                                     StatusCallback, meaning per table
    no int status, or a key no stream callback has   ForeignCallback(task_id or None), in an envelope
    anything else                                    CallbackError

Provider messages are tried first: memories.ai's own payloads have no ``type`` or
``message_type`` beside ``status``, and reading a provider message as a status could end a task.
A stream callback's ``data`` has an int ``status`` and no key but those the stream callbacks
document (``STREAM_KEYS``); any other ``data`` (an object or null) in an envelope (a ``task_id``
or a ``code`` at the top) is another product's result, a ForeignCallback. What is malformed stays
a CallbackError: no JSON object, no envelope, a stream field of the wrong type (a non-string
``task_id``, a ``transcript`` that is a number, a ``status`` out of range).
A Segment keeps its status only in ``raw``: the rule is "a result makes a segment". A status
callback's ``segment_index`` is the one field read leniently: the stop page documents it as the
index of the last segment, and one of another type or out of range reads as no index (None),
because refusing a stop callback over a hint would leave its task waiting for it. ElevenLabs
messages carry no index, and the parser invents none (it sees one message, not the stream): without
a ``segment_index`` in the wrapper, the Segment's index is None, and the task's transcript numbers
it in the task's journal order, where a repeat is known by its content.

A body is read in streamlife's JSON dialect (``streamlife._jsontext.read_object``), whose
refusals are CallbackErrors too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any, Final, TypeAlias, TypeGuard

from ._events import ForeignCallback, ProviderEvent, Segment, StatusCallback, StatusMeaning, new_segment
from ._jsontext import kind_of, read_object
from .errors import CallbackError
from .protocol import (
    CAPACITY_REACHED,
    ELEVENLABS_ENDS,
    ELEVENLABS_TRANSCRIPTS,
    STOPPED_BY_USER,
    STREAM_KEYS,
    UNDERSTAND_OK,
    UNDERSTAND_RESULT_KEYS,
)

# What a stream task hears; a callback is one of these, or another product's result.
StreamEvent: TypeAlias = Segment | StatusCallback | ProviderEvent
CallbackEvent: TypeAlias = StreamEvent | ForeignCallback
__all__ = [
    "DEFAULT_STATUSES",
    "PROVIDER_ENDED",
    "CallbackEvent",
    "StatusTable",
    "StreamEvent",
    "is_understand_payload",
    "parse_callback",
]

_INT32: Final = range(-(2**31), 2**31)  # statuses and indexes stay small: cheap to log, cheap for gaps()
# A plain decimal: float() alone would also take "nan", "inf", "1_000" and Unicode digits.
_NUMBER: Final = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_TRANSCRIPT_FINAL: Final = {
    "partial": False,
    "partialtranscript": False,
    "final": True,
    "finaltranscript": True,
}
_NONE3: Final = (None, None, None)
_USUAL_CODES: Final = (str, type(None))  # a code the fast path takes as it is (an int: _read checks it)
_INDEX_END: Final = _INT32.stop
# The keys the fast path lets ``data`` have: a stream callback's, none of which names a provider
# message (``type``, ``message_type``), so a payload inside them needs no look for those.
_USUAL_DATA_KEYS: Final = STREAM_KEYS - {"type", "message_type"}
# The keys a Live Video Understanding callback may have, at the top and in ``data``.
_UNDERSTAND_TOP: Final = frozenset({"status", "task_id", "data"}) | UNDERSTAND_RESULT_KEYS
_UNDERSTAND_DATA: Final = frozenset({"task_id"}) | UNDERSTAND_RESULT_KEYS

PROVIDER_ENDED: Final = -1000
"""The status given to a provider's own end-of-session message (AssemblyAI ``Termination``).

It has no memories.ai status, and StatusCallback.status is an int, so it gets this synthetic one,
far from every real value seen (-1, 0, 14, 16, 1001, 2001, 5000). Being a status, it goes through
the table like any other: PROVIDER_ENDED by default, which the lifecycle reads as our stop's echo
while the task is stopping (once the stop was acknowledged), and as an inferred end while it runs.
"""


class StatusTable(Mapping[int, StatusMeaning]):
    """Callback status -> meaning. Immutable: ``with_status`` returns an extended copy.

    ``table.meaning(status)`` is UNKNOWN for a status the table does not list.
    """

    __slots__ = ("_meanings",)

    def __init__(self, meanings: Mapping[int, StatusMeaning | str] | None = None) -> None:
        checked: dict[int, StatusMeaning] = {}
        for status, meaning in (meanings or {}).items():
            if not isinstance(status, int) or isinstance(status, bool):  # bool is an int to Python
                raise TypeError(f"a status is an int, not {type(status).__name__}")
            checked[status] = StatusMeaning(meaning)
            if checked[status] is StatusMeaning.STOPPED and status != STOPPED_BY_USER:
                # A task is terminal only on an end the service confirmed: 14 is the one status the
                # docs give as "stopped". Any other end is inferred, and a stop confirms it.
                raise ValueError(
                    f"only status {STOPPED_BY_USER} means stopped; declare status {status} 'ended', an end"
                    " the Fleet confirms with a stop"
                )
        self._meanings: Mapping[int, StatusMeaning] = MappingProxyType(checked)

    def with_status(self, status: int, meaning: StatusMeaning | str) -> StatusTable:
        """A copy of this table in which ``status`` means ``meaning`` (added, or replacing the old one)."""
        return StatusTable({**self._meanings, status: meaning})

    def meaning(self, status: int) -> StatusMeaning:
        return self._meanings.get(status, StatusMeaning.UNKNOWN)

    def __getitem__(self, status: int) -> StatusMeaning:
        return self._meanings[status]

    def __iter__(self) -> Iterator[int]:
        return iter(self._meanings)

    def __len__(self) -> int:
        return len(self._meanings)

    def __hash__(self) -> int:  # immutable, so it may sit in frozen values (a Policy)
        return hash(frozenset(self._meanings.items()))

    def __repr__(self) -> str:
        return f"StatusTable({dict(self._meanings)!r})"


# Only what the docs confirm: 14 (stopped by user) and 16 (capacity reached). 0 is the status Live
# Video Understanding documents as "OK", and the one segment results carry (the docs are silent on
# a segment's status; we assume 0, as every example has it). A status-0 callback with no result (no
# transcript, a null ``data.data``) is a silent segment: the stream was heard and nothing ended, so
# it is ONGOING. 12, 15 and the rest are unknown until a user says otherwise, and an unknown status
# is an end the Fleet confirms with a stop, never one it takes on trust.
DEFAULT_STATUSES: Final = StatusTable(
    {
        0: StatusMeaning.ONGOING,
        STOPPED_BY_USER: StatusMeaning.STOPPED,
        CAPACITY_REACHED: StatusMeaning.CAPACITY,
        PROVIDER_ENDED: StatusMeaning.PROVIDER_ENDED,
    }
)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)  # bool is an int to Python, not to us


def parse_callback(
    payload: bytes | str | Mapping[str, Any], *, statuses: StatusTable | None = None
) -> CallbackEvent:
    """Read one webhook payload as an event; raise CallbackError, and only that, if it is not one."""
    top = read_object(payload)
    usual = _usual_transcript(top)
    if usual is not None:
        return usual
    return _read(top, DEFAULT_STATUSES if statuses is None else statuses)


def _usual_transcript(top: Mapping[str, Any]) -> Segment | None:
    """The payload as a Segment if it has the usual shape of an audio transcript callback, in one
    pass; None for any other shape, or any doubt, which ``_read`` then reads field by field.

    Most callbacks have this shape (one every 5 s per stream), and reading it field by field was much
    of parsing (bench/RESULTS.md): here each field is read once and checked by its exact type. A
    property test holds it to ``_read``: whatever it returns, ``_read`` returns the same.
    """
    data = top.get("data")
    if type(data) is not dict or type(top.get("code")) not in _USUAL_CODES:
        return None
    task_id = _usual_task_id(top, data)
    status = data.get("status")
    transcript = data.get("transcript")
    if (
        task_id is None
        or type(status) is not int
        or status not in _INT32
        or type(transcript) is not dict
        or not data.keys() <= _USUAL_DATA_KEYS  # (so no ``type`` or ``message_type``: a provider's)
    ):
        return None
    text, final = transcript.get("text"), transcript.get("is_final")
    if type(text) is not str or type(final) is not bool:
        return None
    if (transcript.get("final"), transcript.get("type"), transcript.get("message_type")) != _NONE3:
        return None
    index = data.get("segment_index")
    start, end = data.get("segment_start_time"), data.get("segment_end_time")
    if type(index) is not int or not 0 <= index < _INDEX_END:
        return None
    if type(start) is not str or type(end) is not str:
        return None
    # Plain decimals only ("85.0"): ASCII digits and at most one dot, checked without the regular
    # expression's cost. Signs and exponents, which _NUMBER also takes, go to ``_read``.
    if not (start.isascii() and end.isascii()):
        return None
    if not (start.replace(".", "", 1).isdigit() and end.replace(".", "", 1).isdigit()):
        return None
    start_s, end_s = float(start), float(end)
    if not 0.0 <= start_s <= end_s < math.inf:
        return None
    return new_segment(task_id, index, final, text, start_s, end_s, top)


def _read(top: Mapping[str, Any], table: StatusTable) -> CallbackEvent:
    """The payload as an event, read field by field: every shape, and the error that names the field."""
    code = top.get("code")
    if code is not None and not (isinstance(code, str) or _is_int(code)):
        raise CallbackError("code", f"must be an integer or a string, got {kind_of(code)}")
    data = top.get("data")
    if code is None and _is_int(top.get("status")) and _understand_shape(top, data):
        return _understand(top, data, table)
    if data is not None:
        if type(data) is not dict and not isinstance(data, Mapping):  # (dict first: the ABC check is slow)
            raise CallbackError("data", f"must be an object, got {kind_of(data)}")
        message, prefix = data, "data."
    elif top.get("type") is not None or top.get("message_type") is not None:
        message, prefix = top, ""  # a bare provider message, task_id beside its own fields
    else:
        return _foreign(top, None)
    if message.get("type") is not None:
        return _assemblyai(_task_id(top, data), top, message, prefix, table)
    if message.get("message_type") is not None:
        return _elevenlabs(_task_id(top, data), top, message, prefix, table)
    status = message.get("status")
    if not _is_int(status):
        return _foreign(top, message)
    if not STREAM_KEYS.issuperset(message):
        # Another product's result, or a stream callback with a field the docs do not list: which,
        # only the task_id can tell (the Fleet asks), so the stream reading goes with it.
        foreign = _foreign(top, message)
        try:
            stream: Segment | StatusCallback | None = _memories(
                _task_id(top, data), top, message, status, table
            )
        except CallbackError:
            stream = None
        return ForeignCallback(foreign.task_id, foreign.raw, stream)
    return _memories(_task_id(top, data), top, message, status, table)


def is_understand_payload(raw: Mapping[str, Any] | None) -> bool:
    """Whether a payload came in Live Video Understanding's envelope (an int ``status`` at the top
    and no ``code``), as the parser reads it: no other product's callback has that."""
    return raw is not None and raw.get("code") is None and _is_int(raw.get("status"))


def _understand_shape(top: Mapping[str, Any], data: object) -> bool:
    """Whether the payload has a Live Video Understanding result's shape: ``status`` at the top,
    no ``code``, and its text at the top or in a ``data`` holding only a result's keys."""
    if not top.keys() <= _UNDERSTAND_TOP:
        return False
    if data is None:
        return True
    return isinstance(data, Mapping) and data.keys() <= _UNDERSTAND_DATA


def _understand(top: Mapping[str, Any], data: Mapping[str, Any] | None, table: StatusTable) -> CallbackEvent:
    """A Live Video Understanding callback: a result (status 0, with text) or a status.

    Its shape is not documented (the page is cut off): a third party documents ``data.text`` and
    ``data.timestamp``, and the start answer's own envelope puts ``text`` at the top. The top level
    is read first. A result has no segment index: its timestamp (``Segment.stamp``) tells a repeat,
    and without one, its content does.
    """
    task_id = _task_id(top, data)
    status = top["status"]
    if status not in _INT32:
        raise CallbackError("status", "out of range for a status")
    places = [(top, "")] if data is None else [(top, ""), (data, "data.")]
    text = _find(places, "text")
    stamp = _find(places, "timestamp")
    for found in (text, stamp):
        if found is not None and not isinstance(found[0], str):
            raise CallbackError(found[1], f"must be a string, got {kind_of(found[0])}")
    words = None if text is None else str(text[0])
    if status == UNDERSTAND_OK and words is not None:
        return Segment(task_id, None, True, words, raw=top, stamp=None if stamp is None else str(stamp[0]))
    # No result: what the status says (0 with no text is a stream heard, and going on).
    return StatusCallback(task_id, status, words, top, table.meaning(status))


def _foreign(top: Mapping[str, Any], data: Mapping[str, Any] | None) -> ForeignCallback:
    """Another product's result, if the payload has the envelope every callback has (a ``task_id``
    or a ``code``); without one it is not a callback at all."""
    task_id = _optional_task_id(top, data)
    if task_id is None and top.get("code") is None:
        if data is None:
            raise CallbackError("data", "missing, and the payload is not a provider message either")
        raise CallbackError("task_id", "missing, at the top level and under data, and no code either")
    return ForeignCallback(task_id, top)


def _usual_task_id(top: Mapping[str, Any], data: Mapping[str, Any] | None) -> str | None:
    """The task_id if it has the usual shape (a plain string at the top level, none under data),
    checked in one line; None for anything else, which ``_task_id`` reads field by field."""
    outer = top.get("task_id")
    if type(outer) is not str or not outer.isascii() or "\x00" in outer or not outer:
        return None  # (a non-ASCII id is read field by field, and checked for lone surrogates there)
    return outer if data is None or data.get("task_id") is None else None


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _task_id(top: Mapping[str, Any], data: Mapping[str, Any] | None) -> str:
    task_id = _optional_task_id(top, data)
    if task_id is None:
        raise CallbackError("task_id", "missing, at the top level and under data")
    return task_id


def _optional_task_id(top: Mapping[str, Any], data: Mapping[str, Any] | None) -> str | None:
    """The task_id at the top level or under data, checked; None if neither holds one."""
    usual = _usual_task_id(top, data)
    if usual is not None:
        return usual
    outer = _optional_text(top, "task_id", "task_id")
    inner = None if data is None else _optional_text(data, "task_id", "data.task_id")
    if outer == "" or inner == "":
        raise CallbackError("task_id" if outer == "" else "data.task_id", "must not be empty")
    for value, path in ((outer, "task_id"), (inner, "data.task_id")):
        if value is not None and "\x00" in value:  # no id has one, and PostgreSQL text cannot hold it
            raise CallbackError(path, "must not contain a NUL character")
        if value is not None and not value.isascii() and not _is_utf8(value):
            # A lone surrogate ("\ud800" is valid JSON): no store can keep it as text.
            raise CallbackError(path, "must be text UTF-8 can hold (it has a lone surrogate)")
    if outer is not None and inner is not None and inner != outer:
        raise CallbackError("data.task_id", "differs from the top-level task_id")
    return outer if outer is not None else inner


def _assemblyai(
    task_id: str, top: Mapping[str, Any], m: Mapping[str, Any], prefix: str, table: StatusTable
) -> CallbackEvent:
    kind = _name(m, "type", prefix)
    if kind == "Turn":
        index = _index(m.get("turn_order"), prefix + "turn_order")
        text = _text(m, "transcript", prefix + "transcript")
        final = m.get("end_of_turn")
        if not isinstance(final, bool):
            raise CallbackError(prefix + "end_of_turn", f"must be a boolean, got {kind_of(final)}")
        # With format_turns on, a turn ends twice: unformatted, then formatted (which the transcript keeps).
        formatted = m.get("turn_is_formatted")
        if formatted is not None and not isinstance(formatted, bool):
            raise CallbackError(prefix + "turn_is_formatted", f"must be a boolean, got {kind_of(formatted)}")
        return Segment(task_id, index, final, text, raw=top, formatted=formatted is True)
    if kind == "Termination":
        meaning = table.meaning(PROVIDER_ENDED)
        return StatusCallback(task_id, PROVIDER_ENDED, "assemblyai: Termination", top, meaning)
    return ProviderEvent(task_id, "assemblyai", kind, top)


def _elevenlabs(
    task_id: str, top: Mapping[str, Any], m: Mapping[str, Any], prefix: str, table: StatusTable
) -> CallbackEvent:
    kind = _name(m, "message_type", prefix)
    final = ELEVENLABS_TRANSCRIPTS.get(kind)
    if final is None:
        if kind in ELEVENLABS_ENDS:
            meaning = table.meaning(PROVIDER_ENDED)
            return StatusCallback(task_id, PROVIDER_ENDED, f"elevenlabs: {kind}", top, meaning)
        return ProviderEvent(task_id, "elevenlabs", kind, top)
    text = _text(m, "text", prefix + "text")
    # The provider numbers nothing: an index can only come from memories.ai's wrapper, and without
    # one the task's transcript numbers the segment when it is applied.
    found = _find([(top, ""), (m, prefix)], "segment_index")
    return Segment(task_id, None if found is None else _index(*found), final, text, raw=top)


def _memories(
    task_id: str, top: Mapping[str, Any], data: Mapping[str, Any], status: int, table: StatusTable
) -> Segment | StatusCallback:
    """A memories.ai stream callback, whose ``data.status`` is ``status``."""
    if status not in _INT32:
        raise CallbackError("data.status", "out of range for a status")
    transcript = data.get("transcript")
    is_audio = transcript is not None
    result = transcript if is_audio else data.get("data")
    if result is None:
        message = _message(data, "data.")
        if message is None:  # not ``or``: an empty message is still the callback's own
            message = _message(top, "")
        last = data.get("segment_index")
        last_index = last if _is_int(last) and 0 <= last < _INDEX_END else None
        return StatusCallback(task_id, status, message, top, table.meaning(status), last_index)

    places = [(data, "data.")]
    if is_audio:
        text, final = _transcript(result)
    elif type(result) is dict or isinstance(result, Mapping):
        # Segment fields are read beside data.data (as seen in examples) or inside it (the docs' table).
        text, final = None, True
        places.append((result, "data.data."))
    else:
        raise CallbackError("data.data", f"must be an object or null, got {kind_of(result)}")
    found = _find(places, "segment_index")
    if found is None:
        raise CallbackError("data.segment_index", "missing")
    start = _find(places, "segment_start_time", "start_time")
    end = _find(places, "segment_end_time", "end_time")
    start_s = None if start is None else _seconds(*start)
    end_s = None
    if end is not None:
        end_s = _seconds(*end)
        if start_s is not None and end_s < start_s:
            raise CallbackError(end[1], "is before the segment's start")
    return Segment(task_id, _index(*found), final, text, start_s, end_s, top)


def _transcript(value: object) -> tuple[str, bool]:
    """The text and finality of an audio transcript: final unless something in it says partial."""
    if isinstance(value, str):
        return value, True
    if type(value) is not dict and not isinstance(value, Mapping):
        raise CallbackError("data.transcript", f"must be a string, an object or null, got {kind_of(value)}")
    text = _text(value, "text", "data.transcript.text")
    is_final = value.get("is_final")
    others = (value.get("final"), value.get("type"), value.get("message_type"))
    if type(is_final) is bool and others == _NONE3:
        return text, is_final  # the usual shape: one flag, nothing else that could contradict it
    says: set[bool] = set()
    for key in ("is_final", "final"):
        flag = value.get(key)
        if flag is not None:
            if not isinstance(flag, bool):
                raise CallbackError(f"data.transcript.{key}", f"must be a boolean, got {kind_of(flag)}")
            says.add(flag)
    for key in ("type", "message_type"):
        kind = value.get(key)
        if kind is not None:
            final = _TRANSCRIPT_FINAL.get(kind.lower().replace("_", "")) if isinstance(kind, str) else None
            if final is None:
                raise CallbackError(f"data.transcript.{key}", "must say partial or final")
            says.add(final)
    if len(says) > 1:
        raise CallbackError("data.transcript", "says both partial and final")
    return text, says != {False}


# -- field readers: each names the field it refuses, and never shows the value (it may be huge) ----
def _find(places: list[tuple[Mapping[str, Any], str]], *names: str) -> tuple[Any, str] | None:
    """The first non-null value under one of ``names``, with its path, searching ``places`` in order."""
    for mapping, prefix in places:
        for name in names:
            value = mapping.get(name)
            if value is not None:
                return value, prefix + name
    return None


def _index(value: object, path: str) -> int:
    if value is None:
        raise CallbackError(path, "missing")
    if not _is_int(value):
        raise CallbackError(path, f"must be an integer, got {kind_of(value)}")
    if value < 0 or value not in _INT32:
        raise CallbackError(path, f"must be between 0 and {_INT32.stop - 1}")
    return value


def _seconds(value: object, path: str) -> float:
    if type(value) is str or isinstance(value, str):  # (the exact type first: the usual, and cheaper)
        if not _NUMBER.fullmatch(value):
            raise CallbackError(path, "must be a number of seconds")
    elif not isinstance(value, float) and not _is_int(value):
        raise CallbackError(path, f"must be a number of seconds, got {kind_of(value)}")
    try:
        seconds = float(value)
    except OverflowError:  # an int beyond any float
        seconds = math.inf
    if not 0.0 <= seconds < math.inf:  # False for NaN too
        raise CallbackError(path, "must be a finite, non-negative number of seconds")
    return seconds


def _text(m: Mapping[str, Any], key: str, path: str) -> str:
    value = _optional_text(m, key, path)
    if value is None:
        raise CallbackError(path, "missing")
    return value


def _optional_text(m: Mapping[str, Any], key: str, path: str) -> str | None:
    value = m.get(key)
    if value is not None and not isinstance(value, str):
        raise CallbackError(path, f"must be a string, got {kind_of(value)}")
    return value


def _name(m: Mapping[str, Any], key: str, prefix: str) -> str:
    value = m.get(key)
    if not isinstance(value, str):
        raise CallbackError(prefix + key, f"must be a string, got {kind_of(value)}")
    if not value:
        raise CallbackError(prefix + key, "must not be empty")
    return value


def _message(m: Mapping[str, Any], prefix: str) -> str | None:
    for key in ("message", "msg"):
        text = _optional_text(m, key, prefix + key)
        if text is not None:
            return text
    return None
