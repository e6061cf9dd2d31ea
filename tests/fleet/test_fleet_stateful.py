"""The Fleet against the simulator with every fault on, in either mode, driven by random rules.

Rules: start a stream (audio, video or understand; an understand one with its task's own callback
URL, by which its results come routed to it, or with a URL of the user's); start one whose answer
is lost; start one that is asked to stop while its start request is in flight; stop a task (with no
wait, a zero wait or a short one); stop_all; let virtual time pass (the simulator delivers,
duplicates, reorders, drops and delays callbacks by its seeded faults, and fails stops with 500,
429 and not-found; the Fleet ticks every second); deliver an earlier callback again (a duplicate,
out of order); deliver a callback for a task_id the service never made.

Invariants, after every step:
* a task that reaches a terminal state stays there, and nothing after it is applied;
* every callback handed to the Fleet is recorded exactly once in its task's history (once the
  task_id is known): nothing parked is lost, nothing is applied twice;
* each final segment is applied at most once per task;
* a transcript is in segment_index order with one segment per index, its text the finals in order;
* a task the Fleet holds as terminal bills no more at the simulator (nothing is filed as done while
  its stream runs);
* a bounded stop returns by its deadline (checked in the stop rules);
* an orphan is adopted, and its stop sent, within the parking TTL plus one reaper pass of its
  first callback;
* the store holds every task as it is: replaying its journal rebuilds the same state, flags,
  transcript and applied history;
* never more streams of a cap's products live than ``Policy.max_live`` allows (drawn: the default,
  understand at 4; an int; a mapping with a tuple key; None) among the tasks this Fleet started,
  and the count the Fleet keeps of its live tasks by product is the one a walk finds.

And at the end of every run, after ``stop_all`` and settling: every task is terminal, nothing is
parked, the simulator's ledger shows no stream still billing (orphans included), and the seconds
each orphan billed after its first callback are at most the parking TTL plus one reaper pass, plus
the time its own stop took to land through the faulted stop answers.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from streamlife import (
    CallbackUrls,
    Fleet,
    ManualClock,
    Outcome,
    OutcomeKind,
    Source,
    StreamKind,
    StreamTask,
    TaskState,
)
from streamlife._callbacks import parse_callback
from streamlife._events import (
    ForeignCallback,
    ProviderEvent,
    StartResult,
    StatusCallback,
    StatusMeaning,
    StopResult,
)
from streamlife._journal import facts_of, rebuild
from streamlife._policy import DEFAULT_MAX_LIVE, live_groups
from streamlife._task_urls import verified_key
from streamlife.fleet._registry import LIVE_STATES
from streamlife.lifecycle import TERMINAL, StopReason
from streamlife.protocol import STOPPED_BY_USER, UNDERSTAND_INVALID, URL_FIELD
from streamlife.sim import Faults, SimMode, SimTransport
from streamlife.testing import MemoriesSim
from tests.conftest import POLICY as RIG_POLICY

TASK_URL_BASE = "https://hooks.sim.invalid/tasks"
TASK_URL_TOKEN = "stateful-task-url-token-0123456789"


def faults(seed: int) -> Faults:
    """Every fault, often; streams stall more often than in Faults.all, so that runs this short see it."""
    return dataclasses.replace(Faults.all(seed), stall=0.05)


STEP = 1.0  # MemoriesSim.advance ticks the Fleet once per virtual second: one reaper pass
POLICY = dataclasses.replace(  # the rig's, with no worker threads, and longer timeouts
    RIG_POLICY,
    park_ttl=20.0,
    uncertain_ttl=40.0,
    final_callback_wait=10.0,
    silence_after=15.0,
    history_limit=None,  # the invariants read whole histories (tests/core/test_task.py checks the limit)
    # ... and histories as lived: a task let go of after keep_terminal and read back from the store
    # has the journaled entries only, without the duplicates and late callbacks it heard
    # (tests/fleet/test_fleet_keep_terminal.py checks letting go).
    keep_terminal=None,
)
SETTLE_LIMIT = 1_000.0  # virtual seconds; settling takes far less unless something is lost
WAIT_SLACK = 1.0  # real seconds a bounded stop may overrun its wait (scheduling, a slow CI machine)


class StopsWhileStarting:
    """SimTransport, where a stop can come in (as from another thread) while a start is in flight."""

    def __init__(self, inner: SimTransport) -> None:
        self.inner = inner
        self.fleet: Fleet | None = None
        self.stop_during_next_start = False

    def start(self, kind: StreamKind, params: Mapping[str, Any]) -> StartResult:
        if self.stop_during_next_start and self.fleet is not None:
            self.stop_during_next_start = False
            for task in self.fleet.tasks(TaskState.STARTING):
                assert self.fleet.stop(task).state is TaskState.STARTING  # remembered, not sent
        return self.inner.start(kind, params)

    def stop(self, kind: StreamKind, task_id: str, *, within: float | None = None) -> StopResult:
        return self.inner.stop(kind, task_id, within=within)

    def close(self) -> None:
        self.inner.close()


class FleetMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(1_700_000_000.0)
        self.ghost_heard: dict[str | None, float] = {}  # task_id -> when its one callback came
        self.delivered: Counter[str] = Counter()  # task_id -> callbacks handed to the Fleet
        self.foreign_ids: set[str] = set()  # other products' task_ids posted to the webhook

    @initialize(
        seed=st.integers(0, 2**32 - 1),
        stop_when_stalled=st.booleans(),
        max_duration=st.sampled_from([None, 15.0]),
        mode=st.sampled_from(["segments", "passthrough"]),
        max_live=st.sampled_from([DEFAULT_MAX_LIVE, None, 3, {("audio", "video"): 2, "understand": 1}]),
    )
    def set_up(
        self,
        seed: int,
        stop_when_stalled: bool,
        max_duration: float | None,
        mode: SimMode,
        max_live: Any,
    ) -> None:
        self.sim = MemoriesSim.new(faults(seed), mode=mode, clock=self.clock)
        self.service = self.sim.service
        policy = dataclasses.replace(
            POLICY, stop_when_stalled=stop_when_stalled, max_duration=max_duration, max_live=max_live
        )
        self.transport = StopsWhileStarting(self.sim.transport)
        # Understand starts may leave out their callback: each is then given its task's own URL,
        # by which its results come (routed by key, naming a stream whose start answer was lost).
        urls = CallbackUrls(TASK_URL_BASE, token=TASK_URL_TOKEN)
        fleet = Fleet(self.transport, clock=self.clock, policy=policy, callback_urls=urls)
        self.transport.fleet = fleet
        self.sim.fleets.append(fleet)  # ticked by advance
        self.fleet = self.driven(fleet)
        # Callbacks reach the Fleet through _deliver, which counts them.
        self.service.on_callback(self._deliver)

    def driven(self, fleet: Fleet) -> Fleet:
        """What the rules drive: ``fleet`` itself here; the same Fleet through an AsyncFleet in
        tests/aio/test_aio_stateful.py."""
        return fleet

    # -- rules -------------------------------------------------------------------------------------
    @precondition(lambda self: len(self.fleet.tasks()) < 12)
    @rule(
        kind=st.sampled_from(StreamKind),
        lose_answer=st.booleans(),
        stop_meanwhile=st.booleans(),
        provider=st.sampled_from(["assemblyai", "elevenlabs"]),
        format_turns=st.booleans(),
        own_url=st.booleans(),
    )
    def start(
        self,
        kind: StreamKind,
        lose_answer: bool,
        stop_meanwhile: bool,
        provider: str,
        format_turns: bool,
        own_url: bool,
    ) -> None:
        if lose_answer:
            self.service.lose_next_start_answer()
        self.transport.stop_during_next_start = stop_meanwhile
        params: dict[str, Any] = {URL_FIELD[kind]: "rtmp://sim.invalid/live"}
        if kind is StreamKind.AUDIO:  # (in passthrough mode, the provider's own messages come)
            params["provider"] = provider
            if format_turns and provider == "assemblyai":
                params["format_turns"] = True
        if kind is StreamKind.UNDERSTAND:  # its results go to a URL of its own, given per start
            params |= {"user_prompt": "Describe it"}
            if not own_url:  # (else the Fleet gives the task's own)
                params["callback"] = "https://hooks.sim.invalid/u"
        task = self.fleet.start(kind, **params)
        # (A start that Policy.max_live held back sent no request, so none was stopped meanwhile.)
        stop_meanwhile, self.transport.stop_during_next_start = (
            stop_meanwhile and not self.transport.stop_during_next_start,
            False,
        )
        assert task.state is not TaskState.STARTING
        # (A start refused, or refused for now and waiting in pending, or refused for now and
        # stopped meanwhile, had no answer to lose.)
        named = own_url and kind is StreamKind.UNDERSTAND and task.task_id is not None
        if lose_answer and task.state not in (TaskState.FAILED, TaskState.PENDING, TaskState.STOPPED):
            # (unless a result came by the task's own URL before the answer was lost, and named it)
            assert task.state is TaskState.UNCERTAIN or named, task
        if stop_meanwhile:  # the stop asked for while starting went out once the task_id came
            assert task.stop_requested
            assert task.state is not TaskState.RUNNING

    @precondition(lambda self: bool(self.fleet.tasks()))
    @rule(data=st.data(), wait=st.sampled_from([None, 0.0, 0.01]))
    def stop(self, data: st.DataObject, wait: float | None) -> None:
        task = data.draw(st.sampled_from(self.fleet.tasks()), label="task")
        began = time.monotonic()
        returned = self.fleet.stop(task, wait=wait)
        elapsed = time.monotonic() - began
        assert returned is task
        assert elapsed <= (wait or 0.0) + WAIT_SLACK, f"stop(wait={wait}) took {elapsed:.3f} s"
        assert task.terminal or task.stop_requested

    @rule(wait=st.sampled_from([None, 0.0]))
    def stop_all(self, wait: float | None) -> None:
        left = self.fleet.stop_all(wait=wait)
        assert all(not task.terminal for task in left)
        assert all(task.terminal or task.stop_requested for task in self.fleet.tasks())

    @rule(seconds=st.floats(0.5, 20.0))
    def advance(self, seconds: float) -> None:
        self.sim.advance(seconds)

    @precondition(lambda self: bool(self.service.deliveries))
    @rule(data=st.data())
    def deliver_again(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.service.deliveries) - 1), label="delivery")
        self._deliver(self.service.deliveries[index].payload)

    @rule(with_status=st.booleans())
    def another_products_result(self, with_status: bool) -> None:
        """The account's one webhook takes every product's results: none may become a task."""
        task_id = f"other-product-{len(self.foreign_ids)}"
        self.foreign_ids.add(task_id)
        data: dict[str, Any] = {"clips": ["https://cdn.example.invalid/c.mp4"]}
        if with_status:
            data["status"] = 1
        payload = {"code": 200, "message": "SUCCESS", "task_id": task_id, "data": data}
        assert self.fleet.handle_callback(payload) is Outcome.FOREIGN

    @rule()
    def callback_for_a_task_nobody_started(self) -> None:
        task_id = f"ghost-{len(self.ghost_heard)}"
        self.ghost_heard[task_id] = self.clock.now()
        payload = {
            "task_id": task_id,
            "data": {"segment_index": 0, "status": 0, "transcript": {"text": "boo", "is_final": True}},
        }
        assert self._deliver(payload).kind is OutcomeKind.PARKED

    # -- invariants --------------------------------------------------------------------------------
    @invariant()
    def every_callback_is_in_its_tasks_history_exactly_once(self) -> None:
        """Nothing lost, nothing doubled: parked ones are replayed, duplicates recorded as such."""
        for task_id, delivered in self.delivered.items():
            task = self.fleet.get(task_id)
            if task is None:
                continue  # still parked
            # (``named`` is no callback of its own: the first routed one names the stream with it)
            recorded = sum(
                entry.source is Source.CALLBACK and entry.trigger != "named" for entry in task.history
            )
            assert recorded == delivered, (task, recorded, delivered)

    @invariant()
    def a_terminal_state_is_final(self) -> None:
        for task in self.fleet.tasks():
            ended_in = None
            for entry in task.history:
                if ended_in is not None:
                    assert entry.to_state is ended_in
                    # (but for a final delivered late, which the transcript keeps)
                    # (After the end, only a late final or a late status 14, naming the last segment.)
                    assert entry.outcome.kind is not OutcomeKind.APPLIED or entry.trigger in (
                        "segment",
                        "stopped",
                    )
                elif entry.to_state in TERMINAL:
                    ended_in = entry.to_state

    @invariant()
    def each_final_is_applied_at_most_once(self) -> None:
        for task in self.fleet.tasks():
            finals = Counter(  # (a formatted final follows its turn's first: counted apart)
                (entry.data["index"], entry.data.get("formatted", False))
                for entry in task.history
                if entry.trigger == "segment"
                and entry.outcome.kind is OutcomeKind.APPLIED
                and entry.data is not None
                and entry.data["final"]
            )
            assert all(count == 1 for count in finals.values()), finals

    @invariant()
    def transcripts_are_in_order_with_one_segment_per_index(self) -> None:
        for task in self.fleet.tasks():
            segments = list(task.transcript)
            indexes = [segment.index for segment in segments if segment.index is not None]
            assert indexes == sorted(set(indexes))
            assert len(indexes) == len(segments)
            finals = [s.text for s in segments if s.final and s.text]
            assert task.transcript_text() == " ".join(finals)

    @invariant()
    def a_terminal_task_bills_no_more(self) -> None:
        for task in self.fleet.tasks():
            stream = self.service.streams.get(task.task_id or "")
            if task.terminal and stream is not None:
                assert not stream.live, f"{task!r} is {task.state} but its stream still bills"

    @invariant()
    def an_end_not_yet_confirmed_is_unsettled_and_its_stop_went_out(self) -> None:
        """A task that inferred an end (``ending``) or owes a stop is listed by ``unsettled``; an
        inferred end sends its confirming stop at once (stops go out on this thread here)."""
        unsettled = {task.ref for task in self.fleet.unsettled()}
        for task in self.fleet.tasks():
            if task.state in (TaskState.STOPPING, TaskState.ENDING):
                assert task.ref in unsettled, task
            if task.state is TaskState.ENDING:
                (entered,) = [e.at for e in task.history if e.to_state is TaskState.ENDING][:1]
                sent = [s for s in self.service.stop_log if s.task_id == task.task_id and s.at >= entered]
                assert sent or task.stop_failures, f"{task!r} inferred an end and sent no stop"

    @invariant()
    def no_stream_runs_past_its_cost_ceiling(self) -> None:
        limit = self.fleet.policy.max_duration
        if limit is None:
            return
        for task in self.fleet.tasks(TaskState.RUNNING):
            assert task.started_at is not None
            assert self.clock.now() <= task.started_at + limit + STEP, f"{task!r} ran past max_duration"

    @invariant()
    def never_more_live_than_a_cap_allows(self) -> None:
        """Among the tasks this Fleet started (an orphan is adopted, never admitted); and the
        Fleet's own count of its live tasks, by product, is what a walk of them finds."""
        fleet = self.transport.fleet
        assert fleet is not None
        tasks = fleet.tasks()
        for kinds, cap in live_groups(fleet.policy.max_live):
            started = [t for t in tasks if t.kind in kinds and t.state in LIVE_STATES and not t.adopted]
            assert len(started) <= cap, (sorted(kinds), cap, started)
        walked = Counter(task.kind for task in tasks if task.state in LIVE_STATES)
        registry = fleet._registry
        with registry.lock:
            kept = +registry.live  # (without the products counted down to 0)
        assert kept == walked

    @invariant()
    def no_other_products_result_becomes_a_task(self) -> None:
        assert not any(task.task_id in self.foreign_ids for task in self.fleet.tasks())

    @invariant()
    def orphans_are_reaped_within_the_parking_ttl_and_one_pass(self) -> None:
        for task in self.fleet.tasks():
            if not task.adopted:
                continue
            first_heard = self._first_delivery(task)
            adopted_at = task.history[0].at
            assert adopted_at <= first_heard + POLICY.park_ttl + STEP
            asked = [e for e in task.history if e.trigger == "stop" and e.outcome.kind is OutcomeKind.APPLIED]
            assert asked or task.terminal, f"orphan {task!r} was adopted but not stopped"
            if asked:
                assert asked[0].at == adopted_at

    @invariant()
    def replaying_the_journal_rebuilds_every_task(self) -> None:
        """The store holds each task as it is: its row, and a journal that replays to the same task."""
        store = self.fleet.store
        for task in self.fleet.tasks():
            row = store.row(task.key or "")
            assert row is not None, task
            journal = store.journal(row.key)
            # The row is the task's as it stands after the last entry, whether its last write
            # carried a whole row or only moved it on (an event that changed none of its fields).
            assert (row.version, row.updated_at) == (len(journal), journal[-1].at)
            assert (row.kind, row.task_id, row.state) == (task.kind.value, task.task_id, task.state.value)
            rebuilt = rebuild(row, journal, clock=self.clock)
            assert (rebuilt.state, rebuilt.task_id, rebuilt.kind) == (task.state, task.task_id, task.kind)
            assert facts_of(rebuilt) == facts_of(task)
            assert list(rebuilt.transcript) == list(task.transcript)
            applied = [e for e in task.history if e.outcome.kind is OutcomeKind.APPLIED]
            assert [(e.trigger, e.at) for e in rebuilt.history] == [(e.trigger, e.at) for e in applied]

    # -- the end of every run ----------------------------------------------------------------------
    def teardown(self) -> None:
        if not hasattr(self, "fleet"):
            return
        self.fleet.stop_all()
        self.sim.settle(SETTLE_LIMIT)
        assert all(task.terminal for task in self.fleet.tasks()), self.fleet.unsettled()
        assert self.service.billing() == [], "streams still billing after stop_all and settling"
        assert self.fleet.stats().parked == 0
        for task in self.fleet.tasks():
            if task.adopted and task.task_id in self.service.streams:
                self._check_orphan_bill(task)
            self._check_transcript_accounts_for_every_segment(task)
        self._report_coverage()

    def _check_transcript_accounts_for_every_segment(self, task: StreamTask) -> None:
        """Every segment index up to the last final the service delivered holds a final in the
        transcript, or is in a gap: a lost segment is always visible (one dropped in delivery)."""
        last = self.service.last_final_sent(task.task_id or "")
        if last is None or self.fleet.get(task.task_id or "") is not task:
            return  # no final, or another task holds the stream (and is checked)
        finals = {segment.index for segment in task.transcript.finals()}
        missing = {index for gap in task.gaps for index in gap}
        for index in range(last + 1):
            assert index in finals or index in missing, (task, index)

    def _report_coverage(self) -> None:
        """Which paths this run took: `pytest --hypothesis-show-statistics` shows how often each was hit."""
        stats, tasks = self.fleet.stats(), self.fleet.tasks()
        event("tasks", f"{min(len(tasks), 10)}")
        event("mode", self.service.mode)
        for name, hit in {
            "orphan adopted": stats.orphans > 0,
            "orphan of a lost start answer": any(
                t.adopted and t.task_id in self.service.streams for t in tasks
            ),
            "stop failed and was retried": stats.stop_failures > 0,
            "stop answered not found": any(e.trigger == "stop_not_found" for t in tasks for e in t.history),
            "stop settled by its answer": any(
                e.trigger == "stop_confirmed" for t in tasks for e in t.history
            ),
            "final callback missing": any(t.final_callback_missing for t in tasks),
            "uncertain expired": any(e.trigger == "uncertain_deadline" for t in tasks for e in t.history),
            "stalled": any(e.trigger == "silence" for t in tasks for e in t.history),
            "ended by the service": any(t.state.value == "ended" for t in tasks),
            "inferred end confirmed": any(
                e.from_state is TaskState.ENDING and e.to_state in TERMINAL for t in tasks for e in t.history
            ),
            "start deferred": any(e.trigger == "start_deferred" for t in tasks for e in t.history),
            "named by its own URL": any(e.trigger == "named" for t in tasks for e in t.history),
            "named after its start answer was lost": any(
                e.trigger == "named" and e.from_state is TaskState.UNCERTAIN for t in tasks for e in t.history
            ),
            "stopped at its cost ceiling": any(t.stop_reason is StopReason.MAX_DURATION for t in tasks),
            "late final kept": any(t.transcript.late for t in tasks),
            "start refused": any(e.trigger == "start_rejected" for t in tasks for e in t.history),
        }.items():
            event(name, "yes" if hit else "no")

    def _check_orphan_bill(self, task: StreamTask) -> None:
        """Its stop went out within the TTL and one pass of its first callback, and it billed no
        longer than that stop took to land (or than the service took to end it by itself)."""
        assert task.task_id is not None
        stream = self.service.streams[task.task_id]
        assert stream.ended_at is not None
        reaped_by = self._first_delivery(task) + POLICY.park_ttl + STEP
        stops = [s for s in self.service.stop_log if s.task_id == task.task_id]
        if not stops:  # it ended by itself, its end among the parked callbacks
            assert stream.ended_at <= reaped_by
            return
        assert stops[0].at <= reaped_by
        # A 200 lands: the stream stops (or had ended). A 400 may be the other product's path,
        # tried first for an orphan whose product only status callbacks showed: it lands only if the
        # stream had ended by then, and the stop that follows on the right path settles it.
        # (Live Video Understanding says it in the body, on HTTP 200: 14 taken, -1 not found.)
        taken = [s.at for s in stops if s.status == 200 and s.body_status in (None, STOPPED_BY_USER)]
        not_found = [s.at for s in stops if s.status == 400 or s.body_status == UNDERSTAND_INVALID]
        if taken:
            assert stream.ended_at <= taken[0]
        elif not_found:
            assert stream.ended_at <= not_found[-1]

    # -- helpers -----------------------------------------------------------------------------------
    def _deliver(self, payload: dict[str, Any]) -> Outcome:
        event = parse_callback(payload, statuses=self.fleet.policy.statuses)
        # A provider message or a status the policy calls ongoing is news of a live stream, and no
        # event a history records; another product's result belongs to no task.
        news = isinstance(event, ProviderEvent | ForeignCallback) or (
            isinstance(event, StatusCallback) and event.meaning is StatusMeaning.ONGOING
        )
        stream = self.service.streams.get(payload.get("task_id") or "")
        callback = None if stream is None else stream.callback
        key = None if callback is None else verified_key(TASK_URL_TOKEN.encode(), urlsplit(callback).path)
        outcome = self.fleet.handle_callback(payload, key=key)  # by the task's own URL, or the account's
        # A redelivery of a callback still parked is kept once: no history records it either.
        if not news and outcome is not Outcome.PARKED_ALREADY:
            self.delivered[payload["task_id"]] += 1
        return outcome

    def _first_delivery(self, task: StreamTask) -> float:
        if task.task_id in self.ghost_heard:
            return self.ghost_heard[task.task_id]
        return min(d.at for d in self.service.deliveries if d.task_id == task.task_id)


TestFleet = FleetMachine.TestCase
