"""What the journal keeps of each event, and how replaying it rebuilds a task.

A journal entry names the trigger and keeps its argument as JSON, by the kind of argument
``lifecycle.ARGUMENTS`` declares for the trigger: a task_id, an error's text, the product a stop
was found on, or the callback as the task saw it (``encode_event``). Replaying fires the same
triggers, with the same arguments, at the recorded times, through the same table: nothing here
knows the lifecycle. A rebuilt task therefore holds the same state, flags and transcript as
the one that was journaled, and ``rebuild`` checks that against the stored row. (Its history holds
the applied events only: duplicates, late and rejected events change nothing and are not journaled.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, NamedTuple

from ._callbacks import CallbackEvent
from ._clock import Clock
from ._events import (
    ForeignCallback,
    Outcome,
    ProviderEvent,
    Segment,
    StatusCallback,
    StatusMeaning,
    StreamKind,
)
from ._task import STATE_SLOTS, StreamTask, replaying
from ._transcript import Reader
from .errors import JournalMismatch, RecordedError
from .lifecycle import ARGUMENTS, TERMINAL, Argument, StopReason
from .store.base import JournalEntry, Store, TaskRow

# A NamedTuple's constructor is a Python function. Tuple's own, given every field in order, makes
# the same record faster, and an entry and a row are made for every event journaled.
_new_record: Final = tuple.__new__


def encode_event(event: CallbackEvent) -> dict[str, Any]:
    """A parsed callback as JSON: every field the task reads, and the payload as it came (``raw``),
    so a rebuilt task's transcript holds what the live one held."""
    encoded: dict[str, Any]
    if isinstance(event, Segment):
        segment = {
            "index": event.index,
            "final": event.final,
            "text": event.text,
            "start": event.start,
            "end": event.end,
        }
        if event.formatted:  # (written only when True: journals from before it decode as they did)
            segment["formatted"] = True
        if event.stamp is not None:  # (likewise, written only when there is one)
            segment["stamp"] = event.stamp
        encoded = {"segment": segment}
    elif isinstance(event, StatusCallback):
        meaning = None if event.meaning is None else event.meaning.value
        status = {"status": event.status, "message": event.message, "meaning": meaning}
        if event.last_index is not None:  # (written only when known: journals from before decode as they did)
            status["last_index"] = event.last_index
        encoded = {"status": status}
    elif isinstance(event, ProviderEvent):
        encoded = {"provider": {"provider": event.provider, "message_type": event.message_type}}
    else:  # (no task applies one, so none is journaled: encoded all the same, for a caller that keeps it)
        encoded = {"foreign": {}}
    encoded["on"] = event.task_id
    if event.raw is not None:
        encoded["raw"] = event.raw
    return encoded


def decode_event(payload: Mapping[str, Any]) -> CallbackEvent:
    task_id, raw = payload["on"], payload.get("raw")
    if "segment" in payload:
        return Segment(task_id, **payload["segment"], raw=raw)
    if "status" in payload:
        fields = dict(payload["status"])
        meaning = fields.pop("meaning")
        return StatusCallback(
            task_id, **fields, raw=raw, meaning=None if meaning is None else StatusMeaning(meaning)
        )
    if "foreign" in payload:
        return ForeignCallback(task_id, raw)
    return ProviderEvent(task_id, **payload["provider"], raw=raw)


def encode_args(trigger: str, args: Sequence[Any]) -> dict[str, Any] | None:
    """A trigger's argument as JSON, by the kind ``lifecycle.ARGUMENTS`` declares for it; None for none."""
    if not args:
        return None
    (arg,) = args
    return _CODECS[ARGUMENTS[trigger]].encode(arg)


def decode_args(trigger: str, args: Mapping[str, Any] | None) -> tuple[Any, ...]:
    """The argument ``encode_args`` kept for ``trigger``, as the trigger takes it."""
    if args is None:
        return ()
    codec = _CODECS[ARGUMENTS[trigger]]
    try:
        if codec.fields is not None and not codec.fields <= args.keys() <= codec.fields | codec.optional:
            raise KeyError(sorted(args))
        return (codec.decode(args),)
    except (KeyError, TypeError, ValueError) as error:  # (a later version's argument, say)
        unreadable = f"a journaled {trigger} argument this version cannot read: {sorted(args)}"
        raise JournalMismatch(unreadable) from error


class _Codec(NamedTuple):
    """How the journal keeps one kind of argument, and how replay reads it back."""

    encode: Callable[[Any], dict[str, Any]]
    decode: Callable[[Mapping[str, Any]], Any]
    # The fields its JSON must have, and may have besides: replay refuses any other (a later
    # version's, say) rather than read half of it. None: the decoder checks (a callback's).
    fields: frozenset[str] | None = None
    optional: frozenset[str] = frozenset()


def _encode_error(error: BaseException) -> dict[str, Any]:
    if isinstance(error, RecordedError) and error.not_before is not None:
        return {"error": error.text, "not_before": error.not_before}
    return {"error": RecordedError.text_of(error)}


def _nothing(arg: object) -> Any:
    raise TypeError(f"this trigger takes no argument, got {arg!r}")


_CODECS: Final[dict[Argument, _Codec]] = {
    Argument.NONE: _Codec(_nothing, _nothing),
    Argument.SECONDS: _Codec(
        lambda seconds: {"max_duration": seconds},
        lambda args: args["max_duration"],
        frozenset({"max_duration"}),
    ),
    Argument.REASON: _Codec(
        lambda reason: {"reason": StopReason(reason).value},
        lambda args: StopReason(args["reason"]),
        frozenset({"reason"}),
    ),
    Argument.TASK_ID: _Codec(
        lambda task_id: {"task_id": task_id}, lambda args: args["task_id"], frozenset({"task_id"})
    ),
    Argument.ERROR: _Codec(
        _encode_error,
        lambda args: RecordedError(args["error"], not_before=args.get("not_before")),
        frozenset({"error"}),
        frozenset({"not_before"}),
    ),
    Argument.KIND: _Codec(
        lambda kind: {"kind": StreamKind(kind).value},
        lambda args: StreamKind(args["kind"]),
        frozenset({"kind"}),
    ),
    Argument.CALLBACK: _Codec(encode_event, decode_event),
}


def entry_for(task: StreamTask, version: int, args: Sequence[Any]) -> JournalEntry:
    """The journal entry of the event the task has just applied (its last history entry)."""
    at, trigger, from_state, to_state = task.history.last_move()
    return _new_record(JournalEntry, (version, at, trigger, from_state, to_state, encode_args(trigger, args)))


def facts_of(task: StreamTask) -> dict[str, Any]:
    # Spelt out rather than a comprehension over FACTS: this runs for every journaled event.
    return {
        "stop_requested": task.stop_requested,
        "stop_acknowledged": task.stop_acknowledged,
        "final_callback_missing": task.final_callback_missing,
        "stalled": task.stalled,
        "stop_failures": task.stop_failures,
        "stop_not_before": task.stop_not_before,
        "end_status": task.end_status,
        "last_error": task.last_error,
        "started_at": task.started_at,
        "ended_at": task.ended_at,
        "max_duration": task.max_duration,
        "stop_reason": None if task.stop_reason is None else task.stop_reason._value_,
    }


# The task's own facts, beside its state: what the row keeps and what replay must reproduce (the
# keys of ``facts_of``, which a test holds to this).
FACTS: Final = (
    "stop_requested",
    "stop_acknowledged",
    "final_callback_missing",
    "stalled",
    "stop_failures",
    "stop_not_before",
    "end_status",
    "last_error",
    "started_at",
    "ended_at",
    "max_duration",
    "stop_reason",
)
# Facts a row written by an earlier version lacks: ``rebuild`` checks them only where the row has them.
LATER_FACTS: Final = frozenset({"started_at", "ended_at", "max_duration", "stop_reason", "stop_not_before"})


def row_for(
    task: StreamTask, key: str, version: int, created_at: float, extra: Mapping[str, Any] | None = None
) -> TaskRow:
    """The task's row as it stands; ``extra`` facts belong to whoever keeps the task (the Fleet)."""
    at = task.history.last_at
    facts = facts_of(task)
    if extra:
        facts.update(extra)
    updated_at = created_at if at is None else at
    # (Kind and state as plain strings, as the row keeps them: ``_value_`` is the enum's own.)
    row = (key, task.kind._value_, task.task_id, task.state._value_, version, created_at, updated_at, facts)
    return _new_record(TaskRow, row)


def replay(task: StreamTask, entries: Sequence[JournalEntry]) -> None:
    """Fire each entry at the task again, at its recorded time. Raises JournalMismatch if one does
    not apply: the journal holds applied events only, so each must apply again."""
    clock, replay_clock = task.clock, _ReplayClock()
    task.clock = replay_clock
    try:
        with replaying():
            for entry in entries:
                if entry.at > replay_clock.at:
                    replay_clock.at = float(entry.at)
                outcome = getattr(task, entry.trigger)(*decode_args(entry.trigger, entry.args))
                # (``_value_``: the member's own attribute, read without the ``value`` property.)
                if outcome is not Outcome.APPLIED or task.state._value_ != entry.to_state:
                    raise JournalMismatch(
                        f"task {task.key}: entry {entry.version} ({entry.trigger} -> {entry.to_state}) "
                        f"replayed as {outcome} -> {task.state.value}"
                    )
    finally:
        task.clock = clock


class _ReplayClock:
    """The clock a task replays on: each entry's time, never going back. One replay's alone, so
    unlocked (a ManualClock takes a lock for each reading)."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at = 0.0

    def now(self) -> float:
        return self.at


def segments_of(entries: Iterable[JournalEntry]) -> Iterator[tuple[Segment, bool]]:
    """The segments a journal's entries applied, in order, each with whether it came late (its
    task had ended): what a bounded transcript reads back (``Transcript``'s ``reader``)."""
    terminal = {state.value for state in TERMINAL}
    for entry in entries:
        if entry.trigger == "segment" and entry.args is not None:
            event = decode_event(entry.args)
            if isinstance(event, Segment):
                yield event, entry.from_state in terminal


def transcript_reader(store: Store, key: str) -> Reader:
    """A reader of the segments the store's journal of task ``key`` holds (see ``segments_of``)."""

    def read() -> Iterator[tuple[Segment, bool]]:
        return segments_of(store.journal(key))

    return read


def rebuild(
    row: TaskRow,
    entries: Sequence[JournalEntry],
    *,
    clock: Clock,
    history_limit: int | None = None,
    transcript_bound: tuple[int, Reader] | None = None,
) -> StreamTask:
    """The task a row and its journal describe. Raises JournalMismatch if replay disagrees with the row.
    ``transcript_bound``: the (limit, reader) its transcript keeps (``StreamTask.bound_transcript``)."""
    if [entry.version for entry in entries] != list(range(1, row.version + 1)):
        raise JournalMismatch(f"task {row.key}: the journal does not hold versions 1..{row.version}")
    task = StreamTask(StreamKind(row.kind), None, clock=clock)
    task.key = row.key
    task.history_limit = history_limit
    if transcript_bound is not None:
        task.bound_transcript(*transcript_bound)
    replay(task, entries)
    # The row's kind decides. Before stop_ok carried the product, a task learnt its kind outside
    # any event: replaying such a journal cannot learn it, and only the row holds it.
    task.kind = StreamKind(row.kind)
    kept = [name for name in FACTS if name in row.facts or name not in LATER_FACTS]
    facts = facts_of(task)
    replayed = {"state": task.state.value, "task_id": task.task_id, **{name: facts[name] for name in kept}}
    stored = {"state": row.state, "task_id": row.task_id, **{name: row.facts.get(name) for name in kept}}
    if replayed != stored:
        differ = sorted(name for name in stored if stored[name] != replayed[name])
        raise JournalMismatch(f"task {row.key}: replay differs from the stored row in {differ}")
    return task


def reset(task: StreamTask, row: TaskRow | None, entries: Sequence[JournalEntry]) -> None:
    """Put a live task back to what the store holds (after a write that failed): same object, so
    whoever holds it sees the change."""
    kind = task.kind if row is None else StreamKind(row.kind)  # (a kind learnt since is not kept)
    fresh = StreamTask(kind, task.params, clock=task.clock)
    fresh.key = task.key
    fresh.history_limit = task.history_limit
    if task.transcript_bound is not None:  # (its reader reads the store, which holds what is replayed)
        fresh.bound_transcript(*task.transcript_bound)
    if row is not None:
        replay(fresh, entries)
    for name in STATE_SLOTS:
        setattr(task, name, getattr(fresh, name))
