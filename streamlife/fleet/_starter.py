"""Starter: sends a task's start, and files what its answer says.

A start is billed and not idempotent, so it is sent again only when the service said that nothing
was created (429, capacity 16, ``Policy.max_live``): the task goes back to ``pending``, and a
start retry sends it after a backoff, within ``Policy.start_retry_window``. Once the request may
have made a stream, the task is ``uncertain`` instead, never started twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from streamlife._clock import Clock
from streamlife._events import Outcome, StreamKind
from streamlife._logging import get_logger
from streamlife._parking import Parked
from streamlife._policy import Policy, live_groups
from streamlife.errors import (
    CapacityError,
    LiveCapError,
    NotSentError,
    RateLimitedError,
    RecordedError,
    ServerError,
    ServiceError,
    StreamlifeError,
    TransportError,
)
from streamlife.lifecycle import Deadline, TaskState
from streamlife.transport.base import Transport

from ._moves import Mover
from ._notices import Notices
from ._orphans import Orphans
from ._registry import Registry
from ._stopper import Stopper
from ._timers import Timers
from ._tracked import Tracked
from ._workers import Backoff, Workers

_log = get_logger()

# Why a task whose start answer came is uncertain all the same: the answer could not be journaled.
UNJOURNALED_START: Final = "the start answer came but could not be journaled"
# What a start retry that finds the task no longer pending (stopped, or started elsewhere) returns.
_MOVED_ON: Final = Outcome.rejected("no longer pending when its start retry came due")


@dataclass(slots=True, eq=False)
class Starter:
    transport: Transport
    mover: Mover
    stopper: Stopper
    orphans: Orphans
    timers: Timers
    notices: Notices
    registry: Registry
    workers: Workers
    backoff: Backoff
    clock: Clock
    policy: Policy
    # Policy.max_live's caps that count each product, each with the products it counts together.
    _caps: dict[StreamKind, tuple[tuple[tuple[StreamKind, ...], int], ...]] = field(init=False)

    def __post_init__(self) -> None:
        groups = live_groups(self.policy.max_live)
        self._caps = {kind: tuple(group for group in groups if kind in group[0]) for kind in StreamKind}

    def send(self, tracked: Tracked) -> None:
        """Send the start request of a task in ``starting``, and fire what its answer says."""
        task, fire = tracked.task, self.mover.locked_fire
        full = self._over_max_live(task.kind)
        if full is not None:
            self._defer(tracked, full)
            return
        try:
            result = self.transport.start(task.kind, task.params or {})
        except (RateLimitedError, CapacityError) as error:  # refused for now: nothing was created
            self._defer(tracked, error)
        except ServerError as error:  # the service failed after taking the request: a stream may exist
            fire(tracked, task.start_unknown, error)
        except (NotSentError, ServiceError) as error:  # never left, or refused: nothing was created
            fire(tracked, task.start_rejected, error)
        except BaseException as error:  # timeouts, lost connections, bugs: the stream may exist
            fire(tracked, task.start_unknown, error)
            if not isinstance(error, TransportError):
                raise
        else:
            task_id: Any = result.task_id  # (a transport's own answer: its type is not sure)
            if type(task_id) is not str:  # the stream may exist, under an id nobody can use
                no_id = TypeError(f"the transport's StartResult.task_id is not a str: {task_id!r}")
                fire(tracked, task.start_unknown, no_id)
                raise no_id
            self._started(tracked, task_id)

    def _over_max_live(self, kind: StreamKind) -> LiveCapError | None:
        """Why one more start of ``kind`` would pass a cap of ``Policy.max_live``, or None. The
        task asking is counted: it is already starting."""
        caps, registry = self._caps[kind], self.registry
        if not caps:
            return None
        with registry.lock:
            for kinds, cap in caps:
                if registry.live_count(kinds) > cap:
                    return LiveCapError(cap, kinds)
        return None

    def _defer(self, tracked: Tracked, error: StreamlifeError) -> None:
        """A start refused for now: try again after a backoff (never sooner than Retry-After) while
        ``Policy.start_retry_window`` lasts, counted from the task's creation; then it has failed."""
        task, now, fire = tracked.task, self.clock.now(), self.mover.locked_fire
        wait = self.backoff.wait(tracked.start_deferrals + 1, self.backoff.retry_after(error))
        if now + wait - tracked.created_at > self.policy.start_retry_window:
            fire(tracked, task.start_rejected, error)
            return
        tracked.start_deferrals += 1
        tracked.start_not_before = now + wait  # read by Timers.sync, which arms the retry
        _log.info("streamlife.start_deferred", task=task.ref, error=str(error), wait=round(wait, 3))
        fire(tracked, task.start_deferred, error)
        if task.stop_requested:  # asked for while the start was in flight: nothing exists, none is made
            fire(tracked, task.stop)

    def retry(self, tracked: Tracked) -> int:
        """Start a deferred task again; 1 if its request went out, 0 if the task moved on (stopped,
        or started by another process)."""
        task = tracked.task
        with tracked.lock:
            if Deadline.START_RETRY not in tracked.timers:
                return 0
            tracked.timers -= {Deadline.START_RETRY}

            def start_unless_moved() -> Outcome:
                # Asked after the ledger's catch-up: another process may have started or stopped it.
                if task.state is not TaskState.PENDING:
                    return _MOVED_ON
                if tracked.stop_wanted is not None:  # (stopped while pending: no request)
                    return task.stop(*tracked.stop_wanted)
                return task.start()

            try:
                if self.mover.fire(tracked, start_unless_moved) is _MOVED_ON:
                    return 0
            except BaseException:
                # Not journaled, so not started: try again shortly, rather than never.
                self.timers.rearm(tracked, Deadline.START_RETRY, self.policy.stop_retry_base)
                raise
        self.notices.deliver(tracked)
        if task.state is not TaskState.STARTING:  # stopped instead: the stop asked for is journaled now
            tracked.stop_wanted = None
            return 0
        if self.workers.threaded:
            self.workers.submit(self._send_logged, tracked)
        else:
            self.send(tracked)
        return 1

    def _send_logged(self, tracked: Tracked) -> None:
        try:
            self.send(tracked)
        except Exception:
            _log.exception("streamlife.start_failed", task=tracked.task.ref)

    def _started(self, tracked: Tracked, task_id: str) -> None:
        task, registry, orphans = tracked.task, self.registry, self.orphans
        with tracked.lock:
            with registry.lock:
                holder = registry.by_id.setdefault(task_id, tracked)
                claimed = orphans.lot.claim(task_id)
            parked = [] if claimed is None else claimed.events
            tracked.last_heard = self.clock.now()
            try:
                self.mover.fire(tracked, task.start_ok, task_id)
            except BaseException:
                # Not journaled, so the task is back in starting: treat the answer as lost. Its
                # stream's callbacks park again, and it is caught as an orphan, as a lost answer's is.
                self._release(tracked, task_id, claimed)
                self.mover.fire_logged(tracked, task.start_unknown, RecordedError(UNJOURNALED_START))
                raise
            taken = task.task_id == task_id  # else a callback on its own URL named another stream
            if not taken:
                named = task.task_id
                _log.warning("streamlife.task_id_conflict", task=task.ref, task_id=task_id, named=named)
                self._release(tracked, task_id, None)  # (its parked callbacks go to the adopted task)
            elif holder is not tracked:
                # Its callbacks outlived the parking TTL before this answer came, and an adopted
                # task holds the id. Both tasks now stop the same stream; stop is safe to repeat.
                _log.warning("streamlife.task_id_taken", task=task.ref, task_id=task_id, by=holder.task.ref)
                self.mover.fire(tracked, task.stop)
            try:
                if taken:
                    read = orphans.apply_parked(tracked, task_id, claimed)
            except BaseException:  # a stop asked for while it started goes out all the same
                self.stopper.fire_asked_while_starting(tracked)
                self.timers.take_over_stop(tracked, after=0.0)  # (sent by the next tick)
                raise
            self.stopper.fire_asked_while_starting(tracked)
        if taken:
            orphans.unpark(task_id, parked, read)  # (the start is journaled: the caller gets its task)
        else:
            self._adopt_unheld(task_id, task.kind, claimed)
        self.notices.deliver(tracked)
        self.stopper.send(tracked)

    def _adopt_unheld(self, task_id: str, kind: StreamKind, claimed: Parked[Any] | None) -> None:
        """Take on a stream that a start answer named and its task did not keep (a callback on the
        task's own URL named another stream first). The stream is ours, and it may bill, so it is
        adopted as an orphan and stopped: its stop is journaled and retried like any other. Only
        if the store cannot take it is the stream stopped once, unjournaled."""
        now = self.clock.now()
        try:
            self.orphans.adopt(claimed or Parked(task_id, now), now, reap=True, kind=kind)
        except Exception:
            _log.exception("streamlife.store_failed", task_id=task_id, kind="adopt")
            self.stopper.send_unjournaled(task_id, (kind,), None)

    def _release(self, tracked: Tracked, task_id: str, claimed: Parked[Any] | None) -> None:
        """A start answer the task did not keep (not journaled, or a callback on the task's own URL
        named another stream first): ``task_id`` goes back to nobody, and its parked callbacks to
        the lot. Caller holds the task's lock."""
        registry = self.registry
        with registry.lock:
            if registry.by_id.get(task_id) is tracked:
                del registry.by_id[task_id]
            if claimed is not None:
                self.orphans.lot.put_back(claimed)
