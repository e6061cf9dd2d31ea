"""SqliteStore on a disk with no room: a clear StoreError, and a store that works again once there
is room, never one wedged for good by its own WAL.

Two ways to run out of room, both real: a file size limit (RLIMIT_FSIZE, in a subprocess, with
SIGXFSZ ignored so that a write past it fails as on a full volume), which needs no privilege; and a
1 MiB tmpfs volume, which needs mount (root): skipped where it cannot be mounted.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import closing as closing_connection
from pathlib import Path
from typing import Any

import pytest

from streamlife.errors import StoreError
from streamlife.store.sqlite import SqliteStore

from .test_store_contract import advance, entry, task_row

# Writes tasks (each made, then moved on one event) under a file size limit; a write refused is
# tried once more at once, with the limit as it is. Reports what happened as JSON.
UNDER_A_SIZE_LIMIT = """
import json, os, resource, signal, sys
from streamlife.errors import StoreError
from streamlife.store.sqlite import SqliteStore
from tests.store.test_store_contract import advance, entry, task_row

path, limit, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store = SqliteStore(path)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
report = {"refused": [], "refused_again": [], "wal_after_retry": []}

def task(i):
    store.create(task_row(f"k{i}", 1, facts={"pad": "x" * 1500}), [entry(1, trigger="make")])

def event(i):
    advance(store, f"k{i}")

def written(write, i):
    try:
        write(i)
        return True
    except StoreError as error:
        report["refused"].append(str(error))
    try:
        write(i)
        return True
    except StoreError as again:
        report["refused_again"].append(str(again))
        return False
    finally:
        report["wal_after_retry"].append(os.path.getsize(path + "-wal"))

for i in range(count):
    if written(task, i):
        written(event, i)
store.close()
print(json.dumps(report))
"""

SIZE_LIMIT = 512 * 1024
TASKS = 120


def test_a_write_past_the_file_size_limit_is_a_store_error_and_the_next_write_works(tmp_path: Path) -> None:
    path = tmp_path / "streams.db"
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", UNDER_A_SIZE_LIMIT, str(path), str(SIZE_LIMIT), str(TASKS)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        check=False,
    )
    assert done.returncode == 0, done.stderr  # nothing but StoreError was raised
    report: dict[str, Any] = json.loads(done.stdout)

    assert report["refused"], "the writes passed the limit: the test proves nothing"
    assert report["refused_again"] == [], "the store stayed wedged after a refused write"
    assert all("the disk is full" in refused for refused in report["refused"])
    # The WAL was copied into the file and cut back, not left holding its room.
    assert all(size < SIZE_LIMIT // 4 for size in report["wal_after_retry"])

    store = SqliteStore(path)  # every write is there, once: the refused ones kept nothing
    assert len(list(store.rows())) == TASKS
    assert all([e.version for e in store.journal(f"k{i}")] == [1, 2] for i in range(TASKS))
    store.close()
    with closing_connection(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


VOLUME_BYTES = 1024 * 1024
BALLAST_BYTES = 128 * 1024


@pytest.fixture
def tiny_volume(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs volume, unmounted after the test; skipped where mount is refused."""
    volume = tmp_path / "volume"
    volume.mkdir()
    mount = shutil.which("mount")
    if mount is None:
        pytest.skip("no mount command")
    mounted = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={VOLUME_BYTES}", "tmpfs", str(volume)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode(errors='replace')}")
    try:
        yield volume
    finally:
        subprocess.run(["umount", "--lazy", str(volume)], check=True)


@pytest.fixture
def closing(tiny_volume: Path) -> Iterator[Callable[[SqliteStore], SqliteStore]]:
    """Closes the stores handed to it after the test, passed or failed, before the volume goes."""
    stores: list[SqliteStore] = []

    def keep(store: SqliteStore) -> SqliteStore:
        stores.append(store)
        return store

    yield keep
    for store in stores:
        store.close()


def test_a_full_volume_is_a_store_error_and_writes_work_once_room_frees(
    tiny_volume: Path, closing: Callable[[SqliteStore], SqliteStore]
) -> None:
    ballast = tiny_volume / "ballast"  # what the user deletes to make room
    ballast.write_bytes(b"\0" * BALLAST_BYTES)
    store = closing(SqliteStore(tiny_volume / "streams.db"))
    wal = tiny_volume / "streams.db-wal"
    made, longest_wal = 0, 0
    with pytest.raises(StoreError) as full:  # noqa: PT012 (the loop runs until it fills)
        for made in range(10_000):
            store.create(task_row(f"k{made}", 1, facts={"pad": "x" * 1000}), [entry(1, trigger="make")])
            longest_wal = max(longest_wal, wal.stat().st_size)
    # The WAL was checkpointed long before it could take the volume: the volume held the tasks.
    assert longest_wal < VOLUME_BYTES // 3
    assert made > 200
    assert "the disk is full" in str(full.value)

    # No room yet: writes are still refused, clearly. A few small ones may fit first, in WAL room
    # the refused write had taken (whether it had depends on where the checkpoint thread was).
    with pytest.raises(StoreError, match="the disk is full"):  # noqa: PT012 (until refused again)
        for other in range(1, made):
            advance(store, f"k{other}")
    ballast.unlink()
    advance(store, "k0")
    store.create(task_row("after", 1), [entry(1, trigger="make")])
    assert [e.version for e in store.journal("k0")] == [1, 2]
    assert len(list(store.rows())) == made + 1
