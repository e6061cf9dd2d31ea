"""SqliteStore's turns at the write lock (``_sqlite_turns``), with real processes and signals: a
holder stopped or killed, a child forked in a turn, processes contending on one file."""

from __future__ import annotations

import errno
import gc
import math
import multiprocessing
import os
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from streamlife.store import _sqlite_turns
from streamlife.store.base import StoreError
from streamlife.store.sqlite import SqliteStore

from .test_store_contract import advance, assert_every_version_once, entry, make

REPO = Path(__file__).resolve().parents[2]
# A busy timeout that a write the test expects to get through never comes near (it fails the test
# instead of hanging it, should the turn never come).
LONG = 20.0
SHORT = 0.2  # for a write the test expects to give up


class Holder:
    """A ``tests.store.turn_holder`` process."""

    def __init__(self, path: Path, *flags: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.store.turn_holder", str(path), "a", *flags],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.child: int | None = None

    def expect(self, line: str) -> None:
        """Read the holder's lines up to ``line`` (noting a forked child's pid on the way)."""
        assert self.process.stdout is not None
        while (said := self.process.stdout.readline().strip()) != line:
            assert said, f"the holder ended before saying {line!r}"
            if said.startswith("child "):
                self.child = int(said.split()[1])

    def go_on(self) -> None:
        """Send the line the holder waits for."""
        assert self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()

    def let_go(self) -> None:
        self.go_on()
        self.expect("done")
        assert self.process.wait(timeout=LONG) == 0

    def kill(self) -> None:
        for pid in (self.process.pid, self.child):
            if pid is not None:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=LONG)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


@contextmanager
def holder(path: Path, *flags: str) -> Iterator[Holder]:
    running = Holder(path, *flags)
    try:
        yield running
    finally:
        running.kill()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    path = tmp_path / "streams.db"
    store = SqliteStore(path)
    make(store, "a")
    store.close()
    return path


def test_a_store_takes_turns_through_a_side_file_it_leaves_in_place(path: Path) -> None:
    store = SqliteStore(path)
    assert store.turn_file == f"{path}-turn"
    advance(store, "a")
    store.close()
    assert os.path.exists(f"{path}-turn")  # never unlinked: another process may have it open


def test_a_holder_stopped_in_its_turn_makes_another_writer_give_up_with_the_busy_error(path: Path) -> None:
    with holder(path) as held:
        held.expect("holding")
        os.kill(held.process.pid, signal.SIGSTOP)
        store = SqliteStore(path, busy_timeout=SHORT)
        with pytest.raises(StoreError, match=r"^could not write task 'a': database is locked$"):
            advance(store, "a")
        with pytest.raises(StoreError, match=r"^could not create task 'b': database is locked$"):
            make(store, "b")
        with pytest.raises(StoreError, match="database is locked"):
            store.park("tid", 1.0, {"n": 1})
        os.kill(held.process.pid, signal.SIGCONT)
        held.let_go()
        # This store's thread that waited in vain got the turn once the holder let it go, and let
        # it go at once: another process, then this store, write.
        other = SqliteStore(path, busy_timeout=LONG)
        advance(other, "a")
        advance(store, "a")
    assert_every_version_once(store, "a", 4)
    store.close()
    other.close()


def test_a_busy_timeout_of_zero_gives_up_at_once(path: Path) -> None:
    with holder(path) as held:
        held.expect("holding")
        store = SqliteStore(path, busy_timeout=0)
        with pytest.raises(StoreError, match="database is locked"):
            advance(store, "a")
        # No thread left blocked for no one: once the holder lets go, the next write takes the
        # lock itself, whenever that thread would have run.
        assert not store._turns._blocked
        held.let_go()
        advance(store, "a")
    store.close()


def test_a_writer_waiting_for_its_turn_gets_it_when_the_holder_lets_go(path: Path) -> None:
    store = SqliteStore(path, busy_timeout=LONG)
    with holder(path) as held:
        held.expect("holding")
        held.go_on()
        advance(store, "a")  # (waits for the holder's commit, or not at all if it came first)
        held.expect("done")
    assert_every_version_once(store, "a", 3)
    store.close()


def test_a_holder_killed_mid_transaction_lets_its_turn_go(path: Path) -> None:
    with holder(path) as held:
        held.expect("holding")
        held.kill()
        store = SqliteStore(path, busy_timeout=LONG)
        advance(store, "a")
    assert_every_version_once(store, "a", 2)  # the killed holder's write was never committed
    store.close()


@pytest.mark.parametrize("waits", [False, True], ids=["held", "waited"])
def test_a_child_forked_in_a_turn_does_not_keep_it_once_its_parent_dies(path: Path, waits: bool) -> None:
    # A flock belongs to the open file, which a forked child shares: were the child to keep its
    # copy open, the turn would stay taken after its parent died, until the child exited.
    store = SqliteStore(path, busy_timeout=LONG)
    flags = ("--fork-child", "--wait-first") if waits else ("--fork-child",)
    with holder(path, *flags) as held:
        if waits:  # the holder forks while it waits for the turn this store holds
            held.expect("open")
            with store.lock("a"):
                held.go_on()
                held.expect("waiting")
        held.expect("holding")
        assert held.child is not None
        os.kill(held.process.pid, signal.SIGKILL)
        held.process.wait(timeout=LONG)
        os.kill(held.child, 0)  # (the child lives on)
        advance(store, "a")
    assert_every_version_once(store, "a", 2)
    store.close()


def contend(path: str, rounds: int, start: Any, results: Any) -> None:
    """One process of ``test_processes_...``: ``rounds`` times, an event, then a batch of two."""
    try:
        start.wait(timeout=60)
        store = SqliteStore(path)
        try:
            written = 0
            for _ in range(rounds):
                advance(store, "a")
                with store.batch():
                    for _ in range(2):
                        with store.lock("a") as txn:
                            txn.write([entry(txn.version + 1)], None)
                written += 3
        finally:
            store.close()
        results.put((written, None))
    except BaseException as exc:
        results.put((0, repr(exc)))
        raise


def test_processes_contending_in_turns_write_every_version_once(path: Path) -> None:
    processes, rounds = 2, 150
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(processes), context.Queue()
    workers = [
        context.Process(target=contend, args=(str(path), rounds, start, results)) for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    assert outcomes == [(3 * rounds, None)] * processes
    assert [worker.exitcode for worker in workers] == [0] * processes
    store = SqliteStore(path)
    assert_every_version_once(store, "a", 1 + processes * 3 * rounds)
    store.close()


def test_an_in_memory_store_has_no_turns() -> None:
    store = SqliteStore(":memory:")
    assert store.turn_file is None
    make(store, "a")
    advance(store, "a")
    assert_every_version_once(store, "a", 2)
    store.close()


def test_a_side_file_that_cannot_be_opened_leaves_writes_to_sqlites_busy_wait(tmp_path: Path) -> None:
    path = tmp_path / "streams.db"
    os.mkdir(f"{path}-turn")  # (a directory: no file can be opened there, even by root)
    store = SqliteStore(path)
    assert store.turn_file is None
    make(store, "a")
    advance(store, "a")
    assert_every_version_once(store, "a", 2)
    store.close()


@pytest.mark.parametrize("bad", [-1, -0.5, math.nan, math.inf, 3e6, True, "5", None])
def test_a_busy_timeout_is_a_number_of_seconds(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(ValueError, match="busy_timeout is a number of seconds"):
        SqliteStore(tmp_path / "streams.db", busy_timeout=bad)
    assert not os.path.exists(tmp_path / "streams.db")  # (refused before the file is opened)


def test_a_store_dropped_unclosed_closes_its_side_file(path: Path) -> None:
    def side_files_open() -> int:
        side = f"{path}-turn"
        return sum(os.path.realpath(f"/proc/self/fd/{fd}") == side for fd in os.listdir("/proc/self/fd"))

    store = SqliteStore(path)
    advance(store, "a")
    assert side_files_open() == 1
    del store
    gc.collect()
    assert side_files_open() == 0


def test_a_file_system_whose_flock_fails_leaves_writes_to_sqlites_busy_wait(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_flock(fd: int, operation: int, /) -> None:
        raise OSError(errno.ENOLCK, "No locks available")  # (as NFS without a lock daemon answers)

    monkeypatch.setattr(_sqlite_turns, "_flock", no_flock)
    store = SqliteStore(path)
    assert store.turn_file is None
    advance(store, "a")
    assert_every_version_once(store, "a", 2)
    store.close()


def test_a_flock_that_fails_later_fails_its_write_alone(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SqliteStore(path)
    real = _sqlite_turns._flock

    def failing(fd: int, operation: int, /) -> None:
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(_sqlite_turns, "_flock", failing)
    with pytest.raises(StoreError, match="could not take a turn at the write lock: Bad file descriptor"):
        advance(store, "a")
    monkeypatch.setattr(_sqlite_turns, "_flock", real)
    advance(store, "a")
    assert_every_version_once(store, "a", 2)
    store.close()


def test_a_waiting_thread_that_cannot_start_leaves_the_next_write_its_turn(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteStore(path, busy_timeout=LONG)
    with holder(path) as held:
        held.expect("holding")

        def cannot_start(self: threading.Thread) -> None:
            raise RuntimeError("can't start new thread")

        with monkeypatch.context() as patched:
            patched.setattr(threading.Thread, "start", cannot_start)
            with pytest.raises(RuntimeError, match="can't start new thread"):
                advance(store, "a")
        held.let_go()
    advance(store, "a")  # (before: every write waited for a thread that never came, and gave up)
    assert_every_version_once(store, "a", 3)
    store.close()


def test_a_store_opened_through_a_link_takes_the_turns_of_the_file_it_names(path: Path) -> None:
    link = path.parent / "link.db"
    link.symlink_to(path)
    store = SqliteStore(link)
    assert store.turn_file == f"{path}-turn"
    advance(store, "a")
    store.close()
    assert not os.path.exists(f"{link}-turn")


def test_the_side_file_takes_the_database_s_permissions_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "streams.db"
    path.touch(mode=0o664)
    path.chmod(0o664)
    old = os.umask(0o077)
    try:
        store = SqliteStore(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(f"{path}-turn").st_mode) == 0o664  # (the group shares the turns)
    store.close()
