"""Every state x trigger pair, generated from the table, then the lifecycle's rules stated by hand.

The generated tests check that the task does what the table says; the hand-written ones check
that the table says what the lifecycle's theory of operation promises (docs/architecture.md), so
neither can drift alone.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

import streamlife._task
from streamlife import (
    LocalTransitionError,
    ManualClock,
    Outcome,
    OutcomeKind,
    Segment,
    StatusCallback,
    StreamKind,
    StreamTask,
    TaskState,
    lifecycle,
)
from streamlife._callbacks import PROVIDER_ENDED
from streamlife.lifecycle import (
    ARGUMENTS,
    CELLS,
    CONFIRMING,
    DUP,
    LATE,
    MACHINE,
    NO,
    SILENT_LOOPS,
    STATES,
    TERMINAL,
    TRIGGERS,
    Argument,
    Source,
    build_machine,
    silent_loops,
)
from tests.conftest import event_args, fire, state_of, task_in

PAIRS = [(state, trigger) for state in STATES for trigger in TRIGGERS]


@pytest.mark.parametrize("kind", list(StreamKind))
@pytest.mark.parametrize(("state", "trigger"), PAIRS, ids=[f"{s.value}-{t}" for s, t in PAIRS])
def test_every_state_and_trigger_does_what_the_table_says(
    state: TaskState, trigger: str, kind: StreamKind
) -> None:
    """One table for every product: a task of each kind moves through the same cells."""
    task = task_in(state, ready_for=trigger, kind=kind)
    entries_before = len(task.history)
    cell = CELLS[state, trigger]

    if cell is NO and TRIGGERS[trigger] is Source.LOCAL:
        with pytest.raises(LocalTransitionError) as refused:
            fire(task, trigger)
        assert (refused.value.trigger, refused.value.state) == (trigger, state.value)
        assert task.state is state
        assert len(task.history) == entries_before
        return

    outcome = fire(task, trigger)
    verdicts = {NO: OutcomeKind.REJECTED, DUP: OutcomeKind.DUPLICATE, LATE: OutcomeKind.LATE}
    expected_kind = OutcomeKind.APPLIED if isinstance(cell, TaskState) else verdicts[cell]
    # (``named`` is the one callback trigger that is not addressed: it gives a task its name)
    misaddressed = cell is not NO and ARGUMENTS[trigger] is Argument.CALLBACK and task.task_id is None
    if misaddressed:  # no start named this task (a failed one): no callback is addressed to it
        cell, expected_kind = NO, OutcomeKind.REJECTED
    assert outcome.kind is expected_kind
    assert task.state is (cell if isinstance(cell, TaskState) else state)
    entry = task.history[-1]
    assert len(task.history) == entries_before + 1
    assert (entry.trigger, entry.from_state, entry.to_state, entry.outcome) == (
        trigger,
        state,
        task.state,
        outcome,
    )
    assert entry.source is TRIGGERS[trigger]
    if outcome.kind is OutcomeKind.REJECTED:
        assert outcome.reason is not None
        assert trigger in outcome.reason
        assert ("sent to this task" if misaddressed else state.value) in outcome.reason


@pytest.mark.parametrize(("state", "trigger"), PAIRS, ids=[f"{s.value}-{t}" for s, t in PAIRS])
def test_the_shared_machine_holds_exactly_the_moves_of_the_table(state: TaskState, trigger: str) -> None:
    cell = CELLS[state, trigger]
    moves = MACHINE.events[trigger].transitions.get(state.name, [])
    if isinstance(cell, TaskState):
        assert len(moves) == 1
        assert moves[0].dest == (None if cell is state else cell.name)
    else:
        assert moves == []


def test_every_trigger_is_a_method_of_the_same_name() -> None:
    task = task_in(TaskState.PENDING)
    for trigger in TRIGGERS:
        assert callable(getattr(task, trigger)), trigger


def test_the_machine_has_no_models_and_no_generated_triggers() -> None:
    assert MACHINE.models == []
    assert set(MACHINE.events) == set(TRIGGERS)  # auto_transitions off: no to_<state> events


# -- The lifecycle's rules, written out by hand (its theory of operation) ---------------------


@pytest.mark.parametrize("state", STATES)
def test_stop_is_legal_in_every_state(state: TaskState) -> None:
    outcome = task_in(state).stop()
    assert outcome.kind in (OutcomeKind.APPLIED, OutcomeKind.DUPLICATE)


def test_stop_while_pending_ends_the_task_without_a_request() -> None:
    task = task_in(TaskState.PENDING)
    assert task.stop() == Outcome.APPLIED
    assert task.state is TaskState.STOPPED
    assert [entry.trigger for entry in task.history] == ["stop"]


@pytest.mark.parametrize("state", [TaskState.STARTING, TaskState.UNCERTAIN])
def test_stop_before_a_task_id_is_remembered(state: TaskState) -> None:
    task = task_in(state)
    assert task.stop() == Outcome.APPLIED
    assert (task.state, task.stop_requested) == (state, True)
    assert task.stop() == Outcome.DUPLICATE  # asked twice, remembered once


def test_a_remembered_stop_is_sent_once_the_task_id_arrives() -> None:
    task = task_in(TaskState.STARTING)
    task.stop()
    task.start_ok("abc")
    assert task.stop_requested
    assert task.stop() == Outcome.APPLIED
    assert task.state is TaskState.STOPPING


@pytest.mark.parametrize("state", [TaskState.STOPPING, *sorted(TERMINAL)])
def test_stop_joins_a_stop_in_flight_or_is_a_no_op_once_ended(state: TaskState) -> None:
    task = task_in(state)
    history = list(task.history)
    assert task.stop() == Outcome.DUPLICATE
    assert task.state is state
    assert task.history[:-1] == history


def test_a_start_timeout_goes_to_uncertain_and_never_back_to_starting() -> None:
    task = task_in(TaskState.STARTING)
    task.start_unknown(TimeoutError("read timeout after sending"))
    assert task.state is TaskState.UNCERTAIN
    with pytest.raises(LocalTransitionError):
        task.start()
    assert task.uncertain_deadline() == Outcome.APPLIED
    assert state_of(task) is TaskState.FAILED


def test_a_segment_while_stopping_is_applied_and_after_the_end_only_a_final_is() -> None:
    task = task_in(TaskState.STOPPING)
    assert task.segment(_segment(task, 3)) == Outcome.APPLIED
    task.stopped(_status(task, 14))
    assert task.segment(_segment(task, 4)) == Outcome.APPLIED  # a final in flight at the stop
    assert task.segment(dataclasses.replace(_segment(task, 5), final=False)) == Outcome.LATE
    assert task.state is TaskState.STOPPED
    assert [s.index for s in task.transcript] == [3, 4]
    assert task.transcript.late == frozenset({4})


@pytest.mark.parametrize("state", [TaskState.STOPPED, TaskState.ENDED])
def test_after_the_end_a_final_is_kept_as_late(state: TaskState) -> None:
    # (A failed task has no task_id: no callback can reach it, and its segment cell is LATE.)
    task = task_in(state)
    partial = dataclasses.replace(_segment(task, 1), final=False)
    assert task.segment(partial) == Outcome.LATE
    assert task.segment(_segment(task, 0)) == Outcome.APPLIED
    assert task.segment(_segment(task, 0)) == Outcome.DUPLICATE
    assert task.state is state
    assert [(s.index, s.final) for s in task.transcript] == [(0, True)]
    assert task.transcript.late == frozenset({0})
    assert [entry.outcome.kind for entry in task.history][-3:] == [
        OutcomeKind.LATE,
        OutcomeKind.APPLIED,
        OutcomeKind.DUPLICATE,
    ]


@pytest.mark.parametrize(
    ("trigger", "state"),
    [
        ("stopped", TaskState.STOPPED),
        ("provider_ended", TaskState.STOPPED),
        ("ended", TaskState.ENDED),
        ("capacity", TaskState.ENDED),
    ],
)
def test_the_callback_that_ended_a_task_repeats_as_a_duplicate(trigger: str, state: TaskState) -> None:
    task = task_in(TaskState.RUNNING)
    (callback,) = event_args(task, trigger)
    task = task_in(state)
    assert getattr(task, trigger)(dataclasses.replace(callback, task_id=task.task_id)) == Outcome.DUPLICATE
    assert task.state is state


@pytest.mark.parametrize("trigger", ["ended", "capacity", "provider_ended"])
def test_an_end_the_task_infers_leaves_it_ending_until_a_stop_confirms_it(trigger: str) -> None:
    task = task_in(TaskState.RUNNING)
    assert fire(task, trigger) == Outcome.APPLIED
    assert (state_of(task), task.terminal) == (TaskState.ENDING, False)
    assert task.stop() == Outcome.APPLIED  # remembered; the confirming stop is on its way already
    assert (task.stop_requested, state_of(task)) == (True, TaskState.ENDING)
    assert task.stop() == Outcome.DUPLICATE
    assert fire(task, trigger) == Outcome.DUPLICATE
    assert task.final_deadline().kind is OutcomeKind.REJECTED  # no stop acknowledged yet
    assert task.stop_error(ConnectionError("refused")) == Outcome.APPLIED
    assert state_of(task) is TaskState.ENDING
    assert task.stop_not_found() == Outcome.APPLIED  # the service knows no such stream: it ended
    assert state_of(task) is TaskState.ENDED


def test_an_inferred_end_is_confirmed_by_an_acknowledged_stop_and_the_wait() -> None:
    # The other reading of "safe to call even if the stream has already ended": 200, and no 14.
    task = task_in(TaskState.ENDING)
    assert task.stop_ok() == Outcome.APPLIED
    assert state_of(task) is TaskState.ENDING
    assert task.final_deadline() == Outcome.APPLIED
    assert (state_of(task), task.final_callback_missing) == (TaskState.ENDED, True)


def test_a_confirming_stop_answered_by_status_14_stopped_a_stream_that_lived() -> None:
    task = task_in(TaskState.ENDING)
    task.stop_ok()
    assert task.stopped(_status(task, 14)) == Outcome.APPLIED
    assert (state_of(task), task.end_status) == (TaskState.STOPPED, 14)


def test_an_end_heard_while_stopping_leaves_the_stop_to_settle_the_task() -> None:
    task = task_in(TaskState.STOPPING)
    assert task.ended(_status(task, 12)) == Outcome.APPLIED
    assert task.capacity(_status(task, 16)) == Outcome.APPLIED
    assert (state_of(task), task.end_status) == (TaskState.STOPPING, 16)


def test_the_providers_end_of_session_while_stopping_is_our_stops_echo_once_acknowledged() -> None:
    task = task_in(TaskState.STOPPING)
    termination = StatusCallback(task.task_id or "", PROVIDER_ENDED, "assemblyai: Termination")
    refused = task.provider_ended(termination)  # the stop has not landed: the stream may still bill
    assert refused.kind is OutcomeKind.REJECTED
    assert refused.reason is not None
    assert "acknowledged" in refused.reason
    assert state_of(task) is TaskState.STOPPING
    task.stop_ok()
    assert task.provider_ended(termination) == Outcome.APPLIED
    assert state_of(task) is TaskState.STOPPED
    assert task.stopped(_status(task, 14)) == Outcome.DUPLICATE  # the 14 that follows


def test_a_deferred_start_is_pending_again_and_stops_for_free() -> None:
    task = task_in(TaskState.STARTING)
    assert task.start_deferred(RuntimeError("429")) == Outcome.APPLIED
    assert (state_of(task), task.last_error) == (TaskState.PENDING, "RuntimeError: 429")
    assert task.start() == Outcome.APPLIED
    task.start_deferred(RuntimeError("capacity 16"))
    assert task.stop() == Outcome.APPLIED
    assert state_of(task) is TaskState.STOPPED


@pytest.mark.parametrize(("state", "trigger"), PAIRS, ids=[f"{s.value}-{t}" for s, t in PAIRS])
def test_only_a_confirming_trigger_ends_a_task(state: TaskState, trigger: str) -> None:
    cell = CELLS[state, trigger]
    if cell in TERMINAL and state not in TERMINAL:
        assert trigger in CONFIRMING
    if trigger in ("ended", "capacity"):
        assert cell not in TERMINAL or cell is state  # an inferred end never ends a live task


def test_a_table_that_ends_a_task_on_an_inferred_end_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = dict(lifecycle.CELLS)
    broken[TaskState.RUNNING, "ended"] = TaskState.ENDED
    monkeypatch.setattr(lifecycle, "CELLS", broken)
    with pytest.raises(AssertionError, match="may still bill"):
        lifecycle._check_table()


@pytest.mark.parametrize(
    ("steps", "refusal"),
    [
        ((("start_ok", None),), "the table refuses"),  # a start answer nobody has
        ((("start", None),), "uncertain or terminal"),  # a deferred start left starting, owed by nobody
    ],
)
def test_a_recovery_that_would_leave_a_task_owed_by_nobody_is_refused(
    monkeypatch: pytest.MonkeyPatch, steps: tuple[tuple[str, str | None], ...], refusal: str
) -> None:
    monkeypatch.setattr(lifecycle, "ON_RECOVERY", {TaskState.PENDING: steps})
    with pytest.raises(AssertionError, match=refusal):
        lifecycle._check_table()


def test_a_deadline_that_fires_a_trigger_its_state_refuses_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = {
        **lifecycle.DEADLINES,
        TaskState.STOPPING: ((lifecycle.Deadline.SILENCE, lifecycle.Guard.ALWAYS),),
    }
    monkeypatch.setattr(lifecycle, "DEADLINES", broken)
    with pytest.raises(AssertionError, match="silence deadline fires a trigger stopping refuses"):
        lifecycle._check_table()


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_nothing_but_local_calls_can_raise_and_nothing_leaves_a_terminal_state(
    state: TaskState,
) -> None:
    for trigger, source in TRIGGERS.items():
        task = task_in(state)
        if source is Source.LOCAL and trigger == "start":
            with pytest.raises(LocalTransitionError):
                fire(task, trigger)
        else:
            fire(task, trigger)
        assert task.state is state


def test_exactly_one_start_ok_can_ever_apply() -> None:
    task = task_in(TaskState.RUNNING)
    assert task.start_ok("another").kind is OutcomeKind.REJECTED
    assert task.task_id != "another"


def test_a_stop_answer_after_the_status_14_callback_is_late() -> None:
    task = task_in(TaskState.STOPPING)
    task.stopped(_status(task, 14))
    assert task.stop_ok() == Outcome.LATE
    assert task.stop_not_found() == Outcome.LATE


def test_the_final_deadline_never_ends_a_stop_that_was_not_acknowledged() -> None:
    task = task_in(TaskState.STOPPING)
    task.stop_error(ConnectionError("the stop never landed"))
    outcome = task.final_deadline()
    assert outcome.kind is OutcomeKind.REJECTED
    assert outcome.reason is not None
    assert "acknowledged" in outcome.reason
    assert (task.state, task.final_callback_missing) == (TaskState.STOPPING, False)
    task.stop_ok()
    assert task.final_deadline() == Outcome.APPLIED
    assert (state_of(task), task.final_callback_missing) == (TaskState.STOPPED, True)


def test_a_clock_that_fails_leaves_the_task_untouched() -> None:
    class BrokenClock:
        def now(self) -> float:
            raise OSError("clock unavailable")

    task = StreamTask("audio", clock=BrokenClock())
    with pytest.raises(OSError, match="clock"):
        task.stop()
    assert (task.state, task.stop_requested, list(task.history)) == (TaskState.PENDING, False, [])


def test_stop_not_found_counts_as_the_end() -> None:
    task = task_in(TaskState.STOPPING)
    assert task.stop_not_found() == Outcome.APPLIED
    assert task.state is TaskState.STOPPED


@pytest.mark.parametrize("trigger", ["segment", "stopped", "ended", "capacity"])
def test_a_callback_for_another_task_id_is_rejected(trigger: str) -> None:
    never_started = task_in(TaskState.PENDING)
    never_started.stop()  # stopped with no task_id: nothing can be addressed to it
    running = task_in(TaskState.RUNNING)
    misaddressed = dataclasses.replace(event_args(running, trigger)[0], task_id="someone-else")
    for task in (never_started, running):
        state = task.state
        outcome = getattr(task, trigger)(misaddressed)
        assert outcome.kind is OutcomeKind.REJECTED
        assert task.state is state


def _segment(task: StreamTask, index: int) -> Segment:
    assert task.task_id is not None
    return Segment(task.task_id, index, final=True, text=f"text {index}")


def _status(task: StreamTask, status: int) -> StatusCallback:
    assert task.task_id is not None
    return StatusCallback(task.task_id, status)


# -- the shortcut: silent self-loops skip the Machine's dispatch -----------------------------------
def _without_the_shortcut(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streamlife._task, "SILENT_LOOPS", frozenset())
    monkeypatch.setattr(streamlife._task, "SEGMENT_LOOPS", frozenset())  # segments through _fire too


def _what_a_fire_leaves(task: StreamTask, trigger: str) -> tuple[object, ...]:
    try:
        outcome: object = fire(task, trigger)
    except LocalTransitionError as error:
        outcome = type(error)
    return (
        outcome,
        task.state,
        list(task.history),
        list(task.transcript),
        task.transcript.late,
        task.stalled,
        task.stop_requested,
    )


@pytest.mark.parametrize(("state", "trigger"), PAIRS, ids=[f"{s.value}-{t}" for s, t in PAIRS])
def test_the_shortcut_and_the_machine_leave_every_pair_alike(
    state: TaskState, trigger: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every state x trigger, through the shortcut and through the Machine's dispatch: the
    same outcome, state, history (times included) and data."""
    clock = ManualClock(1_700_000_000.0)
    shortcut = _what_a_fire_leaves(task_in(state, clock, ready_for=trigger), trigger)
    _without_the_shortcut(monkeypatch)
    dispatched = _what_a_fire_leaves(task_in(state, clock, ready_for=trigger), trigger)
    assert shortcut == dispatched


def test_only_internal_self_loops_are_taken_as_silent() -> None:
    assert SILENT_LOOPS, "the hot path would go through the Machine"
    for state, trigger in SILENT_LOOPS:
        assert CELLS[state, trigger] is state
    machine = build_machine()
    machine.before_state_change = ["something"]  # a machine-wide callback makes nothing silent
    assert silent_loops(machine) == frozenset()
    machine = build_machine()
    machine.events["segment"].transitions["RUNNING"][0].after = ["something"]
    assert (TaskState.RUNNING, "segment") not in silent_loops(machine)
    assert (TaskState.STOPPING, "segment") in silent_loops(machine)


@given(st.lists(st.sampled_from(list(TRIGGERS)), max_size=30))
def test_any_sequence_of_events_leaves_a_task_alike_on_both_paths(triggers: list[str]) -> None:
    def run() -> list[tuple[object, ...]]:
        task = StreamTask("audio", {"audio_url": "rtmp://example.invalid/live"}, clock=ManualClock(5.0))
        return [_what_a_fire_leaves(task, trigger) for trigger in triggers]

    shortcut = run()
    with pytest.MonkeyPatch.context() as monkeypatch:
        _without_the_shortcut(monkeypatch)
        dispatched = run()
    assert shortcut == dispatched


# A segment's fields, or a silence in between (it marks a running task stalled, which a new segment
# clears): repeats, partials, conflicts, moderation results with no text, and misaddressed ones.
_SEGMENT_OR_SILENCE = st.one_of(
    st.just("silence"),
    st.tuples(
        st.none() | st.integers(0, 3),  # None: a message forwarded with no index, which the task numbers
        st.booleans(),
        st.sampled_from(["a", "b", None]),
        st.sampled_from([None, 0.5]),
        st.booleans(),
    ),
)


@given(st.sampled_from(STATES), st.lists(_SEGMENT_OR_SILENCE, max_size=25))
def test_segments_in_any_state_leave_a_task_alike_on_both_paths(
    state: TaskState, events: list[str | tuple[int | None, bool, str | None, float | None, bool]]
) -> None:
    """The segment's shortcut (lifecycle.SEGMENT_LOOPS) against ``_fire`` with the Machine:
    the same outcome, state, history, transcript (late finals included) and stalled flag after
    every event."""

    def run() -> list[tuple[object, ...]]:
        task = task_in(state, ManualClock(7.0))
        left: list[tuple[object, ...]] = []
        for event in events:
            if isinstance(event, str):  # "silence"
                outcome: object = task.silence()
            else:
                index, final, text, start, misaddressed = event
                task_id = "someone-else" if misaddressed else task.task_id or "none-yet"
                raw = {"data": {"segment_index": index}}
                outcome = task.segment(Segment(task_id, index, final, text, start, None, raw))
            transcript = task.transcript
            left.append(
                (outcome, task.state, list(task.history), list(transcript), transcript.late, task.stalled)
            )
        return left

    shortcut = run()
    with pytest.MonkeyPatch.context() as monkeypatch:
        _without_the_shortcut(monkeypatch)
        dispatched = run()
    assert shortcut == dispatched


@pytest.mark.parametrize("trigger", sorted(lifecycle.AUTO_STOPS))
def test_an_automatic_stop_names_a_task_fact_and_a_policy_switch(trigger: str) -> None:
    """``AUTO_STOPS`` is read by name: a misspelt fact or switch would never stop a stream."""
    from streamlife import Policy

    rule = lifecycle.AUTO_STOPS[trigger]
    task = StreamTask("audio", None, clock=ManualClock())
    assert getattr(task, rule.fact) is False
    if rule.switch is not None:
        assert isinstance(getattr(Policy(), rule.switch), bool)


@pytest.mark.parametrize("state", STATES)
def test_each_state_arms_the_deadlines_its_table_row_names(state: TaskState) -> None:
    """With every guard met, a state arms exactly its ``DEADLINES`` row; a terminal state, none."""
    armed = lifecycle.deadlines_for(
        state, stalled=False, has_limit=True, stop_acknowledged=True, holds_start_body=True
    )
    assert armed == {deadline for deadline, _ in lifecycle.DEADLINES.get(state, ())}
    stalled = lifecycle.deadlines_for(
        state, stalled=True, has_limit=False, stop_acknowledged=False, holds_start_body=False
    )
    always = lifecycle.Guard.ALWAYS
    assert stalled == {deadline for deadline, guard in lifecycle.DEADLINES.get(state, ()) if guard is always}


@pytest.mark.parametrize("state", [TaskState.STARTING, TaskState.UNCERTAIN])
def test_a_callback_on_the_tasks_own_url_names_a_stream_no_start_answer_named(state: TaskState) -> None:
    task = task_in(state)
    task.stop()  # remembered while nothing names the stream
    assert task.named("tid-named") is Outcome.APPLIED
    assert (task.state, task.task_id, task.stop_requested) == (TaskState.RUNNING, "tid-named", True)
    assert task.started_at is not None  # it bills from here, as after a start answer


def test_a_start_answer_after_the_name_repeats_it_or_is_refused_and_never_moves_the_task() -> None:
    task = task_in(TaskState.STARTING)
    task.named("tid-named")
    assert task.start_ok("tid-named") is Outcome.DUPLICATE
    assert task.start_unknown(RuntimeError("lost")) is Outcome.DUPLICATE
    refused = [
        task.start_ok("tid-other"),
        task.start_rejected(RuntimeError("no")),
        task.start_deferred(RuntimeError("429")),
    ]
    assert [outcome.kind for outcome in refused] == [OutcomeKind.REJECTED] * 3
    assert (task.state, task.task_id, task.last_error) == (TaskState.RUNNING, "tid-named", None)
    task.stop()
    task.stop_confirmed()
    assert task.start_ok("tid-named") is Outcome.LATE
    assert task.state is TaskState.STOPPED


def test_a_second_name_is_a_duplicate_and_another_name_is_refused() -> None:
    task = task_in(TaskState.RUNNING)
    assert task.task_id is not None
    assert task.named(task.task_id) is Outcome.DUPLICATE
    assert task.named("tid-other").kind is OutcomeKind.REJECTED
    assert task.task_id != "tid-other"


@pytest.mark.parametrize(
    ("state", "trigger", "cell", "refusal"),
    [
        # a start answer that came after a callback named the stream must not move the task
        (TaskState.RUNNING, "start_deferred", TaskState.PENDING, "may have named the stream"),
        (TaskState.STOPPING, "start_ok", TaskState.RUNNING, "may have named the stream"),
        # naming moves a task where its start answer would
        (TaskState.STARTING, "named", TaskState.UNCERTAIN, "where its start answer would"),
    ],
)
def test_a_table_in_which_a_start_answer_undoes_a_name_is_refused(
    monkeypatch: pytest.MonkeyPatch, state: TaskState, trigger: str, cell: TaskState, refusal: str
) -> None:
    broken = dict(lifecycle.CELLS)
    broken[state, trigger] = cell
    monkeypatch.setattr(lifecycle, "CELLS", broken)
    with pytest.raises(AssertionError, match=refusal):
        lifecycle._check_table()
