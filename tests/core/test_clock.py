from __future__ import annotations

import time

import pytest

from streamlife import Clock, ManualClock, SystemClock


def test_the_manual_clock_moves_only_forwards() -> None:
    clock = ManualClock(10.0)
    assert clock.advance(2.5) == 12.5
    clock.set(20.0)
    assert clock.now() == 20.0
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="backwards"):
        clock.set(19.0)
    assert clock.now() == 20.0


def test_the_system_clock_is_the_wall_clock() -> None:
    before = time.time()
    now = SystemClock().now()
    assert before <= now <= time.time()


def test_both_satisfy_the_protocol() -> None:
    assert isinstance(ManualClock(), Clock)
    assert isinstance(SystemClock(), Clock)
