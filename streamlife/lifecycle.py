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
starting) reports DUPLICATE. The table says what may happen; the task's data says whether it did.

The rule the table exists for: a task is terminal only when its stream cannot be billing. Only
``CONFIRMING`` triggers lead into a terminal state. Each one shows that the service confirmed the
end (a status-14 callback; a stop answered "not found"; the provider's end of session echoing our
acknowledged stop), or that our stop was acknowledged and the wait for the final callback ran out,
or that the start provably created nothing (refused, or a stop before any request).

An end the task only *infers* moves it to ``ending``. Such ends are a status nobody declared, a
status the user declared an end, a status-16 callback, and the provider's end of session while
running (AssemblyAI's ``Termination``, an ElevenLabs error). From ``ending`` a confirming stop goes
out, retried like any stop, because stop is safe to call on a stream that has already ended.
``_check_table`` refuses a table that breaks this rule. (docs/architecture.md walks through it.)

Why some cells are what they are:
  * ``stop`` is legal everywhere. In pending, the task stops with no request. Starting and
    uncertain remember it: the Fleet sends it once a task_id exists, or the orphan reaper catches
    the stream. Ending remembers it too: the confirming stop is on its way already, and the task
    now records that a stop was asked for. Stopping and the terminal states answer DUP, because the
    stop is already in effect.
  * start is billed and not idempotent: ``start_unknown`` (the request may have created a stream
    but no task_id came back) leads to ``uncertain``, never to a second start. A start answer that
    comes after all names the task (``uncertain`` -> ``running``): with several processes on one
    store, one may have filed a start as uncertain (its own ``recover``) while another still waited
    for the answer. ``start_deferred`` (429 or capacity 16: nothing was created) puts the task back
    in ``pending``, from where the Fleet starts it again after a backoff, or stops it for free.
  * ``named``: a callback that came by the task's own callback URL (``CallbackUrls``: the URL
    names the task by its key, and a signature proves the URL is ours) names the stream before
    any start answer did: ``starting`` -> ``running`` (the answer is still on its way) and
    ``uncertain`` -> ``running`` (the answer was lost). A lost start answer then no longer strands
    the stream until the orphan reaper finds it. A stop asked for meanwhile goes out once the
    task is named, as after a start answer (``AUTO_STOPS``). The start answer may still come
    after the name: once the stream is named (running, stopping, ending), ``start_ok`` and
    ``start_unknown`` repeat what the task knows (DUP; a ``start_ok`` naming another task_id is
    REJECTED, and the Fleet stops that stream), while ``start_rejected`` and ``start_deferred``,
    which say that nothing was created, contradict a stream that has sent a callback: the task
    refuses them (REJECTED) and stays tracked until a stop confirms its end. After a stop or an
    end, every start answer is LATE. ``named`` where the task has a name already is DUP (LATE once
    it ended); in ``pending`` it is impossible (no start of it may have made a stream), and in
    ``failed`` LATE: the Fleet hands such a callback to the parking lot instead, so that the
    stream, if it exists, is reaped as an orphan.
  * a segment while stopping or ending is still applied: finals are in flight, and the stream may
    live on. A segment after the stream stopped or ended is applied too, if it is a final: it
    completes the transcript, marked late, and the state stays terminal. A partial there is LATE,
    since only a final would replace it (the task's data decides, as for a repeated segment). A
    task that failed has no transcript to complete: a segment there is LATE.
  * an end the task learns while stopping (a status nobody declared, a status 16) changes nothing
    but the recorded status: our own stop settles the task. The provider's ``Termination`` while
    stopping is our stop's echo, but only once the stop was acknowledged: before that it may be
    the provider's own doing while the stream still bills, so the task refuses it.
  * ``stop_confirmed`` is a stop's answer that says the stream stopped, for a product whose answer
    is final (``KIND_RULES``: Live Video Understanding answers status 14, and documents no callback
    after it). It settles the task as ``stop_not_found`` does; the other products' answers only
    acknowledge (``stop_ok``), and their status-14 callback settles the task.
  * ``final_deadline`` ends a stopping or ending task only once its stop was acknowledged: the task
    refuses it before (REJECTED), because a stream whose stop never landed may still be billing.
  * in a terminal state every callback, deadline and stop answer is LATE, except the one repeating
    how the task ended (DUP) and a late segment (above). A start answer after a stop or an end is
    LATE too (a callback named the stream first); in ``failed`` it is impossible, since a task
    fails only on its start answer or after its answer was lost. The status-14 callback after the end (the
    final wait ran out first, or the stream had ended) still names the stream's last segment: the
    task keeps it, so that the transcript's gaps count up to it; a plain repeat is a DUPLICATE.

Every move goes through ONE ``transitions.Machine``, built from TABLE at import. Tasks are never
registered with it: ``add_model`` is O(n) per add and keeps bookkeeping for every task. Instead,
``StreamTask`` fires the machine's Event objects on itself, so a task costs a few slots and no
machine bookkeeping.
"""

from __future__ import annotations

import enum
import itertools
from typing import Final, NamedTuple

from transitions import Machine

from ._events import StatusMeaning, StreamKind


class TaskState(enum.StrEnum):
    """Where a stream task is in its life. The last three are terminal."""

    PENDING = "pending"  # created locally, nothing sent
    STARTING = "starting"  # start request sent, no answer yet
    UNCERTAIN = "uncertain"  # start may have created a stream, but no task_id came back
    RUNNING = "running"  # the service accepted; task_id known; callbacks flow
    STOPPING = "stopping"  # stop asked for; waiting for the status-14 callback
    ENDING = "ending"  # the service seems to have ended the stream; a confirming stop is on its way
    STOPPED = "stopped"  # status 14 came, or the stop was acknowledged and the wait ran out
    ENDED = "ended"  # the service ended the stream itself, and a confirming stop proved it
    FAILED = "failed"  # start rejected (4xx, or 429/16 past the retry window), or an uncertain start expired


class Source(enum.StrEnum):
    """Who caused an event: written into every history entry and log line."""

    LOCAL = "local"
    TRANSPORT = "transport"
    CALLBACK = "callback"
    TIMER = "timer"


class StopReason(enum.StrEnum):
    """Why the Fleet stopped a stream on its own: journaled with the ``stop``, kept on the task. A
    stop the caller asked for has none."""

    MAX_DURATION = "max_duration"  # the stream reached Policy.max_duration, or its start's own limit
    STALLED = "stalled"  # silent past Policy.silence_after, with Policy.stop_when_stalled
    ORPHAN = "orphan"  # a stream no start of ours named, reaped (Policy.reap_orphans)


class Verdict(enum.Enum):
    """The cells of TABLE that leave the state as it is without applying anything."""

    DUP = "dup"
    LATE = "late"
    NO = "no"

    def __repr__(self) -> str:
        return self.name


Cell = TaskState | Verdict

DUP, LATE, NO = Verdict.DUP, Verdict.LATE, Verdict.NO
pending, starting, uncertain, running, stopping, ending, stopped, ended, failed = TaskState

STATES: Final = tuple(TaskState)
TERMINAL: Final = frozenset({TaskState.STOPPED, TaskState.ENDED, TaskState.FAILED})
# The states in which the Fleet owes the service a stop request until one is acknowledged.
STOP_DUE: Final = frozenset({TaskState.STOPPING, TaskState.ENDING})

# Who fires each trigger. The order is the order of TABLE's rows.
TRIGGERS: Final[dict[str, Source]] = {
    "start": Source.LOCAL,
    "stop": Source.LOCAL,
    "start_ok": Source.TRANSPORT,
    "start_rejected": Source.TRANSPORT,
    "start_unknown": Source.TRANSPORT,
    "start_deferred": Source.TRANSPORT,
    "stop_ok": Source.TRANSPORT,
    "stop_not_found": Source.TRANSPORT,
    "stop_confirmed": Source.TRANSPORT,
    "stop_error": Source.TRANSPORT,
    "segment": Source.CALLBACK,
    "stopped": Source.CALLBACK,
    "ended": Source.CALLBACK,
    "capacity": Source.CALLBACK,
    "provider_ended": Source.CALLBACK,
    "named": Source.CALLBACK,
    "adopt": Source.TIMER,
    "final_deadline": Source.TIMER,
    "uncertain_deadline": Source.TIMER,
    "silence": Source.TIMER,
}

# fmt: off
TABLE: Final[dict[str, tuple[Cell, ...]]] = {
    #                      pending   starting   uncertain  running   stopping  ending    stopped  ended    failed
    # local calls
    "start":              (starting, NO,        NO,        NO,       NO,       NO,       NO,      NO,      NO),
    "stop":               (stopped,  starting,  uncertain, stopping, DUP,      ending,   DUP,     DUP,     DUP),
    # transport results
    "start_ok":           (NO,       running,   running,   DUP,      DUP,      DUP,      LATE,    LATE,    NO),
    "start_rejected":     (NO,       failed,    NO,        NO,       NO,       NO,       LATE,    LATE,    NO),
    "start_unknown":      (NO,       uncertain, NO,        DUP,      DUP,      DUP,      LATE,    LATE,    NO),
    "start_deferred":     (NO,       pending,   NO,        NO,       NO,       NO,       LATE,    LATE,    NO),
    "stop_ok":            (NO,       NO,        NO,        NO,       stopping, ending,   LATE,    LATE,    LATE),
    "stop_not_found":     (NO,       NO,        NO,        NO,       stopped,  ended,    LATE,    LATE,    LATE),
    "stop_confirmed":     (NO,       NO,        NO,        NO,       stopped,  ended,    LATE,    LATE,    LATE),
    "stop_error":         (NO,       NO,        NO,        NO,       stopping, ending,   LATE,    LATE,    LATE),
    # callbacks
    "segment":            (NO,       NO,        NO,        running,  stopping, ending,   stopped, ended,   LATE),
    "stopped":            (NO,       NO,        NO,        stopped,  stopped,  stopped,  stopped, ended,   LATE),
    "ended":              (NO,       NO,        NO,        ending,   stopping, DUP,      LATE,    DUP,     LATE),
    "capacity":           (NO,       NO,        NO,        ending,   stopping, DUP,      LATE,    DUP,     LATE),
    "provider_ended":     (NO,       NO,        NO,        ending,   stopped,  DUP,      DUP,     DUP,     LATE),
    # (named: a callback on the task's own callback URL names its stream before a start answer did)
    "named":              (NO,       running,   running,   DUP,      DUP,      DUP,      LATE,    LATE,    LATE),
    # timers (adopt: callbacks for a task_id that no start of ours named outlived the parking TTL)
    "adopt":              (running,  NO,        NO,        NO,       NO,       NO,       NO,      NO,      NO),
    "final_deadline":     (NO,       NO,        NO,        NO,       stopped,  ended,    LATE,    LATE,    LATE),
    "uncertain_deadline": (NO,       NO,        failed,    NO,       NO,       NO,       LATE,    LATE,    LATE),
    "silence":            (NO,       NO,        NO,        running,  NO,       NO,       LATE,    LATE,    LATE),
}
# fmt: on

# The answers to a start request: each may come after a callback named the stream (``named``).
START_ANSWERS: Final = frozenset({"start_ok", "start_rejected", "start_unknown", "start_deferred"})

CELLS: Final[dict[tuple[TaskState, str], Cell]] = {
    (state, trigger): row[column] for trigger, row in TABLE.items() for column, state in enumerate(STATES)
}

# The only triggers that may move a task into a terminal state: each proves that its stream no
# longer bills, or that none was made. One exception, kept because nothing better exists:
# ``uncertain_deadline`` files a start with no task_id as failed, since no stop can name its
# stream; if that stream exists, its callbacks make it an orphan, and the reaper stops it.
CONFIRMING: Final = frozenset(
    {
        "stop",  # from pending only: nothing was ever sent
        "start_rejected",  # refused: nothing was created
        "stopped",  # the status-14 callback
        "stop_not_found",  # the service knows no such stream
        "stop_confirmed",  # the stop's own answer says stopped, for a kind whose answer is final
        "provider_ended",  # the provider's end of session, echoing our acknowledged stop
        "final_deadline",  # our stop was acknowledged and the final callback never came
        "uncertain_deadline",
    }
)
# Of those, the ones that confirm only once our stop was acknowledged: the task refuses them while
# its stop is unacknowledged, since the stream may then still be billing.
AFTER_ACKNOWLEDGED_STOP: Final = frozenset({"provider_ended", "final_deadline"})

# What each meaning of a status callback fires (``callbacks.StatusTable`` gives the meaning). A status
# nobody declared is an end the task infers, never a confirmed one; ONGOING fires nothing: the
# stream was heard, and goes on.
STATUS_TRIGGERS: Final[dict[StatusMeaning, str]] = {
    StatusMeaning.STOPPED: "stopped",
    StatusMeaning.CAPACITY: "capacity",
    StatusMeaning.ENDED: "ended",
    StatusMeaning.UNKNOWN: "ended",
    StatusMeaning.PROVIDER_ENDED: "provider_ended",
}


class Deadline(enum.StrEnum):
    """A timer the Fleet keeps for a task. All but ``STOP_RETRY`` and ``FORGET`` follow the state
    (``DEADLINES``)."""

    SILENCE = "silence"  # Policy.silence_after with no callback, counted from the last one
    MAX_DURATION = "max_duration"  # the cost ceiling, counted from the start answer
    FINAL_CALLBACK = "final_callback"  # Policy.final_callback_wait, from the acknowledged stop
    UNCERTAIN = "uncertain"  # Policy.uncertain_ttl, from the start whose answer never came
    START_RETRY = "start_retry"  # a start refused for now goes out again (backoff, Retry-After)
    STOP_RETRY = "stop_retry"  # a failed stop goes out again: armed when it fails, not by the state
    FORGET = "forget"  # a terminal task leaves memory (Policy.keep_terminal): no trigger, no state


class Guard(enum.Enum):
    """What else a deadline of ``DEADLINES`` needs, beside the task's state."""

    ALWAYS = "always"
    NOT_STALLED = "not stalled"  # a stall is reported once, not every silence window
    HAS_LIMIT = "has a cost ceiling"  # the start's max_duration, or Policy.max_duration
    STOP_ACKNOWLEDGED = "stop acknowledged"  # the final callback is awaited only after that
    HOLDS_START_BODY = "holds the start body"  # the store does not keep it: only its process can resend


# The deadlines each state arms; every other one is cancelled when the task enters the state. A
# terminal state arms none, and cancels a stop retry too.
DEADLINES: Final[dict[TaskState, tuple[tuple[Deadline, Guard], ...]]] = {
    TaskState.PENDING: ((Deadline.START_RETRY, Guard.HOLDS_START_BODY),),
    TaskState.UNCERTAIN: ((Deadline.UNCERTAIN, Guard.ALWAYS),),
    TaskState.RUNNING: ((Deadline.SILENCE, Guard.NOT_STALLED), (Deadline.MAX_DURATION, Guard.HAS_LIMIT)),
    TaskState.STOPPING: ((Deadline.FINAL_CALLBACK, Guard.STOP_ACKNOWLEDGED),),
    TaskState.ENDING: ((Deadline.FINAL_CALLBACK, Guard.STOP_ACKNOWLEDGED),),
}
# The trigger each deadline fires when it comes due. A stop retry fires none: it sends the stop.
DEADLINE_TRIGGERS: Final[dict[Deadline, str]] = {
    Deadline.SILENCE: "silence",
    Deadline.MAX_DURATION: "stop",  # (with StopReason.MAX_DURATION)
    Deadline.FINAL_CALLBACK: "final_deadline",
    Deadline.UNCERTAIN: "uncertain_deadline",
    Deadline.START_RETRY: "start",
}


def deadlines_for(
    state: TaskState, *, stalled: bool, has_limit: bool, stop_acknowledged: bool, holds_start_body: bool
) -> frozenset[Deadline]:
    """The deadlines ``DEADLINES`` arms for a task in ``state`` with these facts. The same facts
    give the same set object, so a caller can compare sets by identity."""
    return _DEADLINE_SETS[state, stalled, has_limit, stop_acknowledged, holds_start_body]


def _deadline_set(
    state: TaskState, stalled: bool, has_limit: bool, stop_acknowledged: bool, holds_start_body: bool
) -> frozenset[Deadline]:
    holds = {
        Guard.ALWAYS: True,
        Guard.NOT_STALLED: not stalled,
        Guard.HAS_LIMIT: has_limit,
        Guard.STOP_ACKNOWLEDGED: stop_acknowledged,
        Guard.HOLDS_START_BODY: holds_start_body,
    }
    return frozenset(deadline for deadline, guard in DEADLINES.get(state, ()) if holds[guard])


_FLAGS: Final = (False, True)
_DEADLINE_SETS: Final = {
    (state, *flags): _deadline_set(state, *flags)
    for state in TaskState
    for flags in itertools.product(_FLAGS, repeat=4)
}


class ResultKey(enum.Enum):
    """What tells one result of a stream from another, so that a redelivery is a duplicate."""

    SEGMENT_INDEX = "segment index"  # the service numbers its results (a payload digest where none is named)
    TIMESTAMP = "timestamp"  # the result's own timestamp (a payload digest where it carries none)


class KindRules(NamedTuple):
    """What differs between the products, beside the one table: facts, never extra moves."""

    stop_answer_final: bool
    """The stop's answer settles the task when it says stopped (``stop_confirmed``): no final
    callback is documented, so none is awaited. Otherwise a status-14 callback is awaited
    after the acknowledgement (``stop_ok``), bounded by ``Deadline.FINAL_CALLBACK``."""
    result_key: ResultKey
    ends_silently: bool
    """The stream may end with no callback at all (its source stopped or was never reachable):
    silence is then an inferred end, so the silence watchdog's stop goes out whatever
    ``Policy.stop_when_stalled`` says, and its answer confirms the end."""


# Per product. Audio and video end with a status-14 callback after the stop's acknowledgement.
# Live Video Understanding answers its stop with status 14 and documents no callback after it; it
# ends by itself when its RTMP source stops or was never reachable, and says so to nobody.
KIND_RULES: Final[dict[StreamKind, KindRules]] = {
    StreamKind.AUDIO: KindRules(
        stop_answer_final=False, result_key=ResultKey.SEGMENT_INDEX, ends_silently=False
    ),
    StreamKind.VIDEO: KindRules(
        stop_answer_final=False, result_key=ResultKey.SEGMENT_INDEX, ends_silently=False
    ),
    StreamKind.UNDERSTAND: KindRules(
        stop_answer_final=True, result_key=ResultKey.TIMESTAMP, ends_silently=True
    ),
}
# The kinds whose stop answer may settle a task: the only ones ``stop_confirmed`` is fired for.
STOP_ANSWER_FINAL: Final = frozenset(kind for kind, rules in KIND_RULES.items() if rules.stop_answer_final)
# The kinds whose silence is an inferred end, stopped whatever the Policy's switch says.
ENDS_SILENTLY: Final = frozenset(kind for kind, rules in KIND_RULES.items() if rules.ends_silently)


class AutoStop(NamedTuple):
    """A stop the Fleet fires at a running task of its own accord."""

    reason: StopReason | None  # journaled with the stop (None: the caller asked for it)
    fact: str  # the task's fact that says this stop is due
    switch: str | None  # the Policy field that turns it on (None: always on)
    always_for: frozenset[StreamKind] = frozenset()  # the kinds for which it is on whatever the switch says


# When the Fleet stops a running task without being asked now, keyed by the trigger after which it
# does. A task whose process ended before the stop was journaled gets it again on recovery, from
# the same facts. (A cost ceiling is a deadline: ``Deadline.MAX_DURATION``.)
AUTO_STOPS: Final[dict[str, AutoStop]] = {
    # a stop asked for while the start was in flight goes out once the task_id arrives: by the
    # start answer, or by a callback on the task's own URL that named the stream first
    "start_ok": AutoStop(None, "stop_requested", None),
    "named": AutoStop(None, "stop_requested", None),
    # a stream no start of ours named is reaped
    "adopt": AutoStop(StopReason.ORPHAN, "adopted", "reap_orphans"),
    # a stream silent for Policy.silence_after is stopped, if the user wants that
    # (always, for a kind whose stream ends silently: the stop confirms the end it infers)
    "silence": AutoStop(StopReason.STALLED, "stalled", "stop_when_stalled", ENDS_SILENTLY),
}


# Why a task recovered in ``starting`` is uncertain: its start request may have left before the crash.
INTERRUPTED_START: Final = "the process ended while the start request was in flight"
# Why a start refused for now, found in the store after a restart, failed: nothing was created,
# and the start body (which the store does not keep) was lost with the process.
LOST_START_BODY: Final = "the process that was to send the start again ended; its start body is not stored"

# What a task found in the store is given first, by state, when the process that held it ended:
# each step is a trigger and, for one that takes an error, why. A start in flight may have made a
# stream, so the task is uncertain, never started again; a start refused for now cannot be sent
# again, since its body is not stored, so it fails. A running task's owed stop is in AUTO_STOPS.
ON_RECOVERY: Final[dict[TaskState, tuple[tuple[str, str | None], ...]]] = {
    TaskState.STARTING: (("start_unknown", INTERRUPTED_START),),
    TaskState.PENDING: (("start", None), ("start_rejected", LOST_START_BODY)),
}


class Argument(enum.Enum):
    """What a trigger takes, and so how the journal keeps it (``streamlife._journal``'s codecs)."""

    NONE = "none"
    SECONDS = "seconds"  # a start's own cost ceiling (optional)
    REASON = "reason"  # why the Fleet stopped the stream on its own (optional: none when asked for)
    TASK_ID = "task_id"
    ERROR = "error"  # what went wrong, as text, with the service's wait if it asked for one
    KIND = "kind"  # the product whose path took the stop (optional: an orphan's guessed product)
    CALLBACK = "callback"  # the parsed callback, with its payload as it came

    # A member is its only instance, so it hashes by identity, in C: Enum's own hash is a Python
    # call, and the journal looks up its codec by the trigger's argument for every event.
    __hash__ = object.__hash__


# The argument each trigger takes, in TRIGGERS' order.
ARGUMENTS: Final[dict[str, Argument]] = {
    "start": Argument.SECONDS,
    "stop": Argument.REASON,
    "start_ok": Argument.TASK_ID,
    "start_rejected": Argument.ERROR,
    "start_unknown": Argument.ERROR,
    "start_deferred": Argument.ERROR,
    "stop_ok": Argument.KIND,
    "stop_not_found": Argument.NONE,
    "stop_confirmed": Argument.NONE,
    "stop_error": Argument.ERROR,
    "segment": Argument.CALLBACK,
    "stopped": Argument.CALLBACK,
    "ended": Argument.CALLBACK,
    "capacity": Argument.CALLBACK,
    "provider_ended": Argument.CALLBACK,
    "named": Argument.TASK_ID,
    "adopt": Argument.TASK_ID,
    "final_deadline": Argument.NONE,
    "uncertain_deadline": Argument.NONE,
    "silence": Argument.NONE,
}

del (
    pending,
    starting,
    uncertain,
    running,
    stopping,
    ending,
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
    for (state, trigger), cell in CELLS.items():
        if cell in TERMINAL and state not in TERMINAL and trigger not in CONFIRMING:
            raise AssertionError(f"{trigger!r} in {state} would end a task whose stream may still bill")
    if CELLS[TaskState.RUNNING, "stop"] is not TaskState.STOPPING or any(
        CELLS[state, "stop"] in TERMINAL for state in STATES if state is not TaskState.PENDING
    ):
        raise AssertionError("only a task that never sent its start may stop without a request")
    for (state, trigger), cell in CELLS.items():
        if trigger in AFTER_ACKNOWLEDGED_STOP and cell in TERMINAL and state not in STOP_DUE | TERMINAL:
            raise AssertionError(f"{trigger!r} in {state} would end a task no stop of ours was sent for")
    for trigger in STATUS_TRIGGERS.values():
        if TRIGGERS[trigger] is not Source.CALLBACK:
            raise AssertionError(f"a status callback fires {trigger!r}, which is not a callback trigger")

    if list(ARGUMENTS) != list(TRIGGERS):
        raise AssertionError("ARGUMENTS must name every trigger of TRIGGERS, in order")
    for state, deadlines in DEADLINES.items():
        for deadline, _ in deadlines:
            if CELLS[state, DEADLINE_TRIGGERS[deadline]] is NO:
                raise AssertionError(f"the {deadline} deadline fires a trigger {state} refuses")
    if any(DEADLINES.get(state) for state in TERMINAL):
        raise AssertionError("a terminal state arms no deadline")

    for state in STATES:
        named = CELLS[state, "named"]
        if isinstance(named, TaskState) and CELLS[state, "start_ok"] is not named:
            raise AssertionError(f"named in {state} must move the task where its start answer would")
        if named in (DUP, LATE) and any(
            isinstance(CELLS[state, trigger], TaskState) for trigger in START_ANSWERS
        ):
            raise AssertionError(
                f"a start answer would move {state}, where a callback may have named the stream"
            )

    if not AUTO_STOPS.keys() <= TRIGGERS.keys():
        raise AssertionError("AUTO_STOPS must name triggers of TRIGGERS")
    if set(KIND_RULES) != set(StreamKind):
        raise AssertionError("KIND_RULES must give the rules of every StreamKind")
    for state in STOP_DUE:
        if CELLS[state, "stop_confirmed"] not in TERMINAL:
            raise AssertionError(f"a final stop answer must settle a task in {state}")

    for state, steps in ON_RECOVERY.items():
        for trigger, _ in steps:
            cell = CELLS[state, trigger]
            if not isinstance(cell, TaskState):
                raise AssertionError(f"recovery fires {trigger!r} in {state}, which the table refuses")
            state = cell
        if state not in TERMINAL | {TaskState.UNCERTAIN}:
            raise AssertionError(f"recovery from {state} must leave the task uncertain or terminal")


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

    ``StreamTask`` skips the Machine's dispatch for these and applies the self-loop itself: the
    dispatch is most of a segment's cost (bench/RESULTS.md has the figures). The set is derived
    from the Machine, not written down, and tests/core/test_lifecycle_table.py proves both paths give
    the same state, outcome and history.
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
# keep late finals): the cells the hot path applies without the Machine.
SEGMENT_LOOPS: Final = frozenset(state for state, trigger in SILENT_LOOPS if trigger == "segment")
