"""A bounded transcript (a Fleet task's: ``Policy.transcript_limit``) answers exactly as an unbounded
one, for any sequence of segments, while what it holds in memory stays bounded."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from streamlife import Segment
from streamlife._runs import Runs
from streamlife._transcript import Change, Transcript

TEXTS = st.sampled_from(["a", "b", "c", None])
INDEXED = st.builds(
    Segment,
    st.just("t"),
    st.integers(0, 24),
    st.booleans(),
    TEXTS,
    st.none(),
    st.none(),
    st.none(),
    st.booleans(),
)
# ElevenLabs' messages come with no index: the transcript numbers them, and tells a repeated commit
# by its content (here, its payload).
UNINDEXED = st.builds(
    lambda final, text: Segment("t", None, final, text, raw={"message_type": "m", "text": text}),
    st.booleans(),
    st.sampled_from(["x", "y", "z"]),
)
SEGMENTS = st.one_of(INDEXED, INDEXED, UNINDEXED)


class Journal:
    """What a task's journal keeps of its transcript: every segment that changed it, as delivered
    (a segment with no index keeps none), with whether it came late."""

    def __init__(self) -> None:
        self.applied: list[tuple[Segment, bool]] = []
        self.reads = 0

    def read(self) -> list[tuple[Segment, bool]]:
        self.reads += 1
        return list(self.applied)


def view(transcript: Transcript) -> dict[str, Any]:
    return {
        "segments": list(transcript),
        "text": transcript.text(),
        "partials": transcript.text(include_partials=True),
        "finals": transcript.finals(),
        "gaps": transcript.gaps(),
        "late": transcript.late,
        "len": len(transcript),
        "last_index": transcript.last_index,
    }


class BoundedAgainstUnbounded(RuleBasedStateMachine):
    """Every segment goes to both; every answer, and everything read, must agree."""

    @initialize(limit=st.integers(1, 4))
    def make(self, limit: int) -> None:
        self.journal = Journal()
        self.whole = Transcript()
        self.bounded = Transcript(limit, self.journal.read)
        self.limit = limit
        self.changes: list[Change] = []

    @rule(segment=SEGMENTS, late=st.booleans())
    def add(self, segment: Segment, late: bool) -> None:
        numbered = self.whole.numbered(segment)
        assert self.bounded.numbered(segment) == numbered
        change = self.whole.add(segment, late=late)
        assert self.bounded.add(segment, late=late) is change
        if change.applied:
            self.journal.applied.append((segment, late))
        self.changes.append(change)

    @rule(last_index=st.integers(0, 30))
    def learn_last_index(self, last_index: int) -> None:
        self.whole.learn_last_index(last_index)
        self.bounded.learn_last_index(last_index)

    @precondition(lambda self: self.journal.applied)
    @rule()
    def replay(self) -> None:
        """A replay (recovery, or catching up) fires the journaled segments again: each applies,
        and the replayed transcript, bounded too, reads as the live one."""
        replayed = Transcript(self.limit, self.journal.read)
        for segment, late in self.journal.applied:
            assert replayed.add(segment, late=late).applied
        if self.whole.last_index is not None:
            replayed.learn_last_index(self.whole.last_index)
        assert view(replayed) == view(self.whole)

    @invariant()
    def reads_alike(self) -> None:
        assert self.bounded.gaps() == self.whole.gaps()
        assert len(self.bounded) == len(self.whole)
        assert self.bounded.late == self.whole.late
        assert self.bounded.text(include_partials=True) == self.whole.text(include_partials=True)

    @invariant()
    def holds_a_bounded_tail(self) -> None:
        assert len(self.bounded._by_index) <= 2 * self.limit + 1


TestBoundedAgainstUnbounded = BoundedAgainstUnbounded.TestCase


@given(st.lists(st.tuples(SEGMENTS, st.booleans()), max_size=80), st.integers(1, 6))
def test_a_bounded_transcript_reads_as_the_unbounded_one(
    deliveries: list[tuple[Segment, bool]], limit: int
) -> None:
    journal = Journal()
    whole, bounded = Transcript(), Transcript(limit, journal.read)
    for segment, late in deliveries:
        change = whole.add(segment, late=late)
        assert bounded.add(segment, late=late) is change
        if change.applied:
            journal.applied.append((segment, late))
    assert view(bounded) == view(whole)


def test_a_long_stream_in_order_holds_a_bounded_tail_and_never_reads_back() -> None:
    journal = Journal()
    transcript = Transcript(32, journal.read)
    for index in range(20_000):
        segment = Segment("t", index, True, f"words {index}")
        assert transcript.add(segment) is Change.NEW
        journal.applied.append((segment, False))
        assert transcript.add(segment) is Change.REPEATED  # a redelivery, told without reading back
    assert transcript.held() <= 2 * 32 + 4  # the tail, and one run of the finals let go of
    assert journal.reads == 0
    assert transcript.gaps() == []
    assert len(transcript) == 20_000
    assert transcript.text().startswith("words 0 words 1 ")  # read back whole


def test_an_unbounded_transcript_holds_every_segment() -> None:
    transcript = Transcript()
    for index in range(1_000):
        transcript.add(Segment("t", index, True, f"words {index}"))
    assert transcript.held() == 1_000


def test_a_conflict_for_an_index_long_let_go_of_is_still_told_by_reading_back() -> None:
    journal = Journal()
    transcript = Transcript(4, journal.read)
    for index in range(100):
        segment = Segment("t", index, True, f"words {index}")
        transcript.add(segment)
        journal.applied.append((segment, False))
    assert transcript.add(Segment("t", 3, True, "words 3")) is Change.REPEATED
    assert transcript.add(Segment("t", 3, True, "other words")) is Change.CONFLICT
    assert transcript.add(Segment("t", 3, False, "a partial")) is Change.REPEATED  # no read needed
    assert journal.reads == 2


def test_unindexed_commits_let_go_of_keep_a_fingerprint_and_are_still_recognised() -> None:
    journal = Journal()
    whole, transcript = Transcript(), Transcript(2, journal.read)
    commits = [Segment("t", None, True, f"commit {n}", raw={"text": f"commit {n}"}) for n in range(50)]
    for commit in commits:
        assert transcript.add(commit) is whole.add(commit) is Change.NEW
        journal.applied.append((commit, False))
    assert transcript.numbered(commits[0]).index == 0  # its number, read back
    assert transcript.add(commits[0]) is Change.REPEATED
    assert transcript.held() < 2 * 2 + 2 * 2 + 50  # a 4-byte fingerprint for each commit let go of
    assert [segment.text for segment in transcript.finals()] == [segment.text for segment in whole.finals()]


@pytest.mark.parametrize("limit", [0, -1, True, 1.5])
def test_a_limit_is_a_count(limit: Any) -> None:
    with pytest.raises(ValueError, match="limit"):
        Transcript(limit, list)


def test_a_limit_needs_a_reader() -> None:
    with pytest.raises(ValueError, match="reader"):
        Transcript(3)


@given(st.lists(st.tuples(st.sampled_from(["add", "range", "discard"]), st.integers(0, 40)), max_size=60))
def test_runs_hold_the_same_ints_as_a_set(moves: list[tuple[str, int]]) -> None:
    runs, plain = Runs(), set()
    for move, value in moves:
        if move == "add":
            runs.add(value)
            plain.add(value)
        elif move == "range":
            runs.add_range(value, value + value % 5)
            plain.update(range(value, value + value % 5))
        else:
            runs.discard(value)
            plain.discard(value)
        assert list(runs) == sorted(plain)
        assert len(runs) == len(plain)
        assert all((value in runs) == (value in plain) for value in range(-1, 42))
        spans = list(runs.runs())
        assert all(a.stop < b.start for a, b in itertools.pairwise(spans))  # never adjacent
