"""Ticker: what each deadline does when it comes due, the adoption of expired parked task_ids, and
when to look for tasks other processes left overdue (``_takeover``).

``lifecycle.DEADLINE_TRIGGERS`` says which trigger a deadline fires. Around that, this module keeps
what the lifecycle leaves to the Fleet: a silence is asked again after catching up (another process
may have heard the stream), a stall or a cost ceiling stops the stream, a stop retry or a start
retry sends its request. A deadline whose handling fails is armed again shortly, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from streamlife._clock import Clock
from streamlife._events import Outcome
from streamlife._logging import get_logger
from streamlife._policy import Policy
from streamlife.lifecycle import AUTO_STOPS, DEADLINE_TRIGGERS, Deadline, StopReason, TaskState

from ._moves import Mover
from ._notices import Notices
from ._orphans import Orphans
from ._registry import Registry
from ._starter import Starter
from ._stopper import Stopper, due_stop
from ._takeover import Takeover
from ._timers import Timers
from ._tracked import Tracked

_log = get_logger()

# What a silence timer that finds the task heard from (here, or in another process) returns.
_HEARD: Final = Outcome.rejected("heard from since the silence timer was armed")
# The stop a silence may call for (``Policy.stop_when_stalled``).
_SILENCE_STOP: Final = (AUTO_STOPS["silence"],)


@dataclass(slots=True, eq=False)
class Ticker:
    registry: Registry
    timers: Timers
    mover: Mover
    stopper: Stopper
    starter: Starter
    orphans: Orphans
    notices: Notices
    takeover: Takeover
    clock: Clock
    policy: Policy

    def tick(self) -> int:
        """``Fleet.tick``: take over the tasks other processes left overdue, fire every deadline
        due, adopt expired parked task_ids; how many fired."""
        now, registry = self.clock.now(), self.registry
        try:
            self.takeover.sweep(now)  # (first: what it takes over fires now)
        except Exception:  # (the store refused the look: the next one tries again)
            _log.exception("streamlife.takeover_failed")
        with registry.lock:
            due = self.timers.pop_due(now)
            orphans = self.orphans.lot.expire(now - self.policy.park_ttl)
            due_tasks = [(registry.by_ref.get(ref), kind) for _, ref, kind in due]
        fired = 0
        for tracked, kind in due_tasks:
            if tracked is None:
                continue
            try:
                fired += self._due(tracked, kind, now)
            except Exception:
                _log.exception("streamlife.timer_failed", task=tracked.task.ref, kind=kind)
        for parked in orphans:
            try:
                self.orphans.adopt(parked, now, reap=self.policy.reap_orphans)
            except Exception:
                _log.exception("streamlife.timer_failed", task_id=parked.task_id, kind="adopt")
        fired += len(orphans)
        registry.count("timers", fired)
        return fired

    def next_deadline(self) -> float | None:
        """When ``tick`` next has work: the soonest deadline or parking expiry, or None."""
        with self.registry.lock:
            soonest = self.timers.next_at()
            oldest = self.orphans.lot.oldest()
        expiry = None if oldest is None else oldest + self.policy.park_ttl
        candidates = (soonest, expiry, self.takeover.next_at())
        return min((t for t in candidates if t is not None), default=None)

    def _due(self, tracked: Tracked, kind: Deadline, now: float) -> int:
        """Handle one popped deadline; return 1 if it fired, 0 if it was stale or moved on."""
        if kind is Deadline.STOP_RETRY:
            if tracked.stop_wanted is not None:
                self.stopper.journal_wanted(tracked)
            self.stopper.send_soon(tracked, None)  # (popped, so no longer armed: it goes out)
            return 1
        if kind is Deadline.START_RETRY:
            return self.starter.retry(tracked)
        if kind is Deadline.FORGET:
            return self._forget(tracked)
        task, send = tracked.task, False
        with tracked.lock:
            if kind not in tracked.timers:
                return 0  # the state moved on after the deadline was popped: it is stale
            tracked.timers -= {kind}
            try:
                if kind is Deadline.SILENCE:
                    if self._silence(tracked, now) is _HEARD:
                        self.timers.sync(tracked)  # heard from since it was armed: wait from then
                        if tracked.heard_unjournaled:
                            self.mover.renew(tracked)  # (else the row looks silent elsewhere)
                        return 0
                    stalled = _SILENCE_STOP if task.state is TaskState.RUNNING else ()
                    if (due := due_stop(task, self.policy, stalled)) is not None:
                        self.mover.fire(tracked, task.stop, *due)
                        send = True
                elif kind is Deadline.MAX_DURATION:
                    if task.state is TaskState.RUNNING:  # (the only state that arms it)
                        seconds = self.timers.limit(task)
                        _log.info(
                            "streamlife.max_duration", task=task.ref, task_id=task.task_id, seconds=seconds
                        )
                        self.mover.fire(tracked, task.stop, StopReason.MAX_DURATION)
                        send = True
                else:
                    self.mover.fire(tracked, getattr(task, DEADLINE_TRIGGERS[kind]))
            except BaseException:
                # Not journaled, so not done: try again shortly, rather than never.
                self.timers.rearm(tracked, kind, self.policy.stop_retry_base)
                raise
        self.notices.deliver(tracked)
        if send:
            self.stopper.send_soon(tracked, None)
        return 1

    def _forget(self, tracked: Tracked) -> int:
        """Let a terminal task go from memory (``Policy.keep_terminal``), unless something of it is
        still under way here (hooks to call, a stop in flight): then it is tried again that much
        later. The store keeps it: ``Fleet.get``, ``journal``, ``stop`` or a late callback bring
        it back."""
        with tracked.lock:
            busy = tracked.notices is not None or tracked.delivering or tracked.stop_in_flight
            if busy or not tracked.task.terminal:
                self.timers.sync(tracked)  # (armed again from now)
                return 0
            self.registry.release(tracked, self.policy)
        return 1

    def _silence(self, tracked: Tracked, now: float) -> Outcome:
        task = tracked.task

        def silence_unless_heard() -> Outcome:
            # Asked again after the ledger's catch-up: another process may have heard it.
            if tracked.last_heard + self.policy.silence_after > now:
                return _HEARD
            return task.silence()

        return self.mover.fire(tracked, silence_unless_heard)
