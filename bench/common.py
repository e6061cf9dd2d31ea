"""What every benchmark shares: the result records, timing and memory helpers, callback bodies,
and a Fleet of live tasks made without the network.

Figures are measured as ratios to references run in the same process, never asserted against a
clock: a machine twice as fast halves both sides. Timings are the best of a few repeats after a
warm-up (the best is the run least disturbed by the rest of the machine), but where work comes in
bursts a sustained run pays for (ingest: checkpoints, the collector's full passes), where the mean
is the figure; memory is what ``tracemalloc`` sees allocated and still held.
"""

from __future__ import annotations

import gc
import json
import logging
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from streamlife import Fleet, ManualClock, Policy
from streamlife._events import StartResult, StopResult, StreamKind
from streamlife.protocol import segment_callback
from streamlife.sim import SimTransport, SimulatedService
from streamlife.store import Store

Better = Literal["lower", "higher"]


# -- results -------------------------------------------------------------------------------------
@dataclass
class Figure:
    """One measured figure, with the same measure taken of each reference (None: not measured)."""

    key: str  # stable, machine-readable: "ingest.memory.100000.us_per_callback"
    label: str
    unit: str
    value: float | None
    refs: dict[str, float | None] = field(default_factory=dict)
    better: Better = "lower"
    note: str = ""

    def ratio(self, ref: str) -> float | None:
        """How many times the reference's cost this is: > 1 is slower (or bigger) than the reference.

        For a throughput (higher is better) that is reference / ours, so every ratio reads alike.
        """
        other = self.refs.get(ref)
        if self.value is None or other is None or self.value == 0 or other == 0:
            return None
        return self.value / other if self.better == "lower" else other / self.value


@dataclass
class Goal:
    key: str
    target: str  # what the goal asks, in words
    measured: str  # the figures that decide it, in words
    passed: bool | None  # None: not measured in this run


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    name: str  # what --only selects
    title: str
    about: str  # one paragraph: what was run, how
    refs: list[tuple[str, str]]  # (reference key, column title), in column order
    figures: list[Figure] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)  # free-form tables shown after the figures
    extra: dict[str, Any] = field(default_factory=dict)  # machine-readable details (the profile, counts)
    seconds: float = 0.0  # how long the section took to run, setup included

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure


# -- logging as a production application sets it -------------------------------------------------
def configure_logging() -> None:
    """structlog at WARNING with a filtering bound logger: debug and info events are dropped
    before anything is rendered, as in a production application."""
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        cache_logger_on_first_use=True,
    )


_BEGAN = time.perf_counter()


def say(message: str) -> None:
    """Progress, on stderr (so that the tables on stdout stay readable), with the seconds since
    the run began."""
    print(f"  .. {time.perf_counter() - _BEGAN:6.1f}s {message}", file=sys.stderr, flush=True)


# -- timing --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Timing:
    best: float  # seconds per operation, the fastest repeat
    median: float  # seconds per operation, the median repeat
    mean: float  # seconds per operation over every repeat: what a sustained run pays

    @property
    def best_us(self) -> float:
        return self.best * 1e6

    @property
    def best_ns(self) -> float:
        return self.best * 1e9


def timed(run: Callable[[], int], repeat: int = 5, warmup: int = 1) -> Timing:
    """Per-operation time of ``run`` (which returns how many operations it did): warm-up runs
    first, then the best and the median of ``repeat`` timed runs."""
    for _ in range(warmup):
        run()
    per_op = []
    for _ in range(repeat):
        started = time.perf_counter()
        ops = run()
        per_op.append((time.perf_counter() - started) / max(ops, 1))
    return timing_of(per_op)


def compare(runs: dict[str, Callable[[], int]], repeat: int = 5, warmup: int = 1) -> dict[str, Timing]:
    """``timed`` for several runs at once, taking turns (the order rotating each repeat), so that
    whatever else the machine is doing falls on each of them alike and their ratios hold."""
    names = list(runs)
    for _ in range(warmup):
        for name in names:
            runs[name]()
    per_op: dict[str, list[float]] = {name: [] for name in names}
    for turn in range(repeat):
        for name in names[turn % len(names) :] + names[: turn % len(names)]:
            gc_young()
            started = time.perf_counter()
            ops = runs[name]()
            per_op[name].append((time.perf_counter() - started) / max(ops, 1))
    return {name: timing_of(times) for name, times in per_op.items()}


def timing_of(per_op: Sequence[float]) -> Timing:
    """From repeats of equal size: the fastest, the median and the mean (total over total)."""
    return Timing(min(per_op), statistics.median(per_op), statistics.fmean(per_op))


def once(run: Callable[[], Any]) -> float:
    """Seconds taken by one call of ``run``."""
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


@contextmanager
def traced(frames: int = 1) -> Iterator[Callable[[], int]]:
    """Trace allocations for the block; yields a function answering the bytes allocated since the
    block began and still held. Collects garbage first, so the baseline is clean."""
    gc.collect()
    tracemalloc.start(frames)
    try:
        base = tracemalloc.get_traced_memory()[0]
        yield lambda: tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()


def bytes_per_object(make: Callable[[], Any], count: int, *, among: int = 0) -> float:
    """Bytes held per object, for ``count`` objects made by ``make`` and kept alive together.

    With ``among`` (the number alive in the end), ``among - count`` are made first, untraced
    (tracing slows every allocation), and the figure is what each of the last ``count`` adds.
    """
    alive = [make() for _ in range(max(among - count, 0))]
    with traced() as held:
        keep = [make() for _ in range(count)]
        used = held() - sys.getsizeof(keep)  # minus the list that keeps them
    del keep, alive
    return used / count


# -- callbacks -----------------------------------------------------------------------------------
def segment_body(task_id: str, index: int) -> bytes:
    """A final transcript callback for segment ``index``, serialised as memories.ai posts it."""
    return json.dumps(segment_callback(task_id, index, text=f"words of segment {index}")).encode()


class CallbackStream:
    """Callback bodies spread over every live task, round-robin, with a share of duplicates.

    The n-th new callback goes to task ``n % len(task_ids)`` as its segment ``n // len(task_ids)``,
    so the tasks take their segments in turns, each in order, as 100k streams each posting every
    5 seconds would. Every ``duplicate_every``-th body is a copy of one sent ``lag`` bodies before
    (memories.ai delivers at least once), so dedupe is exercised. ``take(count)`` continues where
    the last call stopped: every round gets segments no task has seen.
    """

    def __init__(
        self, task_ids: Sequence[str], *, duplicate_every: int = 10, lag: int = 7, first_index: int = 0
    ) -> None:
        if not task_ids:
            raise ValueError("no live tasks to send callbacks to")
        self.task_ids = list(task_ids)
        self.duplicate_every = duplicate_every
        self.lag = lag
        self.position = first_index * len(self.task_ids)  # new callbacks made so far

    def take(self, count: int) -> list[bytes]:
        bodies: list[bytes] = []
        n = len(self.task_ids)
        every = self.duplicate_every
        for k in range(count):
            if every and k % every == every - 1 and len(bodies) >= self.lag:
                bodies.append(bodies[-self.lag])
                continue
            position = self.position
            self.position += 1
            bodies.append(segment_body(self.task_ids[position % n], position // n))
        return bodies

    def fresh(self, count: int) -> list[bytes]:
        """``count`` new bodies, no duplicates among them."""
        every, self.duplicate_every = self.duplicate_every, 0
        try:
            return self.take(count)
        finally:
            self.duplicate_every = every


def duplicates_in(count: int, duplicate_every: int = 10, lag: int = 7) -> int:
    """How many of ``count`` bodies ``CallbackStream.take`` makes duplicates."""
    if not duplicate_every:
        return 0
    return sum(1 for k in range(count) if k % duplicate_every == duplicate_every - 1 and k >= lag)


# -- live tasks without the network --------------------------------------------------------------
class InstantTransport:
    """A transport that starts every stream at once and keeps nothing: for measuring what the
    Fleet itself holds per task. Its task_ids look like memories.ai's (32 hex digits, as the docs'
    example), after ``prefix``: numbered ones would be long runs of digits, which a callback's
    parser must read the standard library's slower way (an integer beyond 64 bits could hide in
    such a run), where a real task_id rarely sends it."""

    def __init__(self, prefix: str = "") -> None:
        self._prefix = prefix
        self._bits = random.Random(f"task_ids {prefix}").getrandbits  # (the same ids each run)

    def start(self, kind: StreamKind, params: Mapping[str, Any]) -> StartResult:
        return StartResult(f"{self._prefix}{self._bits(128):032x}")

    def stop(self, kind: StreamKind, task_id: str, *, within: float | None = None) -> StopResult:
        return StopResult(task_id)

    def close(self) -> None:
        pass


@dataclass
class LiveFleet:
    fleet: Fleet
    service: SimulatedService
    task_ids: list[str]
    seconds: float  # how long making the live tasks took

    def close(self) -> None:
        self.fleet.close()
        self.fleet.store.close()


def live_fleet(
    count: int,
    store: Store | None = None,
    *,
    budget: float | None = None,
    policy: Policy | None = None,
    clock_at: float = 0.0,
) -> LiveFleet:
    """A Fleet with ``count`` running audio tasks, started through the simulator (no network).

    With a ``budget`` (seconds), stops early once making tasks has taken that long (``task_ids``
    then holds fewer than ``count``). Its ``policy`` sends stops on the calling thread unless told
    otherwise. Its clock reads ``clock_at`` (and stays there): a store served afterwards by a process
    on the real clock wants the time now, or every task there is long overdue.
    """
    clock = ManualClock(clock_at)
    service = SimulatedService(clock=clock, max_streams=count + 1)
    policy = Policy(stop_concurrency=0) if policy is None else policy
    fleet = Fleet(SimTransport(service), clock=clock, policy=policy, store=store)
    start = fleet.start
    task_ids: list[str] = []
    started = time.perf_counter()
    for first in range(0, count, MAKE_BATCH):
        # One store commit for a thousand starts: making the tasks is not what is measured, and a
        # commit each would be most of a long run on disk.
        with fleet.store.batch():
            for n in range(first, min(first + MAKE_BATCH, count)):
                task = start("audio", audio_url=f"rtmp://bench.invalid/live/{n}", provider="assemblyai")
                if task.task_id is None:
                    raise RuntimeError(f"task {n} did not start: {task!r} ({task.last_error})")
                task_ids.append(task.task_id)
        if budget is not None and time.perf_counter() - started > budget:
            break
    return LiveFleet(fleet, service, task_ids, time.perf_counter() - started)


MAKE_BATCH = 1000  # starts per store commit in live_fleet


def gc_settled() -> None:
    """Collect everything collectable, so the next measure does not pay for the last one's garbage."""
    gc.collect()


def gc_young() -> None:
    """Collect the young generations only: between timed rounds, where a full collection of a heap
    holding 100k live tasks would take longer than the round."""
    gc.collect(1)
