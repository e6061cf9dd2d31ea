"""Deadlines: every timer of every task in one heap, keyed by time from the injected clock.

A task has at most one deadline of each kind (silence, final callback, stop retry, ...). Arming
a kind again replaces the old deadline, and cancelling forgets it. The heap is never searched:
stale entries are skipped when they surface, and compacted when they outnumber the live ones. So
arming, cancelling and popping cost O(log n) whatever the number of tasks. Not thread-safe: the
Fleet holds its lock around it.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)


class Deadlines(Generic[Key]):
    __slots__ = ("_armed", "_heap", "_kinds", "_order")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Key, str]] = []
        self._armed: dict[tuple[Key, str], tuple[int, float]] = {}  # (order, when) of each live entry
        self._order = itertools.count()
        self._kinds: set[str] = set()  # every kind ever armed: few, so cancelling all of a key is cheap

    def arm(self, key: Key, kind: str, when: float) -> None:
        """Set (or move) ``key``'s deadline of this ``kind`` to ``when``."""
        order = next(self._order)
        self._armed[key, kind] = (order, when)
        self._kinds.add(kind)
        heapq.heappush(self._heap, (when, order, key, kind))
        if len(self._heap) > 64 and len(self._heap) > 2 * len(self._armed):
            self._compact()

    def cancel(self, key: Key, kind: str | None = None) -> None:
        """Forget ``key``'s deadline of ``kind``, or all of its deadlines when ``kind`` is None."""
        for each in (kind,) if kind is not None else self._kinds:
            self._armed.pop((key, each), None)

    def when(self, key: Key, kind: str) -> float | None:
        armed = self._armed.get((key, kind))
        return None if armed is None else armed[1]

    def next_at(self) -> float | None:
        """When the soonest live deadline falls, or None when nothing is armed."""
        self._drop_stale_top()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[tuple[float, Key, str]]:
        """Every live deadline at or before ``now``, soonest first, each disarmed as it is returned."""
        due: list[tuple[float, Key, str]] = []
        while True:
            self._drop_stale_top()
            if not self._heap or self._heap[0][0] > now:
                return due
            when, _, key, kind = heapq.heappop(self._heap)
            del self._armed[key, kind]
            due.append((when, key, kind))

    def __len__(self) -> int:
        return len(self._armed)

    def _drop_stale_top(self) -> None:
        heap = self._heap
        while heap and not self._live(heap[0]):
            heapq.heappop(heap)

    def _compact(self) -> None:
        self._heap = [entry for entry in self._heap if self._live(entry)]
        heapq.heapify(self._heap)

    def _live(self, entry: tuple[float, int, Key, str]) -> bool:
        armed = self._armed.get((entry[2], entry[3]))
        return armed is not None and armed[0] == entry[1]
