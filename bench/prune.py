"""How long ``SqliteStore.prune`` takes to let go of many terminal tasks, and how long a writer on
another connection waits meanwhile. Standalone (not yet part of ``make bench``):

    .venv/bin/python -m bench.prune [--tasks 100000] [--entries 10] [--dir /tmp]

The file is filled with plain sqlite3 (after SqliteStore made its schema): ``--tasks`` stopped tasks,
each with ``--entries`` journal entries carrying a segment's arguments, plus one running task that a
writer thread moves on, one event at a time, while the prune runs. The writer's longest wait for an
event is the longest a batch held the file's write lock, as other processes would see it.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

from streamlife._jsontext import to_json
from streamlife.store import JournalEntry, SqliteStore, TaskRow

# What a journaled segment carries, about as long as the Fleet's.
SEGMENT_ARGS = to_json(
    {"segment": {"task_id": "660e8400-e29b-41d4-a716-446655440001", "index": 7, "start": 35.0, "end": 40.0,
                 "final": True, "text": "and that is why the meeting ran over by a quarter of an hour"}}
)  # fmt: skip


def fill(path: Path, tasks: int, entries: int) -> None:
    SqliteStore(path).close()  # the schema
    import sqlite3

    db = sqlite3.connect(path)
    with db:
        db.executemany(
            "INSERT INTO tasks (key, kind, task_id, state, terminal, version, created_at, updated_at, facts)"
            " VALUES (?, 'audio', ?, 'stopped', 1, ?, ?, ?, '{\"stop_requested\": true}')",
            ((f"{n:032x}", f"tid-{n}", entries, 1000.0 + n / 1000, 1060.0 + n / 1000) for n in range(tasks)),
        )
        db.executemany(
            "INSERT INTO journal (key, version, at, trigger, from_state, to_state, args)"
            " VALUES (?, ?, ?, 'segment', 'running', 'running', ?)",
            ((f"{n:032x}", v, 1000.0 + v, SEGMENT_ARGS) for n in range(tasks) for v in range(1, entries + 1)),
        )
    db.close()


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__)
    options.add_argument("--tasks", type=int, default=100_000)
    options.add_argument("--entries", type=int, default=10)
    options.add_argument("--dir", default=None)
    args = options.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as where:
        path = Path(where) / "prune.db"
        began = time.perf_counter()
        fill(path, args.tasks, args.entries)
        filled = time.perf_counter() - began
        size = os.path.getsize(path)

        store, writer = SqliteStore(path), SqliteStore(path)
        live = TaskRow("live", "audio", "tid-live", "running", 1, 5000.0, 5000.0, {})
        writer.create(live, [JournalEntry(1, 5000.0, "start_ok", "starting", "running", None)])
        waits: list[float] = []
        done = threading.Event()

        def write() -> None:
            while not done.is_set():
                asked = time.perf_counter()
                with writer.lock("live") as txn:
                    version = txn.version + 1
                    txn.write(
                        [JournalEntry(version, 5000.0 + version, "segment", "running", "running", None)], None
                    )
                waits.append(time.perf_counter() - asked)
                time.sleep(0.001)

        counted_at = time.perf_counter()
        counted = store.prune(2000.0, dry_run=True)
        counting = time.perf_counter() - counted_at
        thread = threading.Thread(target=write)
        thread.start()
        time.sleep(0.05)
        began = time.perf_counter()
        result = store.prune(2000.0)
        took = time.perf_counter() - began
        done.set()
        thread.join()
        assert result == counted, (result, counted)
        assert store.row("live") is not None
        print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
        shape = f"{args.tasks:,} stopped tasks x {args.entries} entries, {size / 2**20:,.0f} MiB"
        print(f"file: {shape} (filled in {filled:.1f} s)")
        print(f"dry run: {counting * 1000:,.0f} ms ({counted})")
        rates = f"{result.tasks / took:,.0f} tasks/s, {result.entries / took:,.0f} entries/s"
        print(f"prune: {took:.2f} s, {rates} ({result})")
        print(
            f"a writer on another connection meanwhile: {len(waits)} events, longest wait"
            f" {max(waits) * 1000:.0f} ms, median {sorted(waits)[len(waits) // 2] * 1000:.1f} ms"
        )
        store.close()
        writer.close()


if __name__ == "__main__":
    main()
