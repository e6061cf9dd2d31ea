"""SqliteStore's checkpoints (``_sqlite_checkpoints``) on real files: the WAL copied on the store's
own thread about once a STEP of frames, and started again long before a commit would copy it;
the thread ended when idle and on close; a forked child's own; and SQLite's own checkpoint where
there is no thread."""

from __future__ import annotations

import itertools
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

from streamlife.store import _sqlite_checkpoints
from streamlife.store._sqlite_connection import checkpoint_aside
from streamlife.store.sqlite import CHECKPOINT_PAGES, SqliteStore

from .test_store_contract import advance, make
from .test_store_sqlite_prune import wal_restarts

REPO = Path(__file__).resolve().parents[2]
STEP = 40  # frames: a dozen writes or so
FIRST = 4  # commits
WAIT = 20.0  # seconds, at most, for the thread to do what the test expects
PAUSE = 0.002  # seconds between two writes where the thread is to copy between them
# Frames the WAL holds, at most, before it starts again: a copy that ends within a pause lets the
# next write start it again, and a busy machine may make a few copies miss their pause.
LONG_BEFORE = 20 * STEP


@pytest.fixture(autouse=True)
def step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_sqlite_checkpoints, "STEP", STEP)
    monkeypatch.setattr(_sqlite_checkpoints, "FIRST", FIRST)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "streams.db"


@pytest.fixture
def store(path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(path)
    make(store, "k")
    with closing(sqlite3.connect(path)) as db:  # the WAL copied and emptied: it grows from nothing
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    advance(store, "k")  # (a WAL with a header)
    yield store
    store.close()


@pytest.fixture
def copies(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The frames the WAL held at each of the thread's copies."""
    found: list[int] = []

    def noted(db: sqlite3.Connection) -> int | None:
        frames = checkpoint_aside(db)
        if frames is not None:
            found.append(frames)
        return frames

    monkeypatch.setattr(_sqlite_checkpoints, "checkpoint_aside", noted)
    return found


def wal_frames(path: Path) -> int:
    """The frames the WAL file holds, from its length: a header of 32 bytes, then a header of 24
    and a page for each frame. Right while the WAL only grows (since the fixture emptied it)."""
    length = Path(f"{path}-wal").stat().st_size
    return max(0, length - 32) // (4096 + 24)


def wait_for(what: str, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not done():
        assert time.monotonic() < deadline, f"{what} did not happen in {WAIT} s"
        time.sleep(0.005)


def threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("checkpoints ")]


def write_until_started_again(store: SqliteStore, path: Path, most: int) -> int:
    """Write, a pause after each write, until a write starts the WAL again from its top; the frames
    it held then. Fails once it holds ``most`` frames."""
    restarts = wal_restarts(path)
    while True:
        frames = wal_frames(path)
        advance(store, "k")
        if wal_restarts(path) != restarts:
            return frames
        assert frames < most, f"the WAL was not started again before it held {most} frames"
        time.sleep(PAUSE)


def test_the_wal_is_copied_aside_and_started_again_long_before_a_commit_would_copy_it(
    store: SqliteStore, path: Path
) -> None:
    """Without the thread, the WAL starts again only after the commit that takes it past
    CHECKPOINT_PAGES copies it, all of it."""
    assert LONG_BEFORE < CHECKPOINT_PAGES
    assert threads() == []
    write_until_started_again(store, path, LONG_BEFORE)
    write_until_started_again(store, path, LONG_BEFORE)  # and again


def test_the_thread_copies_about_once_a_step_of_frames(
    store: SqliteStore, path: Path, copies: list[int]
) -> None:
    """A reader holding its snapshot keeps the WAL from starting again, so it grows as the commits
    write: the thread, woken by counting commits, copies once about every STEP frames, never at
    every commit."""
    with closing(sqlite3.connect(path)) as reader:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM journal").fetchone()  # a snapshot, held
        while wal_frames(path) < 12 * STEP:
            advance(store, "k")
            time.sleep(PAUSE / 4)
        reader.execute("COMMIT")
    wait_for("the copies", lambda: bool(copies) and not store._checkpoints._wanted)
    gaps = [later - earlier for earlier, later in itertools.pairwise(copies[1:])]  # once it has learned
    assert len(gaps) >= 4
    assert STEP / 2 <= statistics.median(gaps) <= 3 * STEP  # (more where wakes came mid-copy)
    assert min(gaps) >= STEP / 4


def test_a_store_closed_ends_its_thread_and_leaves_no_wal_behind(
    store: SqliteStore, path: Path, copies: list[int]
) -> None:
    """The last connection to close copies the WAL and deletes it: the thread's, had it stayed open,
    would have kept it."""
    for _ in range(FIRST):
        advance(store, "k")
    wait_for("a copy", lambda: bool(copies))
    assert len(threads()) == 1
    store.close()
    assert threads() == []
    assert not Path(f"{path}-wal").exists()
    store.close()  # (twice: nothing more)


def test_an_idle_thread_ends_and_the_next_wake_starts_another(
    store: SqliteStore, path: Path, copies: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sqlite_checkpoints, "IDLE", 0.05)
    for _ in range(FIRST):
        advance(store, "k")
    wait_for("a copy", lambda: bool(copies))
    wait_for("the idle thread's end", lambda: threads() == [])
    while len(copies) == 1:
        advance(store, "k")
        time.sleep(PAUSE)
    wait_for("a thread again", lambda: len(threads()) == 1)


def test_a_thread_that_cannot_start_leaves_the_wal_to_sqlites_own_checkpoint(
    store: SqliteStore, path: Path, copies: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    start = threading.Thread.start

    def refuse(self: threading.Thread) -> None:
        if self.name.startswith("checkpoints "):
            raise RuntimeError("can't start new thread")
        start(self)

    monkeypatch.setattr(threading.Thread, "start", refuse)
    for _ in range(3 * FIRST):  # three wakes
        advance(store, "k")
    assert copies == []
    monkeypatch.setattr(threading.Thread, "start", start)
    write_until_started_again(store, path, LONG_BEFORE)  # the next wake starts it
    assert copies


def test_an_in_memory_store_has_no_thread() -> None:
    store = SqliteStore(":memory:")
    make(store, "k")
    for _ in range(3 * STEP):
        advance(store, "k")
    assert threads() == []
    store.close()


# A process forks as its thread starts to copy: the child closes the store it inherited (its
# parent's connection: SQLite's own rule is not to use it across a fork), opens its own, and
# writes, a pause after each write. It exits 0 once its own thread copied the WAL and a write
# started it again; 1 if none did in 20 STEPs' writes (each writes a frame at least).
_FORKED = """
import os, sys, time
from pathlib import Path
from streamlife.store import _sqlite_checkpoints
from streamlife.store._sqlite_connection import checkpoint_aside
from streamlife.store.sqlite import SqliteStore
from tests.store.test_store_contract import advance, make
from tests.store.test_store_sqlite_checkpoints import FIRST, PAUSE, STEP, threads
from tests.store.test_store_sqlite_prune import wal_restarts

_sqlite_checkpoints.STEP, _sqlite_checkpoints.FIRST = STEP, FIRST
path = Path(sys.argv[1])
store = SqliteStore(path)
make(store, "k")
for _ in range(FIRST):
    advance(store, "k")  # the last one wakes the parent's thread
pid = os.fork()
if pid == 0:
    store.close()
    store = SqliteStore(path)
    advance(store, "k")  # (a WAL with a header, whatever the parent left)
    for _ in range(20 * STEP):
        restarts = wal_restarts(path)
        advance(store, "k")
        if wal_restarts(path) != restarts:
            os._exit(0 if threads() else 1)
        time.sleep(PAUSE)
    os._exit(1)
_, status = os.waitpid(pid, 0)
store.close()
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_a_child_forked_while_the_thread_copies_copies_its_wal_on_a_thread_of_its_own(path: Path) -> None:
    """Forked mid-checkpoint, the child would hold, in SQLite's eyes, the checkpoint's locks for
    good: its WAL would never be copied, nor started again."""
    done = subprocess.run([sys.executable, "-c", _FORKED, str(path)], cwd=REPO, timeout=60)
    assert done.returncode == 0
