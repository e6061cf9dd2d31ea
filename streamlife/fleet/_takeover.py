"""Takeover: a task whose holder has gone is settled by whichever live process claims it first.

Every row a task's events write carries the task's deadlines (``Timers.due``, with the grace of
``Policy.takeover_after``). The process that holds the task fires them from its own timers, and
the write that follows gives the row new ones. A row still due past them had a holder that died,
or is stuck. Every ``takeover_after / 4`` seconds, ``Fleet.tick`` claims such rows
(``Store.claim_due``: one process gets each) and takes their tasks over as a restarted process
takes back its own (``_recovery.settle_owed``): it holds the task, counts its deadlines from its
last event, and takes over the stop it owes. The tick that claims a task fires what is overdue.
A process that dies for good so loses nothing, and nobody calls ``recover()`` for it.

The callbacks a process parked in the store for a task_id no task holds are taken over the same
way, once left ``Policy.takeover_after`` past their ``Policy.park_ttl`` (``Orphans.take_over``):
their stream is adopted, and stopped, by the process that looks first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from streamlife._clock import Clock
from streamlife._logging import get_logger
from streamlife._policy import Policy
from streamlife.store import Store

from ._moves import Mover
from ._notices import Notices
from ._orphans import Orphans
from ._recovery import settle_owed
from ._registry import Registry
from ._stopper import Stopper
from ._timers import Timers

_log = get_logger()

_CLAIM_BATCH: Final = 100  # tasks claimed in one go: another process claims the rest meanwhile
_SWEEPS: Final = 4  # looks for overdue tasks per Policy.takeover_after


@dataclass(slots=True, eq=False)
class Takeover:
    store: Store
    registry: Registry
    mover: Mover
    timers: Timers
    stopper: Stopper
    notices: Notices
    orphans: Orphans
    clock: Clock
    policy: Policy
    _next: float = field(init=False)  # the next look, on the Fleet's clock

    def __post_init__(self) -> None:
        self._next = self.clock.now()  # the first tick looks

    def next_at(self) -> float | None:
        """When ``sweep`` next looks, or None (a store no other process shares: nothing to take)."""
        return self._next if self.store.shared else None

    def sweep(self, now: float) -> int:
        """Claim the overdue tasks and take them over, and the parked callbacks left overdue, if it
        is time to look: how many tasks."""
        if not self.store.shared or now < self._next:
            return 0
        policy = self.policy
        self._next = now + policy.takeover_after / _SWEEPS
        # The claim outlasts what taking over may take: a stop's answer, and a look more.
        until = now + policy.takeover_after + policy.stop_timeout
        taken = 0
        while True:
            keys = self.store.claim_due(now, until=until, limit=_CLAIM_BATCH)
            for key in keys:
                try:
                    taken += self._take_over(key, now)
                except Exception:
                    _log.exception("streamlife.takeover_failed", key=key)
            if len(keys) < _CLAIM_BATCH:
                break
        self.orphans.take_over(now)  # (after the tasks: one may hold a parked task_id now)
        return taken

    def _take_over(self, key: str, now: float) -> int:
        row = self.store.row(key)
        if row is None or row.terminal:
            return 0
        with self.registry.lock:
            held = self.registry.by_key.get(key)
        if held is None:
            tracked = self.mover.hold(row, since=min(row.updated_at, now))
        else:
            tracked = held
            self.mover.refresh(tracked)
        task = tracked.task
        with tracked.lock:
            version = tracked.version
            # A start body held here: this process sent the start, or sends it again; what it owes
            # is still its own to settle.
            reap = task.params is None and settle_owed(tracked, self.mover, self.policy)
            self.timers.take_over_stop(tracked, after=0.0)
            if tracked.version == version:  # nothing written: the row keeps the deadlines it was
                self.mover.renew(tracked)  # claimed for, unless this holder writes its own
        self.notices.deliver(tracked)
        if reap:
            self.stopper.send_soon(tracked, None)
        _log.info("streamlife.taken_over", task=task.ref, key=key, task_id=task.task_id, state=task.state)
        return 1
