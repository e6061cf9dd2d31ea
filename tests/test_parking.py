"""The parking lot against a plain model: nothing lost, nothing doubled, nothing dropped, orphans
exactly at their TTL."""

from __future__ import annotations

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from streamlife.errors import ParkingFullError
from streamlife.parking import ParkingLot

TASK_IDS = st.sampled_from(["a", "b", "c", "d"])
EVENTS = st.integers(0, 5)  # few values: redeliveries of one event are common
MAX_TASK_IDS, MAX_PER_TASK = 3, 3


class ParkingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.lot: ParkingLot[int] = ParkingLot(max_task_ids=MAX_TASK_IDS, max_per_task=MAX_PER_TASK)
        self.model: dict[str, tuple[float, list[int]]] = {}  # task_id -> (first parked, its events)
        self.now = 0.0

    @rule(task_id=TASK_IDS, event=EVENTS, step=st.floats(0, 10, allow_nan=False))
    def park(self, task_id: str, event: int, step: float) -> None:
        self.now += step
        first, events = self.model.get(task_id, (self.now, []))
        if event in events:  # a redelivery: kept once
            assert self.lot.park(task_id, event, self.now) is False
        elif (task_id not in self.model and len(self.model) >= MAX_TASK_IDS) or len(events) >= MAX_PER_TASK:
            with pytest.raises(ParkingFullError):  # refused, and nothing pushed out
                self.lot.park(task_id, event, self.now)
        else:
            assert self.lot.park(task_id, event, self.now) is True
            self.model[task_id] = (first, [*events, event])

    @rule(task_id=TASK_IDS, event=EVENTS)
    def put_back(self, task_id: str, event: int) -> None:
        """A callback handed back after a failed claim is never refused, whatever the limits."""
        first, events = self.model.get(task_id, (self.now, []))
        assert self.lot.park(task_id, event, first, put_back=True) is (event not in events)
        if event not in events:
            self.model[task_id] = (first, [*events, event])

    @rule(task_id=TASK_IDS)
    def claim(self, task_id: str) -> None:
        _, events = self.model.pop(task_id, (0.0, []))
        assert self.lot.claim(task_id) == events  # every one, in arrival order

    @rule(task_id=TASK_IDS, event=EVENTS)
    def withdraw(self, task_id: str, event: int) -> None:
        self.lot.withdraw(task_id, event)
        if task_id in self.model and event in self.model[task_id][1]:
            first, events = self.model[task_id]
            events.remove(event)
            if events:
                self.model[task_id] = (first, events)
            else:
                del self.model[task_id]

    @rule(ttl=st.floats(0, 30, allow_nan=False))
    def expire(self, ttl: float) -> None:
        cutoff = self.now - ttl
        orphans = self.lot.expire(cutoff)
        expected = sorted(task_id for task_id, (first, _) in self.model.items() if first <= cutoff)
        assert sorted(orphan.task_id for orphan in orphans) == expected
        for orphan in orphans:
            first, events = self.model.pop(orphan.task_id)
            assert (orphan.first_parked, list(orphan.events)) == (first, events)

    @invariant()
    def agrees_with_the_model(self) -> None:
        assert len(self.lot) == len(self.model)
        assert self.lot.oldest() == min((first for first, _ in self.model.values()), default=None)
        assert all(task_id in self.lot for task_id in self.model)


TestParking = ParkingMachine.TestCase


def test_a_callback_that_beats_its_start_answer_is_replayed_in_order() -> None:
    lot: ParkingLot[str] = ParkingLot()
    lot.park("tid", "partial 0", now=10.0)
    lot.park("tid", "final 0", now=10.5)
    assert "tid" in lot
    assert lot.claim("tid") == ["partial 0", "final 0"]
    assert lot.claim("tid") == []  # claimed once


def test_an_unclaimed_task_id_becomes_an_orphan_at_its_ttl() -> None:
    lot: ParkingLot[str] = ParkingLot()
    lot.park("lost-start", "final 0", now=0.0)
    lot.park("known-soon", "final 0", now=20.0)
    assert lot.expire(parked_before=-0.1) == []
    (orphan,) = lot.expire(parked_before=0.0)
    assert (orphan.task_id, list(orphan.events)) == ("lost-start", ["final 0"])
    assert len(lot) == 1


@pytest.mark.parametrize("limit", ["max_task_ids", "max_per_task"])
def test_the_limits_are_checked(limit: str) -> None:
    with pytest.raises(ValueError, match=limit):
        ParkingLot(**{limit: 0})
