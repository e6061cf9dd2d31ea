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
  * a failed stop is retried by a timer, with backoff, for as long as the task owes one (stopping,
    or ending: an end the task inferred, whose confirming stop goes out as it enters ``ending``);
  * the deadlines (silence, final callback, uncertain start, start retry, cost ceiling, stop retry)
    live in one heap on the
    injected clock and follow the state: after every applied event, ``_sync_timers`` arms what the
    new state needs and cancels what it no longer does, so a stale timer never fires;
  * user hooks run after the event they report, once the task's lock is released: its events queue
    their notifications, and one thread at a time delivers a task's queue, in order. A hook may
    call the Fleet about any task; one that raises is logged and skipped;
  * a bounded stop sends its request from a worker thread (``Policy.stop_concurrency`` of them) and
    waits for no longer than it was told; whatever the request does later still lands on the task;
  * every applied event is journaled in the store before the call that brought it returns (``_fire``
    fires it under the store's lock on the task's row, after replaying what other processes applied
    to it); ``recover`` takes the tasks back after a restart. Lock order, in full: a task's lock,
    then the store's, then the Fleet's.
"""

from __future__ import annotations

import concurrent.futures
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, TypeVar, final

import structlog

from .billing import Exposure
from .callbacks import CallbackEvent, StreamEvent, parse_callback
from .clock import SYSTEM_CLOCK, Clock
from .deadletter import dead_letter_body
from .deadlines import Deadlines
from .errors import (
    CallbackError,
    CapacityError,
    LiveCapError,
    NotSentError,
    ParkingFullError,
    RateLimitedError,
    RecordedError,
    ServerError,
    ServiceError,
    StopAllError,
    StoreConflict,
    StreamlifeError,
    TaskNotFoundError,
    TransportError,
    UnknownTaskError,
)
from .events import (
    ForeignCallback,
    Outcome,
    OutcomeKind,
    ProviderEvent,
    Segment,
    StatusCallback,
    StatusMeaning,
    StreamKind,
)
from .history import HistoryEntry
from .journal import decode_event, encode_event, entry_for, rebuild, replay, reset, row_for
from .lifecycle import STATUS_TRIGGERS, STOP_DUE, TERMINAL, TRIGGERS, Source, StopReason, TaskState
from .parking import Parked, ParkingLot, Ticket
from .policy import Policy, check_max_duration
from .store import JournalEntry, MemoryStore, ParkedCallback, Store, TaskRow
from .task import StreamTask
from .transport.answers import PROVIDERS, URL_FIELD
from .transport.base import Transport

_log = structlog.get_logger("streamlife")

TransitionHook = Callable[[StreamTask, HistoryEntry], None]
SegmentHook = Callable[[StreamTask, Segment], None]
OrphanHook = Callable[["Orphan"], None]
ForeignHook = Callable[[ForeignCallback], None]
Hook = TypeVar("Hook", bound=Callable[..., None])
Hooks = tuple[Callable[..., None], ...]

# Deadline kinds. All but the stop retry follow the state (see _timers_for); a stop retry is armed
# when a stop fails, at a time of its own.
SILENCE: Final = "silence"
FINAL_CALLBACK: Final = "final_callback"
UNCERTAIN: Final = "uncertain"
START_RETRY: Final = "start_retry"
MAX_DURATION: Final = "max_duration"
STOP_RETRY: Final = "stop_retry"
_NONE: Final[frozenset[str]] = frozenset()
_KIND_GUESSED: Final = MappingProxyType({"kind_guessed": True})  # a row fact of an orphan's guessed kind
_SILENCE: Final = frozenset({SILENCE})
_LIMIT: Final = frozenset({MAX_DURATION})
_SILENCE_AND_LIMIT: Final = _SILENCE | _LIMIT
_FINAL: Final = frozenset({FINAL_CALLBACK})
_UNCERTAIN: Final = frozenset({UNCERTAIN})
_START_RETRY: Final = frozenset({START_RETRY})
# The states whose stream may exist and bill: what Policy.max_live counts.
_BILLABLE: Final = frozenset(TaskState) - TERMINAL - {TaskState.PENDING}

# Why a task recovered in ``starting`` is uncertain: its start request may have left before the crash.
INTERRUPTED_START: Final = "the process ended while the start request was in flight"
# Why a start refused for now, found in the store after a restart, failed: nothing was created,
# and the start body (which the store does not keep) was lost with the process.
LOST_START_BODY: Final = "the process that was to send the start again ended; its start body is not stored"
# Why a task whose start answer came is uncertain all the same: the answer could not be journaled.
UNJOURNALED_START: Final = "the start answer came but could not be journaled"
# What a silence timer that finds the task heard from (here, or in another process) returns.
_HEARD: Final = Outcome.rejected("heard from since the silence timer was armed")
# What a start retry that finds the task no longer pending (stopped, or started elsewhere) returns.
_MOVED_ON: Final = Outcome.rejected("no longer pending when its start retry came due")


@final
@dataclass(frozen=True, slots=True)
class Orphan:
    """A stream no start of ours named, adopted once its callbacks outlived the parking TTL."""

    task: StreamTask  # the adopted task: its history starts with ``adopt``
    first_parked: float  # when its first callback arrived
    callbacks: int  # how many were parked (and replayed into the task)


@final
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


@final
class _Tracked:
    """A task with what the Fleet keeps beside it. Touched only under ``lock``."""

    __slots__ = (
        "created_at",
        "delivering",
        "held_back",
        "kind_guessed",
        "last_heard",
        "lock",
        "notices",
        "stale",
        "start_deferrals",
        "start_not_before",
        "stop_in_flight",
        "stop_wanted",
        "task",
        "timers",
        "version",
    )

    def __init__(self, task: StreamTask, now: float, version: int = 0) -> None:
        self.task = task
        self.lock = threading.Lock()
        self.version = version  # the task's journal entries in the store (0: it has no row yet)
        self.created_at = now
        self.timers = _NONE  # the state-driven deadline kinds armed for this task
        self.last_heard = now  # when the last callback came (the silence window counts from it)
        self.stop_in_flight = False
        # A stop asked for that the journal could not keep: this process honours it all the same
        # (no deferred start goes out; a start answer is met with a stop).
        self.stop_wanted: tuple[StopReason, ...] | None = None  # its stop's reason, if it has one
        self.held_back: tuple[float, float] | None = None  # (a journaled stop wait, as capped here)
        self.stale = False  # a write failed and so did reading the task back: reload it before its next event
        self.start_deferrals = 0  # starts refused for now, in this process (the backoff grows with them)
        self.start_not_before = 0.0  # a deferred start goes out again no sooner than this
        self.kind_guessed = False  # an orphan whose product its callbacks did not show
        self.notices: list[tuple[Hooks, tuple[Any, ...]]] | None = None  # hook calls to make
        self.delivering = False  # a thread is calling this task's hooks


@final
class Fleet:
    """Runs many streams: ``start``, ``stop``, ``stop_all``, ``handle_callback``, ``tick``.

    ``transport`` talks to memories.ai (``HttpTransport``) or its simulator (``SimTransport``);
    ``clock`` times every deadline (``SystemClock`` by default); ``policy`` holds every timeout
    and switch; ``store`` journals every task (``MemoryStore`` by default: use ``SqliteStore`` or
    ``PostgresStore`` to survive a restart, then call ``recover()``). Deadlines fire when someone
    calls ``tick()``: ``run_timers()`` does it from a background thread. ``close()`` (or leaving a
    ``with Fleet(...)`` block) waits for the stop requests still in flight and releases the worker
    threads.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        clock: Clock | None = None,
        policy: Policy | None = None,
        store: Store | None = None,
    ) -> None:
        self.transport = transport
        self.clock = clock or SYSTEM_CLOCK
        self.policy = policy or Policy()
        self.store: Store = MemoryStore() if store is None else store
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)  # notified whenever a task becomes terminal
        self._by_ref: dict[int, _Tracked] = {}
        self._by_key: dict[str, _Tracked] = {}  # the durable key: one tracked task per key, ever
        self._by_id: dict[str, _Tracked] = {}
        self._parking: ParkingLot[CallbackEvent] = ParkingLot(
            max_task_ids=self.policy.max_parked, max_per_task=self.policy.max_parked_per_task
        )
        self._deadlines: Deadlines[int] = Deadlines()
        self._counts: Counter[str] = Counter()
        self._kinds_started: set[StreamKind] = set()
        self._jitter = random.Random(self.policy.seed)
        self._senders: ThreadPoolExecutor | None = None  # made on the first stop that needs one
        self._transition_hooks: tuple[TransitionHook, ...] = ()
        self._segment_hooks: tuple[SegmentHook, ...] = ()
        self._orphan_hooks: tuple[OrphanHook, ...] = ()
        self._foreign_hooks: tuple[ForeignHook, ...] = ()

    def __repr__(self) -> str:
        return f"Fleet(tasks={len(self._by_ref)}, parked={len(self._parking)}, transport={self.transport!r})"

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Wait for the stop requests in flight, then release the worker threads. Tasks stay as
        they are: stopping ones still need ``tick`` (or another Fleet, after a restart)."""
        with self._lock:
            senders, self._senders = self._senders, None
        if senders is not None:
            senders.shutdown(wait=True)

    # -- starting ----------------------------------------------------------------------------------
    def start(self, kind: StreamKind | str, **params: Any) -> StreamTask:
        """Start a stream and return its task: ``running``, or ``failed``/``uncertain`` if it did not
        start for certain (``task.last_error`` says why), or ``pending`` if the service refused it for
        now (429, capacity 16) or ``Policy.max_live`` streams live: ``tick`` starts it again after a
        backoff, within ``Policy.start_retry_window``, and ``stop`` cancels it without a request.
        Blocks for the start request only.

        ``params`` is the start body: ``audio_url=`` and ``provider=`` (audio) or ``url=`` (video),
        plus any options. A start is billed and not idempotent, so it is retried only when the
        service said that nothing was created, never once the request may have created a stream.
        ``max_duration=`` is the one keyword that is not the body's: this stream's cost ceiling in
        seconds (instead of ``Policy.max_duration``); the Fleet stops it once it has run that long.
        It is journaled, never sent. (Taken out of ``params``, not a parameter of its own, so that
        a body built as a ``dict[str, str]`` still type-checks.)
        """
        params = dict(params)
        max_duration = params.pop("max_duration", None)
        if max_duration is not None:
            max_duration = check_max_duration(max_duration)  # (as a float, in either build)
        kind = StreamKind(kind)
        _check_start(kind, params)
        task = StreamTask(kind, params, clock=self.clock)
        task.key = uuid.uuid4().hex
        task.history_limit = self.policy.history_limit
        tracked = _Tracked(task, self.clock.now())
        with self._lock:
            self._by_ref[task.ref] = tracked
            self._by_key[task.key] = tracked
            self._kinds_started.add(kind)
        limit = () if max_duration is None else (max_duration,)
        try:
            self._locked_fire(tracked, task.start, *limit)  # journaled before the request leaves
        except BaseException:
            with self._lock:
                del self._by_ref[task.ref], self._by_key[task.key]  # never started: the store's error
            raise
        self._send_start(tracked)
        return task

    def _send_start(self, tracked: _Tracked) -> None:
        """Send the start request of a task in ``starting``, and fire what its answer says."""
        task = tracked.task
        kind, params = task.kind, task.params or {}
        full = self._over_max_live()
        if full is not None:
            self._defer_start(tracked, full)
            return
        try:
            # Any: a transport's own answer, whose fields' types are not sure (a compiled build
            # would check its task_id as a str on reading it, before the check below could).
            result: Any = self.transport.start(kind, params)
        except (RateLimitedError, CapacityError) as error:  # refused for now: nothing was created
            self._defer_start(tracked, error)
        except ServerError as error:  # the service failed after taking the request: a stream may exist
            self._locked_fire(tracked, task.start_unknown, error)
        except (NotSentError, ServiceError) as error:  # never left, or refused: nothing was created
            self._locked_fire(tracked, task.start_rejected, error)
        except BaseException as error:  # timeouts, lost connections, bugs: the stream may exist
            self._locked_fire(tracked, task.start_unknown, error)
            if not isinstance(error, TransportError):
                raise
        else:
            task_id = result.task_id
            if type(task_id) is not str:  # the stream may exist, under an id nobody can use
                no_id = TypeError(f"the transport's StartResult.task_id is no str: {task_id!r}")
                self._locked_fire(tracked, task.start_unknown, no_id)
                raise no_id
            self._started(tracked, task_id)

    def _over_max_live(self) -> LiveCapError | None:
        """Why one more start would pass ``Policy.max_live``, or None. The task asking is counted:
        it is already starting."""
        cap = self.policy.max_live
        if cap is None:
            return None
        with self._lock:
            everyone = list(self._by_ref.values())
        live = sum(tracked.task.state in _BILLABLE for tracked in everyone)
        return LiveCapError(cap) if live > cap else None

    def _defer_start(self, tracked: _Tracked, error: StreamlifeError) -> None:
        """A start refused for now: try again after a backoff (never sooner than Retry-After) while
        ``Policy.start_retry_window`` lasts, counted from the task's creation; then it has failed."""
        task, now = tracked.task, self.clock.now()
        wait = self._backoff(tracked.start_deferrals + 1, self._retry_after(error))
        if now + wait - tracked.created_at > self.policy.start_retry_window:
            self._locked_fire(tracked, task.start_rejected, error)
            return
        tracked.start_deferrals += 1
        tracked.start_not_before = now + wait  # read by _sync_timers, which arms the retry
        _log.info("streamlife.start_deferred", task=task.ref, error=str(error), wait=round(wait, 3))
        self._locked_fire(tracked, task.start_deferred, error)
        if task.stop_requested:  # asked for while the start was in flight: nothing exists, none is made
            self._locked_fire(tracked, task.stop)

    def _retry_start(self, tracked: _Tracked) -> int:
        """Start a deferred task again; 1 if its request went out, 0 if the task moved on (stopped,
        or started by another process)."""
        task = tracked.task
        with tracked.lock:
            if START_RETRY not in tracked.timers:
                return 0
            tracked.timers -= {START_RETRY}

            def start_unless_moved() -> Outcome:
                # Asked after the catch-up in _fire: another process may have started or stopped it.
                if task.state is not TaskState.PENDING:
                    return _MOVED_ON
                if tracked.stop_wanted is not None:  # (stopped while pending: no request)
                    return task.stop(*tracked.stop_wanted)
                return task.start()

            try:
                if self._fire(tracked, start_unless_moved) is _MOVED_ON:
                    return 0
            except BaseException:
                # Not journaled, so not started: try again shortly, rather than never.
                if task.state is TaskState.PENDING:
                    tracked.timers |= _START_RETRY
                    with self._lock:
                        self._deadlines.arm(
                            task.ref, START_RETRY, self.clock.now() + self.policy.stop_retry_base
                        )
                raise
        self._deliver_notices(tracked)
        if task.state is not TaskState.STARTING:  # stopped instead: the stop asked for is journaled now
            tracked.stop_wanted = None
            return 0
        senders = self._sender_pool()
        if senders is None:
            self._send_start(tracked)
        else:
            senders.submit(self._send_start_logged, tracked)
        return 1

    def _send_start_logged(self, tracked: _Tracked) -> None:
        try:
            self._send_start(tracked)
        except Exception:
            _log.exception("streamlife.start_failed", task=tracked.task.ref)

    def _started(self, tracked: _Tracked, task_id: str) -> None:
        task = tracked.task
        with tracked.lock:
            with self._lock:
                holder = self._by_id.setdefault(task_id, tracked)
                claimed = self._parking.claim(task_id)
            parked = [] if claimed is None else claimed.events
            tracked.last_heard = self.clock.now()
            try:
                self._fire(tracked, task.start_ok, task_id)
            except BaseException:
                # Not journaled, so the task is back in starting: treat the answer as lost. Its
                # stream's callbacks park again, and it is caught as an orphan, as a lost answer's is.
                with self._lock:
                    if self._by_id.get(task_id) is tracked:
                        del self._by_id[task_id]
                    if claimed is not None:
                        self._parking.put_back(claimed)
                self._fire_logged(tracked, task.start_unknown, RecordedError(UNJOURNALED_START))
                raise
            if holder is not tracked:
                # Its callbacks outlived the parking TTL before this answer came, and an adopted
                # task holds the id. Both tasks now stop the same stream; stop is safe to repeat.
                _log.warning("streamlife.task_id_taken", task=task.ref, task_id=task_id, by=holder.task.ref)
                self._fire(tracked, task.stop)
            try:
                read = self._apply_parked(tracked, task_id, claimed)
            except BaseException:  # a stop asked for while it started goes out all the same
                self._stop_asked_while_starting(tracked)
                self._take_over_stop(tracked, after=0.0)  # (sent by the next tick)
                raise
            self._stop_asked_while_starting(tracked)
        self._unpark(task_id, parked, read)  # (the start is journaled: the caller gets its task)
        self._deliver_notices(tracked)
        self._send_stop(tracked)

    # -- stopping ----------------------------------------------------------------------------------
    def stop(self, task_or_id: StreamTask | str, wait: float | None = None) -> StreamTask:
        """Stop a stream; safe in every state, and as often as you like. Returns the task.

        A task still starting stops as soon as its task_id arrives. Without ``wait``, the stop
        request is sent on this thread and this returns once it is answered (within
        ``Policy.stop_timeout``), or at once if a request or a retry is already on its way, or
        while the service's Retry-After holds stops back (``Policy.max_retry_after`` at most).
        With ``wait``, this returns as soon as the task is terminal, and within ``wait`` real
        seconds whatever the network does: the request goes from a worker thread, and what it
        brings later still lands. A failed stop is retried by ``tick``.

        If the store cannot journal the stop, this raises its error; the stop still holds in this
        process (a deferred start of the task never goes out, a start answer is met with a stop).
        """
        give_up_at = _give_up_at(wait)
        tracked = self._tracked(task_or_id)
        try:
            self._locked_fire(tracked, tracked.task.stop)
        except Exception:  # not journaled, but asked for: no start of it goes out from here
            self._want_stop(tracked)
            raise
        if give_up_at is None:
            self._send_stop(tracked, asked=True)
        else:
            self._send_stop_soon(tracked, give_up_at, asked=True)
            self._wait_terminal([tracked], give_up_at)
        return tracked.task

    def stop_all(self, wait: float | None = None) -> list[StreamTask]:
        """Stop every task not yet terminal, and every stream parked under a task_id no start has
        named yet (adopted as an orphan and stopped, whatever ``reap_orphans`` says). Returns the
        tasks still not terminal when it returns.

        Requests go out ``Policy.stop_concurrency`` at a time. Without ``wait``, this returns once
        every request is answered; with ``wait``, within that many real seconds, as for ``stop``.

        A task whose stop cannot be journaled (the store fails) is stopped all the same: a running
        one's stop request goes out unjournaled, after the journaled ones, and its stream's
        status-14 callback settles it when it comes; a pending one's deferred start never goes out
        from this process, and a starting one is stopped when its start answer comes. Once every
        request is sent, ``StopAllError`` names those tasks.
        """
        give_up_at = _give_up_at(wait)
        now = self.clock.now()
        with self._lock:
            parked = self._parking.expire(float("inf"))
        failures: list[tuple[StreamTask | str, BaseException]] = []
        unjournaled: list[tuple[str, tuple[StreamKind, ...]]] = []  # (task_id, the paths to try)
        for orphan in parked:
            try:
                self._adopt(orphan, now, reap=True)
            except Exception as error:  # (its callbacks are parked again, for the next tick)
                failures.append((orphan.task_id, error))
                with self._lock:
                    started = set(self._kinds_started)
                kind, certain = _kind_of_orphan(list(orphan.events), started)
                unjournaled.append((orphan.task_id, (kind,) if certain else (kind, _other(kind))))
        with self._lock:
            alive = [tracked for tracked in self._by_ref.values() if not tracked.task.terminal]
        for tracked in alive:
            try:
                self._locked_fire(tracked, tracked.task.stop)
            except Exception as error:
                self._want_stop(tracked)
                failures.append((tracked.task, error))
                running = tracked.task.state is TaskState.RUNNING or tracked.stale  # (stale: maybe running)
                if tracked.task.task_id is not None and running:
                    unjournaled.append((tracked.task.task_id, (tracked.task.kind,)))
        senders = self._sender_pool()
        if senders is None:
            for tracked in alive:
                self._send_stop_logged(tracked, give_up_at, True)
            for task_id, kinds in unjournaled:
                self._send_unjournaled_stop(task_id, kinds, give_up_at)
        else:
            sent = [senders.submit(self._send_stop_logged, tracked, give_up_at, True) for tracked in alive]
            sent += [senders.submit(self._send_unjournaled_stop, *stop, give_up_at) for stop in unjournaled]
            if give_up_at is None:
                concurrent.futures.wait(sent)
        if give_up_at is not None:
            self._wait_terminal(alive, give_up_at)
        unsettled = [tracked.task for tracked in alive if not tracked.task.terminal]
        if failures:
            raise StopAllError(failures, unsettled)
        return unsettled

    def _want_stop(self, tracked: _Tracked, *reason: StopReason) -> None:
        """Remember a stop the store could not journal. Once the task has a task_id, a stop retry
        journals it (or sends it unjournaled again), so that it is never dropped for want of time.
        The task may be stale (ahead of its store), so its state in memory decides nothing here."""
        tracked.stop_wanted = reason
        if tracked.task.task_id is not None and not tracked.task.terminal:
            self._arm_stop_retry(tracked, self._backoff(1, None))

    def _stop_asked_while_starting(self, tracked: _Tracked) -> None:
        """Fire the stop asked for while the task started (journaled, or only wanted), once its
        start answer is journaled. Caller holds the task's lock."""
        if tracked.task.stop_requested or tracked.stop_wanted is not None:
            self._fire_stop(tracked, *(tracked.stop_wanted or ()))

    def _fire_stop(self, tracked: _Tracked, *reason: StopReason) -> None:
        """Fire a running task's stop; if the store refuses it, want it (``_want_stop``) and let the
        error go on. Caller holds the task's lock."""
        if tracked.task.state is not TaskState.RUNNING:
            return
        try:
            self._fire(tracked, tracked.task.stop, *reason)
        except BaseException:
            self._want_stop(tracked, *reason)
            raise
        tracked.stop_wanted = None

    def _journal_wanted_stop(self, tracked: _Tracked) -> None:
        """Journal a stop the store refused before, now that a retry is due (``_fire`` first puts
        back a task left ahead of its store). While the store still refuses it, the stop goes out
        unjournaled again, and so on with the stop backoff: a stream left running bills."""
        task, reason = tracked.task, tracked.stop_wanted or ()
        try:
            with tracked.lock:
                if not task.terminal:
                    self._fire(tracked, task.stop, *reason)
            self._deliver_notices(tracked)
        except Exception:
            _log.exception("streamlife.store_failed", task=task.ref, key=task.key)
            self._arm_stop_retry(tracked, self._backoff(task.stop_failures + 1, None))
            if task.task_id is not None and not task.terminal:
                self._send_unjournaled_stop(task.task_id, (task.kind,), None)
            return
        tracked.stop_wanted = None

    def _send_unjournaled_stop(
        self, task_id: str, kinds: tuple[StreamKind, ...], give_up_at: float | None
    ) -> None:
        """Stop a stream whose stop the journal could not keep: one left running bills, and stop is
        safe to repeat. The answer is logged, not applied; the status-14 callback settles the task.
        ``kinds``: the paths to try in turn, for an orphan whose product is a guess."""
        within = self._stop_within(give_up_at)
        if within <= 0:
            _log.warning("streamlife.unjournaled_stop", task_id=task_id, answer="no_time")
            return
        answer = "not_found"
        for kind in kinds:
            self._count("stops_sent")
            try:
                self.transport.stop(kind, task_id, within=within)
            except TaskNotFoundError:
                continue
            except Exception as error:
                answer = type(error).__name__
                break
            answer = "ok"
            break
        _log.warning("streamlife.unjournaled_stop", task_id=task_id, answer=answer)

    def _send_stop_soon(self, tracked: _Tracked, give_up_at: float | None, *, asked: bool = False) -> None:
        """Send the stop from a worker thread, or on this one when the policy keeps no workers."""
        senders = self._sender_pool()
        if senders is None:
            self._send_stop(tracked, give_up_at, asked=asked)
        else:
            senders.submit(self._send_stop_logged, tracked, give_up_at, asked)

    def _sender_pool(self) -> ThreadPoolExecutor | None:
        if self.policy.stop_concurrency == 0:
            return None
        with self._lock:
            if self._senders is None:
                self._senders = ThreadPoolExecutor(
                    self.policy.stop_concurrency, thread_name_prefix="streamlife-stop"
                )
            return self._senders

    def _send_stop_logged(
        self, tracked: _Tracked, give_up_at: float | None = None, asked: bool = False
    ) -> None:
        """``_send_stop`` for a worker thread: what it raises is logged (it is already on the task)."""
        try:
            self._send_stop(tracked, give_up_at, asked=asked)
        except Exception:
            _log.exception("streamlife.stop_failed", task=tracked.task.ref, task_id=tracked.task.task_id)

    def _send_stop(self, tracked: _Tracked, give_up_at: float | None = None, *, asked: bool = False) -> None:
        """Send the task's stop unless none is due: not stopping, already acknowledged, a request in
        flight, or a retry armed for later (that retry, once due, sends it). A stop ``asked`` for by
        the caller goes out at once all the same, unless the service asked for the wait
        (Retry-After, journaled with the failed stop and capped by ``Policy.max_retry_after``):
        backoff spares the service, a caller's stop is worth a request."""
        task = tracked.task
        with tracked.lock:
            if task.state not in STOP_DUE or task.stop_acknowledged or tracked.stop_in_flight:
                return
            held_back_until = self._held_back_until(tracked)
            with self._lock:
                retry_armed = self._deadlines.when(task.ref, STOP_RETRY) is not None
                if self.clock.now() < held_back_until:  # (another process's failure too: its wait holds)
                    if not retry_armed:
                        self._deadlines.arm(task.ref, STOP_RETRY, held_back_until)
                    return
                if retry_armed and asked:
                    self._deadlines.cancel(task.ref, STOP_RETRY)
                    retry_armed = False
            if retry_armed:
                return
            within = self._stop_within(give_up_at)
            if within <= 0:  # no time left for a request: the next tick sends it
                self._arm_stop_retry(tracked, 0.0)
                return
            tracked.stop_in_flight = True
            kinds = (task.kind, _other(task.kind)) if tracked.kind_guessed else (task.kind,)
            task_id = task.task_id
        assert task_id is not None, "a stopping task was running, so it has a task_id"
        landed, failure = None, None
        try:
            for kind in kinds:  # an orphan of unsure product: "not found" on one path, try the other
                self._count("stops_sent")
                try:
                    self.transport.stop(kind, task_id, within=within)
                except TaskNotFoundError:
                    continue
                landed = kind
                break
        except BaseException as error:  # recorded, and retried; anything but a TransportError re-raised
            failure = error
        with tracked.lock:
            tracked.stop_in_flight = False
            try:
                if failure is not None:
                    retry_after = self._retry_after(failure)
                    if retry_after:  # journaled with the failure: every process, and a restart, waits too
                        held_back_until = self.clock.now() + retry_after
                        failure = RecordedError(RecordedError.text_of(failure), not_before=held_back_until)
                    if self._fire(tracked, task.stop_error, failure) is Outcome.APPLIED:
                        self._count("stop_failures")
                        self._arm_stop_retry(tracked, self._backoff(task.stop_failures, retry_after))
                elif landed is None:
                    self._fire(tracked, task.stop_not_found)
                elif not tracked.kind_guessed:
                    self._fire(tracked, task.stop_ok)
                else:
                    # An orphan whose product was a guess: the path that took the stop settles it,
                    # journaled (another process's copy, or a rebuild, learns it by replay), with a
                    # row that says it is no guess. If that is not kept, the task is put back as
                    # stored, a guess still: a stop retried tries both paths again.
                    tracked.kind_guessed = False
                    try:
                        self._fire(tracked, task.stop_ok, landed)
                    finally:
                        tracked.kind_guessed = not (task.kind is landed and task.stop_acknowledged)
            except BaseException:
                # The answer could not be journaled: the task is as stored, stopping and
                # unacknowledged. Send the stop again later (it is safe to repeat), then let the
                # error go on.
                self._arm_stop_retry(tracked, self._backoff(task.stop_failures + 1, None))
                raise
        self._deliver_notices(tracked)
        if failure is not None and not isinstance(failure, TransportError | RecordedError):
            raise failure

    def _stop_within(self, give_up_at: float | None) -> float:
        """How long one stop may take, the transport's retries included: ``Policy.stop_timeout``, or
        less to end by ``give_up_at``. The cap keeps a slow answer for some streams from holding
        every worker while the stops of the others wait behind them."""
        timeout = self.policy.stop_timeout
        return timeout if give_up_at is None else min(timeout, give_up_at - time.monotonic())

    def _confirm_end(self, tracked: _Tracked) -> None:
        """Send the stop that confirms an end the task only inferred: the stream may still bill, and
        stop is safe to call on a stream that has already ended."""
        task = tracked.task
        _log.info("streamlife.confirming_end", task=task.ref, task_id=task.task_id, status=task.end_status)
        self._send_stop_soon(tracked, None)

    def _held_back_until(self, tracked: _Tracked) -> float:
        """No stop before this: the journaled wait of the task's last failed stop, capped again by
        ``Policy.max_retry_after`` from when this process first read it, since the process that
        wrote it may read another clock (one a day fast, say). Caller holds the task's lock."""
        journaled = tracked.task.stop_not_before
        if journaled is None:
            return 0.0
        if tracked.held_back is None or tracked.held_back[0] != journaled:
            tracked.held_back = (journaled, min(journaled, self.clock.now() + self.policy.max_retry_after))
        return tracked.held_back[1]

    def _retry_after(self, error: BaseException) -> float | None:
        """The wait the service asked for with ``error``, if any, capped by ``Policy.max_retry_after``."""
        asked = error.retry_after if isinstance(error, RateLimitedError) else None
        if asked is None or not asked > 0:  # (NaN too: a transport that parsed it loosely)
            return None
        return min(asked, self.policy.max_retry_after)

    def _backoff(self, failures: int, retry_after: float | None) -> float:
        """The wait before the next try after ``failures`` failures; ``retry_after`` already capped."""
        policy = self.policy
        doublings = min(max(failures - 1, 0), 64)  # (past 1,024, 2.0 ** n overflows: a day of failing stops)
        ceiling = min(policy.stop_retry_cap, policy.stop_retry_base * 2.0**doublings)
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

        Raises ``CallbackError`` for a payload that is no callback (the receiver answers 400), after
        keeping it as a dead letter. Anything well formed returns an Outcome: APPLIED, DUPLICATE,
        LATE, PARKED (its task_id is not known yet), FOREIGN (another product's result, handed to
        the ``on_foreign`` hooks) or REJECTED with the reason; or, when nothing of it could be kept
        now, raises ``StoreError`` (the store failed) or ``ParkingFullError`` (no room to park it).
        Deliver such a callback again later: the receiver answers 503.
        """
        try:
            event = self._ours_if_known(parse_callback(payload, statuses=self.policy.statuses))
        except CallbackError as error:
            self._refused(payload, error)
            raise
        return self.deliver(event)

    def handle_callbacks(
        self, payloads: Iterable[bytes | str | Mapping[str, Any]]
    ) -> list[Outcome | CallbackError]:
        """Apply many webhook payloads, in order, with one store commit: for a consumer that takes
        callbacks in batches (from a queue, say), where a commit per callback is most of the cost.

        Each result is what ``handle_callback`` would have returned for its payload, or the
        ``CallbackError`` it would have raised. Everything applied is journaled before this
        returns. If the store fails, no callback of the batch counts as applied (each task touched
        is put back as the store holds it) and the error is raised: deliver the batch again.

        The batch's tasks are locked together, in one order, before the store's transaction opens,
        and held until it commits: callbacks for them on other threads wait that long. Callbacks
        for task_ids this Fleet does not hold go through ``deliver`` one by one, after the batch
        has committed: one of them that raises (``ParkingFullError``, or ``StoreError`` from its
        own write) leaves the batch applied. Delivering the whole batch again is still safe: what
        was applied answers as a duplicate.
        """
        results: list[Outcome | CallbackError | None] = []
        held: list[tuple[_Tracked, int, CallbackEvent]] = []
        others: list[tuple[int, CallbackEvent]] = []
        for payload in payloads:
            try:
                event = self._ours_if_known(parse_callback(payload, statuses=self.policy.statuses))
            except CallbackError as error:
                self._refused(payload, error)
                results.append(error)
                continue
            tracked = None if isinstance(event, ForeignCallback) else self._by_id.get(event.task_id)
            if tracked is None:
                others.append((len(results), event))
            else:
                held.append((tracked, len(results), event))
            results.append(None)
        if held:
            self._apply_batch(held, results)
        for position, event in others:
            results[position] = self.deliver(event)
        return [result for result in results if result is not None]

    def _ours_if_known(self, event: CallbackEvent) -> CallbackEvent:
        """A callback that looks like another product's, but names a stream this Fleet or its store
        knows, is that stream's: read as a stream callback (the docs' field lists are incomplete,
        so a new field must not lose a callback), or refused if it cannot be (a status that is no
        integer, say), and so kept as a dead letter. Any other callback is what it looked like."""
        if not isinstance(event, ForeignCallback) or event.task_id is None:
            return event
        if self._by_id.get(event.task_id) is None and self.store.find(event.task_id) is None:
            return event
        if event.stream is None:
            raise CallbackError("data", "not in the shape of a stream callback, for a stream of ours")
        return event.stream

    def _refused(self, payload: bytes | str | Mapping[str, Any], error: CallbackError) -> None:
        """Keep a payload the parser refused as a dead letter, and say so: a payload of a shape this
        version does not read is not lost, and ``replay_dead_letters`` applies it once one does. A
        store that cannot keep it raises (the receiver answers 500, not 400)."""
        self._count("malformed")
        body = dead_letter_body(payload)
        letter = self.store.dead_letter(self.clock.now(), str(error), error.field, body)
        _log.warning(
            "streamlife.callback_refused", reason=str(error), field=error.field, size=len(body), letter=letter
        )

    def _apply_batch(
        self,
        batch: list[tuple[_Tracked, int, CallbackEvent]],
        results: list[Outcome | CallbackError | None],
    ) -> None:
        # By task (in key order, so two processes' batches lock rows in one order), each task's
        # callbacks in arrival order (the sort is stable).
        batch.sort(key=lambda item: item[0].task.key or "")
        tasks = list({id(tracked): tracked for tracked, _, _ in batch}.values())
        outcomes: list[Outcome] = []
        # Held by hand, not with an ExitStack, whose entering and leaving cost 4% of a batched callback.
        held: list[threading.Lock] = []
        try:
            for tracked in tasks:  # task locks before the store's: the order every path keeps
                tracked.lock.acquire()
                held.append(tracked.lock)
            versions = [tracked.version for tracked in tasks]
            owed = [0 if tracked.notices is None else len(tracked.notices) for tracked in tasks]
            try:
                with self.store.batch():
                    for tracked, position, event in batch:
                        results[position] = outcome = self._apply(tracked, event)
                        outcomes.append(outcome)
            except BaseException:
                for tracked, version, before in zip(tasks, versions, owed, strict=True):
                    if tracked.version != version:  # applied here, and not kept by the store
                        # Hooks hear of nothing that was not kept; what other threads applied
                        # before the batch (queued for them) they still hear of.
                        if tracked.notices is not None:
                            del tracked.notices[before:]
                        if self._put_back(tracked):
                            self._sync_timers(tracked)
                raise
        finally:
            for lock in held:
                lock.release()
        with self._lock:
            for outcome in outcomes:
                self._counts[outcome.kind] += 1
        for tracked in tasks:
            if tracked.notices is not None:
                self._deliver_notices(tracked)

    def deliver(self, event: CallbackEvent) -> Outcome:
        """Apply one callback already parsed by ``parse_callback``. It is journaled (or parked in
        the store) before this returns, so a webhook acknowledged after it is never lost."""
        if isinstance(event, ForeignCallback) and event.stream is not None:  # (parsed by a caller)
            event = self._ours_if_known(event)
        if isinstance(event, ForeignCallback):  # another product's result: no task of ours to apply it to
            self._count(OutcomeKind.FOREIGN)
            _log.debug("streamlife.foreign_callback", task_id=event.task_id)
            for hook in self._foreign_hooks:  # (no task, so no task's queue: called here, in turn)
                try:
                    hook(event)
                except Exception:
                    _log.exception("streamlife.hook_failed", hook=getattr(hook, "__qualname__", repr(hook)))
            return Outcome.FOREIGN
        while True:
            tracked = self._by_id.get(event.task_id)  # one dict read: atomic, so taken without the lock
            if tracked is None:
                # A task this Fleet does not hold may be in the store: one another process started,
                # or one that ended before a restart (its late callbacks are LATE, not orphans).
                tracked = self._load(event.task_id)
            if tracked is None:
                now = self.clock.now()
                with self._lock:
                    tracked = self._by_id.get(event.task_id)  # its start answer may have come meanwhile
                    if tracked is None:
                        ticket = self._park(event, now)
                if tracked is None:
                    return self._keep_parked(event, now, ticket)
            with tracked.lock:
                # A start answer names its task before it is journaled; if that write failed, the
                # task let the id go again (it is uncertain): the callback is parked instead.
                holds = self._by_id.get(event.task_id) is tracked
                if holds:
                    outcome = self._apply(tracked, event)
            if holds:
                break
        self._count(outcome.kind)  # (a StrEnum member counts under its value's name)
        if tracked.notices is not None:
            self._deliver_notices(tracked)
        return outcome

    def _keep_parked(self, event: StreamEvent, now: float, ticket: Ticket[CallbackEvent] | None) -> Outcome:
        """Keep a callback just parked in the store too, unless a write of it returned already: it
        is answered "parked" only once the store holds it. If the write fails, the callback leaves
        the lot (unless another delivery's write of it holds), and the error goes on: the receiver
        answers 503, and its redelivery parks it anew."""
        if ticket is None:  # a redelivery of a parked callback: kept once
            self._count(OutcomeKind.DUPLICATE)
            return Outcome.PARKED_ALREADY
        try:
            self.store.park(event.task_id, now, encode_event(event))
        except BaseException:
            with self._lock:
                self._parking.withdraw(ticket)
            raise
        with self._lock:
            self._parking.kept(ticket)
        if not ticket.first:  # (kept twice, then: the lot takes the second back as a repeat)
            self._count(OutcomeKind.DUPLICATE)
            return Outcome.PARKED_ALREADY
        self._count(OutcomeKind.PARKED)
        return Outcome.PARKED

    def _park(self, event: StreamEvent, now: float) -> Ticket[CallbackEvent] | None:
        """Park a callback (the caller holds the lock), and say what its store write owes. Raises
        ``ParkingFullError`` past ``Policy.max_parked`` or ``max_parked_per_task``: nothing parked
        is dropped to make room, and a callback refused is one the sender may deliver again."""
        try:
            return self._parking.park(event.task_id, event, now)
        except ParkingFullError as error:
            self._counts["parking_full"] += 1
            _log.warning("streamlife.parking_full", task_id=event.task_id, reason=str(error))
            raise

    def _apply(self, tracked: _Tracked, event: CallbackEvent) -> Outcome:
        """One callback at its task; the caller holds the task's lock."""
        task = tracked.task
        if task.state not in TERMINAL:
            tracked.last_heard = self.clock.now()  # before the fire: it may re-arm the silence timer
        if isinstance(event, Segment):
            outcome = self._fire(tracked, task.segment, event)
            if outcome is Outcome.APPLIED and self._segment_hooks:
                # (A segment forwarded with no index is handed over with the number it took.)
                numbered = event if event.index is not None else task.transcript.numbered(event)
                self._queue_notice(tracked, self._segment_hooks, (task, numbered))
            return outcome
        if isinstance(event, StatusCallback):
            meaning = event.meaning or self.policy.statuses.meaning(event.status)
            trigger = STATUS_TRIGGERS.get(meaning)
            if trigger is not None:
                outcome = self._fire(tracked, getattr(task, trigger), event)
                if meaning is StatusMeaning.UNKNOWN and outcome is Outcome.APPLIED:
                    _log.warning(
                        "streamlife.unknown_status", task=task.ref, task_id=task.task_id, status=event.status
                    )
                return outcome
        # A provider message, or a status declared ONGOING: news that the stream lives, no more.
        return Outcome.LATE if task.terminal else Outcome.APPLIED

    # -- timers ------------------------------------------------------------------------------------
    def tick(self) -> int:
        """Fire every deadline due by the clock's now, and adopt expired parked task_ids.

        Returns how many fired. Stops it sends (orphans, retries) go to the worker threads, or out
        on this thread when ``Policy.stop_concurrency`` is 0. A deadline whose handling raises is
        logged, and the others are handled all the same.
        """
        now = self.clock.now()
        with self._lock:
            due = self._deadlines.pop_due(now)
            orphans = self._parking.expire(now - self.policy.park_ttl)
            due_tasks = [(self._by_ref.get(ref), kind) for _, ref, kind in due]
        fired = 0
        for tracked, kind in due_tasks:
            if tracked is None:
                continue
            try:
                fired += self._deadline(tracked, kind, now)
            except Exception:
                _log.exception("streamlife.timer_failed", task=tracked.task.ref, kind=kind)
        for parked in orphans:
            try:
                self._adopt(parked, now, reap=self.policy.reap_orphans)
            except Exception:
                _log.exception("streamlife.timer_failed", task_id=parked.task_id, kind="adopt")
        fired += len(orphans)
        self._count("timers", fired)
        return fired

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

    def _deadline(self, tracked: _Tracked, kind: str, now: float) -> int:
        """Handle one popped deadline; return 1 if it fired, 0 if it was stale or moved on."""
        if kind == STOP_RETRY:
            if tracked.stop_wanted is not None:
                self._journal_wanted_stop(tracked)
            self._send_stop_soon(tracked, None)  # (popped, so no longer armed: it goes out)
            return 1
        if kind == START_RETRY:
            return self._retry_start(tracked)
        task, send = tracked.task, False
        with tracked.lock:
            if kind not in tracked.timers:
                return 0  # the state moved on after the deadline was popped: it is stale
            tracked.timers -= {kind}
            try:
                if kind == SILENCE:

                    def silence_unless_heard() -> Outcome:
                        # Asked again after the catch-up in _fire: another process may have heard it.
                        if tracked.last_heard + self.policy.silence_after > now:
                            return _HEARD
                        return task.silence()

                    if self._fire(tracked, silence_unless_heard) is _HEARD:
                        self._sync_timers(tracked)  # heard from since it was armed: wait from then
                        return 0
                    if self.policy.stop_when_stalled and task.state is TaskState.RUNNING:
                        self._fire(tracked, task.stop, StopReason.STALLED)
                        send = True
                elif kind == MAX_DURATION:
                    if task.state is TaskState.RUNNING:  # (the only state that arms it)
                        _log.info(
                            "streamlife.max_duration",
                            task=task.ref,
                            task_id=task.task_id,
                            seconds=self._limit(task),
                        )
                        self._fire(tracked, task.stop, StopReason.MAX_DURATION)
                        send = True
                elif kind == FINAL_CALLBACK:
                    self._fire(tracked, task.final_deadline)
                else:
                    self._fire(tracked, task.uncertain_deadline)
            except BaseException:
                # Not journaled, so not done: try again shortly, rather than never.
                if kind in _timers_for(task, self._limit(task)):
                    tracked.timers |= {kind}
                    with self._lock:
                        self._deadlines.arm(task.ref, kind, now + self.policy.stop_retry_base)
                raise
        self._deliver_notices(tracked)
        if send:
            self._send_stop_soon(tracked, None)
        return 1

    def _sync_timers(self, tracked: _Tracked) -> None:
        """Arm the deadlines the task's state needs, cancel the rest. Caller holds the task's lock."""
        task = tracked.task
        limit = self._limit(task)
        want = _timers_for(task, limit)
        if want is tracked.timers and task.state not in TERMINAL:  # (each want is one shared set)
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
                elif kind == START_RETRY:
                    when = max(now, tracked.start_not_before)
                elif kind == MAX_DURATION:
                    assert task.started_at is not None, "a running task's start answer came"
                    assert limit is not None, "only a task with a ceiling arms it"
                    when = task.started_at + limit
                else:
                    when = now + policy.uncertain_ttl
                self._deadlines.arm(ref, kind, when)
        tracked.timers = want

    # -- orphans -----------------------------------------------------------------------------------
    def _adopt(self, parked: Parked[CallbackEvent], now: float, *, reap: bool) -> _Tracked | None:
        """Take on the stream behind parked callbacks as a task of its own, and (``reap``) stop it.

        Returns the task that now holds the task_id: the adopted one, or the one whose start answer
        named it in the meantime, here or in another process (the callbacks are replayed to it);
        None if another process adopted it at the same moment (they wait for the next tick).
        """
        events = parked.events
        try:
            self._load(parked.task_id)  # a task the store knows (another process's) now holds the id
        except BaseException:  # the store failed: the callbacks wait in the lot for the next tick
            with self._lock:
                self._parking.put_back(parked)
            raise
        with self._lock:
            kinds = set(self._kinds_started)
        kind, certain = _kind_of_orphan(events, kinds)
        task = StreamTask(kind, None, clock=self.clock)
        task.key = uuid.uuid4().hex
        task.history_limit = self.policy.history_limit
        tracked = _Tracked(task, now)
        tracked.kind_guessed = not certain
        with tracked.lock:
            with self._lock:
                holder = self._by_id.setdefault(parked.task_id, tracked)
                if holder is tracked:
                    self._by_ref[task.ref] = tracked
                    self._by_key[task.key] = tracked
                    self._counts["orphans"] += 1
                # Callbacks that came after the lot let this id go, while this ran, were parked
                # again: they follow the others.
                later = self._parking.claim(parked.task_id)
                if later is not None:
                    parked.slots.extend(later.slots)
                    events.extend(later.events)
            if holder is tracked:
                try:
                    self._fire(tracked, task.adopt, parked.task_id)
                except BaseException as error:  # not journaled: no task after all; park them again
                    with self._lock:
                        del self._by_id[parked.task_id], self._by_ref[task.ref], self._by_key[task.key]
                        self._counts["orphans"] -= 1
                        self._parking.put_back(parked)
                    if not isinstance(error, StoreConflict):
                        raise
                    # Another process adopted it a moment ago: the next tick finds its task in the
                    # store and hands these callbacks to it.
                    _log.info("streamlife.orphan_taken", task_id=parked.task_id)
                    return None
                try:
                    read = self._apply_parked(tracked, parked.task_id, parked)
                except BaseException:  # (a stream adopted to be reaped is stopped all the same)
                    if reap and not task.terminal:
                        self._want_stop(tracked, StopReason.ORPHAN)
                    raise
                stopping = reap and not task.terminal
                _log.warning(
                    "streamlife.orphan",
                    task=task.ref,
                    task_id=parked.task_id,
                    callbacks=len(events),
                    first_parked=parked.first_parked,
                    reaping=stopping,
                )
                if self._orphan_hooks:
                    orphan = Orphan(task, parked.first_parked, len(events))
                    self._queue_notice(tracked, self._orphan_hooks, (orphan,))
                if stopping:
                    try:
                        self._fire(tracked, task.stop, StopReason.ORPHAN)
                    except BaseException:
                        self._want_stop(tracked, StopReason.ORPHAN)
                        raise
        if holder is not tracked:  # its start answer named it after all, after the lot let it go
            with holder.lock:
                read = self._apply_parked(holder, parked.task_id, parked)
            self._unpark(parked.task_id, events, read)
            self._deliver_notices(holder)
            return holder
        self._unpark(parked.task_id, events, read)  # (journaled: the stop they call for goes out anyway)
        self._deliver_notices(tracked)
        self._send_stop_soon(tracked, None)
        return tracked

    # -- the store ---------------------------------------------------------------------------------
    def _apply_parked(
        self, tracked: _Tracked, task_id: str, parked: Parked[CallbackEvent] | None
    ) -> list[ParkedCallback] | None:
        """Apply the callbacks the lot handed over for ``task_id`` to the task that now holds it,
        then those other processes kept (``_apply_kept``, whose read this returns). If the store
        fails on one, those not yet applied go back in the lot, and the error goes on: they were
        answered "parked", and the lot's next pass hands them to the task. Caller holds the task's
        lock."""
        slots = [] if parked is None else parked.slots
        done = 0
        try:
            for slot in slots:
                self._apply(tracked, slot.event)
                done += 1
        except BaseException:
            assert parked is not None, "a callback failed, so one was handed over"
            parked.slots = slots[done:]
            with self._lock:
                self._parking.put_back(parked)
            raise
        return self._apply_kept(tracked, task_id, [slot.event for slot in slots])

    def _apply_kept(
        self, tracked: _Tracked, task_id: str, own: Sequence[CallbackEvent]
    ) -> list[ParkedCallback] | None:
        """In a shared store, apply the callbacks other processes kept for ``task_id`` (this
        process's ``own`` are among them, applied already), and return what was read, for
        ``_unpark``. None for a store no other process writes. Caller holds the task's lock."""
        if not self.store.shared:
            return None
        read = self.store.parked(task_id)
        mine = [encode_event(event) for event in own]
        for other in read:
            if other.payload not in mine:
                self._apply(tracked, decode_event(other.payload))
        return read

    def _unpark(self, task_id: str, own: Sequence[CallbackEvent], read: list[ParkedCallback] | None) -> None:
        """Forget the kept callbacks a task has now applied: those ``read`` from a shared store (one
        another process parks meanwhile stays, for whoever applies it), else this process's own.
        After they are journaled: a crash before replays them, as duplicates. So a failure here
        is logged, not raised: the events it would forget are journaled already."""
        nothing = not own if read is None else not read
        if nothing:
            return
        try:
            self.store.unpark(task_id, upto=None if read is None else max(kept.seq for kept in read))
        except Exception:
            _log.exception("streamlife.store_failed", task_id=task_id, kind="unpark")

    def recover(self) -> list[StreamTask]:
        """Take back every task the store holds that is not terminal, after a restart (or from
        another process that stopped), and every callback it kept parked. Returns the tasks taken.

        Each task is rebuilt by replaying its journal and checked against its stored row
        (``JournalMismatch`` if they differ). Its deadlines are armed again from now. A task caught
        in ``starting`` may have created a stream whose answer died with the process: it becomes
        ``uncertain`` (and the stream, when its callbacks come, an orphan the reaper stops). A start
        refused for now (``pending``) fails: nothing was created, and its body is not stored. A stop
        not yet acknowledged is sent again by the next ``tick``: stop is safe to repeat. An orphan
        adopted but not yet stopped is stopped (``reap_orphans``).

        Call it before the webhook receiver listens: a callback that comes first loads its task
        from the store, and ``recover`` then leaves that task as it is.
        """
        taken = []
        for row in self.store.rows():
            with self._lock:
                held = row.key in self._by_key
            if held:
                continue
            tracked = self._hold(row)
            task = tracked.task
            reap = False
            with tracked.lock:
                if task.state is TaskState.STARTING:
                    self._fire(tracked, task.start_unknown, RecordedError(INTERRUPTED_START))
                elif task.state is TaskState.PENDING:  # a start refused for now, owed by the process
                    # that ended: nothing was created, and its body died with it (it is not stored).
                    self._fire(tracked, task.start)
                    self._fire(tracked, task.start_rejected, RecordedError(LOST_START_BODY))
                elif task.state is TaskState.RUNNING and (due := self._stop_was_due(task)) is not None:
                    reap = self._fire(tracked, task.stop, *due) is Outcome.APPLIED
            self._deliver_notices(tracked)  # (an unacknowledged stop was taken over by _hold)
            if reap:
                self._send_stop_soon(tracked, None)
            taken.append(task)
        self._recover_parked()
        _log.info("streamlife.recovered", tasks=len(taken))
        return taken

    def _stop_was_due(self, task: StreamTask) -> tuple[StopReason, ...] | None:
        """For a running task whose stop was decided before a crash, and not journaled, the stop's
        argument: none when the caller asked for it while it started, else why the Fleet stops it
        (an orphan to reap, a stall to stop). None when no stop was due. (A stream past its
        ``max_duration`` is stopped by its timer, which recovery arms in the past.)"""
        policy = self.policy
        if task.stop_requested:
            return ()
        if task.adopted and policy.reap_orphans:
            return (StopReason.ORPHAN,)
        if task.stalled and policy.stop_when_stalled:
            return (StopReason.STALLED,)
        return None

    def _limit(self, task: StreamTask) -> float | None:
        """The stream's cost ceiling in seconds: its start's own, else the policy's, else None."""
        return task.max_duration if task.max_duration is not None else self.policy.max_duration

    def _recover_parked(self) -> None:
        """Put the kept callbacks back: to their task if it is known now, else in the parking lot,
        as of when they first arrived (so orphans are reaped on time)."""
        delivered: dict[str, int] = {}  # task_id -> the last seq applied
        for kept in self.store.parked():
            event = decode_event(kept.payload)
            if isinstance(event, ForeignCallback):  # (never parked: ``deliver`` answers one at once)
                continue
            with self._lock:
                tracked = self._by_id.get(event.task_id)
            if tracked is None:
                tracked = self._load(event.task_id)
            if tracked is None:
                with self._lock:  # (answered "parked" once: never refused now)
                    self._parking.park(event.task_id, event, kept.at, put_back=True)
                continue
            with tracked.lock:
                self._apply(tracked, event)
            self._deliver_notices(tracked)
            delivered[event.task_id] = kept.seq
        for task_id, upto in delivered.items():  # (only those read: another process may park more)
            self.store.unpark(task_id, upto=upto)

    def journal(self, task_or_id: StreamTask | str) -> list[JournalEntry]:
        """Every event applied to the task, as the store keeps it (a task_id, or the task)."""
        task = self._tracked(task_or_id).task
        return self.store.journal(task.key or "")

    def _load(self, task_id: str) -> _Tracked | None:
        """Hold the task the store knows as ``task_id``; return the task that holds that id here
        (None if the store knows none)."""
        row = self.store.find(task_id)
        if row is None:
            return None
        self._hold(row)
        with self._lock:
            return self._by_id.get(task_id)

    def _hold(self, row: TaskRow) -> _Tracked:
        """The task of ``row.key``: the one this Fleet holds, or rebuilt from the store and held."""
        with self._lock:
            held = self._by_key.get(row.key)
        if held is not None:
            if held.version < row.version:  # held, but behind: the row may name its task_id now
                self._refresh(held)
            return held
        # Read after the row, the journal holds at least its entries; any beyond them were written
        # since (another process), and the next event catches up on them under the row's lock.
        entries = self.store.journal(row.key)[: row.version]
        task = rebuild(row, entries, clock=self.clock, history_limit=self.policy.history_limit)
        tracked = _Tracked(task, self.clock.now(), row.version)
        tracked.created_at = row.created_at
        tracked.kind_guessed = bool(row.facts.get("kind_guessed"))
        with tracked.lock:
            with self._lock:
                held = self._by_key.setdefault(row.key, tracked)
                if held is tracked:
                    self._by_ref[task.ref] = tracked
                    self._kinds_started.add(task.kind)
                    if task.task_id is not None:  # (a second claimant of a task_id is held by key)
                        self._by_id.setdefault(task.task_id, tracked)
            if held is tracked:
                self._sync_timers(tracked)
                self._take_over_stop(tracked, after=self.policy.stop_retry_base)
        return held

    # -- hooks -------------------------------------------------------------------------------------
    def on_transition(self, hook: Hook) -> Hook:
        """Call ``hook(task, entry)`` after every applied event but segments. Usable as a decorator."""
        self._transition_hooks = (*self._transition_hooks, hook)
        return hook

    def on_segment(self, hook: Hook) -> Hook:
        """Call ``hook(task, segment)`` for every new segment (a partial, or a final)."""
        self._segment_hooks = (*self._segment_hooks, hook)
        return hook

    def on_foreign(self, hook: Hook) -> Hook:
        """Call ``hook(callback)`` for every well-formed callback that is no stream event: memories.ai
        posts every product's async results to the account's one webhook URL. The callback (a
        ``ForeignCallback``, its payload in ``raw``) is answered 200 and never parked or adopted; the
        hook runs on the thread that delivered it, before the answer: keep it quick."""
        self._foreign_hooks = (*self._foreign_hooks, hook)
        return hook

    def on_orphan(self, hook: Hook) -> Hook:
        """Call ``hook(orphan)`` when a stream nobody started is adopted (and, by default, stopped)."""
        self._orphan_hooks = (*self._orphan_hooks, hook)
        return hook

    def _queue_notice(self, tracked: _Tracked, hooks: Hooks, args: tuple[Any, ...]) -> None:
        """Queue a call of ``hooks`` for after the task's lock is let go. Caller holds the lock."""
        if tracked.notices is None:
            tracked.notices = []
        tracked.notices.append((hooks, args))

    def _deliver_notices(self, tracked: _Tracked) -> None:
        """Call the task's queued hooks, in order, on this thread, unless another thread is at it
        (it will call the new ones too). Called with the task's lock not held."""
        if tracked.notices is None:
            return  # nothing queued: the common case, without taking the lock
        with tracked.lock:
            if tracked.delivering:
                return
            tracked.delivering = True
        try:
            while True:
                with tracked.lock:
                    batch, tracked.notices = tracked.notices, None
                    if batch is None:
                        tracked.delivering = False
                        return
                for hooks, args in batch:
                    for hook in hooks:
                        try:
                            hook(*args)
                        except Exception:
                            _log.exception(
                                "streamlife.hook_failed", hook=getattr(hook, "__qualname__", repr(hook))
                            )
        except BaseException:
            with tracked.lock:
                tracked.delivering = False
            raise

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
            everyone = list(self._by_ref.values())
        return [tracked.task for tracked in everyone if wanted is None or tracked.task.state is wanted]

    def unsettled(self) -> list[StreamTask]:
        """Tasks whose end is not yet confirmed: a stop asked for (failing stops stay listed here),
        or an end the Fleet inferred (``ending``) while its confirming stop is on its way."""
        return [
            task
            for task in self.tasks()
            if (task.stop_requested and not task.terminal) or task.state in STOP_DUE
        ]

    def exposure(self) -> Exposure:
        """What this Fleet's streams have cost so far, as the client estimates it: every 5-second
        cycle begun from each start answer until its end was confirmed (``StreamTask.billed_seconds``),
        priced by ``Policy.rates``. Streams whose end is not confirmed count up to now."""
        with self._lock:
            everyone = [tracked.task for tracked in self._by_ref.values()]
        now, rates = self.clock.now(), self.policy.rates
        seconds = dollars = 0.0
        for task in everyone:
            billed = task.billed_seconds(now)
            seconds += billed
            dollars += rates.cost(task.kind, task.params, billed)
        live = sum(not task.terminal and task.started_at is not None for task in everyone)
        return Exposure(len(everyone), live, seconds, dollars, rates.as_of)

    def stats(self) -> FleetStats:
        """Counts so far. ``callbacks`` counts what each callback met on arrival: one parked, then
        replayed, is counted as parked (its task's history shows what the replay did)."""
        with self._lock:
            counts = dict(self._counts)
            parked = len(self._parking)
            everyone = list(self._by_ref.values())
        by_state = Counter(tracked.task.state.value for tracked in everyone)
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
        """Fire one trigger at the task and journal it, then keep its timers, waiters and hooks in step.

        The event is fired under the store's lock on the task's row, and written with it: if another
        process moved the task, its entries are replayed here first; if the write fails, the task
        is put back as the store holds it and the error raised, so nothing is acknowledged that was
        not journaled. The caller holds the task's lock, and calls ``_deliver_notices`` after.
        """
        if tracked.stale:  # ahead of its store since a failed write: put back first (or raise again)
            self._reset(tracked)
            tracked.stale = False
            self._sync_timers(tracked)
        task = tracked.task
        was_terminal = task.state in TERMINAL
        was_ending = task.state is TaskState.ENDING
        caught_up = applied = False
        moved = True  # whether the event may have changed the task's state or facts (timers follow them)
        try:
            if tracked.version == 0:  # the task's first event makes its row
                outcome = method(*args)
                applied = outcome is Outcome.APPLIED
                if applied:
                    row, entry = self._row(tracked, 1), entry_for(task, 1, args)
                    claim = task.task_id if entry.trigger == "adopt" else None  # an orphan's, once
                    self.store.create(row, (entry,), claim=claim)
                    tracked.version, tracked.created_at = 1, row.created_at
            else:
                with self.store.lock(task.key or "") as txn:
                    if txn.version != tracked.version:
                        caught_up = self._catch_up(tracked, txn.entries_after(tracked.version))
                    revision = task.revision
                    outcome = method(*args)
                    applied = outcome is Outcome.APPLIED
                    if applied:
                        version = tracked.version + 1
                        # An event that left the task's state and facts as they were (a segment
                        # applied while running: most events) moves the stored row on: no row is
                        # built, none serialised.
                        moved = task.revision != revision
                        txn.write(
                            (entry_for(task, version, args),), self._row(tracked, version) if moved else None
                        )
                        tracked.version = version
        except BaseException:
            # Put back as the store holds it, or caught up with it: either way its timers follow.
            if (applied and self._put_back(tracked)) or caught_up:
                self._sync_timers(tracked)
            raise
        if (applied and moved) or caught_up:  # (the timers a task needs follow its row's fields)
            self._sync_timers(tracked)
            if not was_terminal and task.state in TERMINAL:
                with self._settled:
                    self._settled.notify_all()
            if applied and not was_ending and task.state is TaskState.ENDING:
                # An end inferred, not confirmed: the stop that confirms it goes out once the task's
                # lock is let go, in turn with the task's other notices.
                self._queue_notice(tracked, (self._confirm_end,), (tracked,))
        if applied and self._transition_hooks:  # of what this Fleet applied, not what it replayed
            last = task.history[-1]
            if last.trigger != "segment":
                self._queue_notice(tracked, self._transition_hooks, (task, last))
        return outcome

    def _row(self, tracked: _Tracked, version: int) -> TaskRow:
        extra = _KIND_GUESSED if tracked.kind_guessed else None
        return row_for(tracked.task, tracked.task.key or "", version, tracked.created_at, extra)

    def _catch_up(self, tracked: _Tracked, entries: Sequence[JournalEntry]) -> bool:
        """Replay what another process applied to the task since this copy last saw it."""
        task = tracked.task
        replay(task, entries)
        if any(entry.trigger == "stop_ok" and entry.args for entry in entries):
            tracked.kind_guessed = False  # another process's stop settled the orphan's product
        if entries:
            tracked.version = entries[-1].version
            heard = [entry.at for entry in entries if TRIGGERS[entry.trigger] is Source.CALLBACK]
            if heard:  # another process heard from the stream: the silence window counts from then
                tracked.last_heard = max(tracked.last_heard, heard[-1])
            if task.task_id is not None:  # named by another process's start answer
                with self._lock:
                    self._by_id.setdefault(task.task_id, tracked)
            self._take_over_stop(tracked, after=self.policy.stop_retry_base)
        _log.debug("streamlife.caught_up", task=tracked.task.ref, key=tracked.task.key, entries=len(entries))
        return bool(entries)

    def _refresh(self, tracked: _Tracked) -> None:
        """Catch the task up with what other processes applied to it, now rather than at its next
        event."""
        with tracked.lock:
            with self.store.lock(tracked.task.key or "") as txn:
                if txn.version != tracked.version:
                    self._catch_up(tracked, txn.entries_after(tracked.version))
            self._sync_timers(tracked)
        self._deliver_notices(tracked)

    def _take_over_stop(self, tracked: _Tracked, *, after: float) -> None:
        """A task found stopping with no acknowledged stop, in the store (after a restart, or put
        there by another process): its stop may have failed where nobody retries it now, so this
        Fleet retries it too (stop is safe to repeat). Caller holds the task's lock."""
        task = tracked.task
        if task.state not in STOP_DUE or task.stop_acknowledged or tracked.stop_in_flight:
            return
        when = max(self.clock.now() + after, self._held_back_until(tracked))  # (the service's wait holds)
        with self._lock:
            if self._deadlines.when(task.ref, STOP_RETRY) is None:
                self._deadlines.arm(task.ref, STOP_RETRY, when)

    def _put_back(self, tracked: _Tracked) -> bool:
        """``_reset``, after a failed write, for a caller about to raise that failure: whether it
        worked. If the store is down, the task stays ahead of it until its next event, which puts
        it back first (``stale``); the log says why."""
        try:
            self._reset(tracked)
        except Exception:
            _log.exception("streamlife.reset_failed", task=tracked.task.ref, key=tracked.task.key)
            tracked.stale = True
            return False
        return True

    def _reset(self, tracked: _Tracked) -> None:
        """Put the task back as the store holds it, after a write that did not land."""
        key = tracked.task.key or ""
        row = self.store.row(key)
        reset(tracked.task, row, self.store.journal(key)[: row.version] if row is not None else ())
        tracked.version = 0 if row is None else row.version

    def _fire_logged(self, tracked: _Tracked, method: Callable[..., Outcome], *args: Any) -> None:
        """``_fire`` for a recovery path that must not hide the error it recovers from: what this one
        raises (the store is down, say) is logged. Caller holds the task's lock."""
        try:
            self._fire(tracked, method, *args)
        except Exception:
            _log.exception("streamlife.store_failed", task=tracked.task.ref, key=tracked.task.key)

    def _locked_fire(self, tracked: _Tracked, method: Callable[..., Outcome], *args: Any) -> Outcome:
        with tracked.lock:
            outcome = self._fire(tracked, method, *args)
        self._deliver_notices(tracked)
        return outcome

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
        if isinstance(task_or_id, str):
            tracked = self._load(task_or_id)  # another process's task, or one from before a restart
            if tracked is not None:
                return tracked
        raise UnknownTaskError(repr(task_or_id))

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n


def _give_up_at(wait: float | None) -> float | None:
    if wait is None:
        return None
    if not wait >= 0:  # (NaN too)
        raise ValueError(f"wait must be None or seconds >= 0, got {wait!r}")
    return time.monotonic() + wait


def _check_start(kind: StreamKind, params: Mapping[str, Any]) -> None:
    """Refuse a start body that lacks what the service requires, before anything is journaled."""
    url_field = URL_FIELD[kind]
    if not isinstance(params.get(url_field), str) or not params[url_field]:
        raise ValueError(f"a {kind.value} stream needs {url_field}=<the stream's URL>")
    if kind is StreamKind.AUDIO and params.get("provider") not in PROVIDERS:
        allowed = " or ".join(repr(name) for name in PROVIDERS)
        raise ValueError(f"an audio stream needs provider={allowed}, got {params.get('provider')!r}")


def _other(kind: StreamKind) -> StreamKind:
    return StreamKind.VIDEO if kind is StreamKind.AUDIO else StreamKind.AUDIO


def _timers_for(task: StreamTask, limit: float | None) -> frozenset[str]:
    """The state-driven deadlines a task needs right now (``limit``: its cost ceiling, if any)."""
    state = task.state
    if state is TaskState.RUNNING:
        if limit is None:
            return _NONE if task.stalled else _SILENCE
        return _LIMIT if task.stalled else _SILENCE_AND_LIMIT
    if state in STOP_DUE:
        return _FINAL if task.stop_acknowledged else _NONE
    if state is TaskState.UNCERTAIN:
        return _UNCERTAIN
    if state is TaskState.PENDING:  # (only a start refused for now brings a task back here)
        # Only the process that holds the start body sends it again: the store does not keep it
        # (stream URLs carry stream keys), so a copy rebuilt from the store cannot.
        return _START_RETRY if task.params is not None else _NONE
    return _NONE


def _kind_of_orphan(events: Sequence[CallbackEvent], started: set[StreamKind]) -> tuple[StreamKind, bool]:
    """Which product an orphan's stream belongs to, so its stop goes to the right path, and
    whether its callbacks showed it (True) or it is a guess (False).

    Callbacks do not name their product. A transcript (text) or a provider message means audio;
    a moderation result (a segment with no text) means video; with only status callbacks to go
    on, the one kind this Fleet starts (else audio) is a guess, and the stop tries the other path
    when the first answers "not found".
    """
    for event in events:
        if isinstance(event, Segment):
            return (StreamKind.AUDIO if event.text is not None else StreamKind.VIDEO), True
        if isinstance(event, ProviderEvent):
            return StreamKind.AUDIO, True
    return (next(iter(started)) if len(started) == 1 else StreamKind.AUDIO), False
