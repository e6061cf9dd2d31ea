"""Random trigger sequences on several tasks, checked against a plain reference model.

The model below is written from the lifecycle's prose, not from ``TABLE``: if the table and the
prose disagree, this test finds the sequence that shows it. Invariants checked after every step:

* a terminal state never changes;
* history is a path through the table: each entry starts where the previous one ended, and
  moves only as its cell allows;
* exactly one ``start_ok``, ``named`` or ``adopt`` is ever applied to a task that has a task_id, none
  otherwise;
* ``stop`` is legal in every state (it never raises);
* a rejected local move leaves state and history untouched;
* time in history never goes backwards, even when the wall clock steps back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from streamlife import (
    LocalTransitionError,
    OutcomeKind,
    Segment,
    StatusCallback,
    StreamKind,
    StreamTask,
    TaskState,
)
from streamlife._callbacks import PROVIDER_ENDED
from streamlife.lifecycle import CELLS, NO, TERMINAL, TRIGGERS
from streamlife.protocol import URL_FIELD
from tests.conftest import ROW_FIELDS

P, S, U, R, T = (
    TaskState.PENDING,
    TaskState.STARTING,
    TaskState.UNCERTAIN,
    TaskState.RUNNING,
    TaskState.STOPPING,
)
E = TaskState.ENDING
STOPPED, ENDED, FAILED = TaskState.STOPPED, TaskState.ENDED, TaskState.FAILED
APPLIED, DUP, LATE, REJECTED = (
    OutcomeKind.APPLIED,
    OutcomeKind.DUPLICATE,
    OutcomeKind.LATE,
    OutcomeKind.REJECTED,
)
RAISES = "raises"
CALLBACKS = ("segment", "stopped", "ended", "capacity", "provider_ended")
STATUS = {"stopped": 14, "capacity": 16, "ended": 12, "provider_ended": PROVIDER_ENDED}
# In a terminal state, the callbacks that repeat how it ended (the provider's end of session
# echoes a stop; a status 14 that tells nothing new); every other callback there is late.
REPEATS = {
    STOPPED: {"stopped", "provider_ended"},
    ENDED: {"ended", "capacity", "provider_ended", "stopped"},
    FAILED: set(),  # (a failed task has no task_id: no callback reaches it)
}


@dataclass
class ModelTask:
    """What a task should be, kept with plain fields and no lifecycle code."""

    state: TaskState = P
    task_id: str | None = None
    stop_requested: bool = False
    stop_acknowledged: bool = False
    stalled: bool = False
    end_status: int | None = None  # the status of the last status callback applied
    kind: StreamKind = StreamKind.AUDIO  # learnt from an acknowledged stop that found another product
    # index -> (final, text): the transcript rule in its plainest form
    segments: dict[int | None, tuple[bool, str]] = field(default_factory=dict)


def segment_is_new(model: ModelTask, index: int | None, final: bool, text: str) -> bool:
    kept = model.segments.get(index)
    if kept is None or (not kept[0] and (final or kept[1] != text)):
        model.segments[index] = (final, text)
        return True
    return False


def expect(model: ModelTask, trigger: str, arg: object) -> tuple[TaskState, object]:
    """The state and outcome the lifecycle's prose promises; RAISES for a refused local call. Mutates."""
    state = model.state
    if trigger == "start":
        return (S, APPLIED) if state is P else (state, RAISES)
    if trigger == "stop":
        if state is P:
            model.stop_requested = True
            return STOPPED, APPLIED
        if state in (S, U, E):  # remembered: sent with the task_id, or on its way already
            first = not model.stop_requested
            model.stop_requested = True
            return state, APPLIED if first else DUP
        if state is R:
            model.stop_requested = True
            return T, APPLIED
        return state, DUP  # joins the stop in flight, or a no-op once ended
    if trigger in ("start_ok", "named") and state in (S, U):
        # the answer came after all (another process had it), or a callback on the task's own
        # URL named the stream before any answer did
        model.task_id = str(arg)
        return R, APPLIED
    if trigger in ("start_ok", "named") and model.task_id is not None and arg != model.task_id:
        return state, REJECTED  # names another stream than the one the task knows
    if trigger == "named":  # the task has its name (or it ended, or it never started)
        if state in (R, T, E):
            return state, DUP
        return state, (REJECTED if state is P else LATE)
    if trigger in ("start_ok", "start_rejected", "start_unknown", "start_deferred") and state is not S:
        if state in (STOPPED, ENDED):  # after a stop or an end (a callback named the stream first)
            return state, LATE
        if state in (R, T, E) and trigger in ("start_ok", "start_unknown"):
            return state, DUP  # the stream was named: the answer repeats it, or says nothing new
        # nothing was created, says the answer, yet the stream was named: refused; and a start
        # answer never answers anything but a start in flight
        return state, REJECTED
    if trigger in ("start_ok", "start_rejected", "start_unknown", "start_deferred"):
        if trigger == "start_ok":
            model.task_id = str(arg)
        # A start refused for now created nothing: the task waits to be started again.
        return {"start_ok": R, "start_rejected": FAILED, "start_unknown": U, "start_deferred": P}[
            trigger
        ], APPLIED
    if trigger == "adopt":  # only a task made for an orphan, before anything else happened to it
        if state is not P:
            return state, REJECTED
        model.task_id = str(arg)
        return R, APPLIED
    if trigger in CALLBACKS and getattr(arg, "task_id", None) != model.task_id:
        return state, REJECTED  # addressed to another task
    if trigger == "segment" and state in (STOPPED, ENDED):  # a final delivered late is still kept
        assert isinstance(arg, Segment)
        assert arg.text is not None
        if not arg.final:
            return state, LATE
        return state, APPLIED if segment_is_new(model, arg.index, arg.final, arg.text) else DUP
    if state in TERMINAL:
        if trigger == "stopped" and state in (STOPPED, ENDED) and model.end_status is None:
            model.end_status = STATUS[trigger]  # the 14 after the final wait ran out: kept
            return state, APPLIED
        if trigger in REPEATS[state]:
            return state, DUP  # the callback that ended it, again
        return state, LATE
    if trigger in CALLBACKS:
        if state not in (R, T, E):
            return state, REJECTED
        if trigger == "segment":
            assert isinstance(arg, Segment)
            assert arg.text is not None
            if segment_is_new(model, arg.index, arg.final, arg.text):
                model.stalled = False
                return state, APPLIED
            return state, DUP
        if state is E and trigger != "stopped":  # the end is already inferred; the confirming stop goes on
            return E, DUP
        if trigger == "provider_ended" and state is T and not model.stop_acknowledged:
            return T, REJECTED  # not the echo of a stop that has not landed: the stream may bill
        model.end_status = STATUS[trigger]
        if trigger == "stopped":  # the service says the stream stopped: nothing bills
            return STOPPED, APPLIED
        if state is R:  # an end the task infers: a stop must confirm it
            return E, APPLIED
        # While our stop is on its way, an end changes nothing but the recorded status; the
        # provider's end of session is the stop's echo once the stop was acknowledged.
        return (STOPPED if trigger == "provider_ended" else T), APPLIED
    if trigger in ("stop_ok", "stop_not_found", "stop_confirmed", "stop_error"):
        if state not in (T, E):
            return state, REJECTED
        if trigger == "stop_ok":
            first = not model.stop_acknowledged
            model.stop_acknowledged = True
            if first and arg is not None:
                model.kind = StreamKind(str(arg))
            return state, APPLIED if first else DUP
        if trigger == "stop_not_found":  # the service knows no such stream: the end is confirmed
            return (STOPPED if state is T else ENDED), APPLIED
        if trigger == "stop_confirmed":  # the stop's answer itself says stopped (a final answer)
            model.stop_acknowledged = True
            return (STOPPED if state is T else ENDED), APPLIED
        return state, APPLIED
    if trigger == "final_deadline":  # only an acknowledged stop may end by waiting
        if state in (T, E) and model.stop_acknowledged:
            return (STOPPED if state is T else ENDED), APPLIED
        return state, REJECTED
    if trigger == "uncertain_deadline":
        return (FAILED, APPLIED) if state is U else (state, REJECTED)
    if trigger == "silence":
        if state is not R:
            return state, REJECTED
        first = not model.stalled
        model.stalled = True
        return R, APPLIED if first else DUP
    raise AssertionError(f"the model does not know {trigger!r}")


class Clock:
    """A wall clock the test can step backwards, as NTP sometimes does."""

    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def now(self) -> float:
        return self.t


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.models: dict[int, ModelTask] = {}
        self.live: dict[int, StreamTask] = {}
        self.terminal_seen: dict[int, TaskState] = {}

    @precondition(lambda self: sum(not t.terminal for t in self.live.values()) < 3)
    @rule(kind=st.sampled_from(StreamKind))
    def new_task(self, kind: StreamKind) -> None:
        task = StreamTask(kind, {URL_FIELD[kind]: "rtmp://x.invalid/live"}, clock=self.clock)
        self.models[task.ref] = ModelTask(kind=kind)  # one table, whatever the product
        self.live[task.ref] = task

    @rule(seconds=st.floats(min_value=-30, max_value=60, allow_nan=False))
    def move_the_clock(self, seconds: float) -> None:
        self.clock.t += seconds  # backwards too: history must still read forwards

    @precondition(lambda self: bool(self.live))
    @rule(data=st.data())
    def fire(self, data: st.DataObject) -> None:
        """Fire one trigger: mostly at a task still alive, mostly one its state accepts."""
        alive = [t for t in self.live.values() if not t.terminal]
        prefer_alive = data.draw(st.integers(0, 7), label="alive") > 0
        candidates = alive if alive and prefer_alive else list(self.live.values())
        task = data.draw(st.sampled_from(candidates), label="task")
        accepted = [t for t in TRIGGERS if CELLS[task.state, t] is not NO]
        prefer_accepted = data.draw(st.integers(0, 7), label="bias") > 0
        pool = accepted if accepted and prefer_accepted else list(TRIGGERS)
        trigger = data.draw(st.sampled_from(pool), label="trigger")
        self._fire_and_compare(task, trigger, self._argument(task, trigger, data))

    def _argument(self, task: StreamTask, trigger: str, data: st.DataObject) -> object:
        misaddressed = task.task_id is None or data.draw(st.integers(0, 9), label="stray") == 0
        task_id = "someone-else" if misaddressed else task.task_id
        assert task_id is not None
        if trigger in ("start_ok", "adopt", "named"):  # now and then another stream's
            stray = data.draw(st.integers(0, 9), label="other stream") == 0
            return f"tid-{task.ref}-other" if stray else f"tid-{task.ref}"
        if trigger in ("start_rejected", "start_unknown", "start_deferred", "stop_error"):
            return RuntimeError(trigger)
        if trigger == "segment":
            index = data.draw(st.integers(0, 3), label="index")
            final = data.draw(st.booleans(), label="final")
            text = data.draw(st.sampled_from(["a", "b"]), label="text")
            return Segment(task_id, index, final, text)
        if trigger in STATUS:
            return StatusCallback(task_id, STATUS[trigger])
        if trigger == "stop_ok":  # with the product the stop was found on, now and then
            return data.draw(st.none() | st.sampled_from(StreamKind), label="found on")
        return None

    def _fire_and_compare(self, task: StreamTask, trigger: str, arg: object) -> None:
        model = self.models[task.ref]
        state_before, history_before = task.state, list(task.history)
        revision_before, row_before = task.revision, ROW_FIELDS(task)
        expected_state, expected = expect(model, trigger, arg)
        args = () if arg is None else (arg,)
        if expected == RAISES:
            with pytest.raises(LocalTransitionError):
                getattr(task, trigger)(*args)
            assert task.state is state_before
            assert task.history == history_before
            return
        outcome = getattr(task, trigger)(*args)
        if task.revision == revision_before:  # what lets a Fleet write no row for the event
            assert ROW_FIELDS(task) == row_before, (trigger, state_before, outcome)
        assert outcome.kind is expected, (trigger, state_before, outcome)
        assert task.state is expected_state
        model.state = expected_state
        assert task.history[:-1] == history_before
        assert (task.stop_requested, task.stop_acknowledged, task.stalled) == (
            model.stop_requested,
            model.stop_acknowledged,
            model.stalled,
        )
        assert task.task_id == model.task_id
        assert task.kind is model.kind
        assert task.end_status == model.end_status

    @invariant()
    def a_terminal_state_never_changes(self) -> None:
        for task in self.live.values():
            if task.ref in self.terminal_seen:
                assert task.state is self.terminal_seen[task.ref]
            elif task.state in TERMINAL:
                self.terminal_seen[task.ref] = task.state

    @invariant()
    def history_is_a_path_through_the_table(self) -> None:
        for task in self.live.values():
            where = TaskState.PENDING
            for seq, entry in enumerate(task.history, start=1):
                assert entry.seq == seq
                assert entry.from_state is where
                cell = CELLS[entry.from_state, entry.trigger]
                if entry.outcome.kind is APPLIED:
                    assert isinstance(cell, TaskState)
                    assert entry.to_state is cell
                else:
                    assert entry.to_state is entry.from_state
                where = entry.to_state
            assert where is task.state

    @invariant()
    def exactly_one_start_ok_or_adopt_is_applied_to_a_task_with_a_task_id(self) -> None:
        for task in self.live.values():
            namers = ("start_ok", "adopt", "named")
            applied = [e for e in task.history if e.trigger in namers and e.outcome.kind is APPLIED]
            assert len(applied) == (0 if task.task_id is None else 1)

    @invariant()
    def time_in_history_never_goes_backwards(self) -> None:
        for task in self.live.values():
            times = [entry.at for entry in task.history]
            assert times == sorted(times)

    @invariant()
    def the_transcript_matches_the_model(self) -> None:
        for task in self.live.values():
            model = self.models[task.ref]
            kept = {s.index: (s.final, s.text) for s in task.transcript}
            assert kept == model.segments


# Inherits the profile loaded in conftest (ci: 200 examples, derandomized; soak: 5,000).
LifecycleMachine.TestCase.settings = settings(stateful_step_count=100)
TestLifecycle = LifecycleMachine.TestCase
