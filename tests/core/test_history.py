"""A task's History: read as the list of HistoryEntry values it was given, kept in a form the
collector stops tracking (what lets 100,000 live tasks go without full collections over them)."""

from __future__ import annotations

import gc
from itertools import chain
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamlife import History, HistoryEntry, Outcome, OutcomeKind, TaskState
from streamlife.lifecycle import TRIGGERS

outcomes = st.sampled_from([Outcome.APPLIED, Outcome.DUPLICATE, Outcome.LATE]) | st.builds(
    Outcome.rejected, st.text(max_size=10)
)
plain = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
datas = st.none() | st.dictionaries(st.text(max_size=6), plain, max_size=3)
records = st.tuples(
    st.floats(0, 1e6),
    st.sampled_from(sorted(TRIGGERS)),
    st.sampled_from(list(TaskState)),
    st.sampled_from(list(TaskState)),
    outcomes,
    datas,
)


def _expected(records: list[tuple[Any, ...]]) -> list[HistoryEntry]:
    """What a history of those records reads as: the plain list a task kept before."""
    entries: list[HistoryEntry] = []
    for seq, (at, trigger, before, after, outcome, data) in enumerate(records, start=1):
        at = max(at, entries[-1].at) if entries else at
        entries.append(
            HistoryEntry(seq, at, trigger, TRIGGERS[trigger], before, after, outcome, data or None)
        )
    return entries


def _record(
    history: History, at: float, trigger: str, before: Any, after: Any, outcome: Outcome, data: Any
) -> None:
    """Record as a task does: the data's keys and values in turn."""
    history.record(at, trigger, before, after, outcome, tuple(chain.from_iterable((data or {}).items())))


@given(st.lists(records, max_size=30))
def test_a_history_reads_back_every_entry_as_recorded(records: list[tuple[Any, ...]]) -> None:
    history = History()
    for record in records:
        _record(history, *record)
    expected = _expected(records)
    assert list(history) == expected
    assert history == expected
    assert len(history) == len(expected)
    assert [history[i] for i in range(-len(expected), len(expected))] == expected * 2
    assert history[1:-1] == expected[1:-1]
    assert history[::-1] == expected[::-1]
    assert list(reversed(history)) == expected[::-1]
    assert history.last_at == (expected[-1].at if expected else None)
    if expected:
        last = expected[-1]
        assert history.last_move() == (last.at, last.trigger, last.from_state, last.to_state)
        # A shared outcome reads back as the very value fired (``outcome is Outcome.APPLIED`` holds).
        assert all(
            entry.outcome is outcome
            for entry, (*_, outcome, _) in zip(history, records, strict=True)
            if outcome.kind is not OutcomeKind.REJECTED
        )


@given(st.integers(1, 5), st.lists(records, max_size=40))
def test_a_limited_history_keeps_the_newest_entries_with_their_numbers(
    limit: int, records: list[tuple[Any, ...]]
) -> None:
    history = History(limit)
    for record in records:
        _record(history, *record)
    expected = _expected(records)
    kept = len(history)
    assert min(limit, len(expected)) <= kept <= 2 * limit
    assert history == expected[len(expected) - kept :]


def test_what_a_history_keeps_the_collector_stops_tracking() -> None:
    """An entry with only plain data holds nothing the collector must walk once a young collection
    has seen it: a task's history adds no work to the full passes, however long it grows."""
    history = History()
    for index in range(2_000):
        history.record(
            float(index),
            "segment",
            TaskState.RUNNING,
            TaskState.RUNNING,
            Outcome.APPLIED,
            ("index", index, "final", True),
        )
        history.record(float(index), "stop", TaskState.RUNNING, TaskState.STOPPING, Outcome.rejected("no"))
    gc.collect(0)
    assert not any(gc.is_tracked(kept) for kept in history._kept)


def test_a_history_equals_sequences_of_the_same_entries_and_nothing_else() -> None:
    history = History()
    assert history == []
    assert history == ()
    assert history == History()
    history.record(1.0, "start", TaskState.PENDING, TaskState.STARTING, Outcome.APPLIED)
    assert history != []
    assert history != "x"
    assert history != History()
    assert history == list(history)
    assert history == tuple(history)
    assert repr(history) == f"History({list(history)!r})"


@pytest.mark.parametrize("data", [{"index": 1}, None, ["index", 1], ("index", 1, "final")])
def test_data_given_other_than_as_a_tuple_of_keys_and_values_is_refused(data: Any) -> None:
    """As ``record`` once took it (a mapping, or None), or as a list, or with a key alone."""
    history = History()
    with pytest.raises(TypeError, match="one tuple of keys and values in turn"):
        history.record(1.0, "segment", TaskState.RUNNING, TaskState.RUNNING, Outcome.APPLIED, data)
    assert list(history) == []
