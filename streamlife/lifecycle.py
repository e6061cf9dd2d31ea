"""The lifecycle of one stream task: its states, the transition table, and the one shared Machine.

Theory of operation
-------------------
A task hears from four sources: local calls (the engineer's code), transport results (our own
requests to memories.ai coming back), callbacks (memories.ai's webhooks) and timers. ``TABLE``
says, for every trigger in every state, what happens. A cell is one of:

    a state   the task moves there (or stays, when it names the state the task is in: a
              self-loop that applies data, such as a new segment)
    DUP       the event repeats what the task already knows; nothing changes
    LATE      the event came after the task ended; it is recorded, never applied
    NO        the event is impossible here: a local call raises LocalTransitionError and leaves
              the task untouched; any other source is recorded as REJECTED with the reason

An applied self-loop that finds nothing new to record (a segment already seen, a second stop while
starting) reports DUPLICATE: the table says what may happen, the task's data says whether it had.

Why some cells are what they are (the rules of design.md):
  * ``stop`` is legal everywhere. pending -> stopped with no request; starting/uncertain remember it
    (the Fleet sends it once a task_id exists, or the orphan reaper catches the stream); stopping
    and the terminal states answer DUP: the stop is already in effect.
  * start is billed and not idempotent: ``start_unknown`` (the request may have created a stream
    but no task_id came back) leads to ``uncertain``, never to a second start. A start answer that
    comes after all names the task (``uncertain`` -> ``running``): with several processes on one
    store, one may have filed a start as uncertain (its own ``recover``) while another still waited
    for the answer.
  * a segment while stopping is still applied (finals are in flight), and so is one after the
    stream stopped or ended: a final delivered late still completes the transcript (the task keeps
    it, marked late, and its state stays terminal), while a partial there, which only a final
    would replace, is LATE (the task's data decides, as for a repeated segment). A task that
    failed has no transcript to complete (its start failed, or the service refused it for
    capacity): a segment there is LATE.
  * ``final_deadline`` ends a stopping task only once its stop was acknowledged: the task refuses
    it before (REJECTED), because a stream whose stop never landed may still be billing.
  * in a terminal state every callback, deadline and stop answer is LATE, except the one repeating
    how the task ended (DUP) and a late segment (above); a start answer there is impossible, since
    a task only leaves ``starting`` on its start answer.

Every move goes through ONE ``transitions.Machine``, built from TABLE at import. Tasks are never
registered with it (``add_model`` is O(n) per add and costs kilobytes a task); ``StreamTask`` fires
the machine's Event objects on itself, so a task costs a few slots and no machine bookkeeping.
"""

from __future__ import annotations

import enum
from typing import Final

from transitions import Machine


class TaskState(enum.StrEnum):
    """Where a stream task is in its life. The last three are terminal."""

    PENDING = "pending"  # created locally, nothing sent
    STARTING = "starting"  # start request sent, no answer yet
    UNCERTAIN = "uncertain"  # start may have created a stream, but no task_id came back
    RUNNING = "running"  # the service accepted; task_id known; callbacks flow
    STOPPING = "stopping"  # stop asked for; waiting for the status-14 callback
    STOPPED = "stopped"  # status 14 came, or the stop was acknowledged and the wait ran out
    ENDED = "ended"  # the service ended the stream itself (a terminal status other than 14)
    FAILED = "failed"  # start rejected (4xx, capacity 16), or an uncertain start expired


class Source(enum.StrEnum):
    """Who caused an event: written into every history entry and log line."""

    LOCAL = "local"
    TRANSPORT = "transport"
    CALLBACK = "callback"
    TIMER = "timer"


class Verdict(enum.Enum):
    """The cells of TABLE that leave the state as it is without applying anything."""

    DUP = "dup"
    LATE = "late"
    NO = "no"

    def __repr__(self) -> str:
        return self.name


Cell = TaskState | Verdict

DUP, LATE, NO = Verdict.DUP, Verdict.LATE, Verdict.NO
pending, starting, uncertain, running, stopping, stopped, ended, failed = TaskState

STATES: Final = tuple(TaskState)
TERMINAL: Final = frozenset({TaskState.STOPPED, TaskState.ENDED, TaskState.FAILED})

# Who fires each trigger. The order is the order of TABLE's rows.
TRIGGERS: Final[dict[str, Source]] = {
    "start": Source.LOCAL,
    "stop": Source.LOCAL,
    "start_ok": Source.TRANSPORT,
    "start_rejected": Source.TRANSPORT,
    "start_unknown": Source.TRANSPORT,
    "stop_ok": Source.TRANSPORT,
    "stop_not_found": Source.TRANSPORT,
    "stop_error": Source.TRANSPORT,
    "segment": Source.CALLBACK,
    "stopped": Source.CALLBACK,
    "ended": Source.CALLBACK,
    "capacity": Source.CALLBACK,
    "adopt": Source.TIMER,
    "final_deadline": Source.TIMER,
    "uncertain_deadline": Source.TIMER,
    "silence": Source.TIMER,
}

# fmt: off
TABLE: Final[dict[str, tuple[Cell, ...]]] = {
    #                      pending   starting   uncertain  running   stopping  stopped  ended    failed
    # local calls
    "start":              (starting, NO,        NO,        NO,       NO,       NO,      NO,      NO),
    "stop":               (stopped,  starting,  uncertain, stopping, DUP,      DUP,     DUP,     DUP),
    # transport results
    "start_ok":           (NO,       running,   running,   NO,       NO,       NO,      NO,      NO),
    "start_rejected":     (NO,       failed,    NO,        NO,       NO,       NO,      NO,      NO),
    "start_unknown":      (NO,       uncertain, NO,        NO,       NO,       NO,      NO,      NO),
    "stop_ok":            (NO,       NO,        NO,        NO,       stopping, LATE,    LATE,    LATE),
    "stop_not_found":     (NO,       NO,        NO,        NO,       stopped,  LATE,    LATE,    LATE),
    "stop_error":         (NO,       NO,        NO,        NO,       stopping, LATE,    LATE,    LATE),
    # callbacks
    "segment":            (NO,       NO,        NO,        running,  stopping, stopped, ended,   LATE),
    "stopped":            (NO,       NO,        NO,        stopped,  stopped,  DUP,     LATE,    LATE),
    "ended":              (NO,       NO,        NO,        ended,    ended,    LATE,    DUP,     LATE),
    "capacity":           (NO,       NO,        NO,        failed,   failed,   LATE,    LATE,    DUP),
    # timers (adopt: callbacks for a task_id that no start of ours named outlived the parking TTL)
    "adopt":              (running,  NO,        NO,        NO,       NO,       NO,      NO,      NO),
    "final_deadline":     (NO,       NO,        NO,        NO,       stopped,  LATE,    LATE,    LATE),
    "uncertain_deadline": (NO,       NO,        failed,    NO,       NO,       LATE,    LATE,    LATE),
    "silence":            (NO,       NO,        NO,        running,  NO,       LATE,    LATE,    LATE),
}
# fmt: on

CELLS: Final[dict[tuple[TaskState, str], Cell]] = {
    (state, trigger): row[column] for trigger, row in TABLE.items() for column, state in enumerate(STATES)
}
del (
    pending,
    starting,
    uncertain,
    running,
    stopping,
    stopped,
    ended,
    failed,
)  # the table's shorthand only


def _check_table() -> None:
    """Refuse to import a table that breaks its own rules: a wrong table must not run."""
    if list(TABLE) != list(TRIGGERS):
        raise AssertionError("TABLE rows and TRIGGERS must name the same triggers, in order")
    for trigger, row in TABLE.items():
        if len(row) != len(STATES):
            raise AssertionError(f"TABLE row {trigger!r} needs one cell per state")
    for state in TERMINAL:
        for trigger in TABLE:
            cell = CELLS[state, trigger]
            if isinstance(cell, TaskState) and cell is not state:
                raise AssertionError(f"{trigger!r} would leave terminal state {state}")
    for state in STATES:
        if CELLS[state, "stop"] is NO:
            raise AssertionError(f"stop must be legal in {state}")


_check_table()


def build_machine() -> Machine:
    """A Machine holding exactly the moves of TABLE, with no model registered.

    Self-loops are internal transitions (``dest=None``): they run no exit/enter callbacks.
    """
    machine = Machine(
        model=None,
        states=list(TaskState),
        initial=TaskState.PENDING,
        auto_transitions=False,
        queued=False,  # no shared queue: one task's fire never waits on another's
        send_event=True,
        name="streamlife",
    )
    for (state, trigger), cell in CELLS.items():
        if isinstance(cell, TaskState):
            machine.add_transition(trigger, source=state, dest=None if cell is state else cell)
    return machine


MACHINE: Final = build_machine()


def silent_loops(machine: Machine) -> frozenset[tuple[TaskState, str]]:
    """The (state, trigger) pairs whose transition in ``machine`` is internal (no move, so no exit
    or enter callbacks) and has no conditions or callbacks of its own, on a machine with no
    machine-wide callbacks: firing one there changes nothing and calls nothing.

    ``StreamTask`` skips the Machine's dispatch for these (about 10 µs a fire, most of a segment's
    cost) and applies the self-loop itself. The set is derived from the Machine, not written down,
    and tests/test_lifecycle_table.py proves both paths give the same state, outcome and history.
    """
    hooks = ("prepare_event", "before_state_change", "after_state_change", "finalize_event", "on_final")
    if any(getattr(machine, name, None) for name in hooks):
        return frozenset()
    silent = set()
    for trigger, event in machine.events.items():
        for source, transitions in event.transitions.items():
            (transition,) = transitions
            callbacks = ("prepare", "conditions", "before", "after")  # (``unless`` is kept in conditions)
            if transition.dest is None and not any(getattr(transition, name) for name in callbacks):
                silent.add((TaskState[source], trigger))  # (transitions keys enum states by name)
    return frozenset(silent)


SILENT_LOOPS: Final = silent_loops(MACHINE)
# The states where a segment is such a self-loop (running, stopping, and the terminal states that
# keep late finals): the hot path's compiled cells.
SEGMENT_LOOPS: Final = frozenset(state for state, trigger in SILENT_LOOPS if trigger == "segment")
