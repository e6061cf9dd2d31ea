"""The parking lot against a plain model: nothing lost, nothing doubled, orphans exactly at their TTL."""

from __future__ import annotations

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from streamlife.parking import ParkingLot

TASK_IDS = st.sampled_from(["a", "b", "c", "d"])


class ParkingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.lot: ParkingLot[int] = ParkingLot(max_per_task=3)
        self.model: dict[str, tuple[float, list[int]]] = {}  # task_id -> (first parked, every event)
        self.now = 0.0
        self.serial = 0

    @rule(task_id=TASK_IDS, step=st.floats(0, 10, allow_nan=False))
    def park(self, task_id: str, step: float) -> None:
        self.now += step
        self.serial += 1
        self.lot.park(task_id, self.serial, self.now)
        first, events = self.model.get(task_id, (self.now, []))
        self.model[task_id] = (first, [*events, self.serial])

    @rule(task_id=TASK_IDS)
    def claim(self, task_id: str) -> None:
        _, events = self.model.pop(task_id, (0.0, []))
        assert self.lot.claim(task_id) == events[-3:]  # the newest three, in arrival order

    @rule(ttl=st.floats(0, 30, allow_nan=False))
    def expire(self, ttl: float) -> None:
        cutoff = self.now - ttl
        orphans = self.lot.expire(cutoff)
        expected = sorted(task_id for task_id, (first, _) in self.model.items() if first <= cutoff)
        assert sorted(orphan.task_id for orphan in orphans) == expected
        for orphan in orphans:
            first, events = self.model.pop(orphan.task_id)
            assert (orphan.first_parked, list(orphan.events)) == (first, events[-3:])
            assert orphan.dropped == max(0, len(events) - 3)

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


def test_max_per_task_is_checked() -> None:
    with pytest.raises(ValueError, match="max_per_task"):
        ParkingLot(max_per_task=0)
