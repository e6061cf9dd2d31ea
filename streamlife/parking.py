"""ParkingLot: callbacks for task_ids nobody knows yet, held until someone claims them.

A callback can beat its own start answer (memories.ai posts as soon as the stream runs), so the
Fleet parks it under its task_id and replays it, in arrival order, once the answer names the
task. A task_id still unclaimed after the TTL is an orphan: a stream the service runs (and bills)
that no task of ours started, typically the child of a start whose answer was lost. ``expire``
hands orphans over for the reaper. Kept in first-parked order, so expiry looks only at the front.
Each task_id holds at most ``max_per_task`` callbacks (the newest are kept: a stop status comes
last). Not thread-safe: the Fleet holds its lock around it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Event = TypeVar("Event")


@dataclass(slots=True)
class Parked(Generic[Event]):
    task_id: str
    first_parked: float
    events: deque[Event] = field(default_factory=deque)
    dropped: int = 0  # callbacks pushed out by max_per_task


class ParkingLot(Generic[Event]):
    __slots__ = ("_by_task", "max_per_task")

    def __init__(self, *, max_per_task: int = 256) -> None:
        if max_per_task < 1:
            raise ValueError(f"max_per_task must be at least 1, got {max_per_task}")
        self.max_per_task = max_per_task
        self._by_task: dict[str, Parked[Event]] = {}  # insertion order is first-parked order

    def park(self, task_id: str, event: Event, now: float) -> None:
        parked = self._by_task.get(task_id)
        if parked is None:
            parked = self._by_task[task_id] = Parked(task_id, now)
        if len(parked.events) >= self.max_per_task:
            parked.events.popleft()
            parked.dropped += 1
        parked.events.append(event)

    def claim(self, task_id: str) -> list[Event]:
        """Everything parked for ``task_id``, in arrival order; the lot forgets it."""
        parked = self._by_task.pop(task_id, None)
        return [] if parked is None else list(parked.events)

    def expire(self, parked_before: float) -> list[Parked[Event]]:
        """Remove and return every task_id first parked at or before ``parked_before``: the orphans."""
        orphans = []
        while self._by_task:
            oldest = next(iter(self._by_task.values()))
            if oldest.first_parked > parked_before:
                break
            orphans.append(self._by_task.pop(oldest.task_id))
        return orphans

    def oldest(self) -> float | None:
        """When the longest-waiting task_id was first parked, or None when the lot is empty."""
        return next(iter(self._by_task.values())).first_parked if self._by_task else None

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._by_task

    def __len__(self) -> int:
        return len(self._by_task)
