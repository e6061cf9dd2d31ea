"""Runs: a set of ints kept as sorted runs of consecutive ints, ``[start, end)``.

A stream's segment indexes come mostly in order and mostly without holes, so the indexes a
transcript has let go of are one run, or a few: the set costs a few ints whatever the number of
indexes in it. Adding or removing one int costs a binary search and, at worst, a list insertion.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator


class Runs:
    """A set of ints as sorted, disjoint, non-adjacent runs."""

    __slots__ = ("_ends", "_size", "_starts")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []  # each run's end, exclusive
        self._size = 0

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int):
            return False
        at = bisect_right(self._starts, value) - 1
        return at >= 0 and value < self._ends[at]

    def __len__(self) -> int:
        """How many ints the set holds (not how many runs)."""
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def add(self, value: int) -> None:
        starts, ends = self._starts, self._ends
        at = bisect_right(starts, value) - 1
        if at >= 0 and value < ends[at]:
            return  # held already
        self._size += 1
        joins_left = at >= 0 and ends[at] == value
        joins_right = at + 1 < len(starts) and starts[at + 1] == value + 1
        if joins_left and joins_right:  # fills the hole between two runs: they become one
            ends[at] = ends[at + 1]
            del starts[at + 1], ends[at + 1]
        elif joins_left:
            ends[at] = value + 1
        elif joins_right:
            starts[at + 1] = value
        else:
            starts.insert(at + 1, value)
            ends.insert(at + 1, value + 1)

    def add_range(self, start: int, stop: int) -> None:
        """Add every int of ``range(start, stop)``: at the top of the set (the usual case: a
        stream's indexes let go of in order), one comparison; elsewhere, one at a time."""
        starts, ends = self._starts, self._ends
        if start >= stop:
            return
        if not starts or start > ends[-1]:
            starts.append(start)
            ends.append(stop)
            self._size += stop - start
        elif start == ends[-1]:
            ends[-1] = stop
            self._size += stop - start
        else:
            for value in range(start, stop):
                self.add(value)

    def discard(self, value: int) -> None:
        starts, ends = self._starts, self._ends
        at = bisect_right(starts, value) - 1
        if at < 0 or value >= ends[at]:
            return  # not held
        self._size -= 1
        start, end = starts[at], ends[at]
        if start == value and end == value + 1:
            del starts[at], ends[at]
        elif start == value:
            starts[at] = value + 1
        elif end == value + 1:
            ends[at] = value
        else:  # from the middle: the run splits in two
            ends[at] = value
            starts.insert(at + 1, value + 1)
            ends.insert(at + 1, end)

    def runs(self) -> Iterator[range]:
        """The runs, lowest first."""
        return map(range, self._starts, self._ends)

    def __iter__(self) -> Iterator[int]:
        for run in self.runs():
            yield from run

    def __repr__(self) -> str:
        return f"Runs({list(self.runs())!r})"
