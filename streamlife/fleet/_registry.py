"""Registry: the tasks a Fleet holds, by ref, by durable key and by task_id, and its counters.

One lock, the registry's, guards these indexes, the parking lot and the deadline heap. It is the
innermost lock: held for a few dict or heap operations, and never while another lock is taken.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from streamlife._events import StreamKind
from streamlife._policy import Policy
from streamlife.lifecycle import TERMINAL, TaskState

from ._tracked import Tracked

# The states whose stream may exist and bill: what Policy.max_live counts.
LIVE_STATES: Final = frozenset(TaskState) - TERMINAL - {TaskState.PENDING}


class Registry:
    __slots__ = (
        "by_id",
        "by_key",
        "by_ref",
        "counts",
        "kinds_started",
        "live",
        "lock",
        "on_settled",
        "released",
        "settled",
    )

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.settled = threading.Condition(self.lock)  # notified whenever a task becomes terminal
        # Called too, with the lock held: each must only hand the news on (an event loop's waiters).
        self.on_settled: tuple[Callable[[], None], ...] = ()
        self.by_ref: dict[int, Tracked] = {}
        self.by_key: dict[str, Tracked] = {}  # the durable key: one tracked task per key, ever
        self.by_id: dict[str, Tracked] = {}
        self.counts: Counter[str] = Counter()
        self.kinds_started: set[StreamKind] = set()
        # Tasks held in a live state, by product: derived from each task's state by ``recount``
        # (which ``Timers.sync`` calls after every move), so that Policy.max_live costs no walk.
        self.live: Counter[StreamKind] = Counter()
        # Tasks let go from memory (Policy.keep_terminal): how many, their billed seconds, dollars.
        self.released: tuple[int, float, float] = (0, 0.0, 0.0)

    def add(self, tracked: Tracked) -> None:
        """Hold a task made here. Caller holds the lock."""
        task = tracked.task
        self.by_ref[task.ref] = tracked
        self.by_key[task.key or ""] = tracked

    def drop(self, tracked: Tracked) -> None:
        """Let go of a task that was never journaled. Caller holds the lock."""
        task = tracked.task
        del self.by_ref[task.ref], self.by_key[task.key or ""]
        self._count_live(tracked, None)

    def recount(self, tracked: Tracked) -> None:
        """Count the task in ``live`` as its state and product now say. Caller holds the task's
        lock, not this one."""
        task = tracked.task
        live_as = task.kind if task.state in LIVE_STATES else None
        if live_as is not tracked.live_as:  # (most moves keep it as it was: no lock taken)
            with self.lock:
                if self.by_ref.get(task.ref) is tracked:  # (one let go, or never held, counts not)
                    self._count_live(tracked, live_as)

    def live_count(self, kinds: Iterable[StreamKind]) -> int:
        """Tasks held in a live state whose product is one of ``kinds``. Caller holds the lock."""
        return sum(self.live[kind] for kind in kinds)

    def _count_live(self, tracked: Tracked, live_as: StreamKind | None) -> None:
        if tracked.live_as is not None:
            self.live[tracked.live_as] -= 1
        if live_as is not None:
            self.live[live_as] += 1
        tracked.live_as = live_as

    def forget(self, tracked: Tracked) -> None:
        """Let go of a task the store no longer holds (a retention prune let it go): a callback for
        its task_id is then one for a task nobody holds."""
        task = tracked.task
        with self.lock:
            if self.by_ref.get(task.ref) is tracked:
                del self.by_ref[task.ref]
            if self.by_key.get(task.key or "") is tracked:
                del self.by_key[task.key or ""]
            if task.task_id is not None and self.by_id.get(task.task_id) is tracked:
                del self.by_id[task.task_id]
            self._count_live(tracked, None)

    def release(self, tracked: Tracked, policy: Policy) -> None:
        """Let a terminal task go from memory (``Policy.keep_terminal``); what it cost stays counted
        in ``released`` for ``Fleet.exposure``. Caller holds the task's lock."""
        task = tracked.task
        billed = task.billed_seconds()
        cost = policy.rates.cost(task.kind, task.params, billed)
        self.forget(tracked)
        with self.lock:
            count, seconds, dollars = self.released
            self.released = (count + 1, seconds + billed, dollars + cost)

    def everyone(self) -> list[Tracked]:
        with self.lock:
            return list(self.by_ref.values())

    def count(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n

    def count_all(self, keys: Sequence[str]) -> None:
        with self.lock:
            for key in keys:
                self.counts[key] += 1

    def started_kinds(self) -> set[StreamKind]:
        with self.lock:
            return set(self.kinds_started)

    def tell_settled(self) -> None:
        """A task became terminal: wake every waiter."""
        with self.settled:
            self.settled.notify_all()
            for tell in self.on_settled:
                tell()

    def wait_settled(self, waiting: Sequence[Tracked], give_up_at: float) -> None:
        """Wait until every task of ``waiting`` is terminal, or ``give_up_at`` (monotonic) passes."""
        first_alive = 0  # tasks never leave a terminal state, so each is checked until it is done
        with self.settled:
            while True:
                while first_alive < len(waiting) and waiting[first_alive].task.terminal:
                    first_alive += 1
                left = give_up_at - time.monotonic()
                if first_alive == len(waiting) or left <= 0:
                    return
                self.settled.wait(left)
