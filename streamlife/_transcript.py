"""The transcript of one task: segments in index order, whatever order they arrived in.

Callbacks arrive at least once and in any order, so the transcript is keyed by
``segment_index``: a final replaces its partial, a repeated final is dropped, and a final whose
text differs from the one already kept is a conflict. The first final is kept, because nothing in
the protocol says which one is right, and the conflict is reported to the caller to log. The one
final that may replace another is a formatted one (AssemblyAI's ``turn_is_formatted``): the
provider says it is the same turn, formatted, so it replaces the unformatted final whichever came
first, and an unformatted final after it is a repeat.

A segment with no index (an ElevenLabs message forwarded as it came: the provider numbers
nothing; a Live Video Understanding result, which has a timestamp instead) is numbered here, by
the order in which the transcript is given its segments, which is its task's journal order: every
process and every replay gives the same numbers. A committed transcript takes the next number, one
past the highest index holding a final (so it never lands on an indexed segment's final); a
partial belongs to the number the next commit will take, and replaces the partial there. Such a
message carries nothing to tell a repeat by but its content, or its timestamp (``Segment.stamp``)
where it has one, so the transcript keeps a digest of each committed one it numbered: a commit
whose digest it has kept is a repeat, and takes no number. Two commits with identical content (the
payload as delivered, or for a segment made by hand, its text and times), or the same timestamp,
are indistinguishable from a redelivery: the second is taken for one. A partial delivered again
after its commit is taken for the next utterance's partial, until that one's own partial or commit
replaces it. Results reordered in delivery keep their delivery order here (the journal keeps each stamp).

What is kept of each segment is what the transcript reads: its finality, text and times, as a plain
tuple. The payload it came in stays out of memory: the journal keeps it, and ``on_segment`` hooks
are handed it. A stream sends 720 segments an hour, and a payload is much larger than what the
transcript reads of it. A segment with no text (a video moderation result) keeps its payload,
which is the result.

A transcript may be bounded (``limit``, with a ``reader``), as a Fleet's tasks are
(``Policy.transcript_limit``): it then keeps the segments of its ``limit`` highest indexes or more
(up to twice as many: it lets go a batch at a time), and a compact record of the indexes it let go
of: which held a final (``Runs``, a few ints for a stream without holes), which of those finals
were formatted, which held a partial, and a 4-byte fingerprint of each unindexed commit's digest.
Every decision ``add`` makes for an index it let go of is made from that record, but two, which
need the text kept there: a second final of the same formatting (a repeat or a conflict), and a
partial where a partial was kept (a repeat, or a newer one). For those, and for a commit whose
fingerprint matches one let go of, the transcript reads its own segments back through ``reader``
(the task's journal, which holds every segment the transcript applied, in order). These are rare:
a redelivery or a late final long after its neighbours. So a bounded transcript answers exactly
as an unbounded one would, for any sequence of segments; reading it whole (``__iter__``, ``text``,
``finals``) reads through too, once anything was let go.
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import json
from array import array
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final

from ._events import Segment
from ._runs import Runs


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
# Read once for the hot path: an Enum class's attribute is read through its metaclass's
# ``__getattr__`` hook, a slow way for what every new segment answers.
_NEW: Final = Change.NEW


# What is kept of a segment: (final, text, start, end, raw, formatted), raw only for a segment with
# no text (its payload is its result). A plain tuple, not a NamedTuple: one is made per segment, a
# plain tuple is cheaper to make, and the collector stops tracking it once it holds no containers.
_Kept = tuple[bool, str | None, float | None, float | None, Mapping[str, Any] | None, bool]
_FINAL, _TEXT, _FORMATTED = 0, 1, 5

# What a bounded transcript reads its segments back from: every segment it applied, in the order
# it applied them, each with whether it came late (its task had ended). It may yield more (what
# another process applied since): the transcript reads as many as it applied itself.
Reader = Callable[[], Iterable[tuple[Segment, bool]]]


class _LetGo:
    """What a bounded transcript keeps of the indexes it let go of (see the module docstring)."""

    __slots__ = ("finals", "fingerprints", "formatted", "partials", "top")

    def __init__(self) -> None:
        self.finals = Runs()  # indexes let go of holding a final
        self.formatted = Runs()  # of those, the ones whose final was formatted
        self.partials = Runs()  # indexes let go of holding a partial (lost segments, mostly)
        self.fingerprints: array[int] = array("I")  # sorted: the let-go commits' digests, 4 bytes each
        self.top = -1  # the highest index let go of: none above it is here

    def add(self, kind: tuple[bool, bool], start: int, stop: int) -> None:
        """Record ``range(start, stop)``, each index of which held a segment of ``kind``: (final,
        formatted)."""
        final, formatted = kind
        if final:
            self.finals.add_range(start, stop)
            if formatted:
                self.formatted.add_range(start, stop)
        else:
            self.partials.add_range(start, stop)

    def forget(self, index: int) -> None:
        """``index`` is kept in full again."""
        self.finals.discard(index)
        self.formatted.discard(index)
        self.partials.discard(index)

    def may_hold(self, digest: bytes) -> bool:
        """Whether a commit with this digest may have been let go of (never False if it was)."""
        fingerprint = _fingerprint(digest)
        at = bisect_left(self.fingerprints, fingerprint)
        return at < len(self.fingerprints) and self.fingerprints[at] == fingerprint


class Transcript:
    """The segments of one task, at most one per index."""

    __slots__ = (
        "_applied",
        "_by_index",
        "_commits",
        "_last_index",
        "_late",
        "_let_go",
        "_limit",
        "_reader",
        "_task_id",
        "_top_final",
    )

    def __init__(self, limit: int | None = None, reader: Reader | None = None) -> None:
        """``limit``: keep the segments of at least this many of the highest indexes, and read the
        rest back through ``reader`` when asked (see the module docstring). None keeps them all."""
        self._limit: int | None = None
        self._reader: Reader | None = None
        self._let_go: _LetGo | None = None  # made on the first index let go of
        self._applied = 0  # segments that changed the transcript: how many ``reader`` must give back
        self._by_index: dict[int, _Kept] = {}
        self._task_id = ""  # the task's, from its first segment (a task checks every one is its own)
        self._last_index = -1  # the stream's last segment, once a callback names it; -1 until then
        self._late: set[int] | None = None  # made on the first late segment: most streams have none
        self._top_final = -1  # the highest index holding a final: the next number is one past it
        self._commits: dict[bytes, int] | None = None  # digest of a numbered commit -> its number
        if limit is not None:
            self.bound(limit, reader)

    def bound(self, limit: int, reader: Reader | None) -> None:
        """Keep the segments of at least ``limit`` of the highest indexes from now on, reading the
        rest back through ``reader``; what is over the bound already is let go of at once."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"a transcript's limit is a count of at least 1, got {limit!r}")
        if reader is None:
            raise ValueError("a bounded transcript needs a reader, to read back what it let go of")
        self._limit, self._reader = limit, reader
        if len(self._by_index) > limit:
            self._let_go_of_oldest()

    @property
    def limit(self) -> int | None:
        return self._limit

    def held(self) -> int:
        """How many entries this transcript holds in memory (its kept segments, its commit digests
        and the runs and fingerprints of what it let go of): what its limit bounds."""
        held = len(self._by_index) + (0 if self._commits is None else len(self._commits))
        let_go = self._let_go
        if let_go is not None:
            held += len(let_go.fingerprints) + sum(
                1 for runs in (let_go.finals, let_go.formatted, let_go.partials) for _ in runs.runs()
            )
        return held + (0 if self._late is None else len(self._late))

    def add(self, segment: Segment, *, late: bool = False) -> Change:
        """Keep what ``segment`` adds, and say what that was. ``late``: it came after its task
        ended (``late`` names the indexes kept so). A segment with no index is numbered first."""
        index = segment.index
        if index is None:
            return self._add_unindexed(segment, late)
        kept = self._by_index.get(index)
        if kept is None:
            let_go = self._let_go
            if let_go is not None and index <= let_go.top:
                change = self._add_let_go(segment, index, late, let_go)
                if change not in APPLIED_CHANGES:
                    return change
            else:
                self._task_id = segment.task_id
                self._keep(segment, index, late)
                change = _NEW
            self._applied += 1
            limit = self._limit
            if limit is not None and len(self._by_index) > 2 * limit:  # a batch at a time: O(1) per segment
                self._let_go_of_oldest()
            return change
        change = self._add_kept(segment, index, late, kept)
        if change in APPLIED_CHANGES:
            self._applied += 1
        return change

    def _add_kept(self, segment: Segment, index: int, late: bool, kept: _Kept) -> Change:
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

    def _add_let_go(self, segment: Segment, index: int, late: bool, let_go: _LetGo) -> Change:
        """``add`` for an index below the bound: what ``_add_kept`` (or NEW) would answer had it
        been kept, read from the record of what was let go of, or, for the text, from the reader."""
        if index in let_go.finals:
            if not segment.final:
                return Change.REPEATED
            if segment.formatted != (index in let_go.formatted):
                if segment.formatted:
                    self._keep(segment, index, late)
                    return Change.REPLACED
                return Change.REPEATED
            kept = self._read_back()._by_index.get(index)
            return Change.REPEATED if kept is None or segment.text == kept[_TEXT] else Change.CONFLICT
        if index in let_go.partials:
            if not segment.final:
                kept = self._read_back()._by_index.get(index)
                if kept is not None and segment.text == kept[_TEXT]:
                    return Change.REPEATED
            self._keep(segment, index, late)
            return Change.REPLACED
        self._task_id = segment.task_id
        self._keep(segment, index, late)
        return Change.NEW

    def _let_go_of_oldest(self) -> None:
        """Keep the segments of the ``limit`` highest indexes; record what the others held."""
        assert self._limit is not None
        indexes = sorted(self._by_index)
        below = indexes[: -self._limit]
        if not below:
            return
        let_go = self._let_go
        if let_go is None:
            let_go = self._let_go = _LetGo()
        by_index = self._by_index
        # Consecutive indexes of one kind go into the runs as one range: a stream's indexes are let
        # go of in order, mostly all finals, so a batch is a range or two.
        run_start, run_kind = below[0], None
        previous = below[0] - 1
        for index in below:
            final, _, _, _, _, formatted = by_index.pop(index)
            kind = (final, formatted)
            if index != previous + 1 or kind != run_kind:
                if run_kind is not None:
                    let_go.add(run_kind, run_start, previous + 1)
                run_start, run_kind = index, kind
            previous = index
        assert run_kind is not None
        let_go.add(run_kind, run_start, previous + 1)
        let_go.top = max(let_go.top, below[-1])
        commits, floor = self._commits, below[-1]
        if commits:
            for digest, index in list(commits.items()):
                if index <= floor and index not in by_index:
                    del commits[digest]
                    insort(let_go.fingerprints, _fingerprint(digest))

    def _read_back(self) -> Transcript:
        """This transcript whole and unbounded, as the reader gives back what it applied."""
        assert self._reader is not None, "only a bounded transcript lets segments go"
        whole = Transcript()
        for segment, late in itertools.islice(self._reader(), self._applied):
            whole.add(segment, late=late)
        whole.learn_last_index(self._last_index)
        return whole

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
        if digest is not None and self._let_go is not None and self._let_go.may_hold(digest):
            commits = self._read_back()._commits  # (a commit let go of, or a fingerprint's namesake)
            seen = None if commits is None else commits.get(digest)
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
            segment.stamp,
        )

    def _keep(self, segment: Segment, index: int, late: bool) -> None:
        let_go = self._let_go
        if let_go is not None and index <= let_go.top:
            let_go.forget(index)
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
        let_go = self._let_go
        if let_go is None:
            return len(self._by_index)
        return len(self._by_index) + len(let_go.finals) + len(let_go.partials)

    def __iter__(self) -> Iterator[Segment]:
        """The kept segments, partials included, in index order (without their payloads, but for
        those with no text). Once a bounded transcript let segments go, read back through its
        reader (the store)."""
        if self._let_go is not None:
            yield from self._read_back()
            return
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
        finals = [range(index, index + 1) for index, kept in self._by_index.items() if kept[_FINAL]]
        if self._let_go is not None:
            finals.extend(self._let_go.finals.runs())
        gaps, expected = [], 0
        for run in sorted(finals, key=_start):
            if run.start > expected:
                gaps.append(range(expected, run.start))
            expected = max(expected, run.stop)
        if self._last_index >= expected:  # trailing segments the stream sent and no final came for
            gaps.append(range(expected, self._last_index + 1))
        return gaps


def _start(run: range) -> int:
    return run.start


def _fingerprint(digest: bytes) -> int:
    return int.from_bytes(digest[:4], "little")


def _digest(segment: Segment) -> bytes:
    """What tells a commit with no index from another: its own key where its product gives one
    (``stamp``: a Live Video Understanding result's timestamp), else a digest of its content, the
    payload as it was delivered (the journal keeps it, so a replay digests the same) or, for a
    segment made by hand, its text and times. Keys sorted, so the same payload digests alike
    whatever its order."""
    content: object
    if segment.stamp is not None:
        content = ["stamp", segment.stamp]
    else:
        content = segment.raw if segment.raw is not None else [segment.text, segment.start, segment.end]
    try:
        text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=repr)
    except (TypeError, ValueError):  # a payload made by hand with keys that do not sort, or a cycle
        text = repr(content)
    return hashlib.blake2b(text.encode(), digest_size=16).digest()
