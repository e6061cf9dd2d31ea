"""The transcript of one task: segments in index order, whatever order they arrived in.

Callbacks arrive at least once and in any order, so the transcript is keyed by
``segment_index``: a final replaces its partial, a repeated final is dropped, and a final whose
text differs from the one already kept is a conflict. The first final is kept, because nothing in
the protocol says which one is right, and the conflict is reported to the caller to log. The one
final that may replace another is a formatted one (AssemblyAI's ``turn_is_formatted``): the
provider says it is the same turn, formatted, so it replaces the unformatted final whichever came
first, and an unformatted final after it is a repeat.

A segment with no index (an ElevenLabs message forwarded as it came: the provider numbers nothing)
is numbered here, by the order in which the transcript is given its segments, which is its task's
journal order: every process and every replay gives the same numbers. A committed transcript takes
the next number, one past the highest index holding a final (so it never lands on an indexed
segment's final); a partial belongs to the number the next commit will take, and replaces the
partial there. Such a message carries nothing to tell a repeat by but its content, so the
transcript keeps a digest of each committed one it numbered: a commit whose content it has kept is
a repeat, and takes no number. Two commits with identical content (the payload as delivered, or
for a segment made by hand, its text and times) are indistinguishable from a redelivery: the
second is taken for one. A partial delivered again after its commit is taken for the next
utterance's partial, until that one's own partial or commit replaces it.

What is kept of each segment is what the transcript reads: its finality, text and times, as a plain
tuple. The payload it came in stays out of memory: the journal keeps it, and ``on_segment`` hooks
are handed it. A stream sends 720 segments an hour, and a payload is much larger than what the
transcript reads of it. A segment with no text (a video moderation result) keeps its payload,
which is the result.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any, Final

from ._events import Segment


class Change(enum.Enum):
    """What adding one segment did to the transcript."""

    NEW = "new"  # first result for this index
    REPLACED = "replaced"  # a final replaced a partial, or a newer partial an older one
    REPEATED = "repeated"  # nothing new: a repeat, or a partial after the final
    CONFLICT = "conflict"  # a second final with different text; the first is kept

    # A member is its only instance, so it hashes by identity, in C: Enum's own hash is a Python
    # call, and the hot path asks ``change in APPLIED_CHANGES`` once a segment.
    __hash__ = object.__hash__

    @property
    def applied(self) -> bool:
        return self in APPLIED_CHANGES


# The changes that change the transcript (a set, so the hot path asks without a property call).
APPLIED_CHANGES: Final = frozenset({Change.NEW, Change.REPLACED})


# What is kept of a segment: (final, text, start, end, raw, formatted), raw only for a segment with
# no text (its payload is its result). A plain tuple, not a NamedTuple: one is made per segment, a
# plain tuple is cheaper to make, and the collector stops tracking it once it holds no containers.
_Kept = tuple[bool, str | None, float | None, float | None, Mapping[str, Any] | None, bool]
_FINAL, _TEXT, _FORMATTED = 0, 1, 5


class Transcript:
    """The segments of one task, at most one per index."""

    __slots__ = ("_by_index", "_commits", "_last_index", "_late", "_task_id", "_top_final")

    def __init__(self) -> None:
        self._by_index: dict[int, _Kept] = {}
        self._task_id = ""  # the task's, from its first segment (a task checks every one is its own)
        self._last_index = -1  # the stream's last segment, once a callback names it; -1 until then
        self._late: set[int] | None = None  # made on the first late segment: most streams have none
        self._top_final = -1  # the highest index holding a final: the next number is one past it
        self._commits: dict[bytes, int] | None = None  # digest of a numbered commit -> its number

    def add(self, segment: Segment, *, late: bool = False) -> Change:
        """Keep what ``segment`` adds, and say what that was. ``late``: it came after its task
        ended (``late`` names the indexes kept so). A segment with no index is numbered first."""
        index = segment.index
        if index is None:
            return self._add_unindexed(segment, late)
        kept = self._by_index.get(index)
        if kept is None:
            self._task_id = segment.task_id
            self._keep(segment, index, late)
            return Change.NEW
        if kept[_FINAL]:
            if not segment.final:
                return Change.REPEATED
            if segment.formatted != kept[_FORMATTED]:
                if segment.formatted:  # the turn's formatted final, after its unformatted one
                    self._keep(segment, index, late)
                    return Change.REPLACED
                return Change.REPEATED  # the unformatted final, after its formatted one
            return Change.REPEATED if segment.text == kept[_TEXT] else Change.CONFLICT
        if segment.final or segment.text != kept[_TEXT]:
            self._keep(segment, index, late)
            return Change.REPLACED
        return Change.REPEATED

    def numbered(self, segment: Segment) -> Segment:
        """``segment`` with the index this transcript would give it: its own, if it has one; for
        a commit whose content was kept before, the number it took; else the next number (see
        the module docstring). Asked before or after the segment is added, the answer is the same."""
        if segment.index is not None:
            return segment
        return self._with_index(segment, self._number(_digest(segment) if segment.final else None))

    def _add_unindexed(self, segment: Segment, late: bool) -> Change:
        digest = _digest(segment) if segment.final else None
        index = self._number(digest)
        change = self.add(self._with_index(segment, index), late=late)
        if digest is not None and change in APPLIED_CHANGES:
            if self._commits is None:
                self._commits = {}
            self._commits[digest] = index
        return change

    def _number(self, digest: bytes | None) -> int:
        if digest is not None and self._commits is not None:
            seen = self._commits.get(digest)
            if seen is not None:
                return seen
        return self._top_final + 1

    @staticmethod
    def _with_index(segment: Segment, index: int) -> Segment:
        return Segment(
            segment.task_id,
            index,
            segment.final,
            segment.text,
            segment.start,
            segment.end,
            segment.raw,
            segment.formatted,
        )

    def _keep(self, segment: Segment, index: int, late: bool) -> None:
        raw = segment.raw if segment.text is None else None
        self._by_index[index] = (
            segment.final,
            segment.text,
            segment.start,
            segment.end,
            raw,
            segment.formatted,
        )
        if segment.final and index > self._top_final:
            self._top_final = index
        if late:
            if self._late is None:
                self._late = set()
            self._late.add(index)
        elif self._late is not None:
            self._late.discard(index)

    @property
    def late(self) -> frozenset[int]:
        """The indexes whose kept segment came after its task ended (a final delivered late)."""
        return frozenset() if self._late is None else frozenset(self._late)

    def __len__(self) -> int:
        return len(self._by_index)

    def __iter__(self) -> Iterator[Segment]:
        """The kept segments, partials included, in index order (without their payloads, but for
        those with no text)."""
        task_id = self._task_id
        for index in sorted(self._by_index):
            final, text, start, end, raw, formatted = self._by_index[index]
            yield Segment(task_id, index, final, text, start, end, raw, formatted)

    def finals(self) -> list[Segment]:
        return [segment for segment in self if segment.final]

    def text(self, *, include_partials: bool = False) -> str:
        """The transcript as one string, segments joined by a space in index order."""
        return " ".join(
            segment.text for segment in self if segment.text and (segment.final or include_partials)
        )

    def learn_last_index(self, last_index: int) -> None:
        """The stream's last segment is ``last_index`` (its stop callback says so): ``gaps`` counts
        every index up to it. Of several, the highest counts: none can unsay a segment."""
        if last_index > self._last_index:
            self._last_index = last_index

    @property
    def last_index(self) -> int | None:
        """The stream's last segment, as a callback named it; None until one does."""
        return None if self._last_index < 0 else self._last_index

    def gaps(self) -> list[range]:
        """Runs of indexes with no final yet, below the highest final or up to the last index a
        callback named (``learn_last_index``): lost or still in flight.

        Ranges, not every missing index: one stray index of 2**31 must not cost 2**31 ints.
        """
        gaps, expected = [], 0
        for index in sorted(index for index, kept in self._by_index.items() if kept[_FINAL]):
            if index > expected:
                gaps.append(range(expected, index))
            expected = index + 1
        if self._last_index >= expected:  # trailing segments the stream sent and no final came for
            gaps.append(range(expected, self._last_index + 1))
        return gaps


def _digest(segment: Segment) -> bytes:
    """What tells a commit with no index from another: a digest of its content, the payload as it
    was delivered (the journal keeps it, so a replay digests the same) or, for a segment made by
    hand, its text and times. Keys sorted, so the same payload digests alike whatever its order."""
    content: object = segment.raw if segment.raw is not None else [segment.text, segment.start, segment.end]
    try:
        text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=repr)
    except (TypeError, ValueError):  # a payload made by hand with keys that do not sort, or a cycle
        text = repr(content)
    return hashlib.blake2b(text.encode(), digest_size=16).digest()
