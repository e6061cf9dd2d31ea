"""Lifecycle: what one task costs, in bytes and in time per transition, against the references.

* bytes per task (``tracemalloc``, every task kept alive together): pending, running (start and
  start_ok applied: two history entries), and an hour in (720 segments applied);
* microseconds to create a task, at 10k and at 100k tasks, with CPython's garbage collector on
  (as shipped) and off (the task's own cost: the collector's full passes grow with the heap for
  every kind of object, the dict FSM's too). Creation must be O(1): its growth from 10k to 100k is
  judged as a multiple of the dict FSM's in the same run, since allocator and cache effects grow
  even that;
* nanoseconds per transition: a new segment while running (the hot path: ``StreamTask.segment``),
  a repeated segment (a duplicate), and a whole lifecycle (create, start, start_ok, ten segments,
  stop, stop_ok, stopped).

``transitions`` with one Machine per task costs tens of kilobytes and about a millisecond per task,
so it is measured on a sample of tasks, not all of them.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streamlife import ManualClock, Policy, Segment, StatusCallback, StreamTask

from .common import Figure, Goal, Section, bytes_per_object, compare, gc_settled, say
from .references import DictTask, dict_running, machine_running, machine_task

GOAL_BYTES_PER_TASK = 1024
GOAL_HOT_PATH_RATIO = 10.0
FLAT_TOLERANCE = 1.25  # "O(1)" and "flat": the larger size costs at most this many times the smaller
HOUR = 720  # 5-second segments in an hour
LIFECYCLE = ("start", "start_ok", *("segment",) * 10, "stop", "stop_ok", "stopped")
REFS = [("dict", "dict FSM"), ("machine", "Machine/task")]


@dataclass(frozen=True)
class LifecycleConfig:
    tasks: int  # tasks kept alive for the memory figures; creation is also timed at tasks // 10
    traced: int  # of which made under tracemalloc
    machine_sample: int  # one-Machine-per-task objects made for its figures
    hour_sample: int  # tasks taken an hour in
    ops: int  # transitions per timed run
    repeat: int


FULL = LifecycleConfig(tasks=100_000, traced=10_000, machine_sample=300, hour_sample=20, ops=50_000, repeat=5)
QUICK = LifecycleConfig(tasks=10_000, traced=2_000, machine_sample=100, hour_sample=10, ops=10_000, repeat=3)


def _running(clock: ManualClock) -> StreamTask:
    task = StreamTask("audio", clock=clock)
    task.start()
    task.start_ok("t")
    return task


def _segments(count: int, first: int = 0) -> list[Segment]:
    return [
        Segment("t", index, final=True, text=f"words of segment {index}") for index in range(first, count)
    ]


def _after_an_hour(clock: ManualClock, history_limit: int | None = None) -> StreamTask:
    task = _running(clock)
    task.history_limit = history_limit
    for segment in _segments(HOUR):
        task.segment(segment)
    return task


def _dict_after_an_hour() -> DictTask:
    task = dict_running()
    for index in range(HOUR):
        task.segment(index, f"words of segment {index}", 0.0)
    return task


def _creating(make: Callable[[], Any], count: int, *, collect: bool = True) -> Callable[[], int]:
    """A run making ``count`` objects kept alive together (then let go); ``collect=False`` with
    the garbage collector off, which shows the objects' own cost, whatever CPython's collector
    adds as the heap grows."""

    def run() -> int:
        if not collect:
            gc.disable()
        try:
            keep = [make() for _ in range(count)]
        finally:
            gc.enable()
        del keep
        return count

    return run


def _growth(small: Figure, large: Figure) -> tuple[float | None, float | None]:
    """How many times the per-task cost grew from the small size to the large: ours, the dict FSM's."""
    ours = None if not small.value or large.value is None else large.value / small.value
    dict_small, dict_large = small.refs.get("dict"), large.refs.get("dict")
    theirs = None if not dict_small or dict_large is None else dict_large / dict_small
    return ours, theirs


def _said(value: float | Figure | None, unit: str = "") -> str:
    if isinstance(value, Figure):
        value = value.value
    return "—" if value is None else f"{value:,.2f}{unit}"


def run(config: LifecycleConfig) -> Section:
    section = Section(
        "lifecycle",
        "Lifecycle: one task",
        f"StreamTask driven through the shared Machine, as shipped. Memory: {config.tasks:,} tasks alive "
        f"together, the last {config.traced:,} traced ({config.machine_sample:,} for one Machine per task, "
        f"{config.hour_sample} for an hour in); time: best of {config.repeat} runs of {config.ops:,} "
        "transitions after a warm-up.",
        REFS,
    )
    clock = ManualClock()
    n, small = config.tasks, config.tasks // 10

    say(f"lifecycle: bytes per task, {n:,} tasks")
    section.add(
        Figure(
            "lifecycle.bytes_per_task.pending",
            "bytes per task, pending",
            "B",
            bytes_per_object(lambda: StreamTask("audio", clock=clock), config.traced, among=n),
            {
                "dict": bytes_per_object(DictTask, config.traced, among=n),
                "machine": bytes_per_object(machine_task, config.machine_sample),
            },
        )
    )
    running = section.add(
        Figure(
            "lifecycle.bytes_per_task.running",
            f"bytes per task, running (2 history entries), {n:,} tasks",
            "B",
            bytes_per_object(lambda: _running(clock), config.traced, among=n),
            {
                "dict": bytes_per_object(dict_running, config.traced, among=n),
                "machine": bytes_per_object(machine_running, config.machine_sample),
            },
        )
    )
    hour = section.add(
        Figure(
            "lifecycle.bytes_per_task.hour",
            f"bytes per task, an hour in ({HOUR} segments applied)",
            "B",
            bytes_per_object(lambda: _after_an_hour(clock), config.hour_sample),
            {"dict": bytes_per_object(_dict_after_an_hour, config.hour_sample)},
        )
    )
    bounded_limit = Policy().history_limit
    bounded = section.add(
        Figure(
            "lifecycle.bytes_per_task.hour_bounded",
            f"bytes per task, an hour in, history bounded as a Fleet bounds it ({bounded_limit} entries)",
            "B",
            bytes_per_object(lambda: _after_an_hour(clock, bounded_limit), config.hour_sample),
            {"dict": bytes_per_object(_dict_after_an_hour, config.hour_sample)},
        )
    )
    gc_settled()

    say("lifecycle: creation")
    repeat = config.repeat
    machine_create = compare({"machine": _creating(machine_task, config.machine_sample)}, 1, 0)[
        "machine"
    ].best_us
    created: dict[tuple[int, bool], Figure] = {}
    for count, runs in ((small, repeat), (n, max(repeat - 2, 1))):
        for collect in (True, False):
            timings = compare(
                {
                    "streamlife": _creating(lambda: StreamTask("audio", clock=clock), count, collect=collect),
                    "dict": _creating(DictTask, count, collect=collect),
                },
                runs,
                warmup=0,
            )
            created[count, collect] = section.add(
                Figure(
                    f"lifecycle.create_us.{count}" + ("" if collect else ".gc_off"),
                    f"µs to create a task, {count:,} tasks" + ("" if collect else ", collector off"),
                    "µs",
                    timings["streamlife"].best_us,
                    {"dict": timings["dict"].best_us, "machine": machine_create if collect else None},
                    note=f"Machine/task: measured on {config.machine_sample:,} tasks" if collect else "",
                )
            )
    gc_settled()

    say("lifecycle: transitions")
    ops = config.ops
    fresh = _segments(ops)
    repeated = Segment("t", 0, final=True, text="words of segment 0")

    def sl_new() -> int:
        fire = _running(clock).segment
        for segment in fresh:
            fire(segment)
        return ops

    def dict_new() -> int:
        fire = dict_running().segment
        for index in range(ops):
            fire(index, "words", 0.0)
        return ops

    mach = machine_running()

    def mach_segment() -> int:
        del mach.history[:]
        fire = mach.segment
        for _ in range(ops):
            fire()
        return ops

    def sl_repeat() -> int:
        task = _running(clock)
        fire = task.segment
        fire(repeated)
        for _ in range(ops):
            fire(repeated)
        return ops

    def dict_repeat() -> int:
        fire = dict_running().segment
        fire(0, "words", 0.0)
        for _ in range(ops):
            fire(0, "words", 0.0)
        return ops

    segment_runs = compare(
        {
            "new": sl_new,
            "dict_new": dict_new,
            "machine": mach_segment,
            "repeat": sl_repeat,
            "dict_repeat": dict_repeat,
        },
        repeat,
    )
    hot = section.add(
        Figure(
            "lifecycle.ns_per_transition.segment_new",
            "ns per transition: a new segment while running (hot path)",
            "ns",
            segment_runs["new"].best_ns,
            {"dict": segment_runs["dict_new"].best_ns, "machine": segment_runs["machine"].best_ns},
            note="Machine/task: the segment self-loop with no data (it keeps no transcript)",
        )
    )
    section.add(
        Figure(
            "lifecycle.ns_per_transition.segment_repeat",
            "ns per transition: a repeated segment (duplicate)",
            "ns",
            segment_runs["repeat"].best_ns,
            {"dict": segment_runs["dict_repeat"].best_ns, "machine": segment_runs["machine"].best_ns},
        )
    )

    lifecycles = max(ops // len(LIFECYCLE), 1)
    segment = Segment("t", 0, final=True, text="x")
    stopped = StatusCallback("t", 14)

    def sl_full() -> int:
        for _ in range(lifecycles):
            task = StreamTask("audio", clock=clock)
            task.start()
            task.start_ok("t")
            for _ in range(10):
                task.segment(segment)
            task.stop()
            task.stop_ok()
            task.stopped(stopped)
        return lifecycles * len(LIFECYCLE)

    def dict_full() -> int:
        for _ in range(lifecycles):
            task = DictTask()
            for trigger in LIFECYCLE:
                task.fire(trigger, 0.0)
        return lifecycles * len(LIFECYCLE)

    def mach_full() -> int:
        count = max(lifecycles // 20, 1)  # a Machine per task is slow to build: fewer of them
        for _ in range(count):
            task = machine_task()
            for trigger in LIFECYCLE:
                getattr(task, trigger)()
        return count * len(LIFECYCLE)

    full_runs = compare({"streamlife": sl_full, "dict": dict_full, "machine": mach_full}, max(repeat - 2, 1))
    section.add(
        Figure(
            "lifecycle.ns_per_transition.full_lifecycle",
            "ns per transition: a whole lifecycle, creation included",
            "ns",
            full_runs["streamlife"].best_ns,
            {"dict": full_runs["dict"].best_ns, "machine": full_runs["machine"].best_ns},
        )
    )

    if hour.value is not None and running.value is not None and bounded.value is not None:
        per_segment = (hour.value - running.value) / HOUR
        kept = (bounded.value - running.value) / HOUR
        section.notes.append(
            f"A StreamTask on its own keeps every history entry: each applied segment leaves "
            f"{per_segment:,.0f} B (a history entry and the transcript's), {hour.value / 1024:,.0f} KiB "
            f"per task an hour in. A Fleet keeps the last {bounded_limit} history entries "
            f"(Policy.history_limit), so a segment leaves {kept:,.0f} B, the transcript's part: "
            f"100,000 streams grow by about {kept * 100_000 * HOUR / 2**30:,.1f} GiB an hour."
        )
    section.notes.append(
        "The whole-lifecycle figure for streamlife sends the same segment ten times "
        "(one applied, nine duplicates), as the dict FSM reference fires ten plain segments."
    )

    growth = {collect: _growth(created[small, collect], created[n, collect]) for collect in (True, False)}
    ours, theirs = growth[False]
    relative_growth = None if ours is None or not theirs else ours / theirs
    hot_ratio = hot.ratio("dict")
    section.goals += [
        Goal(
            "lifecycle.bytes_per_live_task",
            f"≤ {GOAL_BYTES_PER_TASK:,} B of lifecycle overhead per live task at {n:,} tasks",
            f"{running.value:,.0f} B per running task",
            None if running.value is None else running.value <= GOAL_BYTES_PER_TASK,
        ),
        Goal(
            "lifecycle.create_o1",
            f"creation O(1): the growth of µs per task from {small:,} to {n:,} tasks (collector off), "
            f"divided by the dict FSM's growth measured in turn with it, within {FLAT_TOLERANCE}x",
            f"streamlife {_said(created[small, False])} µs at {small:,}, {_said(created[n, False])} µs at "
            f"{n:,}: {_said(ours, 'x')}; the dict FSM {_said(created[small, False].refs.get('dict'))} µs, "
            f"{_said(created[n, False].refs.get('dict'))} µs: {_said(theirs, 'x')}; ratio "
            f"{_said(relative_growth, 'x')} (with the collector on: {_said(growth[True][0], 'x')}, the dict "
            f"FSM {_said(growth[True][1], 'x')})",
            None if relative_growth is None else relative_growth <= FLAT_TOLERANCE,
        ),
        Goal(
            "lifecycle.hot_path_vs_dict",
            f"hot path (a new segment while running) within {GOAL_HOT_PATH_RATIO:.0f}x of the dict FSM",
            "—"
            if hot_ratio is None
            else f"{hot.value:,.0f} ns vs {hot.refs['dict']:,.0f} ns: {hot_ratio:.1f}x",
            None if hot_ratio is None else hot_ratio <= GOAL_HOT_PATH_RATIO,
        ),
    ]
    return section
