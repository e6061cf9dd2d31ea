"""Ledger: fires one trigger at a task durably, and says what changed.

The one way a task moves. Under the store's lock on the task's row, the ledger replays what other
processes applied to the task since this copy last saw it, fires the trigger, and writes the
journal entry with the row. If the write fails, it puts the task back as the store holds it and
raises, so nothing is acknowledged that was not journaled. Each row goes with the task's deadlines
(``due_of``), for other processes to go by. It arms no timer and calls no hook: it
returns a ``Change``, and ``Mover`` reacts to it. One reaction cannot wait for the ``Change``:
a stop that another process journaled and may not have sent is taken over as the catch-up finds
it (``on_caught_up``), before the trigger fires and whether or not its write lands. After the
trigger, the task's state no longer says what the catch-up found.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, NamedTuple

from streamlife._clock import Clock
from streamlife._events import Outcome
from streamlife._journal import entry_for, rebuild, replay, reset, row_for
from streamlife._logging import get_logger
from streamlife.lifecycle import TERMINAL, TRIGGERS, Source, TaskState
from streamlife.store import NO_DUE, Due, JournalEntry, Store, TaskRow

from ._registry import Registry
from ._tracked import Tracked

_log = get_logger()

_KIND_GUESSED: Final = MappingProxyType({"kind_guessed": True})  # a row fact of an orphan's guessed kind
# A NamedTuple's constructor is a Python function; tuple's own makes the same record faster, and
# one is made for every event fired.
_new_change: Final = tuple.__new__
# Read once: an Enum class's attribute is read through its metaclass's ``__getattr__`` hook, a slow
# way for what every fire asks.
_ENDING: Final = TaskState.ENDING


class Change(NamedTuple):
    """What one fire did to a task."""

    outcome: Outcome
    applied: bool  # the trigger applied, and its entry is journaled
    moved: bool  # the task's state or facts may have changed (its row was written)
    caught_up: bool  # entries another process wrote were replayed first
    became_terminal: bool
    became_ending: bool  # an end inferred, not confirmed: a confirming stop is owed
    gone: bool  # the store no longer holds the task (a retention prune let it go): nothing fired


@dataclass(slots=True, eq=False)
class Ledger:
    store: Store
    registry: Registry
    clock: Clock
    history_limit: int | None
    # Called, under the task's lock, for a task that has just caught up with what another process
    # applied to it (wired to ``Timers.take_over_stop``).
    on_caught_up: Callable[[Tracked], None] = field(default=lambda _: None)
    # When the task next needs its holder, written with each row (wired to ``Timers.due``).
    due_of: Callable[[Tracked], Due] = field(default=lambda _: NO_DUE)

    def fire(self, tracked: Tracked, method: Callable[..., Outcome], args: Sequence[Any]) -> Change:
        """Fire ``method(*args)`` at the task and journal it. The caller holds the task's lock."""
        task = tracked.task
        was_terminal = task.state in TERMINAL
        was_ending = task.state is _ENDING
        caught_up = applied = False
        moved = True
        try:
            if tracked.version == 0:  # the task's first event makes its row
                outcome = method(*args)
                applied = outcome is Outcome.APPLIED
                if applied:
                    row, entry = self._row(tracked, 1), entry_for(task, 1, args)
                    claim = task.task_id if entry.trigger == "adopt" else None  # an orphan's, once
                    self.store.create(row, (entry,), claim=claim, due=self.due_of(tracked))
                    tracked.version, tracked.created_at = 1, row.created_at
            else:
                with self.store.lock(task.key or "") as txn:
                    if txn.version == 0:  # its row is gone: a prune let the task go, terminal
                        return _new_change(Change, (Outcome.LATE, False, False, False, False, False, True))
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
                        entries = (entry_for(task, version, args),)
                        if moved:
                            txn.write(entries, self._row(tracked, version), self.due_of(tracked))
                        else:  # (its deadlines stay too: a silence counts from the row's time)
                            txn.write(entries, None)
                        tracked.version = version
        except BaseException:
            if applied:
                self.put_back(tracked)
            raise
        became_terminal = not was_terminal and task.state in TERMINAL
        became_ending = applied and not was_ending and task.state is _ENDING
        change = (outcome, applied, moved, caught_up, became_terminal, became_ending, False)
        return _new_change(Change, change)

    def renew(self, tracked: Tracked) -> None:
        """Write the task's row again as it stands, at its version, with its deadlines: its holder
        heard from it with nothing to journal (a silent segment), and the row must not look silent
        to other processes (``Due.quiet`` counts from the row's time, so from the last callback
        here instead). A row written since by another process is newer: it is left as it is. The
        caller holds the task's lock."""
        task = tracked.task
        if tracked.stale:  # ahead of its store: its row as it stands here was never journaled
            return
        with self.store.lock(task.key or "") as txn:
            if txn.version != tracked.version or tracked.version == 0:
                return
            row, due = self._row(tracked, tracked.version), self.due_of(tracked)
            if due.quiet is not None:
                due = due._replace(quiet=due.quiet + max(0.0, tracked.last_heard - row.updated_at))
            txn.write((), row, due)
        tracked.heard_unjournaled = False

    def refresh(self, tracked: Tracked) -> None:
        """Catch the task up with what other processes applied to it, now rather than at its next
        event. The caller holds the task's lock."""
        with self.store.lock(tracked.task.key or "") as txn:
            if txn.version != tracked.version:
                self._catch_up(tracked, txn.entries_after(tracked.version))

    def put_back(self, tracked: Tracked) -> bool:
        """``reset``, after a failed write, for a caller about to raise that failure: whether it
        worked. If the store is down, the task stays ahead of it until its next event, which puts
        it back first (``stale``); the log says why."""
        try:
            self.reset(tracked)
        except Exception:
            _log.exception("streamlife.reset_failed", task=tracked.task.ref, key=tracked.task.key)
            tracked.stale = True
            return False
        return True

    def reset(self, tracked: Tracked) -> None:
        """Put the task back as the store holds it, after a write that did not land."""
        key = tracked.task.key or ""
        row = self.store.row(key)
        if row is None and tracked.version > 0:  # pruned, not unwritten: kept as it is (see ``fire``)
            return
        reset(tracked.task, row, self.store.journal(key)[: row.version] if row is not None else ())
        tracked.version = 0 if row is None else row.version

    def rebuild(self, row: TaskRow) -> Tracked:
        """A task as the store holds it, not held by anyone yet."""
        # Read after the row, the journal holds at least its entries; any beyond them were written
        # since (another process), and the next event catches up on them under the row's lock.
        entries = self.store.journal(row.key)[: row.version]
        task = rebuild(row, entries, clock=self.clock, history_limit=self.history_limit)
        tracked = Tracked(task, self.clock.now(), row.version)
        tracked.created_at = row.created_at
        tracked.kind_guessed = bool(row.facts.get("kind_guessed"))
        return tracked

    def _row(self, tracked: Tracked, version: int) -> TaskRow:
        extra = _KIND_GUESSED if tracked.kind_guessed else None
        return row_for(tracked.task, tracked.task.key or "", version, tracked.created_at, extra)

    def _catch_up(self, tracked: Tracked, entries: Sequence[JournalEntry]) -> bool:
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
                with self.registry.lock:
                    self.registry.by_id.setdefault(task.task_id, tracked)
            self.on_caught_up(tracked)
        _log.debug("streamlife.caught_up", task=task.ref, key=task.key, entries=len(entries))
        return bool(entries)
