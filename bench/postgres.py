"""The PostgreSQL store: callbacks per second through ``Fleet.handle_callback(bytes)`` one by one,
and through ``Fleet.handle_callbacks`` in batches of ``BATCH``, by 1, 2 and 4 processes writing the
same database, against a bare psycopg floor doing the same writes (``bench/pg_floor.py``).

Each process runs its own Fleet on its own ``PostgresStore`` (one database for all of them, made
fresh for the run on the server that the tests would use, found by ``tests/pg.py``:
``STREAMLIFE_PG_DSN``, 127.0.0.1:5432, else a throwaway cluster), with its own share of
the live tasks: a webhook receiver per process, each behind a load balancer that routes a task's
callbacks to the process that started it. The floor runs in the same processes, on a second fresh
database, taking turns with the Fleet: the processes start each turn together (a barrier), and a
turn's rate is every process's callbacks over the time from the first start to the last finish.

The section is skipped, and says so, only when no server can be had.
"""

from __future__ import annotations

import multiprocessing
import queue
import statistics
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from streamlife import Fleet, ManualClock, Policy
from streamlife.store.postgres import PostgresStore
from tests.pg import NoServer, answers, given_dsn
from tests.pg import fresh_database as fresh_test_database
from tests.pg import server_dsn as find_server

from .common import (
    CallbackStream,
    Figure,
    Goal,
    InstantTransport,
    Section,
    Table,
    configure_logging,
    duplicates_in,
    gc_settled,
    gc_young,
    say,
)

BATCH = 50  # callbacks per Fleet.handle_callbacks call, as in bench/ingest.py
GOAL_RATIO = 1.3  # the store's cost per callback, at most this many times the floor's
REFS = [("floor", "bare psycopg")]
WAYS = ("fleet", "floor", "fleet_batched", "floor_batched")
BARRIER_TIMEOUT = 600.0  # seconds a process waits for the others at a turn's start


@dataclass(frozen=True)
class PostgresConfig:
    tasks: int  # live tasks in all, split between the processes
    processes: tuple[int, ...]
    callbacks: int  # per process, per timed round and way
    warmup: int  # per process and way, before timing
    repeat: int  # timed rounds


# Many short rounds rather than a few long ones: each round's ratio is taken to the floor's round
# run just before or after it, so a burst of other work on the machine spoils a round, not the figure.
FULL = PostgresConfig(tasks=4_000, processes=(1, 2, 4), callbacks=600, warmup=500, repeat=10)
QUICK = PostgresConfig(tasks=800, processes=(1, 2, 4), callbacks=300, warmup=200, repeat=4)


def server_dsn() -> str:
    """The server asked for, answering or not (for bench/upkeep.py; this benchmark takes any server
    that tests/pg.py can find or start)."""
    return given_dsn()


def unreachable(dsn: str) -> str | None:
    """None if a server answers at ``dsn``; else why not."""
    return answers(dsn, timeout=3)


@contextmanager
def fresh_database(server: str) -> Iterator[str]:
    """A new, empty database on ``server`` for as long as the block runs; its DSN."""
    with fresh_test_database(server, prefix="streamlife_bench") as dsn:
        yield dsn


@dataclass(frozen=True)
class _Job:
    worker: int
    tasks: int
    store_dsn: str
    floor_dsn: str
    config: PostgresConfig


def _worker(job: _Job, barrier: Any, results: Any) -> None:
    """One process: its Fleet and its floor, taking turns with each other and in step with the
    other processes; puts its timings (or its traceback) on ``results``."""
    try:
        results.put((job.worker, _measure(job, barrier)))
    except BaseException:
        barrier.abort()
        results.put((job.worker, {"error": traceback.format_exc()}))


def _measure(job: _Job, barrier: Any) -> dict[str, Any]:
    from .pg_floor import PostgresFloor

    configure_logging()
    config = job.config
    store = PostgresStore(job.store_dsn)
    transport = InstantTransport(f"p{job.worker}-")  # (task_ids of its own, as across processes)
    fleet = Fleet(transport, clock=ManualClock(), policy=Policy(stop_concurrency=0), store=store)
    began = time.perf_counter()
    task_ids: list[str] = []
    for first in range(0, job.tasks, 500):
        with store.batch():  # making the tasks is not what is measured
            for n in range(first, min(first + 500, job.tasks)):
                task = fleet.start("audio", audio_url=f"rtmp://bench.invalid/live/{n}", provider="assemblyai")
                assert task.task_id is not None
                task_ids.append(task.task_id)
    making = time.perf_counter() - began
    floor = PostgresFloor(task_ids, job.floor_dsn, job.store_dsn)
    try:
        stream = CallbackStream(task_ids)
        one_by_one = [stream.take(config.warmup)] + [
            stream.take(config.callbacks) for _ in range(config.repeat)
        ]
        batched = [_batches(stream.take(config.warmup))] + [
            _batches(stream.take(config.callbacks)) for _ in range(config.repeat)
        ]
        handlers: dict[str, tuple[Callable[[Any], Any], list[list[Any]]]] = {
            "fleet": (fleet.handle_callback, one_by_one),
            "floor": (floor.handle, one_by_one),
            "fleet_batched": (fleet.handle_callbacks, batched),
            "floor_batched": (floor.handle_batch, batched),
        }
        gc_settled()
        before = fleet.stats()
        times: dict[str, list[tuple[float, float]]] = {way: [] for way in WAYS}
        for round_ in range(config.repeat + 1):  # round 0: the warm-up, not timed
            order = WAYS[round_ % len(WAYS) :] + WAYS[: round_ % len(WAYS)]
            for way in order:
                handle, feed = handlers[way]
                gc_young()
                barrier.wait(BARRIER_TIMEOUT)
                started = time.monotonic()
                for unit in feed[round_]:
                    handle(unit)
                ended = time.monotonic()
                if round_:
                    times[way].append((started, ended))
        after = fleet.stats()
        got = {kind: after.callbacks[kind] - before.callbacks[kind] for kind in after.callbacks}
        return {
            "times": times,
            "making": making,
            "outcomes": {kind: count for kind, count in got.items() if count},
        }
    finally:
        floor.close()
        fleet.close()
        store.close()


def _batches(bodies: list[bytes]) -> list[list[bytes]]:
    return [bodies[start : start + BATCH] for start in range(0, len(bodies), BATCH)]


def _expected(config: PostgresConfig) -> dict[str, int]:
    sent = ([config.warmup] + [config.callbacks] * config.repeat) * 2  # both ways
    duplicates = sum(duplicates_in(count) for count in sent)
    return {"applied": sum(sent) - duplicates, "duplicate": duplicates}


def _processes(config: PostgresConfig, processes: int, server: str) -> dict[int, dict[str, Any]]:
    """Run ``processes`` workers on fresh databases; their results, by worker."""
    context = multiprocessing.get_context("spawn")  # no connection, thread or lock crosses a fork
    with fresh_database(server) as store_dsn, fresh_database(server) as floor_dsn:
        PostgresStore(store_dsn).close()  # the schemas, made once
        PostgresStore(floor_dsn).close()
        barrier = context.Barrier(processes)
        results = context.Queue()
        share = config.tasks // processes
        workers = [
            context.Process(
                target=_worker,
                args=(_Job(n, share, store_dsn, floor_dsn, config), barrier, results),
                name=f"bench-postgres-{n}",
            )
            for n in range(processes)
        ]
        for worker in workers:
            worker.start()
        found: dict[int, dict[str, Any]] = {}
        try:
            while len(found) < len(workers):
                try:
                    worker_id, result = results.get(timeout=1.0)
                except queue.Empty:
                    dead = [w.name for w in workers if w.exitcode not in (None, 0)]
                    if dead:  # (one that died with no word: killed, say)
                        raise RuntimeError(f"postgres bench processes died: {dead}") from None
                    continue
                found[worker_id] = result
        finally:
            for worker in workers:
                worker.join(timeout=60)
                if worker.is_alive():
                    worker.kill()
                    worker.join()
    return found


def _rounds(found: dict[int, dict[str, Any]], callbacks: int) -> dict[str, list[float]]:
    """Seconds per callback, by way and round: each round's callbacks (every process's) over the
    time from its first start to its last end."""
    seconds: dict[str, list[float]] = {}
    for way in WAYS:
        rounds = zip(*(result["times"][way] for result in found.values()), strict=True)
        spent = [max(end for _, end in turn) - min(start for start, _ in turn) for turn in rounds]
        seconds[way] = [taken / (callbacks * len(found)) for taken in spent]
    return seconds


def run(config: PostgresConfig) -> Section:
    section = Section(
        "postgres",
        "PostgreSQL store: callbacks by 1, 2 and 4 processes against bare psycopg",
        f"{config.tasks:,} live tasks split between the processes, each process its own Fleet on "
        "its own PostgresStore, all on one database (fresh for the run), the store's defaults "
        "(a pool, the row lock, the timeouts). Raw callback bodies through handle_callback one by "
        f"one, and handle_callbacks in batches of {BATCH}: {config.warmup:,} callbacks per process "
        f"and way of warm-up, then {config.repeat} rounds of {config.callbacks:,} per process and "
        "way; bodies round-robin over the process's tasks, one in ten a repeat. The floor gets the "
        "same bodies in the same processes, on a second database with the store's tables, starting "
        "from a copy of the store's rows and journals (the same keys): orjson, a dict FSM, and per "
        "applied callback one transaction on a plain psycopg connection doing "
        "what the store's write does for a segment (the row locked with SELECT ... FOR UPDATE, "
        "moved on with UPDATE ... WHERE version, the journal row inserted, the commit); batched, "
        f"one transaction per {BATCH}. The processes start each turn together; a rate is every "
        "process's callbacks over the time from the first start to the last end; the rates shown are "
        "over every round, and each ratio in the goals is the median over the rounds of a round's "
        "cost to the cost of the floor's round in the same turn (so that a burst of other work on "
        "the machine spoils a round, not the figure). "
        "The server commits durably (its own settings; fsync and synchronous_commit as configured).",
        REFS,
    )
    try:
        with find_server() as server:
            _measure_on(section, config, server)
    except NoServer as exc:
        section.title += ": SKIPPED"
        section.notes.append(f"SKIPPED: no PostgreSQL server could be had: {exc}")
        section.goals.append(Goal("postgres.ratio", _target(), "not measured: no PostgreSQL server", None))
    return section


def _measure_on(section: Section, config: PostgresConfig, server: str) -> None:
    section.extra["server"] = settings = _server_settings(server)
    section.notes.append(
        "server: PostgreSQL " + ", ".join(f"{name} {value}" for name, value in settings.items()) + "; "
        "the processes and the server share the machine's CPUs"
    )
    expected = _expected(config)
    making: list[list[str]] = []
    ratios: dict[str, dict[int, float]] = {"one": {}, "batched": {}}
    for processes in config.processes:
        say(f"postgres: {processes} process(es), {config.tasks:,} live tasks")
        found = _processes(config, processes, server)
        failed = [result["error"] for result in found.values() if "error" in result]
        if failed:
            raise RuntimeError(f"a postgres bench process failed:\n{failed[0]}")
        for worker, result in sorted(found.items()):
            if result["outcomes"] != expected:
                section.notes.append(
                    f"WARNING: {processes} processes, worker {worker}: outcomes {result['outcomes']}, "
                    f"expected {expected}"
                )
        rounds = _rounds(found, config.callbacks)
        share = config.tasks // processes
        making.append(
            [f"{processes}", f"{share:,}", f"{max(r['making'] for r in found.values()) / share * 1e6:,.0f}"]
        )
        for way, label, key in (
            ("fleet", "handle_callback", "one"),
            ("fleet_batched", "handle_callbacks", "batched"),
        ):
            mine, floors = rounds[way], rounds[way.replace("fleet", "floor")]
            ours, floor = statistics.fmean(mine), statistics.fmean(floors)  # (rounds of one size)
            # The goal's ratio: the median of the rounds' (each round to the floor's of the same turn).
            ratios[key][processes] = statistics.median(m / f for m, f in zip(mine, floors, strict=True))
            suffix = "" if key == "one" else ".batched"
            what = label if key == "one" else f"{label} in batches of {BATCH}"
            section.add(
                Figure(
                    f"postgres.{processes}{suffix}.callbacks_per_second",
                    f"{processes} process{'es' if processes > 1 else ''}: callbacks/s, {what}",
                    "/s",
                    1 / ours,
                    {"floor": 1 / floor},
                    better="higher",
                )
            )
            section.add(
                Figure(
                    f"postgres.{processes}{suffix}.us_per_callback",
                    f"{processes} process{'es' if processes > 1 else ''}: µs per callback (wall), {what}",
                    "µs",
                    ours * 1e6,
                    {"floor": floor * 1e6},
                    note="the ratio the goal is judged by, the median over the rounds of each round's "
                    f"to the floor's round in the same turn: {ratios[key][processes]:.2f}x",
                )
            )
    section.tables.append(
        Table(
            "Making live tasks (Fleet.start, 500 per store batch, every process at once)",
            ["processes", "tasks each", "µs per task (slowest process)"],
            making,
        )
    )
    section.extra["ratios"] = ratios
    for key, what in (
        ("one", "handle_callback one by one"),
        ("batched", f"handle_callbacks in batches of {BATCH}"),
    ):
        measured = ratios[key]
        worst = max(measured.values())
        said = ", ".join(f"{ratio:.2f}x with {processes}" for processes, ratio in measured.items())
        section.goals.append(
            Goal(
                f"postgres.{key}.ratio",
                _target(what),
                f"cost per callback {said} processes the floor's (the median of the rounds' ratios)",
                worst <= GOAL_RATIO,
            )
        )


def _target(what: str = "handle_callback and handle_callbacks") -> str:
    return (
        f"PostgreSQL store, {what}: cost per callback ≤ {GOAL_RATIO}x a bare psycopg floor doing the "
        "same writes, at 1, 2 and 4 processes"
    )


def _server_settings(server: str) -> dict[str, str]:
    import psycopg

    with psycopg.connect(server, autocommit=True) as conn:
        names = ("server_version", "fsync", "synchronous_commit", "shared_buffers")
        return {name: str(conn.execute(f"SHOW {name}").fetchone()[0]) for name in names}  # type: ignore[index]
