"""StreamTask: one memories.ai stream, moved only by the lifecycle table. No I/O happens here.

Each trigger of ``streamlife.lifecycle.TABLE`` is a typed method that returns an ``Outcome``.
A method looks its cell up, applies its data (a task_id, a segment, a flag) if the cell
allows it, moves the state by firing the shared Machine's event on this task, appends one
history entry and logs one ``streamlife.transition`` event. The Fleet serialises the events
of one task; a task is not itself thread-safe.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Final

from streamlife._logging import debug_enabled, get_logger

from ._billing import billed_seconds
from ._clock import SYSTEM_CLOCK, Clock
from ._events import Outcome, OutcomeKind, Segment, StatusCallback, StreamKind
from ._history import History
from ._policy import check_max_duration
from ._transcript import APPLIED_CHANGES, Change, Reader, Transcript
from .errors import LocalTransitionError, RecordedError
from .lifecycle import (
    AFTER_ACKNOWLEDGED_STOP,
    CELLS,
    DUP,
    LATE,
    MACHINE,
    NO,
    SEGMENT_LOOPS,
    SILENT_LOOPS,
    STOP_DUE,
    TERMINAL,
    TRIGGERS,
    Source,
    StopReason,
    TaskState,
)

_log = get_logger()
_next_ref = itertools.count(1).__next__  # atomic under the GIL: refs stay unique across threads

# The segment self-loop is the hot path: it logs at debug, everything else at info (a rendered
# event costs more than the fire it reports).
_QUIET_TRIGGERS: Final = frozenset({"segment"})
_EVENTS: Final = MACHINE.events
# The triggers after which a stream exists and bills: the start answer, a callback on the task's
# own URL that named it first, or the adoption of an orphan.
_BILLING_FROM: Final = frozenset({"start_ok", "named", "adopt"})
_replaying: ContextVar[bool] = ContextVar("streamlife_replaying", default=False)


@contextmanager
def replaying() -> Iterator[None]:
    """Fire events without logging them: a journal replayed is history told again, not news."""
    token = _replaying.set(True)
    try:
        yield
    finally:
        _replaying.reset(token)


# Everything a task is, except ``ref`` (the caller's own handle). A task put back after a failed
# write (journal.reset) takes each of these from a fresh replay, and keeps its ref.
STATE_SLOTS: Final = (
    "_adopted",
    "_transcript",
    "clock",
    "end_status",
    "final_callback_missing",
    "history",
    "key",
    "ended_at",
    "kind",
    "last_error",
    "max_duration",
    "params",
    "revision",
    "stalled",
    "started_at",
    "state",
    "stop_acknowledged",
    "stop_failures",
    "stop_not_before",
    "stop_reason",
    "stop_requested",
    "task_id",
)


class StreamTask:
    """One stream: its state, its flags, its transcript and the history of every event it saw.

    ``ref`` identifies the task locally from the moment it exists; ``task_id`` is memories.ai's
    id, known once the start answer arrives. ``params`` (the start body) is never shown in the
    repr: stream URLs often carry a stream key.
    """

    __slots__ = (*STATE_SLOTS, "_transcript_bound", "ref")

    def __init__(
        self,
        kind: StreamKind | str,
        params: Mapping[str, Any] | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.kind = StreamKind(kind)
        self.params = params
        self.ref: int = _next_ref()
        self.task_id: str | None = None
        self.state = TaskState.PENDING
        self.stop_requested = False  # a stop was asked for; starting/uncertain keep it for later
        self.stop_acknowledged = False  # the service answered our stop with 200
        self.final_callback_missing = False  # stopped by the deadline, no status-14 came
        self.stalled = False  # running, but no callback for the silence window
        self.stop_failures = 0  # stop requests that failed after their retries
        self.stop_not_before: float | None = None  # no stop before this (the last failed stop's wait)
        self.end_status: int | None = None  # the status of the callback that ended the task
        self.last_error: str | None = None
        self.started_at: float | None = None  # when the start answer came (or the orphan was adopted)
        self.ended_at: float | None = None  # when the task became terminal: its end was confirmed
        self.max_duration: float | None = None  # this stream's own cost ceiling, if its start set one
        self.stop_reason: StopReason | None = None  # why the Fleet stopped it on its own, if it did
        self.history = History()
        # Moves with every event that may have changed the state, task_id or facts: not with a
        # segment that only adds to the transcript (most events), whose journal write then
        # carries no row.
        self.revision = 0
        self._adopted = False
        self.key: str | None = None  # the durable id a Fleet gives the task: its name in the journal
        self.clock = clock  # stamps the history
        self._transcript: Transcript | None = None  # made on the first segment: tasks stay small
        # (limit, reader) for a transcript that keeps a bounded tail in memory (bound_transcript)
        self._transcript_bound: tuple[int, Reader] | None = None

    # -- local calls -------------------------------------------------------------------------
    def start(self, max_duration: float | None = None) -> Outcome:
        """Record that the start request is about to leave. Raises if the task was started.

        ``max_duration``: this stream's own cost ceiling in seconds, kept with the event (the Fleet
        stops the stream once it has run that long)."""
        if max_duration is None:
            return self._fire("start", None)
        check_max_duration(max_duration)

        def set_limit() -> bool:
            self.max_duration = max_duration
            return True

        return self._fire("start", set_limit, ("max_duration", max_duration))

    def stop(self, reason: StopReason | None = None) -> Outcome:
        """Ask for the stream to stop. Legal in every state: see the table's ``stop`` row.

        ``reason``: why the Fleet stops it on its own (None for a caller's stop), kept with the event.
        """
        if reason is None:
            return self._fire("stop", self._request_stop)
        reason = StopReason(reason)

        def request_stop() -> bool:
            if not self._request_stop():
                return False
            self.stop_reason = reason
            return True

        return self._fire("stop", request_stop, ("reason", reason.value))

    # -- transport results -------------------------------------------------------------------
    def start_ok(self, task_id: str) -> Outcome:
        """The start answer named the stream. After a callback named it first (``named``), it
        repeats the name (DUP), or is refused if it names another."""
        _check_task_id("start_ok", task_id)
        return self._fire(
            "start_ok", lambda: self._set_task_id(task_id), ("task_id", task_id), self._named_as(task_id)
        )

    def start_rejected(self, error: BaseException) -> Outcome:
        return self._fire("start_rejected", lambda: self._set_error(error), _describe(error))

    def start_unknown(self, error: BaseException) -> Outcome:
        return self._fire("start_unknown", lambda: self._set_error(error), _describe(error))

    def start_deferred(self, error: BaseException) -> Outcome:
        """The service refused the start for now (429, capacity 16, or the Fleet's own cap): nothing
        was created, so the task is pending again, to be started after a backoff (or stopped)."""
        return self._fire("start_deferred", lambda: self._set_error(error), _describe(error))

    def stop_ok(self, found_on: StreamKind | str | None = None) -> Outcome:
        """The service acknowledged the stop. ``found_on``: the product whose path took it, for a
        task whose product was a guess (an orphan's): the task learns it here, with the event, so
        the journal holds it and a replay learns it too. A repeated acknowledgement learns nothing."""
        if found_on is None:
            return self._fire("stop_ok", self._acknowledge_stop)
        kind = StreamKind(found_on)
        return self._fire("stop_ok", lambda: self._acknowledge_stop(kind), ("kind", kind.value))

    def stop_not_found(self) -> Outcome:
        """The service does not know the task: it has already ended, and the end is confirmed."""
        return self._fire("stop_not_found", None)

    def stop_confirmed(self) -> Outcome:
        """The stop's own answer says the stream stopped, for a product whose answer is final
        (``lifecycle.KIND_RULES``): the end is confirmed, and no final callback is awaited."""
        return self._fire("stop_confirmed", self._acknowledge_stop)

    def stop_error(self, error: BaseException) -> Outcome:
        """A stop failed after its retries; the task still owes it (stopping, or ending), unsettled."""
        return self._fire("stop_error", lambda: self._count_stop_failure(error), _describe(error))

    # -- callbacks ---------------------------------------------------------------------------
    def segment(self, segment: Segment) -> Outcome:
        """A transcript or moderation result. After the stream stopped or ended, a final is still
        kept (``transcript.late`` names it) and the task stays as it was; a partial is LATE."""
        index = segment.index
        if index is None:  # forwarded with no index: numbered by the transcript, as a replay will be
            index = self.transcript.numbered(segment).index
        data: tuple[Any, ...] = ("index", index, "final", segment.final)
        if segment.formatted:  # (a second final of its turn, AssemblyAI's formatted text)
            data = (*data, "formatted", True)
        before = self.state
        if before in TERMINAL and not segment.final:
            # Only a final would replace a partial now: the table lets the segment in, its data
            # says LATE (in ``failed``, the table's cell says so itself).
            return self._fire("segment", None, data, segment.task_id, late=True)
        if before not in SEGMENT_LOOPS or segment.task_id != self.task_id:
            return self._fire("segment", lambda: self._add_segment(segment), data, segment.task_id)
        # The hot path, derived from the table: here the cell is this very state and the Machine's
        # transition a no-op (SEGMENT_LOOPS), so ``_fire`` would only apply the data and record it.
        # This does that directly; tests/core/test_lifecycle_table.py proves both ways leave the same.
        at = self.clock.now()
        outcome = Outcome.APPLIED if self._add_segment(segment) else Outcome.DUPLICATE
        self.history.record(at, "segment", before, before, outcome, data)
        if debug_enabled() and not _replaying.get():  # a segment logs at debug only
            self._announce("segment", before, outcome)
        return outcome

    def stopped(self, callback: StatusCallback) -> Outcome:
        return self._end("stopped", callback)

    def ended(self, callback: StatusCallback) -> Outcome:
        return self._end("ended", callback)

    def capacity(self, callback: StatusCallback) -> Outcome:
        return self._end("capacity", callback)

    def provider_ended(self, callback: StatusCallback) -> Outcome:
        """The provider ended its session (AssemblyAI ``Termination``): our stop's echo once the stop
        was acknowledged, an inferred end while running."""
        return self._end("provider_ended", callback)

    def named(self, task_id: str) -> Outcome:
        """A callback that came by this task's own callback URL names its stream, before its start
        answer did (that answer is on its way, or was lost): the task learns its task_id."""
        _check_task_id("named", task_id)
        return self._fire(
            "named", lambda: self._set_task_id(task_id), ("task_id", task_id), self._named_as(task_id)
        )

    # -- timers ------------------------------------------------------------------------------
    def adopt(self, task_id: str) -> Outcome:
        """Take on a stream that no start of ours named (an orphan), so it is tracked and stopped."""
        _check_task_id("adopt", task_id)
        return self._fire("adopt", lambda: self._adopt(task_id), ("task_id", task_id))

    def final_deadline(self) -> Outcome:
        """The stop was acknowledged but no status-14 callback came in time.

        Refused while the stop is unacknowledged: a stream whose stop never landed may still be
        billing, and filing it as stopped would lose it.
        """
        return self._fire(
            "final_deadline", self._mark_final_missing, refusal=self._unconfirmed("final_deadline")
        )

    def uncertain_deadline(self) -> Outcome:
        return self._fire("uncertain_deadline", None)

    def silence(self) -> Outcome:
        return self._fire("silence", self._mark_stalled)

    # -- reading -----------------------------------------------------------------------------
    @property
    def history_limit(self) -> int | None:
        """Keep at least this many of the latest history entries, letting older ones go in batches
        (None keeps all). A Fleet sets it from its Policy: its journal holds every applied event."""
        return self.history.limit

    @history_limit.setter
    def history_limit(self, limit: int | None) -> None:
        self.history.limit = limit

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def adopted(self) -> bool:
        """True for an orphan the Fleet took on: a stream that no start of ours named."""
        return self._adopted

    def bound_transcript(self, limit: int | None, reader: Reader | None) -> None:
        """Keep the segments of at least ``limit`` of the transcript's highest indexes in memory,
        and read the rest back through ``reader`` (the task's journal) when asked; None keeps every
        segment. A Fleet sets it from ``Policy.transcript_limit``: its store's journal holds every
        segment the transcript applied."""
        if limit is None:
            if self._transcript_bound is not None:
                raise ValueError("a bounded transcript stays bounded: what it let go of is in the journal")
            return
        if reader is None:
            raise ValueError("a bounded transcript needs a reader, to read back what it let go of")
        self._transcript_bound = (limit, reader)
        if self._transcript is not None:
            self._transcript.bound(limit, reader)

    @property
    def transcript_bound(self) -> tuple[int, Reader] | None:
        """The transcript's (limit, reader), as ``bound_transcript`` set them; None if unbounded."""
        return self._transcript_bound

    @property
    def transcript(self) -> Transcript:
        """The task's transcript. Bounded (``bound_transcript``), it reads back from the journal
        what it let go of when read whole (``text``, iterating, ``finals``)."""
        if self._transcript is None:
            bound = self._transcript_bound
            self._transcript = Transcript() if bound is None else Transcript(*bound)
        return self._transcript

    @property
    def gaps(self) -> list[range]:
        """Runs of segment indexes with no final below the highest final, or up to the last index
        the callback that ended the task named: lost or still in flight."""
        return [] if self._transcript is None else self._transcript.gaps()

    def billed_seconds(self, now: float | None = None) -> float:
        """An estimate of the seconds memories.ai bills for this stream: every 5-second cycle begun
        from the start answer until the end was confirmed (or ``now``, the clock's by default, while
        it is not). 0 for a stream that never started; for an orphan, counted from its adoption,
        so less than it really ran. Multiply by a rate for money: ``Policy.rates``."""
        if self.started_at is None:
            return 0.0
        end = self.ended_at if self.ended_at is not None else (self.clock.now() if now is None else now)
        return billed_seconds(self.started_at, end)

    def transcript_text(self, *, include_partials: bool = False) -> str:
        if self._transcript is None:
            return ""
        return self._transcript.text(include_partials=include_partials)

    def __repr__(self) -> str:
        return (
            f"StreamTask(ref={self.ref}, kind={self.kind.value!r}, "
            f"task_id={self.task_id!r}, state={self.state.value!r})"
        )

    # -- the one way the state moves ---------------------------------------------------------
    def _fire(
        self,
        trigger: str,
        apply: Callable[[], bool] | None,
        data: tuple[Any, ...] = (),
        addressed_to: str | None = None,
        *,
        refusal: str | None = None,
        late: bool = False,
    ) -> Outcome:
        """Look the cell up, apply, move, record, log. ``apply`` returns False if it found nothing new.

        ``data`` goes to the history entry, keys and values in turn. ``refusal`` rejects a move the
        table allows but the task's data forbids, with that reason; ``late`` makes such a move LATE,
        as a LATE cell does.
        """
        at = self.clock.now()  # read before anything changes: a failing clock leaves the task as it was
        before = self.state
        cell = CELLS[before, trigger]
        if cell is NO:
            if TRIGGERS[trigger] is Source.LOCAL:
                raise LocalTransitionError(
                    task_ref=self.ref, task_id=self.task_id, trigger=trigger, state=before.value
                ) from None
            outcome = Outcome.rejected(f"{trigger} is impossible while {before.value}")
        elif addressed_to is not None and addressed_to != self.task_id:
            outcome = Outcome.rejected(f"{trigger} for task_id {addressed_to!r} sent to this task")
        elif refusal is not None and isinstance(cell, TaskState):
            outcome = Outcome.rejected(f"{trigger} refused while {before.value}: {refusal}")
        elif cell is DUP:
            outcome = Outcome.DUPLICATE
        elif cell is LATE or late:
            outcome = Outcome.LATE
        elif apply is not None and not apply() and cell is before:
            outcome = Outcome.DUPLICATE
        else:
            # The shared Machine moves the state; a silent self-loop it would run as a no-op is
            # applied above and needs no dispatch (SILENT_LOOPS, derived from the same Machine).
            if (before, trigger) not in SILENT_LOOPS and not _EVENTS[trigger].trigger(self):
                raise AssertionError(f"the Machine refused {trigger} in {before}, which TABLE allows")
            outcome = Outcome.APPLIED
            self.revision += 1
        self.history.record(at, trigger, before, self.state, outcome, data)
        if outcome is Outcome.APPLIED:
            # The entry's time, not the clock's: history moves a clock that stepped back up to the
            # last entry's, and a replay reads the entry's, so the two must agree.
            if trigger in _BILLING_FROM:
                self.started_at = self.history.last_at
            elif self.state in TERMINAL and before not in TERMINAL:
                self.ended_at = self.history.last_at
        if not _replaying.get():
            self._announce(trigger, before, outcome)
        return outcome

    def _end(self, trigger: str, callback: StatusCallback) -> Outcome:
        def remember_status() -> bool:
            if self.state in TERMINAL:  # the status-14 callback after the end (after the final wait)
                return self._learn_late(callback)
            self.end_status = callback.status
            if callback.last_index is not None:  # segments up to it were sent: the gaps show any lost
                self.transcript.learn_last_index(callback.last_index)
            return True

        data = ("status", callback.status)
        return self._fire(
            trigger, remember_status, data, callback.task_id, refusal=self._unconfirmed(trigger)
        )

    def _learn_late(self, callback: StatusCallback) -> bool:
        """What a status callback that came after the end still tells: the stream's last segment
        (the transcript's gaps count up to it), and its status if none was recorded (the final wait
        ran out first). Whether it told anything new: a plain repeat is a duplicate."""
        learnt = False
        if self.end_status is None:
            self.end_status = callback.status
            learnt = True
        known = self._transcript.last_index if self._transcript is not None else None
        if callback.last_index is not None and (known is None or callback.last_index > known):
            self.transcript.learn_last_index(callback.last_index)
            learnt = True
        return learnt

    def _named_as(self, task_id: str) -> str | None:
        """Who an event naming ``task_id`` is addressed to, for a task that has a name already (it
        may name another stream: refused); None for one that has none yet."""
        return None if self.task_id is None else task_id

    def _unconfirmed(self, trigger: str) -> str | None:
        """Why ``trigger`` may not end the task now: a stream whose stop was never acknowledged may
        still be billing (lifecycle.AFTER_ACKNOWLEDGED_STOP). None when nothing stands in its way."""
        if trigger in AFTER_ACKNOWLEDGED_STOP and self.state in STOP_DUE and not self.stop_acknowledged:
            return "no stop has been acknowledged, so the stream may still run"
        return None

    def _announce(self, trigger: str, before: TaskState, outcome: Outcome) -> None:
        """Log the event: a refusal as a warning, the segment self-loop and duplicates at debug (and
        only if debug is kept: the hot path builds nothing), everything else at info."""
        if outcome.kind is OutcomeKind.REJECTED:
            emit = _log.warning
        elif trigger in _QUIET_TRIGGERS or outcome.kind is OutcomeKind.DUPLICATE:
            if not debug_enabled():
                return  # the hot path: not even the event's fields are built
            emit = _log.debug
        else:
            emit = _log.info
        fields: dict[str, Any] = {
            "task": self.ref,
            "task_id": self.task_id,
            "kind": self.kind.value,
            "trigger": trigger,
            "source": TRIGGERS[trigger].value,
            "from": before.value,
            "to": self.state.value,
            "outcome": outcome.kind.value,
        }
        if outcome.reason is not None:
            fields["reason"] = outcome.reason
        emit("streamlife.transition", **fields)

    # -- data effects: each returns whether it changed anything ------------------------------
    def _request_stop(self) -> bool:
        if self.stop_requested:
            return False
        self.stop_requested = True
        return True

    def _set_task_id(self, task_id: str) -> bool:
        self.task_id = task_id
        return True

    def _adopt(self, task_id: str) -> bool:
        self._adopted = True
        return self._set_task_id(task_id)

    def _set_error(self, error: BaseException) -> bool:
        self.last_error = _error_text(error)
        return True

    def _acknowledge_stop(self, found_on: StreamKind | None = None) -> bool:
        if self.stop_acknowledged:
            return False
        self.stop_acknowledged = True
        if found_on is not None:
            self.kind = found_on
        return True

    def _count_stop_failure(self, error: BaseException) -> bool:
        self.stop_failures += 1
        self.stop_not_before = error.not_before if isinstance(error, RecordedError) else None
        return self._set_error(error)

    def _add_segment(self, segment: Segment) -> bool:
        late = self.state in TERMINAL  # a final after the end: kept, and marked late
        change = self.transcript.add(segment, late=late)
        if change in APPLIED_CHANGES:
            if self.stalled and not late:  # news from a stream that had gone silent: a fact changes
                self.stalled = False
                self.revision += 1
            return True
        if change is Change.CONFLICT:
            _log.warning(
                "streamlife.transcript_conflict",
                task=self.ref,
                task_id=self.task_id,
                index=segment.index,
            )
        return False

    def _mark_final_missing(self) -> bool:
        self.final_callback_missing = True
        return True

    def _mark_stalled(self) -> bool:
        if self.stalled:
            return False
        self.stalled = True
        return True


def _check_task_id(trigger: str, task_id: object) -> None:
    if not isinstance(task_id, str):
        raise TypeError(f"{trigger} needs the task_id the service named, a str, got {task_id!r}")
    if not task_id:
        raise ValueError(f"{trigger} needs the task_id the service named, got {task_id!r}")


def _error_text(error: BaseException) -> str:
    return RecordedError.text_of(error)


def _describe(error: BaseException) -> tuple[str, str]:
    return ("error", _error_text(error))
