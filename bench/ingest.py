"""Ingest in-process: callbacks per second through ``Fleet.handle_callback(bytes)``.

Raw bytes are parsed, deduplicated, fired at their task and journaled, with 1k, 10k and 100k
live tasks, on the memory store (the Fleet's default) and on the SQLite store (a temporary file).
The bodies are pre-serialised final-transcript callbacks (as ``tests/payloads.py`` writes them),
spread over every live task round-robin, one in ten a repeat of a recent one (dedupe at work).
Live tasks are started through the simulator, with no network; how long that takes is reported.

References at the same sizes, on the very same bodies: ``json.loads`` + a dict lookup + a dict FSM
fire + a list append (the floor for parse, transition, record in Python), and the same with one
bare sqlite3 transaction per callback (the floor for one durable write per callback).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamlife import Fleet, ManualClock, Policy
from streamlife.store import MemoryStore, SqliteStore, Store

from .common import (
    CallbackStream,
    Figure,
    Goal,
    InstantTransport,
    Section,
    Table,
    Timing,
    duplicates_in,
    gc_settled,
    gc_young,
    live_fleet,
    say,
    traced,
)
from .lifecycle import FLAT_TOLERANCE
from .references import DictIngest, SqliteFloor

GOAL_MEMORY_RATE = 50_000
GOAL_SQLITE_RATE = 10_000
SEGMENT_SECONDS = 5.0
STREAMS = 100_000  # the goal: one process keeps up with this many live streams
REFS = [("floor", "Python floor")]
STORES = ("memory", "sqlite")
NAMES = {"memory": "memory store", "sqlite": "SQLite store"}


@dataclass(frozen=True)
class IngestConfig:
    sizes: dict[str, tuple[int, ...]]  # live tasks, by store
    rounds: dict[str, int]  # callbacks per timed round, by store
    warmup: dict[str, int]  # callbacks sent before timing, by store
    repeat: int
    stock_sizes: tuple[int, ...]  # live tasks made through the stock simulator, to show its cost
    make_budget: float  # seconds allowed for making one fleet's live tasks
    retained_sample: int  # callbacks traced for the bytes each one leaves behind
    fleet_bytes_sample: int  # tasks traced for the bytes a live task costs in a Fleet


FULL = IngestConfig(
    sizes={"memory": (1_000, 10_000, 100_000), "sqlite": (1_000, 10_000, 100_000)},
    rounds={"memory": 12_000, "sqlite": 1_500},
    warmup={"memory": 5_000, "sqlite": 1_000},
    repeat=8,
    stock_sizes=(1_000, 5_000),
    make_budget=90.0,
    retained_sample=3_000,
    fleet_bytes_sample=5_000,
)
QUICK = IngestConfig(
    sizes={"memory": (1_000, 10_000), "sqlite": (1_000, 5_000)},
    rounds={"memory": 4_000, "sqlite": 800},
    warmup={"memory": 2_000, "sqlite": 500},
    repeat=4,
    stock_sizes=(1_000, 3_000),
    make_budget=30.0,
    retained_sample=1_000,
    fleet_bytes_sample=1_000,
)


@dataclass
class Results:
    """What ``run`` gathers across stores and sizes."""

    per_callback: dict[str, dict[int, float]] = field(default_factory=lambda: {kind: {} for kind in STORES})
    floor_per_callback: dict[str, dict[int, float]] = field(
        default_factory=lambda: {kind: {} for kind in STORES}
    )
    retained: dict[str, float] = field(default_factory=dict)  # bytes per applied callback, by store
    making: list[list[str]] = field(default_factory=list)  # rows of the "making live tasks" table
    outcomes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Bodies:
    """Every body one size is sent, made once: the Fleet and its floor get the same bytes."""

    warmup: list[bytes]
    rounds: list[list[bytes]]
    retained: list[bytes]  # new segments only, for the bytes-kept figure

    @classmethod
    def make(cls, task_ids: Sequence[str], config: IngestConfig, kind: str) -> Bodies:
        stream = CallbackStream(task_ids)
        warmup = stream.take(config.warmup[kind])
        rounds = [stream.take(config.rounds[kind]) for _ in range(config.repeat)]
        return cls(warmup, rounds, stream.fresh(config.retained_sample))


def _open(kind: str, directory: str, size: int) -> Store:
    if kind == "memory":
        return MemoryStore()
    return SqliteStore(os.path.join(directory, f"journal-{size}.db"))


def _rounds(handlers: dict[str, Callable[[bytes], Any]], bodies: Bodies) -> dict[str, Timing]:
    """Send each handler the warm-up, then time the rounds (new segments each: the stream goes
    on), the handlers taking turns round by round so that both meet the same machine."""
    for handle in handlers.values():
        for body in bodies.warmup:
            handle(body)
    per_callback: dict[str, list[float]] = {name: [] for name in handlers}
    for bodies_of_round in bodies.rounds:
        for name, handle in handlers.items():
            gc_young()
            started = time.perf_counter()
            for body in bodies_of_round:
                handle(body)
            per_callback[name].append((time.perf_counter() - started) / len(bodies_of_round))
    return {name: Timing(min(times), statistics.median(times)) for name, times in per_callback.items()}


def _retained_bytes(handle: Callable[[bytes], Any], bodies: Sequence[bytes]) -> float:
    """Bytes still held after new callbacks, per callback (history, transcript, journal)."""
    with traced() as held:
        for body in bodies:
            handle(body)
        gc_settled()
        return held() / len(bodies)


def _expected(config: IngestConfig, kind: str) -> dict[str, int]:
    sent = [config.warmup[kind]] + [config.rounds[kind]] * config.repeat
    duplicates = sum(duplicates_in(count) for count in sent)
    return {"applied": sum(sent) - duplicates, "duplicate": duplicates}


def _fleet_bytes_per_task(count: int) -> float:
    """Bytes per live task a Fleet and its memory store hold, for ``count`` tasks started into an
    empty Fleet, everything traced (so the indexes' growth is averaged in). The transport keeps
    nothing (``InstantTransport``), so all that is held is the Fleet's."""
    clock = ManualClock()
    with traced() as held:
        fleet = Fleet(InstantTransport(), clock=clock, policy=Policy(stop_concurrency=0), store=MemoryStore())
        for n in range(count):
            fleet.start("audio", audio_url=f"rtmp://bench.invalid/live/{n}")
        gc_settled()
        kept = held()
    fleet.close()
    del fleet
    gc_settled()
    return kept / count


def run(config: IngestConfig) -> Section:
    section = Section(
        "ingest",
        "Ingest in-process: Fleet.handle_callback(bytes)",
        "Raw callback bodies through parse, dedupe, transition and journal, on one thread. Per store "
        f"and size: {config.warmup['memory']:,} (memory) / {config.warmup['sqlite']:,} (SQLite) "
        f"callbacks of warm-up, then the best of {config.repeat} rounds of {config.rounds['memory']:,} "
        f"/ {config.rounds['sqlite']:,}; bodies round-robin over every live task, one in ten a repeat. "
        "structlog filters at WARNING. The floor gets the same bodies, the two taking turns round by round.",
        REFS,
    )
    results = Results()
    with tempfile.TemporaryDirectory(prefix="streamlife-bench-") as directory:
        for kind in STORES:
            for size in config.sizes[kind]:
                _one_size(config, section, results, kind, size, directory)
    _stock_simulator(config, results)
    say(f"ingest: bytes per live task in a Fleet of {config.fleet_bytes_sample:,}")
    section.add(
        Figure(
            f"ingest.memory.{config.fleet_bytes_sample}.fleet_bytes_per_live_task",
            f"memory, {config.fleet_bytes_sample:,} tasks: bytes per live task in the Fleet",
            "B",
            _fleet_bytes_per_task(config.fleet_bytes_sample),
            note="a running task with no segments yet: the task, its Fleet record, the indexes, "
            "its store row and 2 journal entries (through a transport that keeps nothing)",
        )
    )
    section.extra["outcomes"] = results.outcomes
    section.tables.append(
        Table(
            "Making live tasks (Fleet.start through the simulator, no network)",
            ["store, simulator", "live tasks", "seconds", "µs per task"],
            results.making,
        )
    )
    _projection(section, results)
    _goals(section, results)
    return section


def _one_size(
    config: IngestConfig, section: Section, results: Results, kind: str, size: int, directory: str
) -> None:
    name = NAMES[kind]
    say(f"ingest: making {size:,} live tasks on the {name}")
    live = live_fleet(size, _open(kind, directory, size), budget=config.make_budget)
    made = len(live.task_ids)
    results.making.append(
        [f"{name}, O(1) live_count", f"{made:,}", f"{live.seconds:,.2f}", f"{live.seconds / made * 1e6:,.0f}"]
    )
    if made < size:
        section.notes.append(
            f"{name}: making {size:,} live tasks would take about {live.seconds * size / made:,.0f} s, "
            f"over the {config.make_budget:.0f} s budget; measured with {made:,}."
        )
    bodies = Bodies.make(live.task_ids, config, kind)
    smallest = size == min(config.sizes[kind])
    floor: DictIngest | None = None
    try:
        floor = DictIngest(live.task_ids) if kind == "memory" else SqliteFloor(live.task_ids, directory)
        say(f"ingest: {name}, {made:,} live tasks, callbacks (and the floor, in turns)")
        before = live.fleet.stats().callbacks
        timings = _rounds({"fleet": live.fleet.handle_callback, "floor": floor.handle}, bodies)
        after = live.fleet.stats().callbacks
        got = {outcome: after[outcome] - before[outcome] for outcome in after}
        got = {outcome: count for outcome, count in got.items() if count}
        expected = _expected(config, kind)
        results.outcomes[f"{kind}.{made}"] = {"got": got, "expected": expected}
        if got != expected:
            section.notes.append(f"WARNING: {name} at {made:,}: outcomes {got}, expected {expected}")
        retained = floor_retained = None
        if smallest:
            retained = _retained_bytes(live.fleet.handle_callback, bodies.retained)
            floor_retained = _retained_bytes(floor.handle, bodies.retained)
    finally:
        say("ingest: tearing down")
        live.close()
        if isinstance(floor, SqliteFloor):
            floor.close()
        del live, floor, bodies
        gc_settled()

    timing, floor_timing = timings["fleet"], timings["floor"]
    results.per_callback[kind][made] = timing.best
    results.floor_per_callback[kind][made] = floor_timing.best
    section.add(
        Figure(
            f"ingest.{kind}.{made}.callbacks_per_second",
            f"{kind}, {made:,} tasks: callbacks/s",
            "/s",
            1 / timing.best,
            {"floor": 1 / floor_timing.best},
            better="higher",
        )
    )
    section.add(
        Figure(
            f"ingest.{kind}.{made}.us_per_callback",
            f"{kind}, {made:,} tasks: µs per callback (median {timing.median * 1e6:.1f})",
            "µs",
            timing.best * 1e6,
            {"floor": floor_timing.best * 1e6},
        )
    )
    if retained is not None:
        results.retained[kind] = retained
        section.add(
            Figure(
                f"ingest.{kind}.{made}.bytes_retained_per_callback",
                f"{kind}, {made:,} tasks: bytes kept per applied callback",
                "B",
                retained,
                {"floor": floor_retained},
                note="what each new segment leaves in this process: its history entry, its transcript "
                "segment (which keeps the parsed payload), and with the memory store its journal entry",
            )
        )


def _stock_simulator(config: IngestConfig, results: Results) -> None:
    """Live tasks made through the stock SimulatedService: its live_count is O(n) per start."""
    for size in config.stock_sizes:
        say(f"ingest: making {size:,} live tasks through the stock simulator")
        live = live_fleet(size, stock_simulator=True, budget=config.make_budget)
        made = len(live.task_ids)
        results.making.append(
            [
                "memory store, stock simulator",
                f"{made:,}",
                f"{live.seconds:,.2f}",
                f"{live.seconds / made * 1e6:,.0f}",
            ]
        )
        live.close()
        del live
        gc_settled()


def _projection(section: Section, results: Results) -> None:
    rate = STREAMS / SEGMENT_SECONDS
    for kind, kept in results.retained.items():
        per_hour = kept * rate * 3600 / 2**30
        section.notes.append(
            f"{NAMES[kind]}: {kept:,.0f} B kept per applied callback; at {STREAMS:,} streams "
            f"({rate:,.0f} callbacks/s) this process grows by about {per_hour:,.0f} GiB an hour, and "
            f"nothing is ever let go while a task lives (history, transcript"
            + (", journal)." if kind == "memory" else ").")
        )
    section.notes.append(
        "The bench's simulator (bench.common.BenchService) keeps live_count O(1): the stock "
        "SimulatedService.live_count counts every stream on each start, so making n live tasks through "
        "it is O(n^2) (see the table)."
    )


def _goals(section: Section, results: Results) -> None:
    for kind, goal_rate in (("memory", GOAL_MEMORY_RATE), ("sqlite", GOAL_SQLITE_RATE)):
        measured = results.per_callback[kind]
        target = f"≥ {goal_rate:,} callbacks/s on one core in-process, {NAMES[kind]}"
        if not measured:
            section.goals.append(Goal(f"ingest.{kind}.rate", target, "not measured", None))
            continue
        largest = max(measured)
        rate = 1 / measured[largest]
        section.goals.append(
            Goal(
                f"ingest.{kind}.rate",
                target,
                f"{rate:,.0f}/s with {largest:,} live tasks "
                f"(enough for {rate * SEGMENT_SECONDS:,.0f} streams at one callback per 5 s)",
                rate >= goal_rate,
            )
        )
    for kind in STORES:
        measured, floors = results.per_callback[kind], results.floor_per_callback[kind]
        if len(measured) < 2:
            continue
        low, high = min(measured), max(measured)
        raw = measured[high] / measured[low]
        relative = (measured[high] / floors[high]) / (measured[low] / floors[low])
        section.goals.append(
            Goal(
                f"ingest.{kind}.flat",
                f"cost per callback flat from {low:,} to {high:,} live tasks, {NAMES[kind]} "
                f"(within {FLAT_TOLERANCE}x, as a multiple of the floor measured in turn with it)",
                f"{measured[low] / floors[low]:.2f}x the floor at {low:,}, "
                f"{measured[high] / floors[high]:.2f}x at {high:,}: {relative:.2f}x "
                f"(in µs: {measured[low] * 1e6:.1f} at {low:,}, {measured[high] * 1e6:.1f} at {high:,}: "
                f"{raw:.2f}x; the floor's own: {floors[high] / floors[low]:.2f}x)",
                relative <= FLAT_TOLERANCE,
            )
        )
