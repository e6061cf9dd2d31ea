"""A day of streams: process memory over 24 simulated hours at 10,000 live streams, on SQLite.

One Fleet on a ``SqliteStore`` in a temporary directory, on a ``ManualClock``, through a transport
that keeps nothing (``InstantTransport``). ``streams`` streams are live at every moment: each lives
a random time (uniform over ``life_hours``), then its status-14 callback ends it and a new stream
starts in its place, so ended tasks come and go all day. Simulated time moves in steps of
``segment_every`` seconds; at each step every live stream sends its next final segment (one in
twenty streams also sends its previous one again: a redelivery), the callbacks go through
``Fleet.handle_callbacks`` as raw bytes in batches, and the Fleet ticks (which lets ended tasks go
after ``Policy.keep_terminal``). At the start the streams' remaining lives are drawn as if they had
been running for a while (uniform up to the longest life), so streams end at the day's steady rate
from the first hour.

The scaling, and why the figures hold: memories.ai posts a segment every 5 seconds (720 an hour a
stream): 24 hours of 10,000 streams would be 173 million callbacks, days of one core. Here a stream
posts one every ``segment_every`` seconds instead. What the Fleet holds of a task depends on how
many segments it has applied (its transcript's tail, its history), on which tasks are live, and on
which ended within ``keep_terminal``, not on the seconds between segments; so each figure is stated
per applied segment and per live task, and a day at the real rate is the arithmetic of those. The
first hour is the warm-up: a process that starts 10,000 streams fills their transcripts' tails
(2 x ``Policy.transcript_limit`` segments at most) and histories (2 x ``Policy.history_limit``
events) in its first minutes at the real rate; here ``segment_every`` is chosen so they fill within
the first simulated hour too.

Memory is measured in time, not only counted: the process's resident set (``VmRSS``, after a full
collection) at every simulated hour, with the structures' counts beside it (tasks held, ended tasks
held, and ended tasks held for longer than ``keep_terminal``, which must be none). Each run is a
process of its own, so one run's heap does not sit in another's figures. The reference is the same
day with ``transcript_limit=None`` and ``keep_terminal=None`` (every segment and every ended task
kept, as before), run for its first ``reference_hours``.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import ctypes.util
import dataclasses
import gc
import json
import math
import multiprocessing
import os
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from streamlife import Fleet, ManualClock, Policy
from streamlife.protocol import SEGMENT_SECONDS, segment_callback, status_callback
from streamlife.store import SqliteStore

from .common import Figure, Goal, InstantTransport, Section, Table, configure_logging, say, traced

GOAL_BYTES_PER_SEGMENT = 16  # growth per applied segment after the first hour, amortised
STREAMS_AT_SCALE = 100_000
BATCH = 50  # callbacks per Fleet.handle_callbacks call
REDELIVER_EVERY = 20  # one stream in this many sends its previous segment again each step
REFS = [("unbounded", "keep everything")]


@dataclass(frozen=True)
class DayConfig:
    streams: int  # live at every moment
    hours: int  # simulated hours
    segment_every: float  # simulated seconds between one stream's segments (5 in production)
    life_hours: tuple[float, float]  # each stream lives a uniform draw from this range
    reference_hours: int  # how long the reference (everything kept) runs
    plateau_tasks: int  # tasks traced for the bytes a live task holds once its tails are full
    reload_segments: tuple[int, ...]  # lengths of ended streams whose read-back is timed
    seed: int = 7

    def warm_hours(self, policy: Policy) -> int:
        """The simulated hours until every stream that lives that long has filled what the Fleet
        bounds (its history and transcript tails, each up to twice its limit): the warm-up, which at
        the real rate of one segment every 5 s takes minutes."""
        limits = [limit for limit in (policy.history_limit, policy.transcript_limit) if limit is not None]
        return math.ceil(2 * max(limits, default=0) * self.segment_every / 3600)


FULL = DayConfig(
    streams=10_000,
    hours=24,
    segment_every=120.0,
    life_hours=(1.0, 8.0),
    reference_hours=3,
    plateau_tasks=500,
    reload_segments=(720, 8_640),
)
QUICK = DayConfig(
    streams=1_000,
    hours=4,
    segment_every=30.0,
    life_hours=(0.5, 3.0),
    reference_hours=2,
    plateau_tasks=100,
    reload_segments=(720,),
)


@dataclass
class Sample:
    hour: float
    rss: int  # bytes resident, after a full collection
    sqlite: int  # of which SQLite's own heap (its page cache, capped by the store's cache_size)
    applied: int  # segments applied so far (callbacks answered "applied")
    callbacks: int  # callbacks handled so far
    live: int
    held: int  # tasks the Fleet holds: live, and ended within keep_terminal
    ended_held: int
    ended_held_past_keep: int  # ended tasks held longer than keep_terminal after their last event
    transcript_entries: int  # what the live tasks' transcripts hold in memory, summed (``held()``)
    started: int  # streams started so far
    wall: float  # seconds since the run began


def _sqlite_memory_used() -> Callable[[], int] | None:
    """SQLite's own heap in this process (``sqlite3_memory_used``: its page caches above all), where
    the sqlite3 module links the system's libsqlite3, as CPython on Linux does; else None."""
    name = ctypes.util.find_library("sqlite3")
    if name is None:
        return None
    try:
        used = ctypes.CDLL(name).sqlite3_memory_used
    except (OSError, AttributeError):
        return None
    used.restype, used.argtypes = ctypes.c_int64, []
    return lambda: int(used())


def rss_bytes() -> int | None:
    """This process's resident set now (Linux), or None where /proc is not there."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def day(config: DayConfig, *, bounded: bool, hours: int) -> dict[str, Any]:
    """One simulated day (``hours`` of it) in this process; returns its samples as JSON-ready data."""
    configure_logging()
    rng = random.Random(config.seed)
    step = config.segment_every
    # Silence is scaled with the segments, so a stream is not stalled between two of them.
    policy = Policy(stop_concurrency=0, silence_after=3 * step)
    if not bounded:
        policy = dataclasses.replace(policy, transcript_limit=None, keep_terminal=None)
    keep = policy.keep_terminal
    sqlite_used = _sqlite_memory_used()
    clock = ManualClock(1_700_000_000.0)
    began = clock.now()
    with tempfile.TemporaryDirectory(prefix="streamlife-day-") as directory:
        store = SqliteStore(os.path.join(directory, "day.db"))
        fleet = Fleet(InstantTransport(), clock=clock, policy=policy, store=store)
        lo, hi = (hours_ * 3600 for hours_ in config.life_hours)
        # task_id -> [the next segment's index, when the stream ends]
        live: dict[str, list[Any]] = {}
        started = 0

        def start(count: int, *, stationary: bool) -> None:
            nonlocal started
            with store.batch():  # (one commit for the lot: starting is not what is measured)
                for _ in range(count):
                    task = fleet.start(
                        "audio", audio_url=f"rtmp://day.invalid/{started}", provider="assemblyai"
                    )
                    started += 1
                    life = rng.uniform(lo, hi)
                    if stationary:  # as if it had been running: what is left of a life
                        life = rng.uniform(0, life)
                    live[task.task_id or ""] = [0, clock.now() + max(life, step)]

        def sample() -> Sample:
            gc.collect()
            registry = fleet._registry
            now = clock.now()
            held = registry.everyone()
            ended = [tracked.task for tracked in held if tracked.task.terminal]
            past = [  # (ticked every step: a task is let go within a step of its time)
                task for task in ended if keep is not None and (task.ended_at or now) + keep + step < now
            ]
            entries = sum(tracked.task.transcript.held() for tracked in held if not tracked.task.terminal)
            stats = fleet.stats()
            return Sample(
                hour=(now - began) / 3600,
                rss=rss_bytes() or 0,
                sqlite=sqlite_used() if sqlite_used is not None else 0,
                applied=stats.callbacks["applied"],
                callbacks=sum(stats.callbacks.values()),
                live=len(live),
                held=len(held),
                ended_held=len(ended),
                ended_held_past_keep=len(past),
                transcript_entries=entries,
                started=started,
                wall=time.perf_counter() - wall_began,
            )

        wall_began = time.perf_counter()
        gc.collect()
        baseline = rss_bytes() or 0  # the Fleet and its store made, no task yet
        start(config.streams, stationary=True)
        samples = [sample()]
        steps_per_hour = round(3600 / step)
        for hour in range(hours):
            for _ in range(steps_per_hour):
                clock.advance(step)
                now = clock.now()
                bodies: list[bytes] = []
                ending = 0
                for n, (task_id, stream) in enumerate(list(live.items())):
                    index, ends_at = stream
                    if ends_at <= now:
                        last_index = index - 1 if index else None
                        bodies.append(
                            json.dumps(status_callback(task_id, 14, last_index=last_index)).encode()
                        )
                        del live[task_id]
                        ending += 1
                        continue
                    body = json.dumps(segment_callback(task_id, index, f"words of segment {index}"))
                    bodies.append(body.encode())
                    if index and n % REDELIVER_EVERY == hour % REDELIVER_EVERY:
                        again = segment_callback(task_id, index - 1, f"words of segment {index - 1}")
                        bodies.append(json.dumps(again).encode())
                    stream[0] = index + 1
                for first in range(0, len(bodies), BATCH):
                    fleet.handle_callbacks(bodies[first : first + BATCH])
                start(ending, stationary=False)
                fleet.tick()
            samples.append(sample())
            last = samples[-1]
            say(
                f"memory_day ({'bounded' if bounded else 'unbounded'}): hour {last.hour:.0f}, "
                f"RSS {last.rss / 2**20:,.0f} MiB, {last.applied:,} applied, {last.held:,} tasks held "
                f"({last.ended_held:,} ended), {last.wall:,.0f} s"
            )
        fleet.close()
        store.close()
    return {
        "samples": [asdict(each) for each in samples],
        "baseline_rss": baseline,
        "policy": {"keep_terminal": keep},
    }


def plateau_bytes_per_task(count: int, segments: int) -> float:
    """Bytes a live task holds once its history and transcript tails are full: ``count`` tasks on a
    SqliteStore, each sent ``segments`` final segments, everything traced (``tracemalloc``: Python's
    heap, not SQLite's page cache)."""
    clock = ManualClock(1_700_000_000.0)
    with tempfile.TemporaryDirectory(prefix="streamlife-plateau-") as directory:
        store = SqliteStore(os.path.join(directory, "plateau.db"))
        with traced() as held:
            fleet = Fleet(InstantTransport(), clock=clock, policy=Policy(stop_concurrency=0), store=store)
            with store.batch():
                task_ids = [
                    fleet.start(
                        "audio", audio_url=f"rtmp://plateau.invalid/{n}", provider="assemblyai"
                    ).task_id
                    or ""
                    for n in range(count)
                ]
            for index in range(segments):
                clock.advance(SEGMENT_SECONDS)
                bodies = [
                    json.dumps(segment_callback(task_id, index, f"words of segment {index}")).encode()
                    for task_id in task_ids
                ]
                for first in range(0, len(bodies), BATCH):
                    fleet.handle_callbacks(bodies[first : first + BATCH])
            gc.collect()
            kept = held()
        fleet.close()
        store.close()
    return kept / count


def reload_seconds(segments: int, repeat: int = 5) -> float:
    """Seconds a late callback takes for an ended task let go of after ``keep_terminal``: the task
    is read back from the store (its row, and its journal replayed). The task ran for ``segments``
    segments on a SqliteStore; the best of ``repeat`` late callbacks, each after the task was let
    go of again."""
    clock = ManualClock(1_700_000_000.0)
    policy = Policy(stop_concurrency=0, keep_terminal=0.0, silence_after=3600.0)
    best = float("inf")
    with tempfile.TemporaryDirectory(prefix="streamlife-reload-") as directory:
        store = SqliteStore(os.path.join(directory, "reload.db"))
        fleet = Fleet(InstantTransport(), clock=clock, policy=policy, store=store)
        task_id = (
            fleet.start("audio", audio_url="rtmp://reload.invalid/0", provider="assemblyai").task_id or ""
        )
        bodies = [
            json.dumps(segment_callback(task_id, index, f"words of segment {index}")).encode()
            for index in range(segments)
        ]
        for first in range(0, len(bodies), BATCH):
            fleet.handle_callbacks(bodies[first : first + BATCH])
        fleet.handle_callback(json.dumps(status_callback(task_id, 14, last_index=segments - 1)).encode())
        late = json.dumps(
            segment_callback(task_id, segments - 1, f"words of segment {segments - 1}")
        ).encode()
        for _ in range(repeat):
            clock.advance(1)
            fleet.tick()  # lets the ended task go
            assert not fleet.tasks(), "the ended task was let go of"
            began = time.perf_counter()
            fleet.handle_callback(late)
            best = min(best, time.perf_counter() - began)
        fleet.close()
        store.close()
    return best


def _in_a_process(config: DayConfig, *, bounded: bool, hours: int) -> dict[str, Any]:
    """``day`` in a process of its own, so that its heap is its own."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(day, config, bounded=bounded, hours=hours).result()


def _growth(samples: list[Sample], since_hour: float) -> float | None:
    """Bytes of RSS gained per segment applied, from the first sample at ``since_hour`` to the last."""
    after = [each for each in samples if each.hour >= since_hour]
    if len(after) < 2 or after[-1].applied == after[0].applied:
        return None
    return (after[-1].rss - after[0].rss) / (after[-1].applied - after[0].applied)


def run(config: DayConfig) -> Section:
    real_rate = 3600 / SEGMENT_SECONDS
    section = Section(
        "memory_day",
        "A day of streams: memory over simulated time (SQLite store)",
        f"{config.streams:,} streams live at every moment for {config.hours} simulated hours, on a "
        f"SqliteStore, one Fleet, a ManualClock. Each stream lives a uniform {config.life_hours[0]:g} to "
        f"{config.life_hours[1]:g} hours, then its status-14 callback ends it and a new one starts in "
        f"its place. Every {config.segment_every:g} simulated seconds each live stream posts its next "
        f"final segment (one in {REDELIVER_EVERY} also its previous one again), as raw bytes through "
        f"Fleet.handle_callbacks in batches of {BATCH}, and the Fleet ticks. Scaled: a stream posts one "
        f"segment every {config.segment_every:g} s instead of every {SEGMENT_SECONDS} s "
        f"({real_rate / (3600 / config.segment_every):g}x fewer callbacks), because what the Fleet holds "
        "depends on segments applied and tasks live, not on seconds between segments: figures are per "
        "applied segment and per live task. RSS (after a full collection) is sampled every simulated "
        "hour; each run is a process of its own. The reference keeps everything "
        f"(transcript_limit=None, keep_terminal=None), for its first {config.reference_hours} hours.",
        REFS,
    )
    say(f"memory_day: {config.streams:,} streams, {config.hours} simulated hours, bounded")
    ours = _in_a_process(config, bounded=True, hours=config.hours)
    say(f"memory_day: the reference, everything kept, {config.reference_hours} simulated hours")
    ref = _in_a_process(config, bounded=False, hours=config.reference_hours)
    samples = [Sample(**each) for each in ours["samples"]]
    ref_samples = [Sample(**each) for each in ref["samples"]]
    keep = ours["policy"]["keep_terminal"]
    section.extra["samples"] = ours["samples"]
    section.extra["reference_samples"] = ref["samples"]
    section.extra["config"] = asdict(config)

    warm_hours = config.warm_hours(Policy())
    section.extra["warm_hours"] = warm_hours
    growth = _growth(samples, warm_hours)
    from_first = _growth(samples, 1.0)
    ref_growth = _growth(ref_samples, 1.0)
    section.add(
        Figure(
            "memory_day.bytes_per_segment_after_warm_up",
            f"RSS growth per applied segment, from hour {warm_hours} (the warm-up) to the end",
            "B",
            growth,
            {"unbounded": ref_growth},
            note=f"the reference from hour 1 to hour {config.reference_hours}; the warm-up is the "
            "time each stream takes to fill its bounded history and transcript at this run's rate "
            f"({warm_hours} h here, minutes at the real rate)",
        )
    )
    section.add(
        Figure(
            "memory_day.bytes_per_segment_after_first_hour",
            "RSS growth per applied segment, from hour 1 to the end",
            "B",
            from_first,
            {"unbounded": ref_growth},
            note="includes the warm-up's filling of the tails at this run's scaled rate",
        )
    )
    warm = next((each for each in samples if each.hour >= warm_hours), samples[-1])
    last = samples[-1]
    per_live = (last.rss - ours["baseline_rss"]) / last.live if last.live else None
    say(f"memory_day: bytes per live task with full tails, {config.plateau_tasks:,} tasks traced")
    plateau = plateau_bytes_per_task(config.plateau_tasks, 2 * (Policy().history_limit or 0) + 20)
    section.add(
        Figure(
            "memory_day.plateau_bytes_per_live_task",
            "bytes a live task holds once its history and transcript tails are full (tracemalloc)",
            "B",
            plateau,
            note=f"{config.plateau_tasks:,} tasks on a SqliteStore, each sent "
            f"{2 * (Policy().history_limit or 0) + 20} segments; Python's heap only",
        )
    )
    section.add(
        Figure(
            "memory_day.rss_mib_at_end",
            f"RSS at hour {last.hour:.0f}",
            "MiB",
            last.rss / 2**20,
            {"unbounded": ref_samples[-1].rss / 2**20},
            note=f"the reference at hour {ref_samples[-1].hour:.0f}",
        )
    )
    section.add(
        Figure(
            "memory_day.ended_held_past_keep_terminal",
            "most ended tasks held past keep_terminal, at any hour",
            "tasks",
            max(each.ended_held_past_keep for each in samples),
        )
    )
    section.add(
        Figure(
            "memory_day.ended_held",
            f"most ended tasks held at any hour (within keep_terminal, {keep:g} s)",
            "tasks",
            max(each.ended_held for each in samples),
            {"unbounded": max(each.ended_held for each in ref_samples)},
        )
    )
    section.add(
        Figure(
            "memory_day.transcript_entries_per_live_task",
            "transcript entries held per live task, at the end",
            "entries",
            last.transcript_entries / max(last.live, 1),
            {"unbounded": ref_samples[-1].transcript_entries / max(ref_samples[-1].live, 1)},
        )
    )
    for segments in config.reload_segments:
        say(f"memory_day: a late callback for an ended task of {segments:,} segments, let go of")
        section.add(
            Figure(
                f"memory_day.reload_ms.{segments}",
                f"a late callback for an ended task let go of, {segments:,} segments "
                f"({segments * SEGMENT_SECONDS / 3600:g} h of stream): read back from SQLite",
                "ms",
                reload_seconds(segments) * 1e3,
                note="what keep_terminal saves each late callback that comes within it",
            )
        )
    held_ended = max(each.ended_held for each in samples)
    section.notes.append(
        f"keep_terminal ({keep:g} s): at this day's end rate, at most {held_ended:,} ended tasks were "
        f"held at once, about {held_ended * plateau / 2**20:,.1f} MiB at {plateau:,.0f} B each "
        f"(against {last.live * plateau / 2**20:,.0f} MiB for the live tasks); the reference, which "
        f"keeps every ended task, held {max(each.ended_held for each in ref_samples):,} after "
        f"{config.reference_hours} hours. A late callback after keep_terminal costs the read-back "
        "above instead."
    )
    rows = []
    ref_by_hour = {round(each.hour): each for each in ref_samples}
    for each in samples:
        other = ref_by_hour.get(round(each.hour))
        rows.append(
            [
                f"{each.hour:.0f}",
                f"{each.rss / 2**20:,.0f}",
                f"{each.sqlite / 2**20:,.0f}",
                f"{each.applied:,}",
                f"{each.started:,}",
                f"{each.held:,}",
                f"{each.ended_held:,}",
                f"{each.ended_held_past_keep:,}",
                f"{each.transcript_entries / max(each.live, 1):,.0f}",
                "—" if other is None else f"{other.rss / 2**20:,.0f}",
                f"{each.wall:,.0f}",
            ]
        )
    section.tables.append(
        Table(
            "Memory over the simulated day",
            [
                "hour",
                "RSS MiB",
                "of which SQLite MiB",
                "segments applied",
                "streams started",
                "tasks held",
                "ended held",
                "ended held past keep_terminal",
                "transcript entries / live task",
                "reference RSS MiB",
                "wall s",
            ],
            rows,
        )
    )
    day_segments = STREAMS_AT_SCALE * real_rate * 24
    if growth is not None and per_live is not None:
        section.notes.append(
            f"At {STREAMS_AT_SCALE:,} streams and the real rate ({real_rate:,.0f} segments an hour a "
            f"stream, {day_segments:,.0f} a day): {growth:,.1f} B per applied segment is "
            f"{growth * day_segments / 2**30:,.2f} GiB a day of growth"
            + (" (negative: the heap gave back more than it took)" if growth < 0 else "")
            + f". A live task with full tails holds {plateau:,.0f} B of "
            f"Python heap: {plateau * STREAMS_AT_SCALE / 2**30:,.1f} GiB for {STREAMS_AT_SCALE:,} "
            f"live tasks, whatever the hour. In this run, RSS over the empty Fleet's came to "
            f"{per_live:,.0f} B per live task at the end (SQLite's page cache, at most "
            f"{last.sqlite / 2**20:,.0f} MiB here, shared out among them)."
        )
    if ref_growth is not None:
        section.notes.append(
            f"The reference (everything kept) grows {ref_growth:,.0f} B per applied segment: at "
            f"{STREAMS_AT_SCALE:,} streams, {ref_growth * STREAMS_AT_SCALE * real_rate / 2**30:,.1f} GiB "
            "an hour."
        )
    section.notes.append(
        f"From hour {warm_hours} the RSS moved from {warm.rss / 2**20:,.0f} MiB to "
        f"{last.rss / 2**20:,.0f} MiB (SQLite's heap from {warm.sqlite / 2**20:,.0f} to "
        f"{last.sqlite / 2**20:,.0f} MiB) "
        f"over {last.applied - warm.applied:,} applied segments and {last.started - warm.started:,} "
        "streams started."
    )
    section.goals.append(
        Goal(
            "memory_day.flat",
            f"process memory flat after the first hour: growth per applied segment ≤ "
            f"{GOAL_BYTES_PER_SEGMENT} B amortised ({config.streams:,} live streams, {config.hours} "
            f"simulated hours; judged from the warm-up, hour {warm_hours} at this run's rate)",
            "not measured"
            if growth is None
            else f"{growth:,.1f} B per applied segment "
            f"(the reference, everything kept: {ref_growth or 0:,.0f} B)",
            None if growth is None else growth <= GOAL_BYTES_PER_SEGMENT,
        )
    )
    past = max(each.ended_held_past_keep for each in samples)
    section.goals.append(
        Goal(
            "memory_day.released",
            "0 ended tasks held after keep_terminal",
            f"{past} at most, at any simulated hour (keep_terminal {keep:g} s; ended tasks held at "
            f"most {max(each.ended_held for each in samples):,})",
            past == 0,
        )
    )
    return section
