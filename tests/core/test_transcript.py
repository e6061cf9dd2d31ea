"""The transcript, whatever order and however often its segments arrive."""

from __future__ import annotations

from random import Random

from hypothesis import given
from hypothesis import strategies as st

from streamlife import Segment
from streamlife._transcript import Change, Transcript

TEXTS = st.sampled_from(["a", "b", "c"])
SEGMENTS = st.builds(Segment, st.just("t"), st.integers(0, 6), st.booleans(), TEXTS)


def index_of(segment: Segment) -> int:
    """The index of a segment the transcript holds: it numbers any that came with none."""
    assert segment.index is not None
    return segment.index


@given(st.lists(SEGMENTS, max_size=40), st.randoms())
def test_the_finals_kept_do_not_depend_on_arrival_order_without_conflicts(
    segments: list[Segment], random: Random
) -> None:
    # One final text per index (the service's truth), delivered any number of times in any order.
    truth: dict[int | None, str] = {}
    deliveries = [s for s in segments if not s.final or truth.setdefault(s.index, s.text or "") == s.text]
    shuffled = list(deliveries)
    random.shuffle(shuffled)
    in_order, any_order = Transcript(), Transcript()
    for segment in deliveries:
        in_order.add(segment)
    for segment in shuffled:
        any_order.add(segment)
    assert [(s.index, s.text) for s in in_order.finals()] == [(s.index, s.text) for s in any_order.finals()]
    assert {s.index for s in any_order.finals()} == {s.index for s in deliveries if s.final}


@given(st.lists(SEGMENTS, max_size=40))
def test_one_segment_per_index_in_index_order_and_finals_are_never_replaced(
    segments: list[Segment],
) -> None:
    transcript = Transcript()
    first_final: dict[int | None, str | None] = {}
    for segment in segments:
        change = transcript.add(segment)
        if segment.final and segment.index not in first_final:
            first_final[segment.index] = segment.text
            assert change.applied
        elif segment.index in first_final:
            assert not change.applied
    indexes = [index_of(s) for s in transcript]
    assert indexes == sorted(set(indexes))
    assert {s.index: s.text for s in transcript.finals()} == first_final
    highest = max(map(index_of, transcript.finals()), default=None)
    missing = [] if highest is None else [i for i in range(highest) if i not in first_final]
    assert [i for gap in transcript.gaps() for i in gap] == missing
    assert all(len(gap) > 0 for gap in transcript.gaps())


def test_a_differing_final_is_a_conflict_and_a_newer_partial_replaces_an_older_one() -> None:
    transcript = Transcript()
    assert transcript.add(Segment("t", 0, False, "hel")) is Change.NEW
    assert transcript.add(Segment("t", 0, False, "hello")) is Change.REPLACED
    assert transcript.add(Segment("t", 0, False, "hello")) is Change.REPEATED
    assert transcript.add(Segment("t", 0, True, "Hello.")) is Change.REPLACED
    assert transcript.add(Segment("t", 0, True, "Hullo.")) is Change.CONFLICT
    assert transcript.text() == "Hello."


def test_a_huge_index_costs_one_range_not_billions_of_ints() -> None:
    transcript = Transcript()
    transcript.add(Segment("t", 0, True, "first"))
    transcript.add(Segment("t", 2**31 - 1, True, "stray"))
    assert transcript.gaps() == [range(1, 2**31 - 1)]


def test_the_transcript_keeps_text_and_times_and_lets_the_payload_go_unless_it_is_the_result() -> None:
    transcript = Transcript()
    payload = {"data": {"segment_index": 0, "transcript": "hello"}}
    moderation = {"data": {"segment_index": 1, "data": {"content_moderation": {"flagged": False}}}}
    transcript.add(Segment("t", 0, True, "hello", 0.0, 5.0, raw=payload))
    transcript.add(Segment("t", 1, True, None, 5.0, 10.0, raw=moderation))
    assert list(transcript) == [
        Segment("t", 0, True, "hello", 0.0, 5.0),  # the text is the result: the journal has the rest
        Segment("t", 1, True, None, 5.0, 10.0, raw=moderation),  # no text: the payload is the result
    ]


def test_a_formatted_final_replaces_the_unformatted_one_and_an_unformatted_one_after_it_repeats() -> None:
    transcript = Transcript()
    assert transcript.add(Segment("t", 0, False, "how are")) is Change.NEW
    assert transcript.add(Segment("t", 0, True, "how are you")) is Change.REPLACED
    assert transcript.add(Segment("t", 0, True, "How are you?", formatted=True)) is Change.REPLACED
    assert transcript.add(Segment("t", 0, True, "how are you")) is Change.REPEATED
    assert transcript.add(Segment("t", 0, True, "How are you?", formatted=True)) is Change.REPEATED
    assert transcript.add(Segment("t", 0, False, "how")) is Change.REPEATED
    assert transcript.text() == "How are you?"
    assert [s.formatted for s in transcript] == [True]
    assert transcript.add(Segment("t", 0, True, "How are you!", formatted=True)) is Change.CONFLICT
    assert transcript.text() == "How are you?"


# One AssemblyAI turn with format_turns on: partials, its unformatted final, its formatted final.
TURN_MESSAGES = st.sampled_from(
    [
        Segment("t", 4, False, "how"),
        Segment("t", 4, False, "how are"),
        Segment("t", 4, True, "how are you"),
        Segment("t", 4, True, "How are you?", formatted=True),
    ]
)


@given(st.lists(TURN_MESSAGES, max_size=12), st.randoms())
def test_the_formatted_final_wins_whatever_the_order_of_its_turns_messages(
    messages: list[Segment], random: Random
) -> None:
    """Each message delivered any number of times, in any order: once the formatted final has
    come, it is what the transcript holds, and nothing was a conflict."""
    formatted = Segment("t", 4, True, "How are you?", formatted=True)
    deliveries = [*messages, formatted, *messages]
    random.shuffle(deliveries)
    transcript = Transcript()
    changes = [transcript.add(segment) for segment in deliveries]
    assert Change.CONFLICT not in changes
    assert list(transcript) == [formatted]
    assert transcript.text() == "How are you?"
    assert changes.count(Change.NEW) == 1
    after = changes[deliveries.index(formatted) + 1 :]
    assert all(change is Change.REPEATED for change in after)


def test_a_kept_moderation_result_is_read_through_its_segment() -> None:
    transcript = Transcript()
    result = {"video_url": "u", "content_moderation": {"has_unsafe_content": True, "frames_processed": 5}}
    transcript.add(Segment("t", 0, True, None, raw={"data": {"status": 0, "data": result}}))
    transcript.add(Segment("t", 1, True, "words", raw={"data": {"status": 0, "data": result}}))
    moderation, transcribed = (segment.moderation for segment in transcript)
    assert moderation is not None
    assert (moderation.has_unsafe_content, moderation.frames_processed, moderation.result) == (
        True,
        5,
        result,
    )
    assert transcribed is None  # a segment with text is a transcript, whatever its payload held


def test_the_last_index_a_callback_names_shows_trailing_segments_with_no_final_as_gaps() -> None:
    transcript = Transcript()
    for index in range(4):
        transcript.add(Segment("t", index, True, f"text {index}"))
    transcript.add(Segment("t", 5, False, "partial"))
    assert (transcript.gaps(), transcript.last_index) == ([], None)
    transcript.learn_last_index(6)
    assert (transcript.gaps(), transcript.last_index) == ([range(4, 7)], 6)
    transcript.learn_last_index(2)  # a lower one unsays nothing
    assert (transcript.gaps(), transcript.last_index) == ([range(4, 7)], 6)
    transcript.add(Segment("t", 5, True, "five"))
    assert transcript.gaps() == [range(4, 5), range(6, 7)]


@given(st.sets(st.integers(0, 40), max_size=30), st.lists(st.integers(0, 50), max_size=3))
def test_gaps_account_for_every_index_up_to_the_bound(finals: set[int], bounds: list[int]) -> None:
    """Every index up to the highest final or the highest last index named is a final or in one
    gap, in order, and no gap is empty or holds a final."""
    transcript = Transcript()
    for index in finals:
        transcript.add(Segment("t", index, True, "x"))
    for bound in bounds:
        transcript.learn_last_index(bound)
    top = max([*finals, *bounds], default=-1)
    missing = [i for gap in transcript.gaps() for i in gap]
    assert missing == [i for i in range(top + 1) if i not in finals]
    assert all(len(gap) > 0 for gap in transcript.gaps())


def test_a_segment_added_late_is_named_until_a_timely_one_replaces_it() -> None:
    transcript = Transcript()
    assert transcript.late == frozenset()
    transcript.add(Segment("t", 0, True, "zero"))
    transcript.add(Segment("t", 1, False, "on"))
    assert transcript.add(Segment("t", 1, True, "one"), late=True) is Change.REPLACED
    assert transcript.add(Segment("t", 0, True, "zero"), late=True) is Change.REPEATED  # no news: not late
    assert transcript.add(Segment("t", 2, True, "two"), late=True) is Change.NEW
    assert transcript.late == frozenset({1, 2})
    assert transcript.text() == "zero one two"
    transcript.add(Segment("t", 2, True, "Two.", formatted=True))
    assert transcript.late == frozenset({1})


# -- messages with no index (ElevenLabs, forwarded as they came): numbered in the order given -------
def forwarded(kind: str, text: str) -> Segment:
    raw = {"task_id": "t", "data": {"message_type": kind, "text": text}}
    return Segment("t", None, kind != "partial_transcript", text, raw=raw)


def test_a_commit_takes_the_next_number_and_a_partial_the_number_the_next_commit_will_take() -> None:
    transcript = Transcript()
    arrivals = [
        (forwarded("partial_transcript", "hel"), Change.NEW, 0),
        (forwarded("partial_transcript", "hello"), Change.REPLACED, 0),
        (forwarded("committed_transcript", "Hello."), Change.REPLACED, 0),
        (forwarded("committed_transcript", "Hello."), Change.REPEATED, 0),  # delivered again
        (forwarded("partial_transcript", "how"), Change.NEW, 1),
        (forwarded("committed_transcript", "How are you?"), Change.REPLACED, 1),
        (forwarded("committed_transcript", "Fine."), Change.NEW, 2),
        (forwarded("committed_transcript", "How are you?"), Change.REPEATED, 1),
    ]
    for segment, change, number in arrivals:
        before = transcript.numbered(segment).index
        assert (transcript.add(segment), before) == (change, number)
        assert transcript.numbered(segment).index == number  # the same answer after
    assert [(s.index, s.final, s.text) for s in transcript] == [
        (0, True, "Hello."),
        (1, True, "How are you?"),
        (2, True, "Fine."),
    ]
    assert transcript.gaps() == []


def test_two_commits_with_identical_content_are_one_and_a_segment_with_an_index_keeps_it() -> None:
    transcript = Transcript()
    transcript.add(forwarded("committed_transcript", "Yes."))
    assert transcript.add(forwarded("committed_transcript", "Yes.")) is Change.REPEATED  # as a redelivery
    assert transcript.add(Segment("t", 5, True, "five")) is Change.NEW
    assert transcript.numbered(Segment("t", 3, False, "x")).index == 3
    assert transcript.numbered(forwarded("committed_transcript", "No.")).index == 6  # past every final
    by_hand = Segment("t", None, True, "Made by hand", 1.0, 2.0)  # no payload: its text and times
    assert transcript.add(by_hand) is Change.NEW
    assert transcript.add(by_hand) is Change.REPEATED
    assert [s.index for s in transcript] == [0, 5, 6]
