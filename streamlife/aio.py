"""AsyncFleet: the Fleet for an asyncio application, whose event loop nothing of it blocks.

    async with AsyncFleet(HttpTransport(key), store=SqliteStore("streams.db")) as fleet:
        async with fleet.run_timers():
            task = await fleet.start("audio", audio_url=url, provider="assemblyai")
            ...
            await fleet.stop(task, wait=30)

An AsyncFleet is a thin async face over one ``Fleet`` (``fleet.fleet``): one lifecycle, one
journal, the same guarantees; every fact keeps its one home there. What may block (a request to
memories.ai, a store's I/O, a task's lock) runs in threads of the AsyncFleet's own, never on the
loop, in two lanes so that one never waits behind the other:

* **requests** (``threads`` of them): ``start``, ``stop``, ``stop_all``, ``recover``, ``tick`` and
  the reads that may touch the store. A start holds one for its request; a stop's wait does not
  (below).
* **callbacks** (``callback_threads``): ``handle_callback``. Callbacks that queue up together are
  applied together with one store commit (``Fleet.handle_callbacks``), each answered as it would
  be alone (``streamlife._handoff``). The two lanes are apart because memories.ai (and the
  simulator) may post a stream's first callback before it answers the start: a start waiting for
  its answer must never hold the thread that callback needs.

  On a ``SqliteStore`` the lane has one thread unless told otherwise. One process writes the file
  one transaction at a time anyway (the store's lock), so more threads only split the callbacks
  that queue up meanwhile (while a commit is under way, or while another process holds the file's
  write lock) into more, smaller commits, each waiting for its turn at the lock. With one thread
  they wait together and share the next commit (the served rates: bench/RESULTS.md, ``server``).
  A hook of the Fleet's own that blocks (its hooks run on the applying thread) then holds up
  every callback of the process: give the lane more threads for such hooks. With
  ``Policy.stop_concurrency`` 0, an inferred end's stop request goes out on the applying thread,
  so the lane keeps its DEFAULT_CALLBACK_THREADS there.

  When applying a callback cannot block, ``handle_callback`` applies it on the loop instead, with
  the others of the same turn of the loop (one ``Fleet.handle_callbacks``, at most
  ``LOOP_BATCH`` at a time): the store is a ``MemoryStore`` itself (no I/O; a subclass may add
  some, so it goes to the lane), stop requests go out from the Fleet's stop workers
  (``Policy.stop_concurrency`` > 0, so an inferred end's stop is not sent on the loop), and the
  Fleet has no hooks of its own (only this AsyncFleet's, which run on the loop anyway). A task's
  lock is held by other threads only while they apply an event in memory. Any other store, a
  durable one above all, goes to the lane.

  On a ``MemoryStore``, the first callback handed over in a turn of the loop is applied at once,
  and only those that follow it in the same turn wait for the turn's end. A memory store's batch
  shares no commit, so a callback that comes alone (a new connection each, light load) gains
  nothing by waiting, and waiting costs it two more turns of the loop. Callbacks that come
  together (keep-alive under load) are still applied together at the turn's end: answering them
  then, not each at once, measured faster through uvicorn, as if more requests gathered in each
  turn of the loop (the served rates: bench/RESULTS.md, ``server``).

``stop(wait=)`` and ``stop_all(wait=)`` journal the stops and hand their requests to the Fleet's
stop workers in a thread, then wait *on the loop* until the tasks are terminal or the wait runs
out: a thousand tasks waiting cost no thread. Cancelling such an await leaves the task as it is:
the stop is journaled, its request goes on, its answer and its status-14 callback still land.

Why threads and not an async HTTP client: a stream costs one start and one stop, against a
callback every 5 seconds, and callbacks come in by the webhook, not by the transport; the store's
drivers (sqlite3, psycopg's pool) block anyway. Threads keep ``HttpTransport`` (its retries,
deadlines and error mapping) the one transport, and measured faster at starting streams than bare
``httpx.AsyncClient`` requests on the loop. bench/aio_lag.py measures that, and the loop's lag with
200 faulted streams started, fed and stopped this way.

**Hooks.** ``on_transition``, ``on_segment``, ``on_orphan`` and ``on_foreign`` take a plain
function or a coroutine function (``hooks.AsyncSegmentHook`` and the others). Every hook
registered here runs on the AsyncFleet's loop, one at a time, in the order of the events, after
the event is journaled: a coroutine is awaited before the next hook runs, so a slow one delays the
others (start a task of your own for long work); a plain function runs on the loop, so it must
not block. A hook may ``await fleet.stop(...)``. One that raises is logged
(``streamlife.hook_failed``). A foreign callback's answer does not wait for its hooks, as a
Fleet's does (they are queued; they may run before or after its 200 is sent). Hooks given to the
Fleet underneath (``fleet.fleet.on_segment``) run as a Fleet runs them: on the thread that
applied the event.

The AsyncFleet takes the event loop it is first used on (``async with``, or any of its coroutines)
and serves that loop only. ``aclose()`` (the end of ``async with``) waits for the calls and stop
requests under way, makes the hook calls queued (their events' too) and lets its threads go; the
transport and the store are the caller's. ``AsyncFleet.from_fleet(fleet)`` fronts a Fleet made
elsewhere (``serve`` does, to feed its ASGI receiver); closing it leaves that Fleet open.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, Final, TypeVar

from ._billing import Exposure
from ._callbacks import CallbackEvent
from ._clock import Clock
from ._events import Outcome, StreamKind
from ._handoff import Handoff
from ._loop_hooks import Hook, LoopHooks
from ._policy import Policy
from ._task import StreamTask
from ._task_urls import CallbackUrls
from ._timer_loop import DEFAULT_INTERVAL, TimerLoop
from ._together import Payload, apply_one, apply_together
from .errors import CallbackError, StopAllError
from .fleet import Fleet, FleetStats
from .fleet._fleet import _give_up_at
from .fleet._tracked import Tracked
from .hooks import (
    AsyncForeignHook,
    AsyncOrphanHook,
    AsyncSegmentHook,
    AsyncTransitionHook,
    ForeignHook,
    OrphanHook,
    SegmentHook,
    TransitionHook,
)
from .lifecycle import TaskState
from .store import JournalEntry, MemoryStore, SqliteStore, Store, TaskRow
from .transport.base import Transport

__all__ = ["DEFAULT_CALLBACK_THREADS", "DEFAULT_THREADS", "LOOP_BATCH", "AsyncFleet"]

# Requests to memories.ai at once from the requests lane: starts wait on the network, not the CPU.
DEFAULT_THREADS: Final = 16
# Callbacks applied at once, as the webhook server's workers: a task's callbacks are serialized by
# its lock, so more threads buy little. One on a SqliteStore (see above).
DEFAULT_CALLBACK_THREADS: Final = 8
# Callbacks applied on the loop in a row, at most, when nothing of them can block (see above): the
# loop serves nothing else meanwhile.
LOOP_BATCH: Final = 32

_Transition = TypeVar("_Transition", bound=TransitionHook | AsyncTransitionHook)
_Segment = TypeVar("_Segment", bound=SegmentHook | AsyncSegmentHook)
_Orphan = TypeVar("_Orphan", bound=OrphanHook | AsyncOrphanHook)
_Foreign = TypeVar("_Foreign", bound=ForeignHook | AsyncForeignHook)


class AsyncFleet:
    """``Fleet``'s API as coroutines: ``await start``, ``stop``, ``stop_all``, ``handle_callback``;
    ``async with run_timers()``. The arguments are ``Fleet``'s, plus the two lanes' thread counts
    (``callback_threads``: DEFAULT_CALLBACK_THREADS, one on a ``SqliteStore``; see the module's
    docstring)."""

    def __init__(
        self,
        transport: Transport,
        *,
        clock: Clock | None = None,
        policy: Policy | None = None,
        store: Store | None = None,
        callback_urls: CallbackUrls | None = None,
        threads: int = DEFAULT_THREADS,
        callback_threads: int | None = None,
    ) -> None:
        fleet = Fleet(transport, clock=clock, policy=policy, store=store, callback_urls=callback_urls)
        self._setup(fleet, threads, callback_threads, owned=True)

    @classmethod
    def from_fleet(
        cls,
        fleet: Fleet,
        *,
        threads: int = DEFAULT_THREADS,
        callback_threads: int | None = None,
    ) -> AsyncFleet:
        """An AsyncFleet in front of ``fleet``, which stays usable from threads as before (its
        hooks, its ``run_timers``). ``aclose`` leaves it open: it is the caller's."""
        made = cls.__new__(cls)
        made._setup(fleet, threads, callback_threads, owned=False)
        return made

    def _setup(self, fleet: Fleet, threads: int, callback_threads: int | None, *, owned: bool) -> None:
        self._fleet = fleet
        self._owned = owned
        self._closed = False
        # (Each answer handed back at once: a thread's next call may wait long on the network.)
        self._requests = Handoff(threads, "streamlife-aio-requests", batch=1)
        # Whether applying a callback never sends a request itself: an inferred end's stop goes to
        # the Fleet's stop workers. (A Fleet's store and policy are its parts' from the start.)
        stops_aside = fleet.policy.stop_concurrency >= 1
        if callback_threads is None:  # (one on SQLite where nothing of applying waits on the network)
            one = isinstance(fleet.store, SqliteStore) and stops_aside
            callback_threads = 1 if one else DEFAULT_CALLBACK_THREADS
        self._callbacks = Handoff(callback_threads, "streamlife-aio-callbacks")
        self._many = functools.partial(_apply_many, fleet)  # one object: calls grouped by it
        # Whether the store and the stops let callbacks be applied on the loop (the module's
        # docstring says when): what ``_may_apply_on_loop`` need not ask again.
        self._loop_safe = type(fleet.store) is MemoryStore and stops_aside
        self._handed_this_turn = False  # a callback was applied on the loop in this turn already
        # Callbacks to apply on the loop at the end of this turn: (payload, key, its future).
        self._turn: list[tuple[Payload, str | None, asyncio.Future[Outcome | BaseException]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._hooks = LoopHooks()
        self._transition: tuple[Hook, ...] = ()
        self._segment: tuple[Hook, ...] = ()
        self._orphan: tuple[Hook, ...] = ()
        self._foreign: tuple[Hook, ...] = ()
        # Waiting for tasks to settle, on the loop: the Fleet says when one becomes terminal.
        self._waiting = 0
        self._news: asyncio.Future[None] | None = None
        self._news_due = False
        fleet._on_settled(self._settled_somewhere)

    # -- what it fronts ----------------------------------------------------------------------------
    @property
    def fleet(self) -> Fleet:
        """The Fleet underneath: for a thread of your own, or a WSGI receiver."""
        return self._fleet

    @property
    def store(self) -> Store:
        return self._fleet.store

    @property
    def policy(self) -> Policy:
        return self._fleet.policy

    @property
    def clock(self) -> Clock:
        return self._fleet.clock

    @property
    def transport(self) -> Transport:
        return self._fleet.transport

    @property
    def callback_urls(self) -> CallbackUrls | None:
        """The Fleet's (``Fleet(callback_urls=)``): a Fleet fronted by ``from_fleet`` keeps its own."""
        return self._fleet.callback_urls

    def __repr__(self) -> str:
        return f"AsyncFleet({self._fleet!r})"

    async def __aenter__(self) -> AsyncFleet:
        self._bind()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Wait for the calls under way (a start's request, a callback being applied) and the stop
        requests in flight (a Fleet made here), make the hook calls queued (their events' too),
        wait for the stops those hooks asked for, and let the threads go. Tasks stay as they are,
        as ``Fleet.close`` leaves them. Again, or after ``close``, it only closes a Fleet made here."""
        if self._closed:  # (its threads are gone: the Fleet's close, idempotent, is all that is left)
            if self._owned:
                await asyncio.to_thread(self._fleet.close)
            return
        if self._loop is not None:  # the calls handed over: their events' hooks are queued then
            await self._requests.idle()
            await self._callbacks.idle()
        if self._owned:
            await self._requests.call(self._fleet.close)
        if self._loop is not None:
            await self._hooks.close()
            if self._owned:  # the stops those last hooks asked for
                await self._requests.call(self._fleet.close)
        self.close()

    def close(self) -> None:
        """Let the threads go once the calls handed to them are made, without waiting, from any
        thread: for a caller whose loop has ended (``serve``). Hook calls still queued are not made,
        and a Fleet made here is not closed: ``aclose`` does both."""
        self._closed = True
        # The Fleet may go on (``from_fleet``): it must neither keep this one nor queue its hooks.
        self._fleet._off_settled(self._settled_somewhere)
        if "_bridges" in self.__dict__:
            self._fleet._off_hooks(self._bridges)
        self._requests.close()
        self._callbacks.close()

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return loop
        if self._loop is not None:
            raise RuntimeError("an AsyncFleet serves the one event loop it was first used on")
        self._loop = loop
        self._news = loop.create_future()
        self._hooks.bind(loop)
        return loop

    # -- starting and stopping ---------------------------------------------------------------------
    async def start(self, kind: StreamKind | str, **params: Any) -> StreamTask:
        """``Fleet.start``, its request made in a thread."""
        self._bind()
        return await self._requests.call(functools.partial(self._fleet.start, kind, **params))

    async def stop(self, task_or_id: StreamTask | str, wait: float | None = None) -> StreamTask:
        """``Fleet.stop``. Without ``wait``, its request is made in a thread and this returns once
        it is answered; with ``wait``, the stop is journaled and its request handed to a stop
        worker, and this returns once the task is terminal, or ``wait`` seconds have passed. Being
        cancelled leaves the stop as asked: it is journaled, and its request goes on."""
        self._bind()
        give_up_at = _give_up_at(wait)
        tracked = await self._requests.call(self._fleet._ask_stop, task_or_id, give_up_at)
        if give_up_at is not None:
            await self._wait_settled([tracked], give_up_at)
        return tracked.task

    async def stop_all(self, wait: float | None = None) -> list[StreamTask]:
        """``Fleet.stop_all``; with ``wait``, the wait is on the loop, as ``stop``'s."""
        self._bind()
        give_up_at = _give_up_at(wait)
        alive, failures = await self._requests.call(self._fleet._ask_stop_all, give_up_at)
        if give_up_at is not None:
            await self._wait_settled(alive, give_up_at)
        unsettled = [tracked.task for tracked in alive if not tracked.task.terminal]
        if failures:
            raise StopAllError(failures, unsettled)
        return unsettled

    # -- callbacks ---------------------------------------------------------------------------------
    async def handle_callback(self, payload: Payload, *, key: str | None = None) -> Outcome:
        """``Fleet.handle_callback``: the same outcomes, the same errors (``key`` too). Journaled
        before it returns."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # (asked here, not through _bind: this is asked for every callback)
            self._bind()
        if self._may_apply_on_loop():
            if not self._handed_this_turn:  # the turn's first: see the module's docstring
                self._handed_this_turn = True
                loop.call_soon(self._new_turn)
                return self._fleet.handle_callback(payload, key=key)
            future: asyncio.Future[Outcome | BaseException] = loop.create_future()
            if not self._turn:
                loop.call_soon(self._apply_turn)
            self._turn.append((payload, key, future))
            result = await future
        else:
            result = await self._callbacks.call(apply_one, self._fleet, payload, key, many=self._many)
        if isinstance(result, BaseException):
            raise result
        return result

    def _new_turn(self) -> None:
        self._handed_this_turn = False

    def _may_apply_on_loop(self) -> bool:
        """Whether applying a callback cannot block the loop (the module's docstring says why)."""
        if not self._loop_safe:
            return False
        notices = self._fleet._notices
        if not (notices.transition or notices.segment or notices.orphan or notices.foreign):
            return True  # (asked for each callback: the usual answer without building anything)
        hooks = (*notices.transition, *notices.segment, *notices.orphan, *notices.foreign)
        return all(hook in self.__dict__.get("_bridges", ()) for hook in hooks)

    def _apply_turn(self) -> None:
        """Apply the callbacks handed over in this turn of the loop (``LOOP_BATCH`` now, the rest in
        the next turn), each answered as alone; those that may no longer be applied here (a hook
        of the Fleet's own came meanwhile) go to the callbacks lane."""
        turn = self._turn
        if len(turn) > LOOP_BATCH:
            turn, self._turn = turn[:LOOP_BATCH], turn[LOOP_BATCH:]
            asyncio.get_running_loop().call_soon(self._apply_turn)
        else:
            self._turn = []
        if not self._may_apply_on_loop():
            for payload, key, future in turn:
                relay = asyncio.ensure_future(
                    self._callbacks.call(apply_one, self._fleet, payload, key, many=self._many)
                )
                relay.add_done_callback(functools.partial(_pass_on, future))
            return
        try:
            results = apply_together(
                self._fleet, [payload for payload, _, _ in turn], [key for _, key, _ in turn]
            )
        except BaseException as error:  # each caller hears it, as from a thread of the lane
            results = [error] * len(turn)
        for (_, _, future), result in zip(turn, results, strict=True):
            if not future.cancelled():  # (applied all the same: its sender may deliver it again)
                future.set_result(result)

    async def handle_callbacks(
        self, payloads: Iterable[Payload], *, keys: Sequence[str | None] | None = None
    ) -> list[Outcome | CallbackError]:
        """``Fleet.handle_callbacks``, in a thread."""
        self._bind()
        call = functools.partial(self._fleet.handle_callbacks, keys=keys)
        return await self._callbacks.call(call, list(payloads))

    async def deliver(self, event: CallbackEvent) -> Outcome:
        """``Fleet.deliver``, in a thread."""
        self._bind()
        return await self._callbacks.call(self._fleet.deliver, event)

    # -- timers ------------------------------------------------------------------------------------
    async def tick(self) -> int:
        """``Fleet.tick``, in a thread."""
        self._bind()
        return await self._requests.call(self._fleet.tick)

    def next_deadline(self) -> float | None:
        return self._fleet.next_deadline()

    @contextlib.asynccontextmanager
    async def run_timers(self, *, interval: float = DEFAULT_INTERVAL) -> AsyncIterator[AsyncFleet]:
        """Tick from a background thread while the block runs, as ``Fleet.run_timers``."""
        self._bind()
        timers = TimerLoop(self._fleet, interval=interval)
        timers.start()
        try:
            yield self
        finally:
            # (It waits for the tick under way.)
            if self._closed:  # the block outlived the AsyncFleet's own: stop the timers all the same
                await asyncio.to_thread(timers.stop)
            else:
                await self._requests.call(timers.stop)

    async def recover(
        self,
        *,
        only: Callable[[TaskRow], bool] | None = None,
        parked: bool | Callable[[str], bool] = True,
    ) -> list[StreamTask]:
        """``Fleet.recover``, in a thread."""
        self._bind()
        return await self._requests.call(functools.partial(self._fleet.recover, only=only, parked=parked))

    # -- hooks -------------------------------------------------------------------------------------
    @functools.cached_property
    def _bridges(self) -> tuple[Hook, ...]:
        hooks = self._hooks
        return (
            hooks.bridge(lambda: self._transition),
            hooks.bridge(lambda: self._segment),
            hooks.bridge(lambda: self._orphan),
            hooks.bridge(lambda: self._foreign),
        )

    def on_transition(self, hook: _Transition) -> _Transition:
        """``Fleet.on_transition``, on the loop (see the module's docstring); a coroutine function too."""
        if not self._transition:
            self._fleet.on_transition(self._bridges[0])
        self._transition = (*self._transition, hook)
        return hook

    def on_segment(self, hook: _Segment) -> _Segment:
        """``Fleet.on_segment``, on the loop; a coroutine function too."""
        if not self._segment:
            self._fleet.on_segment(self._bridges[1])
        self._segment = (*self._segment, hook)
        return hook

    def on_orphan(self, hook: _Orphan) -> _Orphan:
        """``Fleet.on_orphan``, on the loop; a coroutine function too."""
        if not self._orphan:
            self._fleet.on_orphan(self._bridges[2])
        self._orphan = (*self._orphan, hook)
        return hook

    def on_foreign(self, hook: _Foreign) -> _Foreign:
        """``Fleet.on_foreign``, on the loop; the callback's answer does not wait for it. A coroutine
        function too."""
        if not self._foreign:
            self._fleet.on_foreign(self._bridges[3])
        self._foreign = (*self._foreign, hook)
        return hook

    # -- reading -----------------------------------------------------------------------------------
    async def get(self, task_id: str) -> StreamTask | None:
        """``Fleet.get``, in a thread (it may read the store)."""
        self._bind()
        return await self._requests.call(self._fleet.get, task_id)

    async def journal(self, task_or_id: StreamTask | str) -> list[JournalEntry]:
        """``Fleet.journal``, in a thread."""
        self._bind()
        return await self._requests.call(self._fleet.journal, task_or_id)

    async def unsettled(self) -> list[StreamTask]:
        """``Fleet.unsettled``, in a thread (with a shared store, it reads it)."""
        self._bind()
        return await self._requests.call(self._fleet.unsettled)

    def tasks(self, state: TaskState | str | None = None) -> list[StreamTask]:
        """``Fleet.tasks``: what this process holds, read in memory."""
        return self._fleet.tasks(state)

    def stats(self) -> FleetStats:
        return self._fleet.stats()

    def exposure(self) -> Exposure:
        return self._fleet.exposure()

    # -- waiting on the loop -----------------------------------------------------------------------
    def _settled_somewhere(self) -> None:
        """A task became terminal (any thread, the registry's lock held): wake the loop's waiters."""
        loop = self._loop
        if self._waiting and not self._news_due and loop is not None:
            self._news_due = True
            with contextlib.suppress(RuntimeError):  # (a closed loop has no waiters left)
                loop.call_soon_threadsafe(self._tell_waiters)

    def _tell_waiters(self) -> None:
        self._news_due = False
        news, self._news = self._news, asyncio.get_running_loop().create_future()
        if news is not None:
            news.set_result(None)

    async def _wait_settled(self, waiting: Sequence[Tracked], give_up_at: float) -> None:
        """``Mover.wait_settled`` on the loop: until every task is terminal, or ``give_up_at``
        (monotonic). With a shared store, the tasks catch up with it every ``Policy.shared_poll``."""
        poll = self.policy.shared_poll
        # Counted from the last read, not from the last news: other tasks settling here must not
        # put off reading the store.
        read_at = time.monotonic() + poll if self.store.shared else math.inf
        first_alive = 0
        self._waiting += 1
        try:
            while True:
                while first_alive < len(waiting) and waiting[first_alive].task.terminal:
                    first_alive += 1
                now = time.monotonic()
                if first_alive == len(waiting) or now >= give_up_at:
                    return
                if now >= read_at:
                    behind = [tracked for tracked in waiting if not tracked.task.terminal]
                    await self._requests.call(self._fleet._catch_up, behind)
                    read_at = time.monotonic() + poll
                    continue
                assert self._news is not None
                await asyncio.wait({self._news}, timeout=min(give_up_at, read_at) - now)
        finally:
            self._waiting -= 1


def _pass_on(future: asyncio.Future[Any], relay: asyncio.Future[Any]) -> None:
    """``relay``'s result (or error) to ``future``, unless its awaiter has gone."""
    if future.cancelled():
        return
    if relay.cancelled():
        future.cancel()
    elif (error := relay.exception()) is not None:
        future.set_exception(error)
    else:
        future.set_result(relay.result())


def _apply_many(fleet: Fleet, calls: list[tuple[Any, ...]]) -> list[Outcome | BaseException]:
    """The callbacks lane's calls queued together (``apply_one``'s arguments): ``apply_together``."""
    return apply_together(fleet, [payload for _, payload, _ in calls], [key for _, _, key in calls])
