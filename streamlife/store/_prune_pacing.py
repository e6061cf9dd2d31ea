"""How SqliteStore's and PostgresStore's prunes pace their batches: how much each one takes, and
how long the write lock (SQLite), or the server (PostgreSQL), is then let go.

A batch holds the file's write lock. A writer that finds it held waits in SQLite's busy handler,
which is not woken when the lock is let go: it sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50 and 50 ms,
then 100 ms at a time, and tries again after each sleep. A pause shorter than the sleep a writer
is in can pass unseen: the writer tries again once the next batch holds the lock, and sleeps
longer still. So:

* a batch takes about what it can delete in ``HOLD`` seconds, counted in journal entries (a task
  goes whole, with all its entries, so a batch takes one task at least), from the rate the last
  batch deleted at: never a fixed number of tasks, whose journals may be 10 entries or 10,000;
* after a batch the lock is let go for as long as the batch held it (writers get half the time at
  least), and never less than twice the longest sleep a writer that began waiting during the batch
  may be in: its next try falls in the pause even if it wakes up late, by as much as that sleep
  (on a busy machine a thread often does).

PostgreSQL wakes a writer as soon as what it waits for is free, and a prune's batch locks only the
rows it deletes: there, what a batch holds writers up with is the server's time (its deletes, and the
flush of their WAL, which a writer's commit waits behind; the batch's own commit does not wait for
it, so the disk's hiccups do not lengthen the batch). Batches are sized to ``HOLD`` the same way,
and the pause is the batch's hold (``ServerPacer``): writers get half the time at least.

The clock and the sleep are injected, so the pacing is tested without time passing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Final, TypeVar

K = TypeVar("K")

HOLD: Final = 0.005  # seconds a batch aims to hold the write lock
FIRST_ENTRIES: Final = 1_000  # journal entries the first batch may take, before any rate is known
GROWTH: Final = 2  # a batch takes at most this many times the entries the last one could
WAKE_SLACK: Final = 2  # a pause lasts this many times the sleep a waiting writer may be in
MARGIN: Final = 0.001  # seconds added to a pause, so that it always outlasts the batch

# SQLite's default busy handler (sqliteDefaultBusyCallback): the sleeps between a waiting writer's
# tries, then LAST_SLEEP each.
BUSY_SLEEPS: Final = (0.001, 0.002, 0.005, 0.010, 0.015, 0.020, 0.025, 0.025, 0.025, 0.050, 0.050)
LAST_SLEEP: Final = 0.100


def writer_sleep(waited: float) -> float:
    """The sleep a writer that has waited ``waited`` seconds for the lock is in: the longest it may
    go before it tries again (the sleeps only grow)."""
    slept = 0.0
    for sleep in BUSY_SLEEPS:
        slept += sleep
        if slept > waited:
            return sleep
    return LAST_SLEEP


class Pacer:
    """One prune's pacing: ``budget`` entries for the next batch, ``take`` its tasks, ``learn`` how
    long it held the lock, ``pause`` before the next."""

    def __init__(
        self,
        hold: float = HOLD,
        *,
        timer: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.hold = hold
        self.timer = timer
        self._sleep = sleep
        self.budget = FIRST_ENTRIES  # journal entries the next batch may take

    def take(self, found: Sequence[tuple[K, int]]) -> list[K]:
        """The keys of the first tasks of ``found`` (key, entries) whose entries fit the budget:
        the first task always, whatever its size."""
        keys: list[K] = []
        entries = 0
        for key, count in found:
            if keys and entries + count > self.budget:
                break
            keys.append(key)
            entries += count
        return keys

    def learn(self, entries: int, held: float) -> None:
        """A batch deleted ``entries`` journal entries holding the lock ``held`` seconds: the next
        one may take what that rate deletes in ``hold``, and at most GROWTH times this budget (a
        batch that was quick by chance does not make the next one long)."""
        if entries <= 0:
            return
        most = GROWTH * max(self.budget, entries)
        if held <= 0:
            self.budget = most
            return
        self.budget = max(1, min(most, int(entries / held * self.hold)))

    def pause_after(self, held: float) -> float:
        """How long the lock is let go after a batch that held it ``held`` seconds."""
        return max(held, WAKE_SLACK * writer_sleep(held)) + MARGIN

    def pause(self, held: float, since: float, ahead: float = 0.0) -> None:
        """Let the lock go for ``pause_after(held)`` counted from ``since`` (on ``timer``): what was
        done since without the lock counts as pause, and so does what will be done after the sleep
        without it, before the next batch (a checkpoint: ``ahead`` seconds, as the last one took),
        up to half the pause."""
        whole = self.pause_after(held)
        left = whole - (self.timer() - since) - min(ahead, whole / 2)
        if left > 0:
            self._sleep(left)


class ServerPacer(Pacer):
    """``Pacer`` for a server that wakes a waiting writer at once (PostgreSQL): no busy handler's
    sleep to outlast, so the pause after a batch is as long as the batch held on."""

    def pause_after(self, held: float) -> float:
        return held + MARGIN
