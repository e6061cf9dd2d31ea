"""Registry: the tasks a Fleet holds, by ref, by durable key and by task_id, and its counters.

One lock, the registry's, guards these indexes, the parking lot and the deadline heap. It is the
innermost lock: held for a few dict or heap operations, and never while another lock is taken.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence

from streamlife._events import StreamKind
from streamlife._policy import Policy

from ._tracked import Tracked


class Registry:
    __slots__ = (
        "by_id",
        "by_key",
        "by_ref",
        "counts",
        "kinds_started",
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
