"""Fleet: every stream of a process, started, stopped, fed its callbacks and timed.

The Fleet is a facade: it wires the parts below and keeps the public API. Each part has one job,
and takes what it needs when it is made:

  * ``Ledger`` fires one trigger at a task durably, under the store's lock on the task's row, and
    says what changed; ``Mover`` reacts to that (timers, waiters, hooks). Every move goes through it.
  * ``Timers`` arms each task's deadlines from the lifecycle's ``DEADLINES`` table; ``Ticker``
    handles them when they come due.
  * ``Starter`` sends starts and files their answers; ``Stopper`` sends stops and retries them.
  * ``Intake`` takes webhook payloads; ``Applier`` fires one callback's trigger at its task;
    ``Orphans`` parks callbacks for task_ids nobody has named yet, and adopts the streams they
    turn out to be.
  * ``Notices`` calls the user's hooks, after the event they report, in order.

Locks: each task has its own, which serialises its events; the store's lock on the task's row is
taken inside it; the registry's lock (the indexes, the parking lot, the deadline heap) is the
innermost, held for a few dict operations. No lock is held during a request to memories.ai, so a
slow stop never stalls a callback. docs/architecture.md draws the data paths.
"""

from __future__ import annotations

import concurrent.futures
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from streamlife._billing import Exposure
from streamlife._callbacks import CallbackEvent
from streamlife._clock import SYSTEM_CLOCK, Clock
from streamlife._events import Outcome, OutcomeKind, StreamKind
from streamlife._logging import get_logger
from streamlife._policy import Policy, check_max_duration
from streamlife._task import StreamTask
from streamlife._task_urls import CallbackUrls
from streamlife._timer_loop import TimerLoop
from streamlife.errors import CallbackError, StopAllError, UnknownTaskError
from streamlife.hooks import ForeignHook, OrphanHook, SegmentHook, TransitionHook
from streamlife.lifecycle import STOP_DUE, TaskState
from streamlife.protocol import PROVIDERS, URL_FIELD, understand_body_problem
from streamlife.store import JournalEntry, MemoryStore, Store, TaskRow
from streamlife.transport.base import Transport

from ._apply import Applier
from ._intake import Intake
from ._ledger import Ledger
from ._moves import Mover
from ._notices import Notices
from ._orphans import Orphans, kind_of_orphan
from ._recovery import recover
from ._registry import Registry
from ._starter import Starter
from ._stopper import Stopper, other_kind
from ._takeover import Takeover
from ._ticker import Ticker
from ._timers import Timers
from ._tracked import Tracked
from ._workers import Backoff, Workers

_log = get_logger()

# The hook given is returned as it is, so the methods work as decorators and keep its type.
_Transition = TypeVar("_Transition", bound=TransitionHook)
_Segment = TypeVar("_Segment", bound=SegmentHook)
_Orphan = TypeVar("_Orphan", bound=OrphanHook)
_Foreign = TypeVar("_Foreign", bound=ForeignHook)


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


class Fleet:
    """Runs many streams: ``start``, ``stop``, ``stop_all``, ``handle_callback``, ``tick``.

    ``transport`` talks to memories.ai (``HttpTransport``) or its simulator (``SimTransport``);
    ``clock`` times every deadline (``SystemClock`` by default); ``policy`` holds every timeout
    and switch; ``store`` journals every task (``MemoryStore`` by default: use ``SqliteStore`` or
    ``PostgresStore`` to survive a restart, then call ``recover()``); ``callback_urls`` makes the
    per-task callback URL of each Live Video Understanding start that does not give its own
    ``callback=`` (``CallbackUrls``: the receiver verifies it, and routes what comes by it to its
    task, named even if its start answer is lost). Deadlines fire when someone
    calls ``tick()``: ``run_timers()`` does it from a background thread. ``close()`` (or leaving a
    ``with Fleet(...)`` block) waits for the stop requests still in flight and releases the worker
    threads; the transport and the store are the caller's, and stay open.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        clock: Clock | None = None,
        policy: Policy | None = None,
        store: Store | None = None,
        callback_urls: CallbackUrls | None = None,
    ) -> None:
        if callback_urls is not None and not isinstance(callback_urls, CallbackUrls):
            raise TypeError(f"callback_urls is a CallbackUrls, not {type(callback_urls).__name__}")
        self._transport = transport
        self.callback_urls: Final = callback_urls
        self.clock = clock = clock or SYSTEM_CLOCK
        self.policy = policy = policy or Policy()
        self.store = store = MemoryStore() if store is None else store
        # The wiring: each part gets what it uses, and nothing else.
        self._registry = registry = Registry()
        self._notices = notices = Notices()
        self._workers = workers = Workers(policy)
        backoff = Backoff(policy)
        timers = Timers(registry, clock, policy)
        ledger = Ledger(store, registry, clock, policy.history_limit)
        ledger.on_caught_up = lambda tracked: timers.take_over_stop(tracked, after=policy.stop_retry_base)
        ledger.due_of = timers.due
        timers.requests_ahead = workers.waiting
        self._mover = mover = Mover(ledger, store, registry, timers, notices, policy)
        self._stopper = stopper = Stopper(
            transport, mover, timers, notices, registry, workers, backoff, clock, policy
        )
        mover.on_ending = stopper.confirm_end
        applier = Applier(mover, notices, clock, policy)
        self._orphans = orphans = Orphans(store, registry, mover, applier, stopper, notices, clock, policy)
        self._intake = Intake(store, registry, mover, applier, orphans, notices, clock, policy, stopper)
        self._starter = starter = Starter(
            transport, mover, stopper, orphans, timers, notices, registry, workers, backoff, clock, policy
        )
        takeover = Takeover(store, registry, mover, timers, stopper, notices, orphans, clock, policy)
        self._ticker = Ticker(
            registry, timers, mover, stopper, starter, orphans, notices, takeover, clock, policy
        )

    @property
    def transport(self) -> Transport:
        """How the Fleet talks to memories.ai. Replacing it takes effect for the next request."""
        return self._transport

    @transport.setter
    def transport(self, transport: Transport) -> None:
        self._transport = self._starter.transport = self._stopper.transport = transport

    def __repr__(self) -> str:
        tasks, parked = len(self._registry.by_ref), len(self._orphans.lot)
        return f"Fleet(tasks={tasks}, parked={parked}, transport={self.transport!r})"

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Wait for the stop requests in flight, then release the worker threads. Tasks stay as
        they are: stopping ones still need ``tick`` (or another Fleet, after a restart). The
        transport and the store are not closed: they were given, and may be shared."""
        self._workers.close()

    # -- starting and stopping ---------------------------------------------------------------------
    def start(self, kind: StreamKind | str, **params: Any) -> StreamTask:
        """Start a stream and return its task: ``running``, or ``failed``/``uncertain`` if it did not
        start for certain (``task.last_error`` says why), or ``pending`` if the service refused it for
        now (429, capacity 16) or ``Policy.max_live`` streams live: ``tick`` starts it again after a
        backoff, within ``Policy.start_retry_window``, and ``stop`` cancels it without a request.
        Blocks for the start request only.

        ``params`` is the start body: ``audio_url=`` and ``provider=`` (audio), ``url=`` (video), or
        ``url=``, ``user_prompt=`` and ``callback=`` (understand; left out, the Fleet's
        ``callback_urls`` gives the task's own URL), plus any options. A start is
        billed and not idempotent, so it is retried only when the service said that nothing was
        created, never once the request may have created a stream.
        ``max_duration=`` is the one keyword that is not the body's: this stream's cost ceiling in
        seconds (instead of ``Policy.max_duration``); the Fleet stops it once it has run that long.
        It is journaled, never sent. (Taken out of ``params``, not a parameter of its own, so that
        a body built as a ``dict[str, str]`` still type-checks.)
        """
        params = dict(params)
        max_duration = params.pop("max_duration", None)
        if max_duration is not None:
            max_duration = check_max_duration(max_duration)
        kind = StreamKind(kind)
        key = uuid.uuid4().hex
        if kind is StreamKind.UNDERSTAND and "callback" not in params and self.callback_urls is not None:
            # The task's own URL, signed: kept in the start body only (never stored, logged or shown).
            params["callback"] = self.callback_urls.url_for(key)
        _check_start(kind, params)
        task = StreamTask(kind, params, clock=self.clock)
        task.key = key
        task.history_limit = self.policy.history_limit
        self._mover.bound_transcript(task)
        tracked = Tracked(task, self.clock.now())
        registry = self._registry
        with registry.lock:
            registry.add(tracked)
            registry.kinds_started.add(kind)
        limit = () if max_duration is None else (max_duration,)
        try:
            self._mover.locked_fire(tracked, task.start, *limit)  # journaled before the request leaves
        except BaseException:
            with registry.lock:
                registry.drop(tracked)  # never started: the store's error
            raise
        self._starter.send(tracked)
        return task

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
        tracked = self._ask_stop(task_or_id, give_up_at)
        if give_up_at is not None:
            self._mover.wait_settled([tracked], give_up_at)
        return tracked.task

    def _ask_stop(self, task_or_id: StreamTask | str, give_up_at: float | None) -> Tracked:
        """``stop`` up to its wait: journaled, and its request sent (``give_up_at`` None) or handed
        to a worker to send by ``give_up_at``. ``AsyncFleet`` awaits the rest on its loop."""
        tracked = self._tracked(task_or_id)
        try:
            self._mover.locked_fire(tracked, tracked.task.stop)
        except Exception:  # not journaled, but asked for: no start of it goes out from here
            self._stopper.want(tracked)
            raise
        if give_up_at is None:
            self._stopper.send(tracked, asked=True)
        else:
            self._stopper.send_soon(tracked, give_up_at, asked=True)
        return tracked

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
        alive, failures = self._ask_stop_all(give_up_at)
        if give_up_at is not None:
            self._mover.wait_settled(alive, give_up_at)
        unsettled = [tracked.task for tracked in alive if not tracked.task.terminal]
        if failures:
            raise StopAllError(failures, unsettled)
        return unsettled

    def _ask_stop_all(
        self, give_up_at: float | None
    ) -> tuple[list[Tracked], list[tuple[StreamTask | str, BaseException]]]:
        """``stop_all`` up to its wait: every stop journaled and sent (``give_up_at`` None: answered)
        or handed to the workers. Returns the tasks it stopped, and the stops that failed."""
        registry, stopper = self._registry, self._stopper
        with registry.lock:
            parked = self._orphans.lot.expire(float("inf"))
        failures: list[tuple[StreamTask | str, BaseException]] = []
        unjournaled: list[tuple[str, tuple[StreamKind, ...]]] = []  # (task_id, the paths to try)
        for orphan in parked:
            try:
                self._orphans.adopt(orphan, self.clock.now(), reap=True)
            except Exception as error:  # (its callbacks are parked again, for the next tick)
                failures.append((orphan.task_id, error))
                kind, certain = kind_of_orphan(list(orphan.events), registry.started_kinds())
                unjournaled.append((orphan.task_id, (kind,) if certain else (kind, other_kind(kind))))
        alive = [tracked for tracked in registry.everyone() if not tracked.task.terminal]
        # Each stop's due allows for the stops sent before it (``Timers.due``): these are counted
        # as waiting from their journaling until each goes out or is handed to a worker.
        workers, ahead = self._workers, len(alive)
        workers.expect(ahead)
        try:
            for tracked in alive:
                try:
                    self._mover.locked_fire(tracked, tracked.task.stop)
                except Exception as error:
                    stopper.want(tracked)
                    failures.append((tracked.task, error))
                    # (stale: maybe running)
                    running = tracked.task.state is TaskState.RUNNING or tracked.stale
                    if tracked.task.task_id is not None and running:
                        unjournaled.append((tracked.task.task_id, (tracked.task.kind,)))
            if workers.threaded:
                sent = []
                for tracked in alive:
                    ahead -= 1
                    workers.expect(-1)
                    sent.append(workers.submit(stopper.send_logged, tracked, give_up_at, True))
                sent += [workers.submit(stopper.send_unjournaled, *stop, give_up_at) for stop in unjournaled]
                if give_up_at is None:
                    concurrent.futures.wait(sent)
            else:
                for tracked in alive:
                    ahead -= 1
                    workers.expect(-1)
                    stopper.send_logged(tracked, give_up_at, True)
                for task_id, kinds in unjournaled:
                    stopper.send_unjournaled(task_id, kinds, give_up_at)
        finally:
            workers.expect(-ahead)
        return alive, failures

    # -- callbacks ---------------------------------------------------------------------------------
    def handle_callback(self, payload: bytes | str | Mapping[str, Any], *, key: str | None = None) -> Outcome:
        """Apply one webhook payload (raw bytes, text, or a parsed mapping) and say what became of it.

        ``key``: the task key of the callback URL it came by, once that URL was verified
        (``CallbackUrls``; the ``WebhookReceiver`` passes it). The callback is then that task's
        alone, never parked: it names the task's stream if no start answer has yet, and raises
        ``MisroutedCallbackError`` (nothing changes; the receiver answers 403) if it names another
        stream, or one another task holds, or if no task has the key.

        Raises ``CallbackError`` for a payload that is not a callback (the receiver answers 400),
        after keeping it as a dead letter (not one that came with a ``key``: a replay would
        deliver it by the task_id it names, which a task's URL does not vouch for). Anything well
        formed returns an Outcome: APPLIED, DUPLICATE, LATE, PARKED (its task_id is not known yet),
        FOREIGN (another product's result, handed to the ``on_foreign`` hooks) or REJECTED with the
        reason; or, when nothing of it could be kept now, raises ``StoreError`` (the store failed)
        or ``ParkingFullError`` (no room to park it). Deliver such a callback again later: the
        receiver answers 503.
        """
        event = self._intake.parse(payload, routed=key is not None)
        return self._intake.deliver(event) if key is None else self._intake.deliver_routed(key, event)

    def handle_callbacks(
        self,
        payloads: Iterable[bytes | str | Mapping[str, Any]],
        *,
        keys: Sequence[str | None] | None = None,
    ) -> list[Outcome | CallbackError]:
        """Apply many webhook payloads, in order, with one store commit: for a consumer that takes
        callbacks in batches (from a queue, say), where a commit per callback is most of the cost.

        Each result is what ``handle_callback`` would have returned for its payload, or the
        ``CallbackError`` it would have raised. Everything applied is journaled before this
        returns. If the store fails, no callback of the batch counts as applied (each task touched
        is put back as the store holds it) and the error is raised: deliver the batch again.

        The batch's tasks are locked together, in one order, before the store's transaction opens,
        and held until it commits: callbacks for them on other threads wait that long. A task this
        Fleet does not hold but the store does (another process started it) is held first and
        joins the batch. Callbacks for task_ids neither knows go through ``deliver`` one by one,
        after the batch has committed: one of them that raises (``ParkingFullError``, or
        ``StoreError`` from its own write) leaves the batch applied. Delivering the whole batch
        again is still safe: what was applied answers as a duplicate.

        ``keys``: for each payload, the ``key`` that ``handle_callback`` takes, or None. A routed
        callback whose task has not been named goes alone after the commit, as do task_ids not known.
        """
        if keys is None:
            return self._intake.handle_many(payloads)
        payloads = list(payloads)
        if len(keys) != len(payloads):
            raise ValueError(f"{len(keys)} keys for {len(payloads)} payloads: one key (or None) each")
        return self._intake.handle_many(payloads, keys)

    def deliver(self, event: CallbackEvent) -> Outcome:
        """Apply one callback already parsed by ``parse_callback``. It is journaled (or parked in
        the store) before this returns, so a webhook acknowledged after it is never lost."""
        return self._intake.deliver(event)

    # -- timers ------------------------------------------------------------------------------------
    def tick(self) -> int:
        """Fire every deadline due by the clock's now, and adopt expired parked task_ids. With a
        store other processes share, first take over the tasks they left overdue, four times per
        ``Policy.takeover_after`` (see ``Store.claim_due``).

        Returns how many fired. Stops it sends (orphans, retries) go to the worker threads, or out
        on this thread when ``Policy.stop_concurrency`` is 0. A deadline whose handling raises is
        logged, and the others are handled all the same; so is a look the store refuses.
        """
        return self._ticker.tick()

    def next_deadline(self) -> float | None:
        """When ``tick`` next has work: the soonest deadline, parking expiry or (with a shared
        store) look for overdue tasks; None when there is none."""
        return self._ticker.next_deadline()

    @contextmanager
    def run_timers(self, *, interval: float = 1.0) -> Iterator[Fleet]:
        """Call ``tick`` from a background thread while the block runs, at least every ``interval``
        real seconds and at each deadline. A tick that raises is logged and the thread goes on."""
        with TimerLoop(self, interval=interval):
            yield self

    # -- after a restart ---------------------------------------------------------------------------
    def recover(
        self,
        *,
        only: Callable[[TaskRow], bool] | None = None,
        parked: bool | Callable[[str], bool] = True,
    ) -> list[StreamTask]:
        """Take back every task the store holds that is not terminal, after a restart (or from
        another process that stopped), and every callback it kept parked. Returns the tasks taken.

        Several processes that split a shared store's tasks between them each take back their own
        share. ``only`` takes back only the tasks whose stored row it accepts. ``parked`` says which
        parked callbacks it takes back: all (True), none (False: another process takes them), or
        those whose task_id it accepts (a function). The others still take over a task that its
        process leaves overdue (``Policy.takeover_after``).

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
        return recover(
            self.store,
            self._registry,
            self._mover,
            self._stopper,
            self._orphans,
            self._notices,
            self.policy,
            only,
            parked,
        )

    # -- hooks -------------------------------------------------------------------------------------
    def on_transition(self, hook: _Transition) -> _Transition:
        """Call ``hook(task, entry)`` after every applied event but segments. Usable as a decorator."""
        self._notices.transition = (*self._notices.transition, hook)
        return hook

    def on_segment(self, hook: _Segment) -> _Segment:
        """Call ``hook(task, segment)`` for every new segment (a partial, or a final)."""
        self._notices.segment = (*self._notices.segment, hook)
        return hook

    def on_foreign(self, hook: _Foreign) -> _Foreign:
        """Call ``hook(callback)`` for every well-formed callback that is not a stream event:
        memories.ai posts every product's async results to the account's one webhook URL. The
        callback (a ``ForeignCallback``, its payload in ``raw``) is answered 200 and never parked
        or adopted; the hook runs on the thread that delivered it, before the answer: keep it quick."""
        self._notices.foreign = (*self._notices.foreign, hook)
        return hook

    def on_orphan(self, hook: _Orphan) -> _Orphan:
        """Call ``hook(orphan)`` when a stream nobody started is adopted (and, by default, stopped)."""
        self._notices.orphan = (*self._notices.orphan, hook)
        return hook

    # -- reading -----------------------------------------------------------------------------------
    def journal(self, task_or_id: StreamTask | str) -> list[JournalEntry]:
        """Every event applied to the task, as the store keeps it (a task_id, or the task)."""
        task = self._tracked(task_or_id).task
        return self.store.journal(task.key or "")

    def get(self, task_id: str) -> StreamTask | None:
        """The task memories.ai knows as ``task_id``, or None. With a shared store, a task not yet
        terminal first catches up with what other processes applied to it (one row read)."""
        with self._registry.lock:
            tracked = self._registry.by_id.get(task_id)
        if tracked is None:  # another process's task, or one let go from memory: the store's
            tracked = self._mover.load(task_id)
            return None if tracked is None else tracked.task
        if self.store.shared and not tracked.task.terminal:
            self._mover.catch_up([tracked])
        return tracked.task

    def tasks(self, state: TaskState | str | None = None) -> list[StreamTask]:
        """Every task (in the order they were made), or those in ``state``."""
        wanted = None if state is None else TaskState(state)
        everyone = self._registry.everyone()
        return [tracked.task for tracked in everyone if wanted is None or tracked.task.state is wanted]

    def unsettled(self) -> list[StreamTask]:
        """Tasks whose end is not yet confirmed: a stop asked for (failing stops stay listed here),
        or an end the Fleet inferred (``ending``) while its confirming stop is on its way. With a
        shared store, these catch up first with what other processes applied to them."""

        def owed(task: StreamTask) -> bool:
            return (task.stop_requested and not task.terminal) or task.state in STOP_DUE

        if self.store.shared:
            self._mover.catch_up([tracked for tracked in self._registry.everyone() if owed(tracked.task)])
        return [task for task in self.tasks() if owed(task)]

    def exposure(self) -> Exposure:
        """What this Fleet's streams have cost so far, as the client estimates it: every 5-second
        cycle begun from each start answer until its end was confirmed (``StreamTask.billed_seconds``),
        priced by ``Policy.rates``. Streams whose end is not confirmed count up to now."""
        everyone = self.tasks()
        now, rates = self.clock.now(), self.policy.rates
        released, seconds, dollars = self._registry.released  # (tasks let go from memory)
        for task in everyone:
            billed = task.billed_seconds(now)
            seconds += billed
            dollars += rates.cost(task.kind, task.params, billed)
        live = sum(not task.terminal and task.started_at is not None for task in everyone)
        return Exposure(len(everyone) + released, live, seconds, dollars, rates.as_of)

    def stats(self) -> FleetStats:
        """Counts so far. ``callbacks`` counts what each callback met on arrival: one parked, then
        replayed, is counted as parked (its task's history shows what the replay did)."""
        registry = self._registry
        with registry.lock:
            counts = dict(registry.counts)
            parked = len(self._orphans.lot)
            everyone = list(registry.by_ref.values())
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

    # -- for AsyncFleet, which waits on its event loop (streamlife/aio.py) ------------------------
    def _on_settled(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` whenever a task becomes terminal, from that thread, with the Fleet's
        lock held: it must only hand the news on."""
        registry = self._registry
        with registry.lock:
            registry.on_settled = (*registry.on_settled, listener)

    def _off_settled(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` no more (an AsyncFleet that closed, in front of a Fleet that goes on)."""
        registry = self._registry
        with registry.lock:
            registry.on_settled = tuple(told for told in registry.on_settled if told != listener)

    def _off_hooks(self, hooks: Sequence[Callable[..., None]]) -> None:
        """Call ``hooks`` no more (an AsyncFleet's bridges, when it closes)."""
        self._notices.drop(tuple(hooks))

    def _catch_up(self, waiting: Sequence[Tracked]) -> None:
        """With a shared store, catch the tasks up with what other processes applied to them."""
        self._mover.catch_up(waiting)

    def _tracked(self, task_or_id: StreamTask | str) -> Tracked:
        registry = self._registry
        with registry.lock:
            if isinstance(task_or_id, StreamTask):
                tracked = registry.by_ref.get(task_or_id.ref)
                if tracked is not None and tracked.task is task_or_id:
                    return tracked
            else:
                tracked = registry.by_id.get(task_or_id)
                if tracked is not None:
                    return tracked
        if isinstance(task_or_id, str):
            tracked = self._mover.load(task_or_id)  # another process's task, or one from before a restart
            if tracked is not None:
                return tracked
        elif task_or_id.key is not None:  # a task let go from memory (Policy.keep_terminal)
            row = self.store.row(task_or_id.key)
            tracked = None if row is None else self._mover.hold_kept(row)
            if tracked is not None:
                return tracked
        raise UnknownTaskError(repr(task_or_id))


def _give_up_at(wait: float | None) -> float | None:
    if wait is None:
        return None
    if not wait >= 0:  # (NaN too)
        raise ValueError(f"wait must be None or seconds >= 0, got {wait!r}")
    return time.monotonic() + wait


def _check_start(kind: StreamKind, params: Mapping[str, Any]) -> None:
    """Refuse a start body that lacks what the service requires, before anything is journaled."""
    if kind is StreamKind.UNDERSTAND and "callback" not in params:
        raise ValueError(
            "an understand stream needs callback=<the URL its results are posted to>, or a Fleet made"
            " with callback_urls=CallbackUrls(<your receiver's public URL>, token=<its token>)"
        )
    url_field = URL_FIELD[kind]
    if not isinstance(params.get(url_field), str) or not params[url_field]:
        raise ValueError(f"a {kind.value} stream needs {url_field}=<the stream's URL>")
    if kind is StreamKind.UNDERSTAND and (problem := understand_body_problem(params)) is not None:
        raise ValueError(problem)
    if kind is StreamKind.AUDIO and params.get("provider") not in PROVIDERS:
        allowed = " or ".join(repr(name) for name in PROVIDERS)
        raise ValueError(f"an audio stream needs provider={allowed}, got {params.get('provider')!r}")
