"""ParkingLot: callbacks for task_ids nobody knows yet, held until someone claims them.

A callback can beat its own start answer (memories.ai posts as soon as the stream runs), so the
Fleet parks it under its task_id and replays it, in arrival order, once the answer names the
task. A task_id still unclaimed after the TTL is an orphan: a stream the service runs (and bills)
that no task of ours started, typically the child of a start whose answer was lost. ``expire``
hands orphans over for the reaper. The lot keeps task_ids in first-parked order, so expiry looks
only at the front. A task_id handed back as of an earlier time than the last one parked (put back
from the store) puts it out of order: it is sorted again once, at the next look.

Nothing parked is ever dropped: the service was told "parked", and may never send it again. So the
lot is bounded by refusing, not by forgetting: past ``max_task_ids`` task_ids, or ``max_per_task``
callbacks under one, ``park`` raises ``ParkingFullError`` and keeps nothing (the receiver answers
503, which lets a sender deliver it again). A callback equal to one parked already (a redelivery)
is kept once, so a storm of one segment cannot fill a task_id's room.

A callback is parked here first, then kept in the store, and only then answered. A redelivery that
comes while the first delivery's store write is still on its way must not be answered "parked
already" on the strength of a write that may yet fail: ``park`` hands that delivery a ``Ticket``
too, and it writes the callback as well. Each writer reports its ticket (``kept``, or
``withdraw`` when the write failed); the callback leaves the lot only when every write of it
failed. Not thread-safe: the Fleet holds its lock around it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .errors import ParkingFullError

Event = TypeVar("Event")


@dataclass(slots=True)
class _Slot(Generic[Event]):
    event: Event
    writers: int  # deliveries of it whose store write has not returned
    kept: bool  # a write of it returned: the store holds it


@dataclass(frozen=True, slots=True)
class Ticket(Generic[Event]):
    """A store write ``park`` owes: keep the event in the store, then report ``kept`` (or, if the
    write failed, ``withdraw``)."""

    task_id: str
    slot: _Slot[Event]
    first: bool  # this delivery parked the event (else it was parked already, no write returned yet)


@dataclass(slots=True)
class Parked(Generic[Event]):
    task_id: str
    first_parked: float
    slots: list[_Slot[Event]] = field(default_factory=list)

    @property
    def events(self) -> list[Event]:
        """The parked callbacks, in arrival order."""
        return [slot.event for slot in self.slots]

    def slot(self, event: Event) -> _Slot[Event] | None:
        return next((slot for slot in self.slots if slot.event == event), None)


class ParkingLot(Generic[Event]):
    __slots__ = ("_by_task", "_unsorted", "max_per_task", "max_task_ids")

    def __init__(self, *, max_task_ids: int, max_per_task: int) -> None:
        """``Policy.max_parked`` and ``Policy.max_parked_per_task`` give the Fleet's limits."""
        for name, value in (("max_task_ids", max_task_ids), ("max_per_task", max_per_task)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        self.max_task_ids = max_task_ids
        self.max_per_task = max_per_task
        self._by_task: dict[str, Parked[Event]] = {}  # insertion order is first-parked order...
        self._unsorted = False  # ... unless this says so (``_order``)

    def park(self, task_id: str, event: Event, now: float, *, put_back: bool = False) -> Ticket[Event] | None:
        """Park ``event`` under ``task_id``, once however often it is delivered. Returns the store
        write this delivery owes, or None if a write of it returned already (nothing is owed).

        Raises ``ParkingFullError`` when there is no room, keeping nothing. ``put_back``: the event
        was parked and kept before (claimed, then handed back when its task could not take it), so
        it is never refused, and nothing is owed.
        """
        parked = self._by_task.get(task_id)
        if parked is None:
            if not put_back and len(self._by_task) >= self.max_task_ids:
                raise ParkingFullError(task_id, f"{len(self._by_task)} unknown task_ids parked")
            parked = Parked(task_id, now)
            self._enter(parked)
        elif put_back and now < parked.first_parked:  # (kept in the store before what came here)
            parked.first_parked = now
            self._unsorted = True
        if (slot := parked.slot(event)) is not None:
            if slot.kept or put_back:
                slot.kept = True
                return None
            slot.writers += 1
            return Ticket(task_id, slot, first=False)
        if not put_back and len(parked.slots) >= self.max_per_task:
            raise ParkingFullError(task_id, f"{len(parked.slots)} callbacks parked for this task_id")
        slot = _Slot(event, 0 if put_back else 1, put_back)
        parked.slots.append(slot)
        return None if put_back else Ticket(task_id, slot, first=True)

    def kept(self, ticket: Ticket[Event]) -> None:
        """The store write ``ticket`` owed returned: its event is kept."""
        ticket.slot.writers -= 1
        ticket.slot.kept = True

    def withdraw(self, ticket: Ticket[Event]) -> None:
        """The store write ``ticket`` owed failed: its event leaves the lot, unless another write
        of it returned or is still on its way (or it left already: claimed, or expired)."""
        slot = ticket.slot
        slot.writers -= 1
        parked = self._by_task.get(ticket.task_id)
        if slot.writers or slot.kept or parked is None or not any(held is slot for held in parked.slots):
            return
        parked.slots = [held for held in parked.slots if held is not slot]
        if not parked.slots:
            del self._by_task[ticket.task_id]

    def claim(self, task_id: str) -> Parked[Event] | None:
        """Everything parked for ``task_id`` (its ``events``, in arrival order); the lot forgets it."""
        return self._by_task.pop(task_id, None)

    def put_back(self, parked: Parked[Event]) -> None:
        """Hand back what ``claim`` or ``expire`` took, when its task could not take it: never
        refused, since it was answered "parked". Its slots come back as they were (a store write of
        one may still be on its way), ahead of anything parked under its task_id since."""
        since = self._by_task.pop(parked.task_id, None)
        if since is not None:
            parked.slots.extend(since.slots)
            parked.first_parked = min(parked.first_parked, since.first_parked)
        self._enter(parked)

    def _enter(self, parked: Parked[Event]) -> None:
        """Add ``parked`` last, noting whether that breaks first-parked order."""
        last = next(reversed(self._by_task.values()), None)
        self._by_task[parked.task_id] = parked
        if last is not None and last.first_parked > parked.first_parked:
            self._unsorted = True

    def _order(self) -> None:
        """Put the task_ids back in first-parked order, if something put them out of it."""
        if self._unsorted:
            self._by_task = dict(sorted(self._by_task.items(), key=lambda item: item[1].first_parked))
            self._unsorted = False

    def expire(self, parked_before: float) -> list[Parked[Event]]:
        """Remove and return every task_id first parked at or before ``parked_before``: the orphans."""
        self._order()
        orphans = []
        while self._by_task:
            oldest = next(iter(self._by_task.values()))
            if oldest.first_parked > parked_before:
                break
            orphans.append(self._by_task.pop(oldest.task_id))
        return orphans

    def oldest(self) -> float | None:
        """When the longest-waiting task_id was first parked, or None when the lot is empty."""
        self._order()
        return next(iter(self._by_task.values())).first_parked if self._by_task else None

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._by_task

    def __len__(self) -> int:
        return len(self._by_task)
