"""A task's history: every event fired at it, oldest first, each read as a ``HistoryEntry``.

One entry is kept per event, so the way it is kept decides what a long-lived task costs the
collector. A HistoryEntry holds enum members, which the collector tracks, so a tuple holding one
stays tracked as long as it lives. Each event then left one more object for every full pass to
walk, and with many live tasks those passes cost more than the events themselves. So an entry is
kept as a flat tuple of plain values: strings, numbers, None, and the data's keys and values in
line (a dict keeps a tuple tracked however plain its values are). The collector stops tracking
such a tuple at its first pass. It is made into a HistoryEntry when it is read.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final, NamedTuple, overload

from ._events import Outcome, OutcomeKind
from .lifecycle import TRIGGERS, Source, TaskState


class HistoryEntry(NamedTuple):
    """One fire of one trigger at one task, whatever its outcome. Made when read: compare entries
    with ``==``, not ``is``."""

    seq: int  # 1, 2, 3 ... per task
    at: float  # from the task's clock; never earlier than the entry before it
    trigger: str
    source: Source
    from_state: TaskState
    to_state: TaskState
    outcome: Outcome
    data: Mapping[str, Any] | None = None


# seq, at, trigger, from_state, to_state, the outcome's kind and reason: the entry's fields as
# plain values (the source is the trigger's, so it is not kept). An entry with data goes on with
# _DATA and then the data's keys and values in turn: flat, since the collector keeps tracking a
# tuple that holds a dict however plain its values, or (as it met them) one that holds a tuple.
_Kept = tuple[Any, ...]
_AT: Final = 1
_HEAD: Final = 7  # the fields before the data
_DATA: Final = True

# The outcomes that carry no reason are shared values: reading an entry gives the very one fired.
_SHARED_OUTCOMES: Final = {
    outcome.kind.value: outcome
    for outcome in (Outcome.APPLIED, Outcome.DUPLICATE, Outcome.LATE, Outcome.PARKED)
}


class History(Sequence[HistoryEntry]):
    """A task's history entries, oldest first: a read-only sequence (it equals a list of the same
    entries). With a ``limit``, at least the last ``limit`` entries are kept and older ones let go
    in batches; ``seq`` still counts every entry ever recorded."""

    __slots__ = ("_kept", "_seq", "limit")

    def __init__(self, limit: int | None = None) -> None:
        self._kept: list[_Kept] = []
        self._seq = 0
        self.limit = limit

    def record(
        self,
        at: float,
        trigger: str,
        before: TaskState,
        after: TaskState,
        outcome: Outcome,
        data: tuple[Any, ...] = (),
    ) -> None:
        """Append one entry. ``data`` is one tuple of its keys and values in turn (``("index", 4,
        "final", True)``), read back as a mapping (None for none). An ``at`` earlier than the last
        entry's time is taken as that time, so a wall clock that stepped back still leaves a
        history that reads forwards. (One tuple, not ``*data``: a call that unpacks arguments takes
        the interpreter's slow way, and this runs for every event.)"""
        if type(data) is not tuple or len(data) % 2:  # (a mapping, as ``record`` once took, say)
            raise TypeError(f"history data goes as one tuple of keys and values in turn, got {data!r}")
        kept = self._kept
        if kept and at < kept[-1][_AT]:
            at = kept[-1][_AT]
        seq = self._seq = self._seq + 1
        # ``_value_`` rather than ``value``: the plain string, read without a property call.
        kind, reason = outcome.kind._value_, outcome.reason
        if data:
            kept.append((seq, at, trigger, before._value_, after._value_, kind, reason, _DATA, *data))
        else:
            kept.append((seq, at, trigger, before._value_, after._value_, kind, reason))
        limit = self.limit
        if limit is not None and len(kept) > 2 * limit:
            del kept[:-limit]  # a batch at a time: trimming stays O(1) per event

    @property
    def last_at(self) -> float | None:
        """When the last entry was recorded; None for an empty history."""
        return self._kept[-1][_AT] if self._kept else None

    def last_move(self) -> tuple[float, str, str, str]:
        """The last entry's time, trigger and states (as plain strings): what a journal keeps of it."""
        _, at, trigger, before, after = self._kept[-1][:5]
        return at, trigger, before, after

    def __len__(self) -> int:
        return len(self._kept)

    @overload
    def __getitem__(self, index: int) -> HistoryEntry: ...

    @overload
    def __getitem__(self, index: slice) -> list[HistoryEntry]: ...

    def __getitem__(self, index: int | slice) -> HistoryEntry | list[HistoryEntry]:
        if isinstance(index, slice):
            return [_entry(kept) for kept in self._kept[index]]
        return _entry(self._kept[index])

    def __iter__(self) -> Iterator[HistoryEntry]:
        return map(_entry, self._kept)

    def __reversed__(self) -> Iterator[HistoryEntry]:
        return map(_entry, reversed(self._kept))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, History):
            return self._kept == other._kept
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # (equal to a list, and as changeable)

    def __repr__(self) -> str:
        return f"History({list(self)!r})"


def _entry(kept: _Kept) -> HistoryEntry:
    seq, at, trigger, before, after, kind, reason = kept[:_HEAD]
    outcome = _SHARED_OUTCOMES.get(kind) if reason is None else None
    if outcome is None:
        outcome = Outcome(OutcomeKind(kind), reason)
    data = None if len(kept) == _HEAD else dict(zip(kept[_HEAD + 1 :: 2], kept[_HEAD + 2 :: 2], strict=True))
    return HistoryEntry(
        seq, at, trigger, TRIGGERS[trigger], TaskState(before), TaskState(after), outcome, data
    )
