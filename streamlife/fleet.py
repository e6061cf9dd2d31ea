"""Fleet: every stream of a process, started, stopped, fed its callbacks and timed. The only place
where I/O meets state.

Theory of operation
-------------------
A StreamTask knows the lifecycle but does no I/O and takes no locks. The Fleet wraps each task in
a ``_Tracked`` holding that task's own lock, and serialises the task's events on it: callbacks,
transport results and timers of one task apply one at a time, while different tasks proceed in
parallel. One more lock, the Fleet's, guards the shared indexes (tasks by ref and by task_id, the
parking lot, the deadline heap, the counters) and is only ever held for a few dict operations.
Lock order: a task's lock, then the Fleet's; never the other way round. No lock is held during a
request to memories.ai, so a slow stop never stalls a callback.

Where each promise is kept:
  * a callback for a task_id not known yet is parked (``ParkingLot``) and replayed, in arrival
    order, when the start answer names it; one still unknown after ``Policy.park_ttl`` is an
    orphan, ``adopt``-ed into a task of its own and stopped like any other (``reap_orphans``);
  * a stop asked for while the start is in flight is remembered and sent once the task_id arrives;
  * a failed stop is retried by a timer, with backoff, for as long as the task is stopping;
  * the deadlines (silence, final callback, uncertain start, stop retry) live in one heap on the
    injected clock and follow the state: after every applied event, ``_sync_timers`` arms what the
    new state needs and cancels what it no longer does, so a stale timer never fires;
  * user hooks run after the event they report, under that task's lock (so a task's hooks see its
    events in order); one that raises is logged and skipped, never allowed to stall the Fleet.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import structlog

from .callbacks import CallbackEvent, parse_callback
from .clock import SYSTEM_CLOCK, Clock
from .deadlines import Deadlines
from .errors import (
    CallbackError,
    NotSentError,
    RateLimitedError,
    ServerError,
    ServiceError,
    TaskNotFoundError,
    TransportError,
    UnknownTaskError,
)
from .events import Outcome, OutcomeKind, ProviderEvent, Segment, StatusCallback, StatusMeaning, StreamKind
from .lifecycle import TaskState
from .parking import Parked, ParkingLot
from .policy import Policy
from .task import HistoryEntry, StreamTask
from .transport.answers import URL_FIELD
from .transport.base import Transport

_log = structlog.get_logger("streamlife")

TransitionHook = Callable[[StreamTask, HistoryEntry], None]
SegmentHook = Callable[[StreamTask, Segment], None]
OrphanHook = Callable[["Orphan"], None]
Hook = TypeVar("Hook", bound=Callable[..., None])

# Deadline kinds. The first three follow the state (see _timers_for); a stop retry is armed when a
# stop fails, at a time of its own.
SILENCE: Final = "silence"
FINAL_CALLBACK: Final = "final_callback"
UNCERTAIN: Final = "uncertain"
STOP_RETRY: Final = "stop_retry"
_NONE: Final[frozenset[str]] = frozenset()
_SILENCE: Final = frozenset({SILENCE})
_FINAL: Final = frozenset({FINAL_CALLBACK})
_UNCERTAIN: Final = frozenset({UNCERTAIN})

_ENDING_TRIGGER: Final = {  # a status callback's meaning -> the task trigger it fires
    StatusMeaning.STOPPED: "stopped",
    StatusMeaning.CAPACITY: "capacity",
    StatusMeaning.ENDED: "ended",
    StatusMeaning.UNKNOWN: "ended",  # a status nobody declared ends the task; it is logged, never guessed
}


@dataclass(frozen=True, slots=True)
class Orphan:
    """A stream no start of ours named, adopted once its callbacks outlived the parking TTL."""

    task: StreamTask  # the adopted task: its history starts with ``adopt``
    first_parked: float  # when its first callback arrived
    callbacks: int  # how many were parked (and replayed into the task)
    dropped: int  # how many were pushed out of the parking lot's per-task cap


@dataclass(frozen=True, slots=True)
class FleetStats:
    """Counts since the Fleet was made; ``tasks`` is a snapshot by state."""

    tasks: Mapping[str, int]
    parked: int  # task_ids whose callbacks wait for a start answer (or for the reaper)
    callbacks: Mapping[str, int]  # by outcome: applied, duplicate, late, parked, rejected
    malformed: int  # payloads handle_callback refused with CallbackError
    orphans: int
    stops_sent: int
    stop_failures: int
    timers_fired: int


class _Tracked:
    """A task with what the Fleet keeps beside it. Touched only under ``lock`` (timers: see Fleet)."""

    __slots__ = ("last_heard", "lock", "stop_in_flight", "task", "timers")

    def __init__(self, task: StreamTask, now: float) -> None:
        self.task = task
        self.lock = threading.RLock()  # reentrant: a hook may call back into the Fleet for its task
        self.timers = _NONE  # the state-driven deadline kinds armed for this task
        self.last_heard = now  # when the last callback came (the silence window counts from it)
        self.stop_in_flight = False


class Fleet:
    """Runs many streams: ``start``, ``stop``, ``stop_all``, ``handle_callback``, ``tick``.

    ``transport`` talks to memories.ai (``HttpTransport``) or its simulator (``SimTransport``);
    ``clock`` times every deadline (``SystemClock`` by default); ``policy`` holds every timeout
    and switch. Deadlines fire when someone calls ``tick()``: ``run_timers()`` does it from a
    background thread.
    """

    def __init__(
        self, transport: Transport, *, clock: Clock | None = None, policy: Policy | None = None
    ) -> None:
        self.transport = transport
        self.clock = clock or SYSTEM_CLOCK
        self.policy = policy or Policy()
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)  # notified whenever a task becomes terminal
        self._by_ref: dict[int, _Tracked] = {}
        self._by_id: dict[str, _Tracked] = {}
        self._parking: ParkingLot[CallbackEvent] = ParkingLot()
        self._deadlines: Deadlines[int] = Deadlines()
        self._counts: Counter[str] = Counter()
        self._kinds_started: set[StreamKind] = set()
        self._jitter = random.Random(self.policy.seed)
        self._transition_hooks: tuple[TransitionHook, ...] = ()
        self._segment_hooks: tuple[SegmentHook, ...] = ()
        self._orphan_hooks: tuple[OrphanHook, ...] = ()

    def __repr__(self) -> str:
        return f"Fleet(tasks={len(self._by_ref)}, parked={len(self._parking)}, transport={self.transport!r})"

    # -- starting ----------------------------------------------------------------------------------
    def start(self, kind: StreamKind | str, **params: Any) -> StreamTask:
        """Start a stream and return its task: ``running``, or ``failed``/``uncertain`` if it did not
        start for certain (``task.last_error`` says why). Blocks for the start request only.

        ``params`` is the start body: ``audio_url=`` (audio) or ``url=`` (video), plus any options.
        A start is billed and not idempotent, so it is never retried once the request may have left.
        """
        kind = StreamKind(kind)
        url_field = URL_FIELD[kind]
        if not isinstance(params.get(url_field), str) or not params[url_field]:
            raise ValueError(f"a {kind.value} stream needs {url_field}=<the stream's URL>")
        task = StreamTask(kind, params, clock=self.clock)
        tracked = _Tracked(task, self.clock.now())
        with tracked.lock:
            self._fire(tracked, task.start)
            with self._lock:
                self._by_ref[task.ref] = tracked
                self._kinds_started.add(kind)
        try:
            result = self.transport.start(kind, params)
        except ServerError as error:  # the service failed after taking the request: a stream may exist
            self._locked_fire(tracked, task.start_unknown, error)
        except (NotSentError, ServiceError) as error:  # never left, or refused: nothing was created
            self._locked_fire(tracked, task.start_rejected, error)
        except BaseException as error:  # timeouts, lost connections, bugs: the stream may exist
            self._locked_fire(tracked, task.start_unknown, error)
            if not isinstance(error, TransportError):
                raise
        else:
            self._started(tracked, result.task_id)
        return task

    def _started(self, tracked: _Tracked, task_id: str) -> None:
        task = tracked.task
        with tracked.lock:
            with self._lock:
                holder = self._by_id.setdefault(task_id, tracked)
                parked = self._parking.claim(task_id)
            tracked.last_heard = self.clock.now()
            self._fire(tracked, task.start_ok, task_id)
            if holder is not tracked:
                # Its callbacks outlived the parking TTL before this answer came, and an adopted
                # task holds the id. Both tasks now stop the same stream; stop is safe to repeat.
                _log.warning("streamlife.task_id_taken", task=task.ref, task_id=task_id, by=holder.task.ref)
                self._fire(tracked, task.stop)
            for event in parked:
                self._apply(tracked, event)
            if task.stop_requested and task.state is TaskState.RUNNING:  # asked for while starting
                self._fire(tracked, task.stop)
        self._send_stop(tracked)

    # -- stopping ----------------------------------------------------------------------------------
    def stop(self, task_or_id: StreamTask | str, wait: float | None = None) -> StreamTask:
        """Stop a stream; safe in every state, and as often as you like. Returns the task.

        A task still starting stops as soon as its task_id arrives. Without ``wait``, this returns
        once the stop request is answered (the transport bounds that); with ``wait``, within that
        many real seconds, the request included, or as soon as the task is terminal. Whatever is
        left (a failed request, the status-14 callback) goes on in the background: ``tick`` retries.
        """
        if wait is not None and not wait >= 0:
            raise ValueError(f"wait must be None or seconds >= 0, got {wait!r}")
        give_up_at = None if wait is None else time.monotonic() + wait
        tracked = self._tracked(task_or_id)
        self._locked_fire(tracked, tracked.task.stop)
        self._send_stop(tracked, give_up_at)
        if give_up_at is not None:
            self._wait_terminal([tracked], give_up_at)
        return tracked.task

    def stop_all(self, wait: float | None = None) -> list[StreamTask]:
        """Stop every task not yet terminal; return those still not terminal when this returns.

        Requests go out ``Policy.stop_concurrency`` at a time. ``wait`` bounds the whole call, as
        for ``stop``.
        """
        if wait is not None and not wait >= 0:
            raise ValueError(f"wait must be None or seconds >= 0, got {wait!r}")
        give_up_at = None if wait is None else time.monotonic() + wait
        with self._lock:
            alive = [tracked for tracked in self._by_ref.values() if not tracked.task.terminal]
        for tracked in alive:
            self._locked_fire(tracked, tracked.task.stop)
        workers = min(self.policy.stop_concurrency, len(alive))
        if workers <= 1:
            for tracked in alive:
                self._send_stop(tracked, give_up_at)
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="streamlife-stop") as pool:
                list(pool.map(lambda tracked: self._send_stop(tracked, give_up_at), alive))
        if give_up_at is not None:
            self._wait_terminal(alive, give_up_at)
        return [tracked.task for tracked in alive if not tracked.task.terminal]

    def _send_stop(self, tracked: _Tracked, give_up_at: float | None = None) -> None:
        """Send the task's stop unless none is due (not stopping, acknowledged, or one in flight)."""
        task = tracked.task
        with tracked.lock:
            if task.state is not TaskState.STOPPING or task.stop_acknowledged or tracked.stop_in_flight:
                return
            within = None if give_up_at is None else give_up_at - time.monotonic()
            if within is not None and within <= 0:  # no time left to wait on a request: let tick send it
                self._arm_stop_retry(tracked, 0.0)
                return
            tracked.stop_in_flight = True
            kind, task_id = task.kind, task.task_id
        assert task_id is not None, "a stopping task was running, so it has a task_id"
        self._count("stops_sent")
        not_found, failure = False, None
        try:
            self.transport.stop(kind, task_id, within=within)
        except TaskNotFoundError:
            not_found = True
        except BaseException as error:  # recorded, and retried; anything but a TransportError re-raised
            failure = error
        with tracked.lock:
            tracked.stop_in_flight = False
            if not_found:
                self._fire(tracked, task.stop_not_found)
            elif failure is None:
                self._fire(tracked, task.stop_ok)
            elif self._fire(tracked, task.stop_error, failure) is Outcome.APPLIED:
                self._count("stop_failures")
                retry_after = failure.retry_after if isinstance(failure, RateLimitedError) else None
                self._arm_stop_retry(tracked, self._backoff(task.stop_failures, retry_after))
        if failure is not None and not isinstance(failure, TransportError):
            raise failure

    def _backoff(self, failures: int, retry_after: float | None) -> float:
        policy = self.policy
        ceiling = min(policy.stop_retry_cap, policy.stop_retry_base * 2.0 ** max(failures - 1, 0))
        wait = ceiling * (0.5 + 0.5 * self._jitter.random())  # "equal jitter": never sooner than half
        return max(wait, retry_after or 0.0)

    def _arm_stop_retry(self, tracked: _Tracked, after: float) -> None:
        _log.info(
            "streamlife.stop_retry",
            task=tracked.task.ref,
            task_id=tracked.task.task_id,
            failures=tracked.task.stop_failures,
            wait=round(after, 3),
        )
        with self._lock:
            self._deadlines.arm(tracked.task.ref, STOP_RETRY, self.clock.now() + after)

    def _wait_terminal(self, waiting: Sequence[_Tracked], give_up_at: float) -> None:
        first_alive = 0  # tasks never leave a terminal state, so each is checked until it is done
        with self._settled:
            while True:
                while first_alive < len(waiting) and waiting[first_alive].task.terminal:
                    first_alive += 1
                left = give_up_at - time.monotonic()
                if first_alive == len(waiting) or left <= 0:
                    return
                self._settled.wait(left)

    # -- callbacks ---------------------------------------------------------------------------------
    def handle_callback(self, payload: bytes | str | Mapping[str, Any]) -> Outcome:
        """Apply one webhook payload (raw bytes, text, or a parsed mapping) and say what became of it.

        Raises ``CallbackError`` for a payload that is no callback (the receiver answers 400).
        Anything well formed returns an Outcome, never raises: APPLIED, DUPLICATE, LATE, PARKED (its
        task_id is not known yet) or REJECTED with the reason.
        """
        try:
            event = parse_callback(payload, statuses=self.policy.statuses)
        except CallbackError:
            self._count("malformed")
            raise
        return self.deliver(event)

    def deliver(self, event: CallbackEvent) -> Outcome:
        """Apply one callback already parsed by ``parse_callback``."""
        with self._lock:
            tracked = self._by_id.get(event.task_id)
            if tracked is None:
                outcome = self._park(event)
                self._counts[outcome.kind.value] += 1
                return outcome
        with tracked.lock:
            outcome = self._apply(tracked, event)
        self._count(outcome.kind.value)
        return outcome

    def _park(self, event: CallbackEvent) -> Outcome:
        if event.task_id not in self._parking and len(self._parking) >= self.policy.max_parked:
            _log.warning("streamlife.parking_full", task_id=event.task_id, parked=len(self._parking))
            return Outcome.rejected(f"{len(self._parking)} unknown task_ids parked (Policy.max_parked)")
        self._parking.park(event.task_id, event, self.clock.now())
        return Outcome.PARKED

    def _apply(self, tracked: _Tracked, event: CallbackEvent) -> Outcome:
        """One callback at its task; the caller holds the task's lock."""
        task = tracked.task
        if isinstance(event, Segment):
            outcome = self._fire(tracked, task.segment, event)
            if outcome is Outcome.APPLIED:
                tracked.last_heard = self.clock.now()
                self._notify(self._segment_hooks, task, event)
            return outcome
        if isinstance(event, StatusCallback):
            meaning = event.meaning or self.policy.statuses.meaning(event.status)
            if meaning is StatusMeaning.UNKNOWN:
                _log.warning(
                    "streamlife.unknown_status", task=task.ref, task_id=task.task_id, status=event.status
                )
            trigger = _ENDING_TRIGGER.get(meaning)
            if trigger is not None:
                return self._fire(tracked, getattr(task, trigger), event)
        # A provider message, or a status declared ONGOING: news that the stream lives, no more.
        if task.terminal:
            return Outcome.LATE
        tracked.last_heard = self.clock.now()
        return Outcome.APPLIED

    # -- timers ------------------------------------------------------------------------------------
    def tick(self) -> int:
        """Fire every deadline due by the clock's now, and adopt expired parked task_ids.

        Returns how many fired. Sends stops (orphans, retries), so it may block on the transport.
        """
        now = self.clock.now()
        with self._lock:
            due = self._deadlines.pop_due(now)
            orphans = self._parking.expire(now - self.policy.park_ttl)
            self._counts["timers"] += len(due)
            due_tasks = [(self._by_ref.get(ref), kind) for _, ref, kind in due]
        for tracked, kind in due_tasks:
            if tracked is not None:
                self._deadline(tracked, kind, now)
        for parked in orphans:
            self._adopt(parked, now)
        return len(due) + len(orphans)

    def next_deadline(self) -> float | None:
        """When ``tick`` next has work: the soonest deadline or parking expiry, or None."""
        with self._lock:
            soonest = self._deadlines.next_at()
            oldest = self._parking.oldest()
        expiry = None if oldest is None else oldest + self.policy.park_ttl
        return min((t for t in (soonest, expiry) if t is not None), default=None)

    @contextmanager
    def run_timers(self, *, interval: float = 1.0) -> Iterator[Fleet]:
        """Call ``tick`` from a background thread while the block runs, at least every ``interval``
        real seconds and at each deadline. A tick that raises is logged and the thread goes on."""
        if not interval > 0:
            raise ValueError(f"interval must be positive seconds, got {interval!r}")
        done = threading.Event()

        def loop() -> None:
            while not done.is_set():
                try:
                    self.tick()
                except Exception:
                    _log.exception("streamlife.tick_failed")
                soonest = self.next_deadline()
                pause = interval if soonest is None else soonest - self.clock.now()
                done.wait(min(interval, max(pause, 0.001)))

        thread = threading.Thread(target=loop, name="streamlife-timers", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            done.set()
            thread.join()

    def _deadline(self, tracked: _Tracked, kind: str, now: float) -> None:
        if kind == STOP_RETRY:
            self._send_stop(tracked)
            return
        task, send = tracked.task, False
        with tracked.lock:
            if kind not in tracked.timers:
                return  # the state moved on after the deadline was popped: it is stale
            tracked.timers -= {kind}
            if kind == SILENCE:
                if tracked.last_heard + self.policy.silence_after > now:
                    self._sync_timers(tracked)  # heard from since it was armed: wait again from then
                    return
                self._fire(tracked, task.silence)
                if self.policy.stop_when_stalled and task.state is TaskState.RUNNING:
                    self._fire(tracked, task.stop)
                    send = True
            elif kind == FINAL_CALLBACK:
                self._fire(tracked, task.final_deadline)
            else:
                self._fire(tracked, task.uncertain_deadline)
        if send:
            self._send_stop(tracked)

    def _sync_timers(self, tracked: _Tracked) -> None:
        """Arm the deadlines the task's state needs, cancel the rest. Caller holds the task's lock."""
        task = tracked.task
        want = _timers_for(task)
        if want == tracked.timers and not task.terminal:
            return
        now, ref, policy = self.clock.now(), task.ref, self.policy
        with self._lock:
            if task.terminal:
                self._deadlines.cancel(ref)  # every kind, a pending stop retry included
            for kind in tracked.timers - want:
                self._deadlines.cancel(ref, kind)
            for kind in want - tracked.timers:
                if kind == SILENCE:
                    when = tracked.last_heard + policy.silence_after
                elif kind == FINAL_CALLBACK:
                    when = now + policy.final_callback_wait
                else:
                    when = now + policy.uncertain_ttl
                self._deadlines.arm(ref, kind, when)
        tracked.timers = want

    # -- orphans -----------------------------------------------------------------------------------
    def _adopt(self, parked: Parked[CallbackEvent], now: float) -> None:
        events = list(parked.events)
        with self._lock:
            kinds = set(self._kinds_started)
        task = StreamTask(_kind_of_orphan(events, kinds), None, clock=self.clock)
        tracked = _Tracked(task, now)
        with tracked.lock:
            with self._lock:
                holder = self._by_id.setdefault(parked.task_id, tracked)
                if holder is tracked:
                    self._by_ref[task.ref] = tracked
                    self._counts["orphans"] += 1
            if holder is tracked:
                self._fire(tracked, task.adopt, parked.task_id)
                for event in events:
                    self._apply(tracked, event)
                reap = self.policy.reap_orphans and not task.terminal
                _log.warning(
                    "streamlife.orphan",
                    task=task.ref,
                    task_id=parked.task_id,
                    callbacks=len(events),
                    first_parked=parked.first_parked,
                    reaping=reap,
                )
                orphan = Orphan(task, parked.first_parked, len(events), parked.dropped)
                self._notify(self._orphan_hooks, orphan)
                if reap:
                    self._fire(tracked, task.stop)
        if holder is not tracked:  # its start answer named it after all, after the lot let it go
            with holder.lock:
                for event in events:
                    self._apply(holder, event)
            return
        self._send_stop(tracked)

    # -- hooks -------------------------------------------------------------------------------------
    def on_transition(self, hook: Hook) -> Hook:
        """Call ``hook(task, entry)`` after every applied event but segments. Usable as a decorator."""
        self._transition_hooks = (*self._transition_hooks, hook)
        return hook

    def on_segment(self, hook: Hook) -> Hook:
        """Call ``hook(task, segment)`` for every new segment (a partial, or a final)."""
        self._segment_hooks = (*self._segment_hooks, hook)
        return hook

    def on_orphan(self, hook: Hook) -> Hook:
        """Call ``hook(orphan)`` when a stream nobody started is adopted (and, by default, stopped)."""
        self._orphan_hooks = (*self._orphan_hooks, hook)
        return hook

    def _notify(self, hooks: Iterable[Callable[..., None]], *args: Any) -> None:
        for hook in hooks:
            try:
                hook(*args)
            except Exception:
                _log.exception("streamlife.hook_failed", hook=getattr(hook, "__qualname__", repr(hook)))

    # -- reading -----------------------------------------------------------------------------------
    def get(self, task_id: str) -> StreamTask | None:
        """The task memories.ai knows as ``task_id``, or None."""
        with self._lock:
            tracked = self._by_id.get(task_id)
        return None if tracked is None else tracked.task

    def tasks(self, state: TaskState | str | None = None) -> list[StreamTask]:
        """Every task (in the order they were made), or those in ``state``."""
        wanted = None if state is None else TaskState(state)
        with self._lock:
            everyone = [tracked.task for tracked in self._by_ref.values()]
        return everyone if wanted is None else [task for task in everyone if task.state is wanted]

    def unsettled(self) -> list[StreamTask]:
        """Tasks whose stop was asked for and is not yet confirmed: failing stops stay listed here."""
        return [task for task in self.tasks() if task.stop_requested and not task.terminal]

    def stats(self) -> FleetStats:
        with self._lock:
            counts = dict(self._counts)
            parked = len(self._parking)
            by_state = Counter(tracked.task.state.value for tracked in self._by_ref.values())
        return FleetStats(
            tasks=dict(by_state),
            parked=parked,
            callbacks={kind.value: counts.get(kind.value, 0) for kind in OutcomeKind},
            malformed=counts.get("malformed", 0),
            orphans=counts.get("orphans", 0),
            stops_sent=counts.get("stops_sent", 0),
            stop_failures=counts.get("stop_failures", 0),
            timers_fired=counts.get("timers", 0),
        )

    # -- the one way the Fleet moves a task --------------------------------------------------------
    def _fire(self, tracked: _Tracked, method: Callable[..., Outcome], *args: Any) -> Outcome:
        """Fire one trigger at the task, then keep its timers, waiters and hooks in step.

        The caller holds the task's lock.
        """
        task = tracked.task
        was_terminal = task.terminal
        outcome = method(*args)
        if outcome is Outcome.APPLIED:
            self._sync_timers(tracked)
            if task.terminal and not was_terminal:
                with self._settled:
                    self._settled.notify_all()
            entry = task.history[-1]
            if entry.trigger != "segment":
                self._notify(self._transition_hooks, task, entry)
        return outcome

    def _locked_fire(self, tracked: _Tracked, method: Callable[..., Outcome], *args: Any) -> Outcome:
        with tracked.lock:
            return self._fire(tracked, method, *args)

    def _tracked(self, task_or_id: StreamTask | str) -> _Tracked:
        with self._lock:
            if isinstance(task_or_id, StreamTask):
                tracked = self._by_ref.get(task_or_id.ref)
                if tracked is not None and tracked.task is task_or_id:
                    return tracked
            else:
                tracked = self._by_id.get(task_or_id)
                if tracked is not None:
                    return tracked
        raise UnknownTaskError(repr(task_or_id))

    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1


def _timers_for(task: StreamTask) -> frozenset[str]:
    """The state-driven deadlines a task needs right now."""
    state = task.state
    if state is TaskState.RUNNING:
        return _NONE if task.stalled else _SILENCE
    if state is TaskState.STOPPING:
        return _FINAL if task.stop_acknowledged else _NONE
    if state is TaskState.UNCERTAIN:
        return _UNCERTAIN
    return _NONE


def _kind_of_orphan(events: Sequence[CallbackEvent], started: set[StreamKind]) -> StreamKind:
    """Which product an orphan's stream belongs to, so its stop goes to the right path.

    Callbacks do not name their product. A transcript (text) or a provider message means audio;
    a moderation result (a segment with no text) means video; with only status callbacks to go
    on, the one kind this Fleet starts, else audio.
    """
    for event in events:
        if isinstance(event, Segment):
            return StreamKind.AUDIO if event.text is not None else StreamKind.VIDEO
        if isinstance(event, ProviderEvent):
            return StreamKind.AUDIO
    return next(iter(started)) if len(started) == 1 else StreamKind.AUDIO
