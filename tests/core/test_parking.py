"""The parking lot against a plain model: nothing lost, nothing doubled, nothing dropped, orphans
exactly at their TTL."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from streamlife._parking import Parked, ParkingLot, Ticket
from streamlife.errors import ParkingFullError

TASK_IDS = st.sampled_from(["a", "b", "c", "d"])
EVENTS = st.integers(0, 5)  # few values: redeliveries of one event are common
MAX_TASK_IDS, MAX_PER_TASK = 3, 3


@dataclass
class Slot:
    """The model of one parked event: how many store writes of it are on their way, and whether one
    returned."""

    event: int
    writers: int
    kept: bool


class ParkingMachine(RuleBasedStateMachine):
    """Deliveries park events and owe a store write; each write returns (``kept``) or fails
    (``withdraw``) later, in any order. The lot must agree with a plain model throughout."""

    def __init__(self) -> None:
        super().__init__()
        self.lot: ParkingLot[int] = ParkingLot(max_task_ids=MAX_TASK_IDS, max_per_task=MAX_PER_TASK)
        self.model: dict[str, tuple[float, list[Slot]]] = {}  # task_id -> (first parked, its slots)
        # Store writes on their way: the lot's ticket, and the model's slot it writes (None once that
        # slot left the model: claimed or expired).
        self.writes: list[tuple[Ticket[int], Slot]] = []
        self.taken: list[
            tuple[Parked[int], float, list[Slot]]
        ] = []  # claimed or expired: (record, first, slots)
        self.now = 0.0

    def _slot(self, task_id: str, event: int) -> Slot | None:
        _, slots = self.model.get(task_id, (0.0, []))
        return next((slot for slot in slots if slot.event == event), None)

    @rule(task_id=TASK_IDS, event=EVENTS, step=st.floats(0, 10, allow_nan=False))
    def deliver(self, task_id: str, event: int, step: float) -> None:
        self.now += step
        first, slots = self.model.get(task_id, (self.now, []))
        slot = self._slot(task_id, event)
        if slot is not None and slot.kept:  # a redelivery of a kept event: nothing owed
            assert self.lot.park(task_id, event, self.now) is None
        elif slot is not None:  # kept by no write yet: this delivery writes it too
            ticket = self.lot.park(task_id, event, self.now)
            assert ticket is not None
            assert not ticket.first
            slot.writers += 1
            self.writes.append((ticket, slot))
        elif (task_id not in self.model and len(self.model) >= MAX_TASK_IDS) or len(slots) >= MAX_PER_TASK:
            with pytest.raises(ParkingFullError):  # refused, and nothing pushed out
                self.lot.park(task_id, event, self.now)
        else:
            ticket = self.lot.park(task_id, event, self.now)
            assert ticket is not None
            assert ticket.first
            slot = Slot(event, 1, False)
            self.model[task_id] = (first, [*slots, slot])
            self.writes.append((ticket, slot))

    @precondition(lambda self: self.writes)
    @rule(data=st.data(), ok=st.booleans())
    def a_write_returns(self, data: st.DataObject, ok: bool) -> None:
        ticket, slot = self.writes.pop(data.draw(st.integers(0, len(self.writes) - 1), label="write"))
        task_id = ticket.task_id
        if ok:
            self.lot.kept(ticket)
        else:
            self.lot.withdraw(ticket)
        slot.writers -= 1
        slot.kept = slot.kept or ok
        _, slots = self.model.get(task_id, (0.0, []))
        if not any(held is slot for held in slots):  # claimed or expired meanwhile: it stays taken
            return
        if slot.writers == 0 and not slot.kept:  # every write of it failed: not parked after all
            first, slots = self.model[task_id]
            slots.remove(slot)
            if slots:
                self.model[task_id] = (first, slots)
            else:
                del self.model[task_id]

    @rule(task_id=TASK_IDS, event=EVENTS, age=st.floats(0, 30, allow_nan=False))
    def put_back(self, task_id: str, event: int, age: float) -> None:
        """A callback handed back after a failed claim, or read back from the store as of when it
        first came (``age`` ago, before others parked here maybe), is never refused, whatever the
        limits; its task_id waits from then."""
        at = self.now - age
        first, slots = self.model.get(task_id, (at, []))
        slot = self._slot(task_id, event)
        assert self.lot.park(task_id, event, at, put_back=True) is None  # nothing owed
        if slot is None:
            slots = [*slots, Slot(event, 0, True)]
        else:
            slot.kept = True
        self.model[task_id] = (min(first, at), slots)

    @rule(task_id=TASK_IDS)
    def claim(self, task_id: str) -> None:
        first, slots = self.model.pop(task_id, (0.0, []))
        claimed = self.lot.claim(task_id)
        assert ([] if claimed is None else claimed.events) == [
            slot.event for slot in slots
        ]  # in arrival order
        if claimed is not None:
            self.taken.append((claimed, first, slots))

    @precondition(lambda self: self.taken)
    @rule(data=st.data())
    def hand_back(self, data: st.DataObject) -> None:
        """What a claim or an expiry took comes back when its task could not take it: the same
        slots (a write of one may still be on its way), ahead of what was parked since."""
        parked, first, slots = self.taken.pop(data.draw(st.integers(0, len(self.taken) - 1), label="taken"))
        self.lot.put_back(parked)
        since_first, since = self.model.pop(parked.task_id, (first, []))
        self.model[parked.task_id] = (min(first, since_first), [*slots, *since])

    @rule(ttl=st.floats(0, 30, allow_nan=False))
    def expire(self, ttl: float) -> None:
        cutoff = self.now - ttl
        orphans = self.lot.expire(cutoff)
        expected = sorted(task_id for task_id, (first, _) in self.model.items() if first <= cutoff)
        assert sorted(orphan.task_id for orphan in orphans) == expected
        for orphan in orphans:
            first, slots = self.model.pop(orphan.task_id)
            assert (orphan.first_parked, orphan.events) == (first, [slot.event for slot in slots])
            self.taken.append((orphan, first, slots))

    @invariant()
    def agrees_with_the_model(self) -> None:
        assert len(self.lot) == len(self.model)
        assert self.lot.oldest() == min((first for first, _ in self.model.values()), default=None)
        assert all(task_id in self.lot for task_id in self.model)


TestParking = ParkingMachine.TestCase


def test_a_callback_that_beats_its_start_answer_is_replayed_in_order() -> None:
    lot: ParkingLot[str] = ParkingLot(max_task_ids=MAX_TASK_IDS, max_per_task=MAX_PER_TASK)
    lot.park("tid", "partial 0", now=10.0)
    lot.park("tid", "final 0", now=10.5)
    assert "tid" in lot
    claimed = lot.claim("tid")
    assert claimed is not None
    assert claimed.events == ["partial 0", "final 0"]
    assert lot.claim("tid") is None  # claimed once


def test_an_unclaimed_task_id_becomes_an_orphan_at_its_ttl() -> None:
    lot: ParkingLot[str] = ParkingLot(max_task_ids=MAX_TASK_IDS, max_per_task=MAX_PER_TASK)
    lot.park("lost-start", "final 0", now=0.0)
    lot.park("known-soon", "final 0", now=20.0)
    assert lot.expire(parked_before=-0.1) == []
    (orphan,) = lot.expire(parked_before=0.0)
    assert (orphan.task_id, list(orphan.events)) == ("lost-start", ["final 0"])
    assert len(lot) == 1


@pytest.mark.parametrize("limit", ["max_task_ids", "max_per_task"])
def test_the_limits_are_checked(limit: str) -> None:
    with pytest.raises(ValueError, match=limit):
        ParkingLot(**{"max_task_ids": MAX_TASK_IDS, "max_per_task": MAX_PER_TASK, limit: 0})
