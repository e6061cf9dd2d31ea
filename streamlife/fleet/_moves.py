"""Mover: fires a trigger through the ledger, then keeps timers, waiters and hooks in step.

Every part of the Fleet moves tasks through here. After the ledger says what changed, the mover
arms the deadlines the new state needs (``Timers.sync``), wakes whoever waits for the task to
settle, queues the transition hooks, and queues the confirming stop an inferred end owes
(``on_ending``, wired to the stopper). It also holds tasks other processes made, read from the store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from streamlife._events import Outcome
from streamlife._journal import transcript_reader
from streamlife._logging import get_logger
from streamlife._policy import Policy
from streamlife._task import StreamTask
from streamlife.errors import JournalMismatch
from streamlife.store import Store, TaskRow

from ._ledger import Ledger
from ._notices import Notices
from ._registry import Registry
from ._timers import Timers
from ._tracked import Tracked

_log = get_logger()

# Up to this many tasks, ``catch_up`` reads each one's row; past it, one scan of the unfinished rows.
_READ_EACH: Final = 32


@dataclass(slots=True, eq=False)
class Mover:
    ledger: Ledger
    store: Store
    registry: Registry
    timers: Timers
    notices: Notices
    policy: Policy
    # Called (as a notice, after the task's lock is let go) for a task that enters ``ending``.
    on_ending: Callable[[Tracked], None] = field(default=lambda _: None)

    def fire(self, tracked: Tracked, method: Callable[..., Outcome], *args: Any) -> Outcome:
        """Fire one trigger at the task and journal it (``Ledger.fire``), then react to what
        changed. The caller holds the task's lock, and calls ``Notices.deliver`` after."""
        if tracked.stale:  # ahead of its store since a failed write: put back first (or raise again)
            self.ledger.reset(tracked)
            tracked.stale = False
            self.timers.sync(tracked)
        try:
            change = self.ledger.fire(tracked, method, args)
        except BaseException:
            self.timers.sync(tracked)  # put back as the store holds it, or caught up: timers follow
            raise
        if change.gone:  # a terminal task the store let go: this process lets it go too
            self.timers.forget(tracked)
            self.registry.forget(tracked)
            return change.outcome
        if (change.applied and change.moved) or change.caught_up:  # (timers follow the row's fields)
            self.timers.sync(tracked)
            if change.became_terminal:
                self.registry.tell_settled()
            if change.became_ending:
                # An end inferred, not confirmed: the stop that confirms it goes out once the task's
                # lock is let go, in turn with the task's other notices.
                self.notices.queue(tracked, (self.on_ending,), (tracked,))
        if change.applied and self.notices.transition:  # of what this Fleet applied, not what it replayed
            task = tracked.task
            last = task.history[-1]
            if last.trigger != "segment":
                self.notices.queue(tracked, self.notices.transition, (task, last))
        return change.outcome

    def locked_fire(self, tracked: Tracked, method: Callable[..., Outcome], *args: Any) -> Outcome:
        """``fire`` under the task's lock, then deliver its notices."""
        with tracked.lock:
            outcome = self.fire(tracked, method, *args)
        self.notices.deliver(tracked)
        return outcome

    def fire_logged(self, tracked: Tracked, method: Callable[..., Outcome], *args: Any) -> None:
        """``fire`` for a recovery path that must not hide the error it recovers from: what this one
        raises (the store is down, say) is logged. Caller holds the task's lock."""
        try:
            self.fire(tracked, method, *args)
        except Exception:
            _log.exception("streamlife.store_failed", task=tracked.task.ref, key=tracked.task.key)

    def put_back(self, tracked: Tracked) -> None:
        """Put the task back as the store holds it after a write that did not land, and its timers
        with it (unless the store cannot say: then its next event does). Caller holds the task's lock."""
        if self.ledger.put_back(tracked):
            self.timers.sync(tracked)

    def load(self, task_id: str) -> Tracked | None:
        """Hold the task the store knows as ``task_id``; return the task that holds that id here
        (None if the store knows none)."""
        row = self.store.find(task_id)
        if row is None or self.hold_kept(row) is None:
            return None
        with self.registry.lock:
            return self.registry.by_id.get(task_id)

    def hold_kept(self, row: TaskRow) -> Tracked | None:
        """``hold``, or None if the store let the task go since ``row`` was read. A prune may delete
        an ended task between the read of its row and that of its journal: then the journal does
        not replay (``JournalMismatch``), and the task is gone, not damaged."""
        try:
            return self.hold(row)
        except JournalMismatch:
            if self.store.row(row.key) is not None:
                raise
            return None

    def hold(self, row: TaskRow, since: float | None = None) -> Tracked:
        """The task of ``row.key``: the one this Fleet holds, or rebuilt from the store and held.
        ``since``: when a task rebuilt here was last heard from, and its state's deadlines count
        from (None: now, as for a task whose process has just restarted)."""
        registry = self.registry
        with registry.lock:
            held = registry.by_key.get(row.key)
        if held is not None:
            if held.version < row.version:  # held, but behind: the row may name its task_id now
                self.refresh(held)
            return held
        tracked = self.ledger.rebuild(row)
        task = tracked.task
        self.bound_transcript(task)  # (rebuilt whole: what is over the bound is let go of now)
        with tracked.lock:
            with registry.lock:
                held = registry.by_key.setdefault(row.key, tracked)
                if held is tracked:
                    registry.by_ref[task.ref] = tracked
                    registry.kinds_started.add(task.kind)
                    if task.task_id is not None:  # (a second claimant of a task_id is held by key)
                        registry.by_id.setdefault(task.task_id, tracked)
            if held is tracked:
                if since is not None:
                    tracked.last_heard = since
                self.timers.sync(tracked, since)
                self.timers.take_over_stop(tracked, after=self.policy.stop_retry_base)
        return held

    def bound_transcript(self, task: StreamTask) -> None:
        """Bound the task's transcript by ``Policy.transcript_limit``: what it lets go of, it reads
        back from the store's journal of the task (its key is set)."""
        limit = self.policy.transcript_limit
        if limit is not None:
            task.bound_transcript(limit, transcript_reader(self.store, task.key or ""))

    def renew(self, tracked: Tracked) -> None:
        """With a store other processes share, write the task's row again as this process knows it,
        with nothing to journal (``Ledger.renew``): so that it does not look overdue to them. Caller
        holds the task's lock."""
        if self.store.shared:
            self.ledger.renew(tracked)

    def wait_settled(self, waiting: Sequence[Tracked], give_up_at: float) -> None:
        """Wait until every task of ``waiting`` is terminal, or ``give_up_at`` (monotonic) passes.
        With a shared store another process may settle a task (its status-14 callback may reach
        that one), so every ``Policy.shared_poll`` seconds the tasks catch up with the store."""
        if not self.store.shared:
            self.registry.wait_settled(waiting, give_up_at)
            return
        while True:
            self.registry.wait_settled(waiting, min(give_up_at, time.monotonic() + self.policy.shared_poll))
            behind = [tracked for tracked in waiting if not tracked.task.terminal]
            if not behind or time.monotonic() >= give_up_at:
                return
            self.catch_up(behind)

    def catch_up(self, waiting: Sequence[Tracked]) -> None:
        """Catch up the tasks of ``waiting`` that another process moved on, as the store holds them:
        one row read each, or, for many, one scan of the unfinished rows (a task missing from it
        has become terminal). Only a task behind its row takes the row's lock. For a reader: a
        store that fails is logged, and the tasks stay as this process knows them."""
        try:
            self._catch_up(waiting)
        except Exception:
            _log.exception("streamlife.store_failed", kind="catch_up")

    def _catch_up(self, waiting: Sequence[Tracked]) -> None:
        if len(waiting) <= _READ_EACH:
            versions = {tracked.task.key: self._version(tracked.task.key or "") for tracked in waiting}
        else:
            versions = {row.key: row.version for row in self.store.rows()}
        for tracked in waiting:
            stored = versions.get(tracked.task.key or "")
            if (stored is None and tracked.version > 0) or (stored or 0) > tracked.version:
                self.refresh(tracked)  # (None: terminal in the store, missing from the scan)

    def _version(self, key: str) -> int | None:
        row = self.store.row(key)
        return None if row is None else row.version

    def refresh(self, tracked: Tracked) -> None:
        """Catch the task up with what other processes applied to it, now rather than at its next
        event."""
        with tracked.lock:
            self.ledger.refresh(tracked)  # (a stop owed is taken over as it catches up)
            self.timers.sync(tracked)
        self.notices.deliver(tracked)
