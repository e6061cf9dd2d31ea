"""SqliteStore's checkpoints: the WAL is copied into the file on a thread of the store's own, so
that a writer's commit copies little of it.

Why: SQLite checkpoints the WAL in the commit that finds it past ``wal_autocheckpoint``. That
commit copies every page the WAL holds and syncs the file with the write lock held, and every
write waiting for its turn waits for it too: those are a store's slowest writes by far, and a
served callback's worst latency (bench/RESULTS.md). A PASSIVE checkpoint on another connection
copies the same pages while the writers go on.

* The writer counts its transactions; every so many, it wakes the thread. The thread copies what
  the WAL holds (``checkpoint_aside``), and from the frames the WAL held then learns how many a
  transaction writes: it sets how many transactions make the next wake, so that the WAL gains
  about STEP frames between two copies. Counting costs a commit nothing, where reading the WAL's
  length would take a system call, and the count of frames itself is only in the ``-shm`` file,
  which no one but SQLite may open: closing a file drops every POSIX lock the process holds on
  it, SQLite's too.
* Copied whole before the next write transaction, the WAL is started again from its top by it.
  Under a steady load a transaction is open whenever a copy ends, so it never is: the commit that
  takes the WAL past ``wal_autocheckpoint`` then copies what was written since the thread's last
  copy (about STEP frames), where it would copy the whole WAL without the thread, and the next
  transaction starts the WAL again.
* Where the thread falls behind (a reader holds an older snapshot, a writer fills the WAL faster
  than it is copied, the thread could not start), that commit copies what is left, as without the
  thread.
* The thread ends once idle for IDLE seconds (the next wake starts another); closing the store
  ends it and closes its connection.
* A fork waits for any copy in progress to end, and none starts until it is done. A child forked
  mid-checkpoint would inherit SQLite's note that a connection of its process holds the
  checkpoint's locks, which no thread of the child lets go: no checkpoint of the child's own could
  be made on that file, nor its WAL started again. The child starts with no thread: its writes
  wake one of its own.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Final

from ._sqlite_connection import checkpoint_aside, checkpointer
from ._sqlite_turns import PRIVATE_FILES
from .base import StoreError

# Frames the WAL gains between two copies, aimed at: SQLite's own default wal_autocheckpoint.
# Less would copy, and sync, more often; more leaves more to the commit that takes the WAL past
# wal_autocheckpoint (bench/RESULTS.md).
STEP: Final = 1_000
FIRST: Final = 16  # transactions before the first wake, while the thread knows nothing of them
IDLE: Final = 10.0  # seconds the thread waits for the next wake, then ends


class Checkpoints:
    """One store's checkpoints. ``after_write`` is called by one thread at a time (in the store's
    lock); the checkpointing thread is the only other that touches them."""

    def __init__(self, database: str) -> None:
        self._path = database
        self._private = database in PRIVATE_FILES  # (no WAL)
        self._writes = 0  # every write transaction so far (the writer's)
        self._due = FIRST  # the count of writes that wakes the thread next (the writer's)
        self._every = FIRST  # writes between two wakes (the thread's, read by the writer)
        self._counted = 0  # the writes counted at the thread's last copy (the thread's)
        self._frames = 0  # the frames the WAL held at its last copy (the thread's)
        self._changed = threading.Condition(threading.Lock())
        self._wanted = False  # the thread is to copy the WAL (again)
        self._closed = False
        self._thread: threading.Thread | None = None
        # Held by the thread while it copies: taken by a fork, and by a checkpoint of the store's
        # own that would give up at once if it found a copy in progress.
        self.copying = threading.Lock()
        _LIVE.add(self)

    def after_write(self) -> None:
        """After a write transaction (committed or rolled back), in the writer's thread: wake the
        thread every ``_every`` of them."""
        if self._private:
            return
        self._writes += 1
        if self._writes >= self._due:
            self._due = self._writes + self._every
            self._wake()

    def close(self) -> None:
        """End the thread, once its checkpoint (if any) is done, and close its connection."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()
        _LIVE.discard(self)

    def _wake(self) -> None:
        with self._changed:
            if self._closed:
                return
            self._wanted = True
            if self._thread is not None:
                self._changed.notify_all()
                return
            thread = threading.Thread(target=self._copy, name=f"checkpoints {self._path}", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # (no thread: SQLite's own checkpoint copies the WAL)
                self._wanted = False
                return
            self._thread = thread

    def _copy(self) -> None:
        """The thread: copy the WAL each time it is woken; end once idle or closed."""
        try:
            db = checkpointer(self._path)
        except StoreError:  # (the store's own connection opened it: a fault of the moment)
            with self._changed:
                self._wanted = False
                self._thread = None
            return
        try:
            while True:
                with self._changed:
                    self._changed.wait_for(lambda: self._wanted or self._closed, IDLE)
                    if self._closed or not self._wanted:
                        self._thread = None
                        return
                    self._wanted = False
                writes = self._writes
                with self.copying:
                    frames = checkpoint_aside(db)
                if frames is not None:
                    self._learn(frames, writes)
        finally:
            db.close()

    def _learn(self, frames: int, writes: int) -> None:
        """From the frames the WAL holds after ``writes`` write transactions, how many make about
        STEP frames: the next wakes come that many apart."""
        gained, counted = frames - self._frames, writes - self._counted
        self._frames, self._counted = frames, writes
        # (Fewer frames than at the last copy: the WAL started again from its top since, after
        # writes that no count tells: the last count stays.)
        if gained > 0 and counted > 0:  # (at most STEP: a commit writes a frame at least)
            self._every = max(1, min(STEP, round(STEP * counted / gained)))

    def _after_fork_in_child(self) -> None:
        """In a forked child: no thread (threads do not survive a fork), and locks of its own."""
        self._changed = threading.Condition(threading.Lock())  # (another thread may have held it)
        self.copying = threading.Lock()
        self._thread = None
        self._wanted = False


_LIVE: Final[weakref.WeakSet[Checkpoints]] = weakref.WeakSet()
_HELD: list[Checkpoints] = []  # the checkpoints whose copying a fork in progress holds


def _before_fork() -> None:
    _HELD[:] = list(_LIVE)
    for checkpoints in _HELD:
        checkpoints.copying.acquire()


def _after_fork_in_parent() -> None:
    for checkpoints in _HELD:
        checkpoints.copying.release()
    _HELD.clear()


def _after_fork_in_child() -> None:
    _HELD.clear()
    for checkpoints in list(_LIVE):
        checkpoints._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
    )
