"""ParkingLot: callbacks for task_ids nobody knows yet, held until someone claims them.

A callback can beat its own start answer (memories.ai posts as soon as the stream runs), so the
Fleet parks it under its task_id and replays it, in arrival order, once the answer names the
task. A task_id still unclaimed after the TTL is an orphan: a stream the service runs (and bills)
that no task of ours started, typically the child of a start whose answer was lost. ``expire``
hands orphans over for the reaper. Kept in first-parked order, so expiry looks only at the front.

Nothing parked is ever dropped: the service was told "parked", and may never send it again. So the
lot is bounded by refusing, not by forgetting: past ``max_task_ids`` task_ids, or ``max_per_task``
callbacks under one, ``park`` raises ``ParkingFullError`` and keeps nothing (the receiver answers
503, which lets a sender deliver it again). A callback equal to one parked already (a redelivery)
is kept once, so a storm of one segment cannot fill a task_id's room. Not thread-safe: the Fleet
holds its lock around it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .errors import ParkingFullError

Event = TypeVar("Event")


@dataclass(slots=True)
class Parked(Generic[Event]):
    task_id: str
    first_parked: float
    events: deque[Event] = field(default_factory=deque)


class ParkingLot(Generic[Event]):
    __slots__ = ("_by_task", "max_per_task", "max_task_ids")

    def __init__(self, *, max_task_ids: int = 10_000, max_per_task: int = 256) -> None:
        for name, value in (("max_task_ids", max_task_ids), ("max_per_task", max_per_task)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        self.max_task_ids = max_task_ids
        self.max_per_task = max_per_task
        self._by_task: dict[str, Parked[Event]] = {}  # insertion order is first-parked order

    def park(self, task_id: str, event: Event, now: float, *, put_back: bool = False) -> bool:
        """Park ``event`` under ``task_id``; False if an equal one is parked already (kept once).

        Raises ``ParkingFullError`` when there is no room, keeping nothing. ``put_back``: the event
        was parked before (claimed, then handed back when its task could not take it), so it is
        never refused: it was answered "parked" already.
        """
        parked = self._by_task.get(task_id)
        if parked is None:
            if not put_back and len(self._by_task) >= self.max_task_ids:
                raise ParkingFullError(task_id, f"{len(self._by_task)} unknown task_ids parked")
            parked = self._by_task[task_id] = Parked(task_id, now)
        elif event in parked.events:
            return False
        elif not put_back and len(parked.events) >= self.max_per_task:
            raise ParkingFullError(task_id, f"{len(parked.events)} callbacks parked for this task_id")
        parked.events.append(event)
        return True

    def withdraw(self, task_id: str, event: Event) -> None:
        """Take back an event just parked, if it is still here: keeping it failed elsewhere."""
        parked = self._by_task.get(task_id)
        if parked is None or event not in parked.events:
            return
        parked.events.remove(event)
        if not parked.events:
            del self._by_task[task_id]

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
