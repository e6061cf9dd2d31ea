"""What a task keeps besides its state: flags, history entries, the transcript, its repr."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from streamlife import (
    ForeignCallback,
    ManualClock,
    Outcome,
    OutcomeKind,
    Segment,
    Source,
    StatusCallback,
    StreamKind,
    StreamTask,
    TaskState,
)
from streamlife._callbacks import parse_callback
from streamlife._journal import decode_event, encode_event, entry_for, rebuild, row_for
from streamlife.store.base import JournalEntry
from tests.conftest import TASK_ID, task_in


def test_a_new_task_is_pending_with_nothing_sent(clock: ManualClock) -> None:
    task = StreamTask("video", {"url": "rtmp://x.invalid/live"}, clock=clock)
    assert (task.kind, task.state, task.task_id, list(task.history)) == (
        StreamKind.VIDEO,
        TaskState.PENDING,
        None,
        [],
    )
    assert (task.stop_requested, task.final_callback_missing, task.stalled) == (False, False, False)


def test_an_unknown_kind_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="'podcast' is not a valid StreamKind"):
        StreamTask("podcast")


def test_refs_are_unique() -> None:
    assert len({StreamTask("audio").ref for _ in range(1000)}) == 1000


def test_history_records_seq_time_source_and_data(clock: ManualClock) -> None:
    task = StreamTask("audio", clock=clock)
    task.start()
    clock.advance(2.5)
    task.start_ok(TASK_ID)
    first, second = task.history
    assert (first.seq, first.at, first.source, first.data) == (
        1,
        clock.now() - 2.5,
        Source.LOCAL,
        None,
    )
    assert (second.seq, second.at, second.source) == (2, clock.now(), Source.TRANSPORT)
    assert second.data == {"task_id": TASK_ID}


def test_history_times_never_go_backwards_when_the_wall_clock_does() -> None:
    class SteppingBack:
        times = iter([100.0, 90.0, 95.0, 120.0])

        def now(self) -> float:
            return next(self.times)

    task = StreamTask("audio", clock=SteppingBack())
    task.start()
    task.start_ok(TASK_ID)
    task.stop()
    task.stop_ok()
    assert [entry.at for entry in task.history] == [100.0, 100.0, 100.0, 120.0]


@pytest.mark.parametrize(("bad", "error"), [("", ValueError), (None, TypeError), (42, TypeError)])
def test_start_ok_needs_a_real_task_id(bad: object, error: type[Exception]) -> None:
    task = task_in(TaskState.STARTING)
    with pytest.raises(error, match="task_id"):
        task.start_ok(bad)  # type: ignore[arg-type]
    assert task.state is TaskState.STARTING
    assert len(task.history) == 1


def test_errors_are_kept_as_text() -> None:
    task = task_in(TaskState.STARTING)
    task.start_rejected(PermissionError("account not enabled for streams"))
    assert task.last_error == "PermissionError: account not enabled for streams"
    assert task.history[-1].data == {"error": "PermissionError: account not enabled for streams"}


def test_failed_stops_are_counted_and_the_task_stays_stopping() -> None:
    task = task_in(TaskState.STOPPING)
    for _ in range(3):
        assert task.stop_error(ConnectionError("refused")) == Outcome.APPLIED
    assert (task.state, task.stop_failures) == (TaskState.STOPPING, 3)


def test_a_second_stop_acknowledgement_is_a_duplicate() -> None:
    task = task_in(TaskState.STOPPING)
    assert task.stop_ok() == Outcome.APPLIED
    assert task.stop_ok() == Outcome.DUPLICATE
    assert task.stop_acknowledged


def test_a_stop_acknowledged_on_a_products_path_teaches_the_product_once() -> None:
    task = task_in(TaskState.STOPPING)
    taken_for = task.kind
    assert taken_for is StreamKind.AUDIO
    assert task.stop_ok("video") == Outcome.APPLIED
    assert task.kind is StreamKind.VIDEO
    assert task.history[-1].data == {"kind": "video"}
    again = task_in(TaskState.STOPPING)
    assert again.stop_ok() == Outcome.APPLIED
    assert again.stop_ok(StreamKind.VIDEO) == Outcome.DUPLICATE  # nothing journaled, nothing learnt
    assert again.kind is StreamKind.AUDIO


def test_a_stop_acknowledged_on_no_product_is_refused() -> None:
    task = task_in(TaskState.STOPPING)
    with pytest.raises(ValueError, match="radio"):
        task.stop_ok("radio")
    assert not task.stop_acknowledged


def test_the_final_deadline_stops_the_task_and_flags_the_missing_callback() -> None:
    task = task_in(TaskState.STOPPING)
    task.stop_ok()
    task.final_deadline()
    assert task.state is TaskState.STOPPED
    assert task.final_callback_missing


def test_the_ending_status_is_kept() -> None:
    task = task_in(TaskState.RUNNING)
    assert task.task_id is not None
    task.ended(StatusCallback(task.task_id, 12, "source ended"))
    assert (task.state, task.end_status) == (TaskState.ENDING, 12)
    task.stop_not_found()
    assert (task.state, task.end_status) == (TaskState.ENDED, 12)


def test_silence_marks_the_task_stalled_and_a_new_segment_clears_it() -> None:
    task = task_in(TaskState.RUNNING)
    assert task.task_id is not None
    assert task.silence() == Outcome.APPLIED
    assert task.silence() == Outcome.DUPLICATE
    assert task.stalled
    task.segment(Segment(task.task_id, 0, final=True, text="back"))
    assert not task.stalled


def test_segments_build_an_ordered_transcript_with_gaps() -> None:
    task = task_in(TaskState.RUNNING)
    tid = task.task_id
    assert tid is not None
    arrivals = [
        Segment(tid, 2, final=False, text="tw"),
        Segment(tid, 0, final=True, text="zero"),
        Segment(tid, 2, final=True, text="two"),
        Segment(tid, 2, final=True, text="two"),  # repeated final
        Segment(tid, 0, final=False, text="zer"),  # partial after its final
        Segment(tid, 3, final=False, text="thr"),
    ]
    outcomes = [task.segment(s).kind for s in arrivals]
    assert outcomes == [OutcomeKind.APPLIED] * 3 + [OutcomeKind.DUPLICATE] * 2 + [OutcomeKind.APPLIED]
    assert task.transcript_text() == "zero two"
    assert task.transcript_text(include_partials=True) == "zero two thr"
    assert task.gaps == [range(1, 2)]


def test_a_conflicting_final_keeps_the_first_text_and_is_not_applied() -> None:
    task = task_in(TaskState.RUNNING)
    assert task.task_id is not None
    task.segment(Segment(task.task_id, 0, final=True, text="first"))
    assert task.segment(Segment(task.task_id, 0, final=True, text="second")) == Outcome.DUPLICATE
    assert task.transcript_text() == "first"


def test_a_task_with_no_segments_has_no_transcript_and_no_gaps() -> None:
    task = task_in(TaskState.RUNNING)
    assert (task.transcript_text(), task.gaps, len(task.transcript)) == ("", [], 0)


def test_repr_names_the_task_but_never_its_params() -> None:
    task = StreamTask("audio", {"audio_url": "rtmp://host/live/SECRET-STREAM-KEY"})
    assert "SECRET-STREAM-KEY" not in repr(task)
    assert repr(task) == f"StreamTask(ref={task.ref}, kind='audio', task_id=None, state='pending')"


def test_a_task_is_small() -> None:
    """No per-task dict: every attribute is a slot (the bytes are measured in bench/)."""
    task = StreamTask("audio")
    assert not hasattr(task, "__dict__")
    with pytest.raises(AttributeError):
        task.colour = "blue"  # type: ignore[attr-defined]


@given(
    limit=st.integers(1, 6),
    segments=st.lists(st.tuples(st.integers(0, 30), st.booleans()), max_size=60),
)
def test_a_history_limit_keeps_the_newest_entries_exactly_as_they_were(
    limit: int, segments: list[tuple[int, bool]]
) -> None:
    """A bounded task tells the same story as an unbounded twin, of which it keeps the end."""
    bounded, twin = task_in(TaskState.RUNNING), task_in(TaskState.RUNNING)
    bounded.history_limit = limit
    for index, final in segments:
        segment = Segment(TASK_ID, index, final, f"text {index}")
        assert bounded.segment(segment) == twin.segment(segment)
    bounded.stop()
    twin.stop()
    kept = len(bounded.history)
    assert min(limit, len(twin.history)) <= kept <= 2 * limit
    assert bounded.history == twin.history[-kept:]  # seq included: entries keep their numbers
    assert (bounded.state, list(bounded.transcript)) == (twin.state, list(twin.transcript))


def test_an_adopted_task_stays_adopted_when_its_adopt_entry_is_let_go() -> None:
    task = StreamTask("audio")
    task.history_limit = 1
    task.adopt(TASK_ID)
    for index in range(5):
        task.segment(Segment(TASK_ID, index, True, "x"))
    assert {entry.trigger for entry in task.history} == {"segment"}
    assert task.adopted


# -- AssemblyAI's format_turns: a turn ends twice, unformatted then formatted -----------------------
def test_a_formatted_final_replaces_the_unformatted_one_with_no_conflict() -> None:
    task = task_in(TaskState.RUNNING)
    unformatted = Segment(TASK_ID, 0, True, "how are you")
    formatted = Segment(TASK_ID, 0, True, "How are you?", formatted=True)
    with capture_logs() as logs:
        outcomes = [task.segment(s) for s in (unformatted, formatted, unformatted, formatted)]
    assert outcomes == [Outcome.APPLIED, Outcome.APPLIED, Outcome.DUPLICATE, Outcome.DUPLICATE]
    assert "streamlife.transcript_conflict" not in [entry["event"] for entry in logs]
    assert task.transcript_text() == "How are you?"
    assert list(task.transcript) == [Segment(TASK_ID, 0, True, "How are you?", formatted=True)]


def test_a_journaled_segment_keeps_formatted_and_writes_it_only_when_true() -> None:
    formatted = Segment(
        TASK_ID, 2, True, "How are you?", raw={"data": {"turn_is_formatted": True}}, formatted=True
    )
    plain = Segment(TASK_ID, 2, True, "how are you")
    assert decode_event(json.loads(json.dumps(encode_event(formatted)))) == formatted
    assert encode_event(formatted)["segment"]["formatted"] is True
    assert "formatted" not in encode_event(plain)["segment"]  # a journal from before reads the same
    older = {
        "segment": {"index": 2, "final": True, "text": "how are you", "start": None, "end": None},
        "on": TASK_ID,
    }
    assert decode_event(older) == plain


# -- a journal, as a Fleet writes it: one entry per applied event -----------------------------------
class Journaled:
    """A task fired as a Fleet fires it, with the journal the Fleet would write (each applied
    event's entry, its argument through JSON as a store keeps it)."""

    def __init__(self, clock: ManualClock | None = None) -> None:
        self.clock = clock or ManualClock(1_700_000_000.0)
        self.task = StreamTask("audio", clock=self.clock)
        self.entries: list[JournalEntry] = []
        if clock is None:
            self.fire("start")
            self.fire("start_ok", TASK_ID)

    def fire(self, trigger: str, *args: object) -> Outcome:
        self.clock.advance(1.0)
        outcome: Outcome = getattr(self.task, trigger)(*args)
        if outcome is Outcome.APPLIED:
            entry = entry_for(self.task, len(self.entries) + 1, args)
            self.entries.append(entry._replace(args=json.loads(json.dumps(entry.args))))
        return outcome

    def rebuilt(self, clock: ManualClock | None = None) -> StreamTask:
        """The task its row and journal describe, as ``recover`` or another process has it."""
        row = row_for(self.task, "key", len(self.entries), 1_700_000_000.0)
        return rebuild(row, self.entries, clock=clock or ManualClock())

    def handed_over(self) -> Journaled:
        """Another process's copy of the task: rebuilt from the journal so far, journaling on."""
        other = Journaled(self.clock)
        other.task, other.entries = self.rebuilt(self.clock), list(self.entries)
        return other


# -- the stop callback names the last segment ------------------------------------------------------
def test_the_stop_callbacks_last_index_shows_trailing_segments_with_no_final_as_gaps() -> None:
    journaled = Journaled()
    for index in range(4):
        journaled.fire("segment", Segment(TASK_ID, index, True, f"text {index}"))
    journaled.fire("stop")
    assert journaled.task.gaps == []
    stop_callback = StatusCallback(TASK_ID, 14, "Stream stopped by user", last_index=6)
    assert journaled.fire("stopped", stop_callback) == Outcome.APPLIED
    assert journaled.task.gaps == [range(4, 7)]
    assert journaled.task.transcript.last_index == 6
    rebuilt = journaled.rebuilt()  # the bound comes back with the callback that named it
    assert (rebuilt.gaps, rebuilt.transcript.last_index) == ([range(4, 7)], 6)


def test_a_status_14_after_the_final_wait_still_names_the_last_segment() -> None:
    task = task_in(TaskState.STOPPING)
    task.stop_ok()
    task.final_deadline()  # the final callback was late: the task is stopped without it
    assert (task.state, task.end_status, task.gaps) == (TaskState.STOPPED, None, [])
    late = StatusCallback(TASK_ID, 14, last_index=2)
    assert task.stopped(late) == Outcome.APPLIED
    assert (task.state, task.end_status, task.gaps) == (TaskState.STOPPED, 14, [range(3)])
    assert task.stopped(late) == Outcome.DUPLICATE  # a plain repeat tells nothing new
    ended = task_in(TaskState.ENDED)
    assert ended.ended(StatusCallback(TASK_ID, 12, last_index=9)) == Outcome.DUPLICATE
    assert ended.transcript.last_index is None  # only a status 14 is read after the end


def test_a_journaled_status_callback_keeps_its_last_index_and_writes_it_only_when_known() -> None:
    named = StatusCallback(
        TASK_ID, 14, "Stream stopped by user", {"data": {"segment_index": 6}}, last_index=6
    )
    assert decode_event(json.loads(json.dumps(encode_event(named)))) == named
    unnamed = StatusCallback(TASK_ID, 14)
    assert "last_index" not in encode_event(unnamed)["status"]
    older = {"status": {"status": 14, "message": None, "meaning": None}, "on": TASK_ID}
    assert decode_event(older) == unnamed


# -- after the end: a final delivered late still completes the transcript ---------------------------
def test_a_late_final_is_kept_and_journaled_and_a_late_partial_changes_nothing() -> None:
    journaled = Journaled()
    journaled.fire("segment", Segment(TASK_ID, 0, True, "zero"))
    journaled.fire("segment", Segment(TASK_ID, 1, False, "on"))
    assert journaled.fire("silence") == Outcome.APPLIED
    journaled.fire("stop")
    journaled.fire("stopped", StatusCallback(TASK_ID, 14, last_index=2))
    task = journaled.task
    revision = task.revision
    assert journaled.fire("segment", Segment(TASK_ID, 2, False, "tw")) == Outcome.LATE
    assert journaled.fire("segment", Segment(TASK_ID, 1, True, "one")) == Outcome.APPLIED
    assert journaled.fire("segment", Segment(TASK_ID, 1, True, "one")) == Outcome.DUPLICATE
    assert (task.state, task.transcript_text(include_partials=True)) == (TaskState.STOPPED, "zero one")
    assert (task.transcript.late, task.gaps) == (frozenset({1}), [range(2, 3)])
    assert task.stalled  # old news from a stream that is gone: what was true of it stays true
    assert task.revision == revision  # the row is as it was: the Fleet journals the entry alone
    rebuilt = journaled.rebuilt()
    assert (rebuilt.state, list(rebuilt.transcript), rebuilt.transcript.late) == (
        TaskState.STOPPED,
        list(task.transcript),
        frozenset({1}),
    )


# -- ElevenLabs transcripts forwarded with no index: the task numbers them ---------------------------
def forwarded(utterance: int, final: bool, words: int = 3) -> bytes:
    """An ElevenLabs message as memories.ai forwards it: no index anywhere. Utterance 3 says
    what utterance 0 says, word for word: its commit is indistinguishable from a redelivery."""
    text = ["one two three", "four five six", "seven eight nine", "one two three"][utterance]
    kind = "committed_transcript" if final else "partial_transcript"
    said = text if final else " ".join(text.split()[:words])
    return json.dumps({"task_id": TASK_ID, "data": {"message_type": kind, "text": said}}).encode()


def test_the_history_records_the_number_a_forwarded_message_took() -> None:
    task = task_in(TaskState.RUNNING)
    outcomes = [
        task.segment(parse_segment(forwarded(0, False, 1))),
        task.segment(parse_segment(forwarded(0, True))),
        task.segment(parse_segment(forwarded(0, True))),  # redelivered: a duplicate, no number taken
        task.segment(parse_segment(forwarded(1, True))),
    ]
    assert outcomes == [Outcome.APPLIED, Outcome.APPLIED, Outcome.DUPLICATE, Outcome.APPLIED]
    assert [entry.data for entry in task.history][-4:] == [
        {"index": 0, "final": False},
        {"index": 0, "final": True},
        {"index": 0, "final": True},
        {"index": 1, "final": True},
    ]
    assert task.transcript_text() == "one two three four five six"


def parse_segment(payload: bytes) -> Segment:
    event = parse_callback(payload)
    assert isinstance(event, Segment)
    return event


# A message: which utterance, committed or partial, and how many words a partial has heard.
MESSAGES = st.tuples(st.integers(0, 3), st.booleans(), st.integers(1, 3))


@given(st.lists(MESSAGES, max_size=30), st.integers(0, 30))
def test_forwarded_messages_are_numbered_alike_live_in_two_processes_and_after_replay(
    messages: list[tuple[int, bool, int]], handover: int
) -> None:
    """Any run of partials and commits, repeats included: one process applies the first part, a
    second catches up from the journal and applies the rest. A replay of the whole journal holds
    the same transcript, numbers and history as each, and a process that saw it all alone."""
    payloads = [forwarded(*message) for message in messages]
    alone, first = Journaled(), Journaled()
    for payload in payloads:
        alone.fire("segment", parse_segment(payload))
    for payload in payloads[:handover]:
        first.fire("segment", parse_segment(payload))
    second = first.handed_over()
    for payload in payloads[handover:]:
        second.fire("segment", parse_segment(payload))
    replayed = second.rebuilt()

    def told(task: StreamTask) -> list[tuple[object, ...]]:
        return [(e.trigger, e.data) for e in task.history if e.outcome is Outcome.APPLIED]

    assert list(replayed.transcript) == list(second.task.transcript) == list(alone.task.transcript)
    assert told(replayed) == told(alone.task)
    assert second.entries == alone.entries
    # Every distinct commit took one number, in the order it first came; nothing else took one.
    commits = list(
        dict.fromkeys(payload for payload, (_, final, _) in zip(payloads, messages, strict=True) if final)
    )
    assert [(s.index, s.text) for s in alone.task.transcript.finals()] == [
        (n, json.loads(commit)["data"]["text"]) for n, commit in enumerate(commits)
    ]
    assert alone.task.gaps == []
    assert [s.index for s in alone.task.transcript if not s.final] in ([], [len(commits)])


def test_a_foreign_callback_reads_back_from_its_journal_encoding() -> None:
    """No task applies one, but the encoding is total: a caller may keep one as it keeps events."""
    clip = {"code": 200, "data": {"video_url": "u"}}
    for foreign in (ForeignCallback("1e8ae1075e054e8abb58e7598c53cbf1", clip), ForeignCallback(None, clip)):
        assert decode_event(json.loads(json.dumps(encode_event(foreign)))) == foreign
