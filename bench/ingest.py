"""Ingest in-process: callbacks per second through ``Fleet.handle_callback(bytes)``, one by one,
and through ``Fleet.handle_callbacks`` in batches of ``BATCH`` (one store commit per batch).

Raw bytes are parsed, deduplicated, fired at their task and journaled, with 1k, 10k and 100k
live tasks, on the memory store (the Fleet's default) and on the SQLite store (a temporary file).
The bodies are pre-serialised final-transcript callbacks (as ``streamlife.protocol`` writes them),
spread over every live task round-robin, one in ten a repeat of a recent one (dedupe at work).
Each round sends one set of bodies one by one and the next set (the stream going on) in batches,
the two ways taking turns on the same Fleet. Live tasks are started through the simulator, with
no network; how long that takes is reported.

References at the same sizes, on the very same bodies: ``orjson.loads`` + a dict lookup + a dict FSM
fire + a list append (the floor for parse, transition, record in Python), and the same with one
bare sqlite3 transaction per callback (the floor for one durable write per callback) or, for the
batches, one bare sqlite3 transaction per batch. The SQLite floor's journal starts as the store's
does, with each live task's start entries: its index is as large, and costs as much to insert into.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamlife import Fleet, ManualClock, Policy
from streamlife.protocol import SEGMENT_SECONDS
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
    timing_of,
    traced,
)
from .lifecycle import FLAT_TOLERANCE
from .machine import Speed
from .machine import measure as measure_speed
from .references import DictIngest, SqliteFloor

BATCH = 50  # callbacks per Fleet.handle_callbacks call: a queue consumer's batch
GOAL_MEMORY_RATE = 50_000
GOAL_SQLITE_RATE = 10_000
FLOOR_ABOUT = 1.5  # a floor under this many times the goal is "about" the goal: no room left above it
STREAMS = 100_000  # the goal: one process keeps up with this many live streams
REFS = [("floor", "Python floor")]
STORES = ("memory", "sqlite")
NAMES = {"memory": "memory store", "sqlite": "SQLite store"}


@dataclass(frozen=True)
class IngestConfig:
    sizes: dict[str, tuple[int, ...]]  # live tasks, by store
    rounds: dict[str, int]  # callbacks per timed round, by store and way (one by one, batched)
    warmup: dict[str, int]  # callbacks sent before timing, by store and way
    repeat: int
    make_budget: float  # seconds allowed for making one fleet's live tasks
    retained_sample: int  # callbacks traced for the bytes each one leaves behind
    fleet_bytes_sample: int  # tasks traced for the bytes a live task costs in a Fleet


FULL = IngestConfig(
    sizes={"memory": (1_000, 10_000, 100_000), "sqlite": (1_000, 10_000, 100_000)},
    rounds={"memory": 10_000, "sqlite": 3_000},  # SQLite: about two checkpoints a way
    warmup={"memory": 5_000, "sqlite": 1_000},
    repeat=6,
    make_budget=90.0,
    retained_sample=3_000,
    fleet_bytes_sample=5_000,
)
QUICK = IngestConfig(
    sizes={"memory": (1_000, 10_000), "sqlite": (1_000, 5_000)},
    rounds={"memory": 4_000, "sqlite": 800},
    warmup={"memory": 2_000, "sqlite": 500},
    repeat=4,
    make_budget=30.0,
    retained_sample=1_000,
    fleet_bytes_sample=1_000,
)


def _by_store() -> dict[str, dict[int, float]]:
    return {kind: {} for kind in STORES}


@dataclass
class Results:
    """What ``run`` gathers across stores and sizes."""

    # seconds per callback, by store and live tasks: handle_callback, handle_callbacks in batches
    # of BATCH, and the floor of each
    per_callback: dict[str, dict[int, float]] = field(default_factory=lambda: _by_store())
    floor_per_callback: dict[str, dict[int, float]] = field(default_factory=lambda: _by_store())
    # the same, the median round: what the flatness goal is judged by (see _goals)
    median_per_callback: dict[str, dict[int, float]] = field(default_factory=lambda: _by_store())
    floor_median_per_callback: dict[str, dict[int, float]] = field(default_factory=lambda: _by_store())
    batched: dict[str, dict[int, float]] = field(default_factory=lambda: _by_store())
    floor_batched: dict[str, dict[int, float]] = field(default_factory=lambda: _by_store())
    retained: dict[str, float] = field(default_factory=dict)  # bytes per applied callback, by store
    making: list[list[str]] = field(default_factory=list)  # rows of the "making live tasks" table
    outcomes: dict[str, Any] = field(default_factory=dict)
    speed: Speed | None = None  # this machine against the budget (bench/machine.py)


@dataclass
class Feed:
    """The bodies one way of sending them gets: each unit is one body (one by one) or a list of
    ``BATCH`` bodies (batched)."""

    warmup: list[Any]
    rounds: list[list[Any]]
    callbacks: list[int]  # bodies in each round


@dataclass
class Bodies:
    """Every body one size is sent, made once: the Fleet and its floor get the same bytes."""

    one_by_one: Feed
    batched: Feed
    retained: list[bytes]  # new segments only, for the bytes-kept figure

    @classmethod
    def make(cls, task_ids: Sequence[str], config: IngestConfig, kind: str) -> Bodies:
        # Made in the order they are sent (each task's segments in order): the warm-ups, then
        # round by round, one by one and then batched.
        stream = CallbackStream(task_ids)
        warmup, warmup_batched = stream.take(config.warmup[kind]), stream.take(config.warmup[kind])
        rounds, rounds_batched = [], []
        for _ in range(config.repeat):
            rounds.append(stream.take(config.rounds[kind]))
            rounds_batched.append(stream.take(config.rounds[kind]))
        return cls(
            Feed(warmup, rounds, [len(bodies) for bodies in rounds]),
            Feed(
                _batches(warmup_batched),
                [_batches(bodies) for bodies in rounds_batched],
                [len(bodies) for bodies in rounds_batched],
            ),
            stream.fresh(config.retained_sample),
        )


def _batches(bodies: list[bytes]) -> list[list[bytes]]:
    return [bodies[start : start + BATCH] for start in range(0, len(bodies), BATCH)]


def _open(kind: str, directory: str, size: int) -> Store:
    if kind == "memory":
        return MemoryStore()
    return SqliteStore(os.path.join(directory, f"journal-{size}.db"))


def _rounds(feeds: Sequence[tuple[Feed, dict[str, Callable[[Any], Any]]]], repeat: int) -> dict[str, Timing]:
    """Send each handler its feed's warm-up, then time the rounds (new segments each: the stream
    goes on), the handlers taking turns round by round so that all meet the same machine. The
    handlers of a feed all get its units, in the same order."""
    for feed, handlers in feeds:
        for handle in handlers.values():
            for unit in feed.warmup:
                handle(unit)
    per_callback: dict[str, list[float]] = {name: [] for _, handlers in feeds for name in handlers}
    for round_ in range(repeat):
        for feed, handlers in feeds:
            units, callbacks = feed.rounds[round_], feed.callbacks[round_]
            for name, handle in handlers.items():
                gc_young()
                started = time.perf_counter()
                for unit in units:
                    handle(unit)
                per_callback[name].append((time.perf_counter() - started) / callbacks)
    return {name: timing_of(times) for name, times in per_callback.items()}


def _retained_bytes(handle: Callable[[bytes], Any], bodies: Sequence[bytes]) -> float:
    """Bytes still held after new callbacks, per callback (history, transcript, journal)."""
    with traced() as held:
        for body in bodies:
            handle(body)
        gc_settled()
        return held() / len(bodies)


def _expected(config: IngestConfig, kind: str) -> dict[str, int]:
    sent = ([config.warmup[kind]] + [config.rounds[kind]] * config.repeat) * 2  # both ways
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
            fleet.start("audio", audio_url=f"rtmp://bench.invalid/live/{n}", provider="assemblyai")
        gc_settled()
        kept = held()
    fleet.close()
    del fleet
    gc_settled()
    return kept / count


def run(config: IngestConfig) -> Section:
    section = Section(
        "ingest",
        "Ingest in-process: Fleet.handle_callback(bytes) and Fleet.handle_callbacks",
        "Raw callback bodies through parse, dedupe, transition and journal, on one thread. Per store "
        f"and size, each way (one by one through handle_callback; in batches of {BATCH} through "
        f"handle_callbacks, one store commit per batch): {config.warmup['memory']:,} (memory) / "
        f"{config.warmup['sqlite']:,} (SQLite) callbacks of warm-up, then {config.repeat} rounds of "
        f"{config.rounds['memory']:,} / {config.rounds['sqlite']:,}; bodies round-robin over every live "
        "task, one in ten a repeat. structlog filters at WARNING. The floor gets the same bodies the "
        f"same way (batched: {BATCH} callbacks per bare sqlite3 transaction, with the store's "
        "pragmas, and a journal holding each task's start entries, as the store's does), all taking "
        "turns round by round. Figures are the mean over every round (the best "
        "round and the median beside it): work that comes in bursts, SQLite's checkpoints (one per "
        "few thousand callbacks) and the collector's full passes, lands in some rounds and not "
        "others, and a sustained rate pays for all of it. (The collector is settled once the tasks "
        "are made, so the rounds pay for the passes the callbacks bring on, not for making the tasks.) "
        "Flatness is judged by the median round: it asks what every round shows, not what a few pay.",
        REFS,
    )
    results = Results()
    say("ingest: this machine against the performance budget")
    results.speed = speed = measure_speed()
    section.extra["machine_us"] = speed.measured_us
    section.extra["machine_scale"] = speed.scale
    with tempfile.TemporaryDirectory(prefix="streamlife-bench-") as directory:
        for kind in STORES:
            for size in config.sizes[kind]:
                _one_size(config, section, results, kind, size, directory)
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
            ["store", "live tasks", "seconds", "µs per task"],
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
    results.making.append([name, f"{made:,}", f"{live.seconds:,.2f}", f"{live.seconds / made * 1e6:,.0f}"])
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
        say(f"ingest: {name}, {made:,} live tasks, callbacks one by one and batched (and the floors)")
        # Making the tasks and the bodies leaves the collector in debt: it runs a full pass once the
        # objects that survived since the last reach a quarter of all it tracks, and 100,000 new tasks
        # are more than that. Paid here, so a full pass that lands in the rounds is one the
        # callbacks brought on themselves, not the cost of making the tasks.
        gc_settled()
        before = live.fleet.stats()
        timings = _rounds(
            [
                (bodies.one_by_one, {"fleet": live.fleet.handle_callback, "floor": floor.handle}),
                (
                    bodies.batched,
                    {"fleet_batched": live.fleet.handle_callbacks, "floor_batched": floor.handle_batch},
                ),
            ],
            config.repeat,
        )
        after = live.fleet.stats()
        got = {outcome: after.callbacks[outcome] - before.callbacks[outcome] for outcome in after.callbacks}
        got["malformed"] = after.malformed - before.malformed
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
    results.per_callback[kind][made] = timing.mean
    results.floor_per_callback[kind][made] = floor_timing.mean
    results.median_per_callback[kind][made] = timing.median
    results.floor_median_per_callback[kind][made] = floor_timing.median
    section.add(
        Figure(
            f"ingest.{kind}.{made}.callbacks_per_second",
            f"{kind}, {made:,} tasks: callbacks/s, handle_callback",
            "/s",
            1 / timing.mean,
            {"floor": 1 / floor_timing.mean},
            better="higher",
        )
    )
    section.add(
        Figure(
            f"ingest.{kind}.{made}.us_per_callback",
            f"{kind}, {made:,} tasks: µs per callback, handle_callback ({_spread(timing)})",
            "µs",
            timing.mean * 1e6,
            {"floor": floor_timing.mean * 1e6},
        )
    )
    batched, floor_batched = timings["fleet_batched"], timings["floor_batched"]
    results.batched[kind][made] = batched.mean
    results.floor_batched[kind][made] = floor_batched.mean
    floor_note = (
        f"the floor: {BATCH} callbacks per bare sqlite3 transaction"
        if kind == "sqlite"
        else "the floor: the same bodies one by one (in memory a batch shares nothing)"
    )
    section.add(
        Figure(
            f"ingest.{kind}.{made}.batched.callbacks_per_second",
            f"{kind}, {made:,} tasks: callbacks/s, handle_callbacks in batches of {BATCH}",
            "/s",
            1 / batched.mean,
            {"floor": 1 / floor_batched.mean},
            better="higher",
            note=floor_note,
        )
    )
    section.add(
        Figure(
            f"ingest.{kind}.{made}.batched.us_per_callback",
            f"{kind}, {made:,} tasks: µs per callback, handle_callbacks in batches of {BATCH} "
            f"({_spread(batched)})",
            "µs",
            batched.mean * 1e6,
            {"floor": floor_batched.mean * 1e6},
            note=floor_note,
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
                "entry (text and times, not the payload), and with the memory store its journal entry",
            )
        )


def _spread(timing: Timing) -> str:
    return f"best round {timing.best * 1e6:.1f}, median {timing.median * 1e6:.1f}"


def _projection(section: Section, results: Results) -> None:
    rate = STREAMS / SEGMENT_SECONDS
    for kind, kept in results.retained.items():
        per_hour = kept * rate * 3600 / 2**30
        section.notes.append(
            f"{NAMES[kind]}: {kept:,.0f} B kept per applied callback (a history entry, a transcript "
            f"entry of text and times"
            + (", and the journal entry with its payload" if kind == "memory" else "")
            + f"); kept for good, that is about {per_hour:,.0f} GiB an hour at {STREAMS:,} streams "
            f"({rate:,.0f} callbacks/s). History is bounded (Policy.history_limit, 100 here): the "
            f"transcript"
            + (" and the memory store's journal grow" if kind == "memory" else " grows")
            + " for as long as a task lives."
        )


def _goals(section: Section, results: Results) -> None:
    section.goals.append(_memory_rate(results))
    section.goals.append(_sqlite_rate(results))
    for kind in STORES:
        # Flatness asks whether the cost grows with the live tasks, which an O(n) step would show in
        # every round: so it is judged by the median round, mine and the floor's. The mean is for
        # sustained rates; here a checkpoint or a stall of this VM that lands in a few rounds of
        # one size, the floor's or mine, swings the ratio either way (seen: a floor whose mean at
        # 1,000 tasks was twice its mean at 100,000).
        measured, floors = results.median_per_callback[kind], results.floor_median_per_callback[kind]
        means, floor_means = results.per_callback[kind], results.floor_per_callback[kind]
        if len(measured) < 2:
            continue
        low, high = min(measured), max(measured)
        raw = measured[high] / measured[low]
        relative = (measured[high] / floors[high]) / (measured[low] / floors[low])
        by_means = (means[high] / floor_means[high]) / (means[low] / floor_means[low])
        section.goals.append(
            Goal(
                f"ingest.{kind}.flat",
                f"cost per callback flat from {low:,} to {high:,} live tasks, {NAMES[kind]} "
                f"(within {FLAT_TOLERANCE}x, as a multiple of the floor measured in turn with it; "
                "median rounds)",
                f"{measured[low] / floors[low]:.2f}x the floor at {low:,}, "
                f"{measured[high] / floors[high]:.2f}x at {high:,}: {relative:.2f}x "
                f"(in µs: {measured[low] * 1e6:.1f} at {low:,}, {measured[high] * 1e6:.1f} at {high:,}: "
                f"{raw:.2f}x; the floor's own: {floors[high] / floors[low]:.2f}x; by the means of the "
                f"rounds: {by_means:.2f}x)",
                relative <= FLAT_TOLERANCE,
            )
        )


def _memory_rate(results: Results) -> Goal:
    """Judged one by one (handle_callback): in memory a batch saves no commit."""
    target = f"≥ {GOAL_MEMORY_RATE:,} callbacks/s on one core in-process, {NAMES['memory']}"
    measured = results.per_callback["memory"]
    if not measured:
        return Goal("ingest.memory.rate", target, "not measured", None)
    largest = max(measured)
    rate = 1 / measured[largest]
    batched = results.batched["memory"].get(largest)
    return Goal(
        "ingest.memory.rate",
        target,
        f"{rate:,.0f}/s one by one (handle_callback) with {largest:,} live tasks "
        f"(enough for {rate * SEGMENT_SECONDS:,.0f} streams at one callback per 5 s)"
        + ("" if batched is None else f"; in batches of {BATCH} (handle_callbacks) {1 / batched:,.0f}/s")
        + _at_budget_speed(results, rate),
        rate >= GOAL_MEMORY_RATE,
    )


def _at_budget_speed(results: Results, rate: float) -> str:
    """The rate scaled to the machine the budget was measured on (see bench/machine.py)."""
    speed = results.speed
    if speed is None:
        return ""
    return (
        f". This machine takes {speed.scale:.2f}x the budget's time for the budget's operations "
        f"({speed.described()}): at the budget's speed, about {rate * speed.scale:,.0f}/s"
    )


def _sqlite_rate(results: Results) -> Goal:
    """Judged on batches of BATCH (handle_callbacks): one commit per callback cannot get there."""
    target = (
        f"≥ {GOAL_SQLITE_RATE:,} callbacks/s on one core in-process, {NAMES['sqlite']} "
        f"(handle_callbacks in batches of {BATCH})"
    )
    measured = results.batched["sqlite"]
    if not measured:
        return Goal("ingest.sqlite.rate", target, "not measured", None)
    largest = max(measured)
    rate = 1 / measured[largest]
    one_by_one = results.per_callback["sqlite"].get(largest)
    floor = results.floor_per_callback["sqlite"].get(largest)
    said = (
        f"{rate:,.0f}/s in batches of {BATCH} (handle_callbacks) with {largest:,} live tasks "
        f"(enough for {rate * SEGMENT_SECONDS:,.0f} streams at one callback per 5 s)"
    )
    if one_by_one is not None:
        said += f"; {1 / one_by_one:,.0f}/s one by one (handle_callback)"
    if floor is not None and 1 / floor < GOAL_SQLITE_RATE * FLOOR_ABOUT:
        said += (
            f". One commit per callback cannot reach {GOAL_SQLITE_RATE:,}/s on this machine: a bare "
            f"sqlite3 transaction per callback (the floor) itself manages about that, {1 / floor:,.0f}/s"
        )
    elif floor is not None:  # a fast disk, or small sizes (--quick): the floor alone does not settle it
        said += (
            f". A bare sqlite3 transaction per callback (the floor) manages {1 / floor:,.0f}/s in this run"
        )
    return Goal("ingest.sqlite.rate", target, said, rate >= GOAL_SQLITE_RATE)
