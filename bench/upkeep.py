"""Store upkeep, while other processes write: retention (``Store.prune``) and the looks for tasks a
dead process left overdue (``Store.claim_due``).

    python -m bench.run --only upkeep

Retention: a store is filled with stopped tasks, each with journal entries carrying a segment's
arguments, and one running task that a writer moves on, one event at a time, while ``prune`` lets
the stopped tasks go. The writer is a process of its own, as the other processes that write a store
are: a thread of the pruning process would share its interpreter lock, and wait for it as no other
process does. A PostgreSQL database is checkpointed once filled (``settle_postgres``), so that the
writer alone and the prune both find its pages on disk. The writer's longest wait is the longest a
batch held it up, as another process would see it; the references are one batch's share of the prune
(its hold and the pause after it; the store's pacer counts the batches, which are sized by time) and
the same writer's longest wait with no prune running, in the same run, for about as long as the
prune takes. The goal is judged on what the prune adds to the writer's longest wait: a disk's
slowest commit sets the writer's longest wait whether a prune runs or not, and a longest wait over
more writes is longer by chance alone. The bytes each journal entry took on disk say how large a
day's journal is (docs/scaling.md).

Takeover: ``claim_due`` on a store of live tasks none of which is due, as every Fleet runs it four
times per ``Policy.takeover_after``: its cost, against that interval.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import queue
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from streamlife import Policy
from streamlife._jsontext import to_json
from streamlife.store import Due, JournalEntry, SqliteStore, Store, TaskRow
from streamlife.store._prune_pacing import Pacer
from streamlife.store._sql import PRUNE_BATCH

from .common import Figure, Goal, Section, say
from .postgres import fresh_database, server_dsn, unreachable

# What a journaled segment carries, about as long as the Fleet's.
SEGMENT_ARGS = to_json(
    {"segment": {"task_id": "660e8400-e29b-41d4-a716-446655440001", "index": 7, "start": 35.0, "end": 40.0,
                 "final": True, "text": "and that is why the meeting ran over by a quarter of an hour"}}
)  # fmt: skip
SWEEP_SHARE = 0.02  # the goal: a look costs at most this share of the interval between looks
WAIT_BATCHES = 2.0  # the goal: a writer waits at most this many batches' share of a prune


@dataclass(frozen=True)
class UpkeepConfig:
    stopped: int  # terminal tasks to prune
    entries: int  # journal entries each
    live: int  # live tasks that claim_due looks through
    looks: int  # claim_due calls timed
    alone: float  # seconds the writer writes with no prune running, for the reference: about a prune's


FULL = UpkeepConfig(stopped=100_000, entries=10, live=10_000, looks=20, alone=10.0)
QUICK = UpkeepConfig(stopped=10_000, entries=10, live=2_000, looks=10, alone=1.0)
REFS = [
    ("batch", "one batch's share"),
    ("alone", "the writer alone"),
    ("interval", "the look interval"),
]


def fill_sqlite(path: Path, stopped: int, entries: int, live: int) -> None:
    """The rows and journal entries a Fleet would have written, with plain sqlite3 (after
    SqliteStore made its schema): quicker than a Fleet by far."""
    SqliteStore(path).close()
    import sqlite3

    db = sqlite3.connect(path)
    with db:
        db.executemany(
            "INSERT INTO tasks (key, kind, task_id, state, terminal, version, created_at, updated_at, facts)"
            " VALUES (?, 'audio', ?, 'stopped', 1, ?, ?, ?, '{\"stop_requested\": true}')",
            (
                (f"s{n:031x}", f"tid-s{n}", entries, 1000.0 + n / 1000, 1060.0 + n / 1000)
                for n in range(stopped)
            ),
        )
        db.executemany(
            "INSERT INTO journal (key, version, at, trigger, from_state, to_state, args)"
            " VALUES (?, ?, ?, 'segment', 'running', 'running', ?)",
            (
                (f"s{n:031x}", v, 1000.0 + v, SEGMENT_ARGS)
                for n in range(stopped)
                for v in range(1, entries + 1)
            ),
        )
        db.executemany(
            "INSERT INTO tasks (key, kind, task_id, state, terminal, version, created_at, updated_at, facts,"
            " due_at, quiet) VALUES (?, 'audio', ?, 'running', 0, 1, ?, ?, '{}', NULL, 40.0)",
            ((f"l{n:031x}", f"tid-l{n}", 5000.0, 5000.0) for n in range(live)),
        )
    db.close()  # fmt: skip


# Opens the writer's store, in the writer's process (so: picklable).
Opener = Callable[[], Store]


@contextmanager
def sqlite_stores(config: UpkeepConfig) -> Iterator[tuple[Store, Opener, Callable[[], int]]]:
    """The pruner's handle on one filled file, how the writer opens its own, and the file's size."""
    with tempfile.TemporaryDirectory() as where:
        path = Path(where) / "upkeep.db"
        fill_sqlite(path, config.stopped, config.entries, config.live)
        store = SqliteStore(path)
        try:
            yield (
                store,
                functools.partial(SqliteStore, path),
                lambda: os.path.getsize(path) + _size(Path(f"{path}-wal")),
            )
        finally:
            store.close()


def fill_postgres(dsn: str, stopped: int, entries: int, live: int) -> None:
    """As ``fill_sqlite``, with COPY."""
    from streamlife.store.postgres import PostgresStore

    PostgresStore(dsn).close()
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
        # look_at: when the row is first due, as PostgresStore writes it (its claims read that index).
        columns = "key, kind, task_id, state, terminal, version, created_at, updated_at, facts"
        columns += ", due_at, quiet, look_at"
        with cur.copy(f"COPY streamlife_tasks ({columns}) FROM STDIN") as copy:
            for n in range(stopped):
                row = (f"s{n:031x}", "audio", f"tid-s{n}", "stopped", True, entries)
                copy.write_row(
                    (*row, 1000.0 + n / 1000, 1060.0 + n / 1000, '{"stop_requested": true}', None, None, None)
                )
            for n in range(live):
                copy.write_row(
                    (
                        f"l{n:031x}",
                        "audio",
                        f"tid-l{n}",
                        "running",
                        False,
                        1,
                        5000.0,
                        5000.0,
                        "{}",
                        None,
                        40.0,
                        5040.0,
                    )
                )
        journal = "key, version, at, trigger, from_state, to_state, args"
        with cur.copy(f"COPY streamlife_journal ({journal}) FROM STDIN") as copy:
            for n in range(stopped):
                for v in range(1, entries + 1):
                    copy.write_row(
                        (f"s{n:031x}", v, 1000.0 + v, "segment", "running", "running", SEGMENT_ARGS)
                    )
        cur.execute("VACUUM ANALYZE streamlife_tasks")
        cur.execute("VACUUM ANALYZE streamlife_journal")  # fmt: skip


def settle_postgres(dsn: str) -> None:
    """Checkpoint the filled database: its pages on disk and the kernel's cache clean, as a real
    prune finds the old tasks it deletes. Otherwise the kernel writes the fill's hundreds of
    megabytes back while the writer writes, alone or beside the prune, in bursts that its commits
    wait behind, wherever they happen to fall; and the prune, touching pages the last checkpoint
    did not write, logs its changes without the page images that a real one logs."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute("CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege as error:
            say(f"upkeep: PostgreSQL, not checkpointed after the fill ({error})")


@contextmanager
def postgres_stores(config: UpkeepConfig) -> Iterator[tuple[Store, Opener, Callable[[], int]]]:
    """The pruner's store on one filled database, how the writer opens its own, and the size of its
    tasks and journal."""
    import psycopg

    from streamlife.store.postgres import PostgresStore

    with fresh_database(server_dsn()) as dsn:
        fill_postgres(dsn, config.stopped, config.entries, config.live)
        settle_postgres(dsn)

        def size() -> int:
            with psycopg.connect(dsn) as conn:
                found = conn.execute(
                    "SELECT pg_total_relation_size('streamlife_tasks')"
                    " + pg_total_relation_size('streamlife_journal')"
                ).fetchone()
            assert found is not None
            return int(found[0])

        store = PostgresStore(dsn)
        try:
            yield store, functools.partial(PostgresStore, dsn), size
        finally:
            store.close()


def _pressure() -> str | None:
    """The machine's CPU and I/O pressure over the last 10 s (Linux PSI), in words; None where
    there is none to read."""
    found = []
    for kind in ("cpu", "io"):
        try:
            with open(f"/proc/pressure/{kind}") as pressure:
                some = pressure.readline().split()
        except OSError:
            return None
        avg10 = dict(field.split("=") for field in some[1:]).get("avg10")
        found.append(f"{kind.upper() if kind == 'cpu' else 'I/O'} {avg10}%")
    return " and ".join(found)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


class Prune(NamedTuple):
    seconds: float
    waits: list[float]  # the writer's, each from asking for the task to its commit
    result: Any
    holds: list[float] | None  # how long each batch held on (its pacer's), None: not known


def _write(open_writer: Opener, key: str, ready: Any, stop: Any, results: Any) -> None:
    """The writer's process: creates ``key`` (a running task), says it is ready, then moves the task
    on, one event at a time, until told to stop; puts its waits, each from asking for the task to
    the commit."""
    writer = open_writer()
    try:
        live = TaskRow(key, "audio", f"tid-{key}", "running", 1, 5000.0, 5000.0, {})
        writer.create(
            live, [JournalEntry(1, 5000.0, "start_ok", "starting", "running", None)], due=Due(quiet=40.0)
        )
        ready.set()
        waits: list[float] = []
        while not stop.is_set():
            asked = time.perf_counter()
            with writer.lock(key) as txn:
                version = txn.version + 1
                txn.write(
                    [JournalEntry(version, 5000.0 + version, "segment", "running", "running", None)], None
                )
            waits.append(time.perf_counter() - asked)
            time.sleep(0.001)
        results.put(waits)
    finally:
        writer.close()


@contextmanager
def writing(open_writer: Opener, key: str) -> Iterator[list[float]]:
    """A process of its own moving ``key`` (a running task it creates) on, one event at a time,
    while the block runs: its waits, each from asking for the task to the commit (filled in once
    the block ends)."""
    context = multiprocessing.get_context("spawn")
    ready, stop, results = context.Event(), context.Event(), context.Queue()
    process = context.Process(target=_write, args=(open_writer, key, ready, stop, results))
    process.start()
    waits: list[float] = []
    try:
        if not ready.wait(120):
            raise RuntimeError(f"the writer process did not start (exit code {process.exitcode})")
        yield waits
    finally:
        stop.set()
        try:
            waits.extend(results.get(timeout=120))
        except queue.Empty:
            raise RuntimeError(f"the writer process gave no waits (exit code {process.exitcode})") from None
        finally:
            process.join(timeout=60)
            if process.is_alive():
                process.terminate()
    if not waits:
        raise RuntimeError("the writer process wrote nothing")


def write_alone(open_writer: Opener, seconds: float) -> list[float]:
    """The writer's waits with no prune running, for ``seconds``: the reference, in the same run."""
    with writing(open_writer, "alone") as waits:
        time.sleep(seconds)
    return waits


def prune_while_writing(store: Store, open_writer: Opener) -> Prune:
    """Prune every stopped task while a writer process moves a running task on."""
    holds: list[float] | None = None
    own: Callable[[], Pacer] | None = getattr(store, "_pacer", None)
    if own is not None:  # SqliteStore's and PostgresStore's: batches sized by time, counted here
        holds = []
        store._pacer = lambda: _recording(own(), holds)  # type: ignore[attr-defined]
    with writing(open_writer, "writer") as waits:
        time.sleep(0.05)
        began = time.perf_counter()
        result = store.prune(2000.0)
        took = time.perf_counter() - began
        time.sleep(0.01)
    return Prune(took, waits, result, holds)


def _recording(pacer: Pacer, holds: list[float]) -> Pacer:
    """The store's own pacer, noting how long each batch held on."""
    learn = pacer.learn

    def noting(entries: int, held: float) -> None:
        holds.append(held)
        learn(entries, held)

    pacer.learn = noting  # type: ignore[method-assign]
    return pacer


def look_cost(store: Store, looks: int) -> float:
    """The median seconds of one ``claim_due`` that finds nothing due (the usual look)."""
    times = []
    for _ in range(looks):
        began = time.perf_counter()
        found = store.claim_due(4000.0, until=4100.0, limit=100)
        times.append(time.perf_counter() - began)
        assert found == [], found
    return sorted(times)[len(times) // 2]


def run(config: UpkeepConfig) -> Section:
    section = Section(
        "upkeep",
        "Store upkeep: retention and takeover looks",
        f"Per store (an SQLite file; a fresh PostgreSQL database): {config.stopped:,} stopped tasks x"
        f" {config.entries} journal entries (a segment's arguments each) pruned while a writer process"
        " moves a running task on; then claim_due, as every Fleet runs it four times per"
        f" Policy.takeover_after, over {config.live:,} live tasks none of which is due (median of"
        f" {config.looks}).",
        REFS,
    )
    why_not = unreachable(server_dsn())
    kinds: list[tuple[str, Callable[[UpkeepConfig], Any]]] = [("sqlite", sqlite_stores)]
    if why_not is None:
        kinds.append(("postgres", postgres_stores))
    else:
        section.notes.append(f"PostgreSQL not measured: no server answered ({why_not}).")
    for kind, stores in kinds:
        with stores(config) as (store, open_writer, size):
            _measure(section, config, kind, store, open_writer, size)
    return section


def _measure(
    section: Section,
    config: UpkeepConfig,
    kind: str,
    store: Store,
    open_writer: Opener,
    size: Callable[[], int],
) -> None:
    interval = Policy().takeover_after / 4
    name = {"sqlite": "SQLite", "postgres": "PostgreSQL"}[kind]
    say(f"upkeep: {name}, claim_due over {config.live:,} live tasks")
    look = section.add(
        Figure(
            f"upkeep.{kind}.{config.live}.ms_per_look",
            f"claim_due over {config.live:,} live tasks, {name}",
            "ms",
            look_cost(store, config.looks) * 1000,
            {"interval": interval * 1000},
        )
    )
    per_entry = section.add(
        Figure(
            f"upkeep.{kind}.bytes_per_entry",
            f"bytes on disk per journal entry (with its task's row), {name}",
            "B",
            size() / (config.stopped * config.entries),
        )
    )
    say(f"upkeep: {name}, a writer alone for {config.alone:g} s, then prune {config.stopped:,} stopped tasks")
    alone = write_alone(open_writer, config.alone)
    prune = prune_while_writing(store, open_writer)
    took, waits, result = prune.seconds, prune.waits, prune.result
    batches = len(prune.holds) if prune.holds else max(1, -(-result.tasks // PRUNE_BATCH))
    section.add(
        Figure(
            f"upkeep.{kind}.prune_tasks_per_s",
            f"tasks pruned a second, {name}",
            "tasks/s",
            result.tasks / took,
        )
    )
    if prune.holds:
        section.add(
            Figure(
                f"upkeep.{kind}.batch_longest_hold_ms",
                f"a batch's longest hold ({batches:,} batches), {name}",
                "ms",
                max(prune.holds) * 1000,
                {"batch": took / batches * 1000},
                note=f"mean {statistics.mean(prune.holds) * 1000:,.1f} ms",
            )
        )
    wait = section.add(
        Figure(
            f"upkeep.{kind}.writer_longest_wait_ms",
            f"a writer's longest wait during the prune, {name}",
            "ms",
            max(waits) * 1000,
            {"batch": took / batches * 1000, "alone": max(alone) * 1000},
            note=f"{len(waits):,} writes during the prune, {len(alone):,} alone",
        )
    )
    batch_ms = took / batches * 1000
    added = None if wait.value is None else max(0.0, wait.value - max(alone) * 1000) / batch_ms
    section.goals.append(
        Goal(
            f"upkeep.{kind}.prune_adds_to_writers_wait",
            f"{name}: a prune adds at most {WAIT_BATCHES:g} batches' share to a writer's longest wait"
            " (against the writer alone, in the same run)",
            f"longest wait {wait.value:,.0f} ms, alone {max(alone) * 1000:,.0f} ms: the prune added"
            f" {added:,.2f} x a batch's share ({wait.ratio('batch'):,.2f} x without the reference)"
            if added is not None
            else "not measured",
            None if added is None else added <= WAIT_BATCHES,
        )
    )
    typical = section.add(
        Figure(
            f"upkeep.{kind}.writer_p99_wait_ms",
            f"a writer's 99th-percentile wait during the prune, {name}",
            "ms",
            _percentile(waits, 0.99) * 1000,
            {"batch": took / batches * 1000, "alone": _percentile(alone, 0.99) * 1000},
        )
    )
    # The longest wait is the tail of a few hundred batches on a shared machine: one batch the
    # scheduler stops mid-way sets it. The 99th percentile says whether writers get in after each
    # batch, as the pacing means them to.
    typical_ratio = typical.ratio("batch")
    section.goals.append(
        Goal(
            f"upkeep.{kind}.prune_lets_writers_in_p99",
            f"{name}: a writer's 99th-percentile wait is at most {WAIT_BATCHES:g} batches' share of a prune",
            f"{typical.value:,.1f} ms = {typical_ratio:,.2f} x a batch's share"
            if typical_ratio
            else "not measured",
            None if typical_ratio is None else typical_ratio <= WAIT_BATCHES,
        )
    )
    share = None if look.value is None else look.value / (interval * 1000)
    section.goals.append(
        Goal(
            f"upkeep.{kind}.{config.live}.look_share",
            f"{name}: a look for overdue tasks over {config.live:,} live tasks costs at most"
            f" {SWEEP_SHARE:.0%} of the interval between looks",
            "not measured" if share is None else f"{look.value:,.1f} ms per {interval:g} s = {share:.2%}",
            None if share is None else share <= SWEEP_SHARE,
        )
    )
    pressure = _pressure()
    if pressure:
        section.notes.append(
            f"{name}: after the prune, the share of the last 10 s some task waited for {pressure}"
            " (/proc/pressure): where these are high, one batch the machine stops mid-way sets the"
            " longest wait."
        )
    day = 2_000 * 720 * 24
    section.notes.append(
        f"{name}: a day of 2,000 streams' segments (720 an hour each) is {day:,} entries, about"
        f" {day * (per_entry.value or 0) / 2**30:,.1f} GiB at this size per entry, until retention lets"
        " the ended tasks go."
    )
