"""Lifecycle cost: bytes per task and ns per transition, against two references measured in the same run.

    python bench/bench_lifecycle.py [--tasks 100000]

* streamlife: StreamTask driven through the shared Machine (the library as shipped).
* dict FSM: a hand-written task doing the same bookkeeping (table lookup, state set, history
  entry appended); the limit for pure Python.
* transitions, one Machine per task: the way transitions is usually used.

Log events are filtered at WARNING, as a production application would configure structlog; the
cost of rendering a log line is not part of the lifecycle and is measured in bench/ later.
"""

from __future__ import annotations

import argparse
import gc
import logging
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import structlog
from transitions import Machine

from streamlife import ManualClock, Segment, StatusCallback, StreamTask
from streamlife.lifecycle import CELLS, STATES, TaskState

LIFECYCLE = ["start", "start_ok", *["segment"] * 10, "stop", "stop_ok", "stopped"]
GOAL_BYTES_PER_TASK = 1024
STOPPED = StatusCallback("t", 14)


# -- reference 1: a hand-written dict FSM with the same bookkeeping ------------------------------
_DICT_TABLE = {
    (state.value, trigger): cell.value
    for (state, trigger), cell in CELLS.items()
    if isinstance(cell, TaskState)
}


class DictTask:
    __slots__ = ("history", "state")

    def __init__(self) -> None:
        self.state = "pending"
        self.history: list[tuple[int, float, str, str, str]] = []

    def fire(self, trigger: str, now: float) -> None:
        before = self.state
        after = _DICT_TABLE[before, trigger]
        self.state = after
        self.history.append((len(self.history) + 1, now, trigger, before, after))


# -- reference 2: transitions the usual way, one Machine per task --------------------------------
class MachineTask:
    def __init__(self) -> None:
        self.history: list[tuple[str, str]] = []


_MACHINE_TRANSITIONS = [
    {"trigger": trigger, "source": state.value, "dest": cell.value if cell is not state else None}
    for (state, trigger), cell in CELLS.items()
    if isinstance(cell, TaskState)
]


def machine_task() -> MachineTask:
    task = MachineTask()
    Machine(
        model=task,
        states=[s.value for s in STATES],
        transitions=_MACHINE_TRANSITIONS,
        initial="pending",
        auto_transitions=False,
    )
    return task


# -- measuring -----------------------------------------------------------------------------------
def bytes_per_object(make: Callable[[], Any], count: int) -> tuple[float, float]:
    """(bytes, microseconds) per object, for ``count`` objects kept alive together."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    keep = [make() for _ in range(count)]
    elapsed = time.perf_counter() - started
    used = tracemalloc.get_traced_memory()[0] - base - (len(keep) * 8 + 56)  # minus the list itself
    tracemalloc.stop()
    del keep
    return used / count, elapsed / count * 1e6


def best_ns(run: Callable[[], int], repeat: int = 5) -> float:
    """The fastest of ``repeat`` runs, in ns per operation (``run`` returns its operation count)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter_ns()
        ops = run()
        best = min(best, (time.perf_counter_ns() - started) / ops)
    return best


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}"


def _ratio(ours: float, reference: float | None) -> str:
    return "—" if reference is None else f"{ours / reference:.2f}x"


def streamlife_running(clock: ManualClock) -> StreamTask:
    task = StreamTask("audio", clock=clock)
    task.start()
    task.start_ok("t")
    return task


HOUR_OF_SEGMENTS = 720  # 5-second segments, each a partial then a final


def streamlife_after_an_hour(clock: ManualClock) -> StreamTask:
    """A running task an hour in: its history and transcript hold every segment."""
    task = streamlife_running(clock)
    for index in range(HOUR_OF_SEGMENTS):
        task.segment(Segment("t", index, final=False, text="partial words"))
        task.segment(Segment("t", index, final=True, text="the final words of this segment"))
    return task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000, help="tasks created for the memory figure")
    parser.add_argument("--ops", type=int, default=50_000, help="transitions timed per run")
    args = parser.parse_args()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        cache_logger_on_first_use=True,
    )
    clock = ManualClock()
    n: int = args.tasks
    ops: int = args.ops
    machine_sample = min(n, 2_000)  # about 48 KiB each: 100k of them would need gigabytes

    sl_new_bytes, sl_new_us = bytes_per_object(lambda: StreamTask("audio", clock=clock), n)
    sl_run_bytes, _ = bytes_per_object(lambda: streamlife_running(clock), n)
    hour_sample = max(1, min(n // 500, 200))
    sl_hour_bytes, _ = bytes_per_object(lambda: streamlife_after_an_hour(clock), hour_sample)
    dict_bytes, dict_us = bytes_per_object(DictTask, n)
    mach_bytes, mach_us = bytes_per_object(machine_task, machine_sample)

    segment = Segment("t", 0, final=True, text="x")
    sl_task = streamlife_running(clock)
    fire_segment = sl_task.segment

    def sl_hot() -> int:
        del sl_task.history[:]
        for _ in range(ops):
            fire_segment(segment)  # a repeat: the self-loop path, no transcript growth
        return ops

    dict_task = DictTask()
    dict_task.state = "running"

    def dict_hot() -> int:
        del dict_task.history[:]
        fire = dict_task.fire
        for _ in range(ops):
            fire("segment", 0.0)
        return ops

    mach_task = machine_task()
    mach_task.start()  # type: ignore[attr-defined]
    mach_task.start_ok()  # type: ignore[attr-defined]

    def mach_hot() -> int:
        trigger = mach_task.segment  # type: ignore[attr-defined]
        for _ in range(ops):
            trigger()
        return ops

    lifecycles = max(ops // len(LIFECYCLE), 1)

    def sl_full() -> int:
        for _ in range(lifecycles):
            task = StreamTask("audio", clock=clock)
            for trigger in LIFECYCLE:
                if trigger == "start_ok":
                    task.start_ok("t")
                elif trigger == "segment":
                    task.segment(segment)
                elif trigger == "stopped":
                    task.stopped(STOPPED)
                else:
                    getattr(task, trigger)()
        return lifecycles * len(LIFECYCLE)

    def dict_full() -> int:
        for _ in range(lifecycles):
            task = DictTask()
            for trigger in LIFECYCLE:
                task.fire(trigger, 0.0)
        return lifecycles * len(LIFECYCLE)

    def mach_full() -> int:
        count = max(lifecycles // 20, 1)  # a Machine per task is slow to build; fewer of them
        for _ in range(count):
            task = machine_task()
            for trigger in LIFECYCLE:
                getattr(task, trigger)()
        return count * len(LIFECYCLE)

    rows = [
        ("bytes per task, pending", sl_new_bytes, dict_bytes, mach_bytes),
        ("bytes per task, running (2 history entries)", sl_run_bytes, None, None),
        ("bytes per task, an hour in (1,440 segment events)", sl_hour_bytes, None, None),
        ("µs to create one task", sl_new_us, dict_us, mach_us),
        (
            "ns per transition, segment self-loop",
            best_ns(sl_hot),
            best_ns(dict_hot),
            best_ns(mach_hot),
        ),
        (
            "ns per transition, full lifecycle incl. create",
            best_ns(sl_full, 3),
            best_ns(dict_full, 3),
            best_ns(mach_full, 3),
        ),
    ]
    print(
        f"streamlife lifecycle benchmark: {n:,} tasks for memory "
        f"({machine_sample:,} for one-Machine-per-task), {ops:,} transitions per timing, best of several runs"
    )
    columns = ("streamlife", 12), ("dict FSM", 12), ("Machine/task", 14), ("vs dict", 10), ("vs M/task", 11)
    header = f"{'measure':<52}" + "".join(f"{title:>{width}}" for title, width in columns)
    print(header)
    print("-" * len(header))
    for name, ours, dict_ref, mach_ref in rows:
        print(
            f"{name:<52}{_cell(ours):>12}{_cell(dict_ref):>12}{_cell(mach_ref):>14}"
            f"{_ratio(ours, dict_ref):>10}{_ratio(ours, mach_ref):>11}"
        )
    print(
        f"\nan hour of segments adds {(sl_hour_bytes - sl_run_bytes) / 1024:,.0f} KiB per task "
        f"(history entries and the transcript, every event kept in memory; measured on {hour_sample} tasks)"
    )
    verdict = "holds" if sl_run_bytes <= GOAL_BYTES_PER_TASK else "MISSED"
    print(
        f"\ngoal: <= {GOAL_BYTES_PER_TASK} B of lifecycle overhead per live task at {n:,} tasks: "
        f"{sl_run_bytes:,.0f} B per running task -> {verdict}"
    )


if __name__ == "__main__":
    main()
