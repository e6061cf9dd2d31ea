"""Deadlines against a plain dict model: whatever is armed, moved and cancelled, the due ones come out
exactly once, soonest first."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from streamlife._deadlines import Deadlines

KEYS = st.integers(0, 5)
KINDS = st.sampled_from(["final", "uncertain", "silence"])
TIMES = st.floats(0, 100, allow_nan=False)


class DeadlineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.deadlines: Deadlines[int] = Deadlines()
        self.model: dict[tuple[int, str], float] = {}
        self.now = 0.0

    @rule(key=KEYS, kind=KINDS, when=TIMES)
    def arm(self, key: int, kind: str, when: float) -> None:
        self.deadlines.arm(key, kind, when)
        self.model[key, kind] = when

    @rule(key=KEYS, kind=st.none() | KINDS)
    def cancel(self, key: int, kind: str | None) -> None:
        self.deadlines.cancel(key, kind)
        for armed in [armed for armed in self.model if armed[0] == key and kind in (None, armed[1])]:
            del self.model[armed]

    @rule(step=st.floats(0, 40, allow_nan=False))
    def pop_due(self, step: float) -> None:
        self.now += step
        due = self.deadlines.pop_due(self.now)
        expected = sorted((when, key, kind) for (key, kind), when in self.model.items() if when <= self.now)
        assert sorted(due) == expected
        assert [when for when, _, _ in due] == sorted(when for when, _, _ in due)  # soonest first
        for _, key, kind in due:
            del self.model[key, kind]

    @invariant()
    def agrees_with_the_model(self) -> None:
        assert len(self.deadlines) == len(self.model)
        assert self.deadlines.next_at() == min(self.model.values(), default=None)
        for (key, kind), when in self.model.items():
            assert self.deadlines.when(key, kind) == when


TestDeadlines = DeadlineMachine.TestCase


def test_rearming_moves_a_deadline_and_the_heap_stays_small() -> None:
    deadlines: Deadlines[str] = Deadlines()
    for second in range(10_000):
        deadlines.arm("task", "silence", float(second))  # the silence timer re-armed on every callback
    assert len(deadlines) == 1
    assert len(deadlines._heap) <= 130  # compacted: stale entries never pile up
    assert deadlines.pop_due(9_998.0) == []
    assert deadlines.pop_due(9_999.0) == [(9_999.0, "task", "silence")]
    assert deadlines.next_at() is None
