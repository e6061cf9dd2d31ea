"""Several Fleets on one store: what catching up with each other costs a callback.

Each process that shares a store keeps its own copy of a task. A callback for a task whose copy is
behind (another process applied the task's last events) first replays those events from the
journal, under the row's lock; only then is it applied. So when a task's callbacks are spread over
K processes, most of them find their copy behind, and each event is replayed by up to K - 1 others.

Measured in one process, on one thread, on SQLite files: final-segment callbacks in batches of
``BATCH`` through ``Fleet.handle_callbacks``, each batch to one of K Fleets, each Fleet on its own
``SqliteStore`` of the file (as ``serve --workers K`` has one per worker):

* ``one``: a single Fleet takes every batch (the reference);
* ``spread K``: each batch goes to one of the K Fleets at random (seeded), as a load balancer with no
  notion of tasks sends callbacks to processes;
* ``by task K``: the tasks are split between the K Fleets, and each batch holds one Fleet's tasks
  only, as a load balancer that routed each task's callbacks to one process would: no Fleet ever
  finds its copy behind, but the Fleets still take turns at the file.

Each way has a file of its own with its own ``tasks`` live tasks (made through the simulator; every
Fleet of the way takes them all back before the rounds), so that one way's writes never leave
another's copies behind. The ways take turns, round by round, on fresh segments (no duplicates);
a figure is the median round.
"""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from streamlife import Fleet, ManualClock, Policy
from streamlife.store import SqliteStore

from .common import CallbackStream, Figure, InstantTransport, Section, gc_settled, gc_young, live_fleet, say

BATCH = 8  # callbacks per handle_callbacks call: a served worker's usual batch under load
REFS = [("one", "one Fleet")]


@dataclass(frozen=True)
class SharedConfig:
    tasks: int  # live tasks in each way's file
    fleets: tuple[int, ...]  # K: the Fleets sharing a file
    callbacks: int  # per round and way
    rounds: int
    seed: int = 7


FULL = SharedConfig(tasks=2_000, fleets=(2, 4), callbacks=4_000, rounds=7)
QUICK = SharedConfig(tasks=200, fleets=(2,), callbacks=400, rounds=2)


@dataclass
class _Way:
    """Fleets on one file, and how a round's batches are handed to them."""

    name: str
    fleets: list[Fleet]
    stream: CallbackStream
    send: Callable[[_Way, list[bytes], int], None]  # (the way, a round's bodies, the first body's position)
    rng: random.Random
    times: list[float]


def _to_one(way: _Way, bodies: list[bytes], first: int) -> None:
    handle = way.fleets[0].handle_callbacks
    for start in range(0, len(bodies), BATCH):
        handle(bodies[start : start + BATCH])


def _spread(way: _Way, bodies: list[bytes], first: int) -> None:
    fleets, pick = way.fleets, way.rng.randrange
    for start in range(0, len(bodies), BATCH):
        fleets[pick(len(fleets))].handle_callbacks(bodies[start : start + BATCH])


def _by_task(way: _Way, bodies: list[bytes], first: int) -> None:
    """Task n belongs to Fleet n % K; each Fleet's bodies in their order, in batches, the Fleets'
    batches taking turns."""
    fleets, tasks = way.fleets, len(way.stream.task_ids)
    owned: list[list[bytes]] = [[] for _ in fleets]
    for offset, body in enumerate(bodies):
        owned[(first + offset) % tasks % len(fleets)].append(body)
    batches = [[mine[start : start + BATCH] for start in range(0, len(mine), BATCH)] for mine in owned]
    for turn in range(max(len(each) for each in batches)):
        for fleet, each in zip(fleets, batches, strict=True):
            if turn < len(each):
                fleet.handle_callbacks(each[turn])


def _make(
    name: str, count: int, send: Callable[[_Way, list[bytes], int], None], path: str, config: SharedConfig
) -> _Way:
    say(f"shared: {name}: making {config.tasks:,} live tasks")
    live = live_fleet(config.tasks, SqliteStore(path))
    task_ids = list(live.task_ids)
    live.close()
    fleets = [
        Fleet(
            InstantTransport(f"{name}-"),
            clock=ManualClock(),
            policy=Policy(stop_concurrency=0),
            store=SqliteStore(path),
        )
        for _ in range(count)
    ]
    stream = CallbackStream(task_ids)
    way = _Way(name, fleets, stream, send, random.Random(config.seed), [])
    for fleet in fleets:  # each takes every task back (a rebuild from the journal), before the rounds
        bodies = stream.fresh(len(task_ids))
        for start in range(0, len(bodies), BATCH):
            fleet.handle_callbacks(bodies[start : start + BATCH])
    return way


def run(config: SharedConfig) -> Section:
    section = Section(
        "shared",
        "Several Fleets on one SQLite file: what catching up costs",
        f"{config.tasks:,} live tasks on a SQLite file per way; fresh final segments in batches of {BATCH} "
        "through Fleet.handle_callbacks, on one thread, each batch to one of K Fleets with a store of "
        "its own on the file: spread (a batch to any of them, at random, as a load balancer that knows "
        "nothing of tasks), or by task (the tasks split between the Fleets, each batch one Fleet's: no "
        "copy is ever behind). The reference: one Fleet taking every batch. "
        f"{config.rounds} rounds of {config.callbacks:,} callbacks a way, the ways taking turns; the "
        "median round.",
        REFS,
    )
    with tempfile.TemporaryDirectory(prefix="streamlife-bench-") as directory:
        ways = [_make("one", 1, _to_one, os.path.join(directory, "one.db"), config)]
        for count in config.fleets:
            for name, send in (("spread", _spread), ("by task", _by_task)):
                path = os.path.join(directory, f"{name.replace(' ', '-')}-{count}.db")
                ways.append(_make(f"{name} {count}", count, send, path, config))
        try:
            gc_settled()
            say(f"shared: {config.rounds} rounds of {len(ways)} ways")
            for round_ in range(config.rounds):
                order = ways[round_ % len(ways) :] + ways[: round_ % len(ways)]
                for way in order:
                    first = way.stream.position
                    bodies = way.stream.fresh(config.callbacks)
                    gc_young()
                    began = time.perf_counter()
                    way.send(way, bodies, first)
                    way.times.append((time.perf_counter() - began) / len(bodies) * 1e6)
        finally:
            for way in ways:
                for fleet in way.fleets:
                    fleet.close()
                    fleet.store.close()
    one = statistics.median(ways[0].times)
    section.add(Figure("shared.one.us_per_callback", "one Fleet: µs per callback", "µs", one, {"one": one}))
    for way in ways[1:]:
        section.add(
            Figure(
                f"shared.{way.name.replace(' ', '_')}.us_per_callback",
                f"{way.name} Fleets: µs per callback",
                "µs",
                statistics.median(way.times),
                {"one": one},
            )
        )
    section.notes.append(
        "Spread, a task's callbacks reach its K Fleets in turn, and each replays what the others "
        "applied before it applies its own: the cost over by task, at the same K, is that catching up. "
        "By task, what remains over one Fleet is the Fleets taking turns at the file (each write after "
        "another connection's finds SQLite's page cache emptied)."
    )
    return section
