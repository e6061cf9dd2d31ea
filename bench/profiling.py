"""The profile that explains what is left: where a callback's time goes, memory store, in-process.

Two views of ``Fleet.handle_callback(bytes)`` on new final segments (no duplicates), with live
tasks on the memory store:

* a manual breakdown, each stage timed alone on fresh callbacks (best of a few rounds): JSON
  decoding, ``parse_callback`` (decoding included), ``Fleet.deliver`` of a parsed event, and
  within it ``StreamTask.segment`` alone; the whole, with the garbage collector on and off;
* ``cProfile`` of the whole: the functions with the most time of their own. cProfile slows every
  Python call alike, so read its shares, not its absolute times.
"""

from __future__ import annotations

import cProfile
import gc
import os
import pstats
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from streamlife import parse_callback
from streamlife._callbacks import CallbackEvent
from streamlife._events import Segment

from .common import CallbackStream, Section, Table, gc_settled, gc_young, live_fleet, say


@dataclass(frozen=True)
class ProfileConfig:
    tasks: int
    callbacks: int  # per timed round, and profiled
    repeat: int
    top: int  # functions listed


FULL = ProfileConfig(tasks=10_000, callbacks=5_000, repeat=5, top=14)
QUICK = ProfileConfig(tasks=2_000, callbacks=3_000, repeat=3, top=12)


def _best_us(
    stages: dict[str, tuple[Callable[[], Sequence[Any]], Callable[[Any], object], bool]], repeat: int
) -> dict[str, float]:
    """Best µs per item of each stage ``(make items, apply to one, gc on)``, on fresh items made
    outside the timing; the stages take turns round by round, so they meet the same machine."""
    best = dict.fromkeys(stages, float("inf"))
    for _ in range(repeat):
        for name, (make, apply, collect) in stages.items():
            items = make()
            gc_young()
            if not collect:
                gc.disable()
            try:
                started = time.perf_counter()
                for item in items:
                    apply(item)
                elapsed = time.perf_counter() - started
            finally:
                gc.enable()
            best[name] = min(best[name], elapsed / len(items) * 1e6)
    return best


def _where(key: tuple[str, int, str]) -> str:
    filename, line, function = key
    if filename == "~":
        return function  # a built-in
    parts = filename.replace(os.sep, "/").split("/")
    for anchor in ("streamlife", "site-packages", "lib"):
        if anchor in parts[:-1]:
            parts = parts[len(parts) - 1 - parts[::-1].index(anchor) :]
            break
    return f"{'/'.join(parts[-2:])}:{line} {function}"


def run(config: ProfileConfig) -> Section:
    section = Section(
        "profile",
        "Profile: where a callback's time goes (memory store)",
        f"{config.tasks:,} live tasks; rounds of {config.callbacks:,} new final segments, "
        f"best of {config.repeat}.",
        [],
    )
    say(f"profile: making {config.tasks:,} live tasks")
    live = live_fleet(config.tasks)
    fleet = live.fleet
    stream = CallbackStream(live.task_ids)
    count, repeat = config.callbacks, config.repeat

    def bodies() -> list[bytes]:
        return stream.fresh(count)

    def events() -> list[CallbackEvent]:
        return [parse_callback(body) for body in stream.fresh(count)]

    try:
        say("profile: breakdown")
        handle = fleet.handle_callback
        best = _best_us(
            {
                "whole": (bodies, handle, True),
                "whole_no_gc": (bodies, handle, False),
                "decode": (bodies, orjson.loads, False),
                "parse": (bodies, parse_callback, False),
                "deliver": (events, fleet.deliver, False),
            },
            repeat,
        )
        whole, whole_no_gc, decode, parse, deliver = (
            best[name] for name in ("whole", "whole_no_gc", "decode", "parse", "deliver")
        )

        profiled = bodies()
        profiler = cProfile.Profile()
        say("profile: cProfile")
        gc_settled()
        profiler.enable()
        for body in profiled:
            handle(body)
        profiler.disable()

        # Last, as it moves tasks behind the Fleet's back (their journal misses these segments).
        def task_segments() -> list[tuple[Callable[[Segment], object], Segment]]:
            pairs: list[tuple[Callable[[Segment], object], Segment]] = []
            for event in events():
                assert isinstance(event, Segment)
                task = fleet.get(event.task_id)
                assert task is not None
                pairs.append((task.segment, event))
            return pairs

        segment = _best_us({"segment": (task_segments, lambda pair: pair[0](pair[1]), False)}, repeat)[
            "segment"
        ]
    finally:
        live.close()
        gc_settled()

    stages = [
        ("Fleet.handle_callback(bytes): the whole, = 1 + 2 + 3 + 4", whole),
        ("1. parse_callback (bytes to a Segment), alone", parse),
        ("1a. of which JSON decoding (orjson.loads)", decode),
        ("2. Fleet.deliver (a parsed Segment), alone", deliver),
        ("2a. of which StreamTask.segment (table, transcript, history)", segment),
        ("2b. of which the rest (locks, journal entry and row, store, timers, counters)", deliver - segment),
        (
            "3. running 1 and 2 in turn rather than alone (caches, branch prediction)",
            whole_no_gc - parse - deliver,
        ),
        ("4. garbage collection (the whole with gc on, minus with gc off)", whole - whole_no_gc),
    ]
    section.tables.append(
        Table(
            "Breakdown, µs per callback (stages alone timed with gc off)",
            ["stage", "µs", "share"],
            [[name, f"{us:,.2f}", f"{us / whole:.0%}"] for name, us in stages],
        )
    )
    section.extra["breakdown_us"] = dict(stages)
    stats = pstats.Stats(profiler)
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    total = sum(tottime for _, _, tottime, _, _ in raw.values())
    ranked = sorted(raw.items(), key=lambda item: item[1][2], reverse=True)[: config.top]
    top: list[dict[str, Any]] = [
        {
            "function": _where(key),
            "calls_per_callback": calls / len(profiled),
            "tottime_share": tottime / total,
            "cumtime_share": cumtime / total,
        }
        for key, (_, calls, tottime, cumtime, _) in ranked
    ]
    section.tables.append(
        Table(
            f"cProfile: top {config.top} functions by own time (tottime), {len(profiled):,} callbacks",
            ["function", "calls per callback", "own time", "with callees"],
            [
                [
                    row["function"],
                    f"{row['calls_per_callback']:.1f}",
                    f"{row['tottime_share']:.1%}",
                    f"{row['cumtime_share']:.1%}",
                ]
                for row in top
            ],
        )
    )
    section.extra["cprofile_top"] = top
    section.extra["cprofile_total_seconds"] = total
    return section
