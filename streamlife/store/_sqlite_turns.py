"""SqliteStore's turns: the processes that write one file take turns at its write lock through an
exclusive ``flock`` on a side file (``<file>-turn``), taken before ``BEGIN IMMEDIATE`` and let go
after the COMMIT or ROLLBACK.

Why: a writer that finds SQLite's write lock held waits in SQLite's busy handler, which sleeps
(1, 2, 5, 10 ... up to 100 ms) and is not woken when the lock is let go. A write holds the lock
for far less than the shortest sleep, so under contention writers spend their time asleep while
the lock is free. A writer blocked in ``flock`` is woken by the kernel the moment the holder lets
go. SQLite's lock still guards the file: a turn only orders the writers that take turns, and a
writer that takes none (the sqlite3 shell, an older streamlife) is waited for in the busy handler
as before. So a write waits at most the busy timeout for its turn, and then, behind such a writer
only, as long again for the lock.

* Uncontended, a turn is one ``flock(LOCK_EX | LOCK_NB)`` and one ``flock(LOCK_UN)``.
* Contended, the blocking ``flock`` runs on a thread of the turns' own, and the writer waits for it
  at most the busy timeout: then it gets the error a busy timeout gives (``database is locked``).
  If that thread gets the lock after its writer gave up, it lets it go at once.
* A lock taken by ``flock`` belongs to the open file, which a forked child shares. A child forked
  while this process holds, or waits for, its turn would keep the lock held after this process
  died, until the child exits. So a child closes its copy of the side file at once (its own
  writes, if any, open it again): the lock lives and dies with the process that took it.
* The side file is named after the database file's real path (links resolved), so processes that
  open the file by different names take turns alike. It is opened close-on-exec, created if missing
  with the database file's permissions, and for writing where it may be (NFS grants an exclusive
  ``flock`` only then). It is never unlinked: a process that had opened it before it was unlinked
  would lock a file that others no longer open, and two writers would hold a turn at once.
* Each store has its own turns (a ``flock`` per open file): two stores of one file in one process
  take turns as two processes do.
* A commit that checkpoints the WAL (SQLite's autocheckpoint) does so before it returns, so in its
  turn: the other processes' writers wait for the checkpoint, where SQLite alone lets them write
  meanwhile. The store's own thread has copied most of the WAL by then (``_sqlite_checkpoints``),
  outside any turn.
* A file no other process can open (``:memory:``, ``""``), or a side file that cannot be opened
  or locked (a directory this user may not write in, a file system whose ``flock`` fails, a
  platform with no ``flock``), has no turns: writes wait in SQLite's busy handler, as without
  them (``path`` is then None). A ``flock`` that fails later fails its write (``StoreError``).
"""

from __future__ import annotations

import os
import threading
import weakref
from contextlib import suppress
from typing import Final

from .base import StoreError

try:
    import fcntl
except ImportError:  # (Windows: no flock, so no turns)
    _HAVE_FLOCK = False
    _NOW = _WAIT = _LET_GO = 0

    def _flock(fd: int, operation: int, /) -> None:
        raise OSError("no flock here")
else:
    _HAVE_FLOCK = True
    _flock = fcntl.flock
    _NOW, _WAIT, _LET_GO = fcntl.LOCK_EX | fcntl.LOCK_NB, fcntl.LOCK_EX, fcntl.LOCK_UN

SUFFIX: Final = "-turn"
# The names sqlite3 gives a file of the process's own, which no other process can open.
PRIVATE_FILES: Final = frozenset({":memory:", ""})
IDLE: Final = 10.0  # seconds the waiting thread waits for the next writer that waits, then ends


class Turns:
    """One store's turns at its file's write lock. Taken and let go by one thread at a time (the
    store's lock serializes them); the waiting thread is the only other that touches them."""

    def __init__(self, database: str, timeout: float) -> None:
        self.timeout = timeout
        self.path: str | None = None  # the side file, once open; None where there are no turns
        self._database = database
        self._fd = -1  # the side file, to lock; -1 where there are no turns (or no more)
        self._file = -1  # the side file while it is open, even once close() is called
        self._held = False
        # The waiting thread's state, guarded by _changed: the thread is blocked in flock
        # (_blocked), a writer wants what it gets (_wanted), and what it got (_granted).
        self._changed = threading.Condition(threading.Lock())
        self._blocked = False
        self._wanted = False
        self._granted = False
        self._closed = False
        self._waiter: threading.Thread | None = None

    def open(self) -> None:
        """Open the side file (creating it with the database's permissions), once the database
        file exists; or have no turns, where it cannot be."""
        database = self._database
        if not _HAVE_FLOCK or database in PRIVATE_FILES or self._fd >= 0:
            return
        # The file's real name: processes that open it through different links take turns alike.
        path = os.path.realpath(database) + SUFFIX
        fd = _open(path, _mode_of(database))
        if fd >= 0 and not _locks(fd):  # (a file system whose flock fails: no turns)
            os.close(fd)
            fd = -1
        self._adopt(fd)
        if self._fd >= 0:
            self.path = path

    def _adopt(self, fd: int) -> None:
        """Take ``fd`` as the side file (-1: none): closed once, by ``_close_file``, or when the
        turns are dropped unclosed (as sqlite3 closes a connection dropped unclosed)."""
        self._fd = self._file = fd
        if fd >= 0:
            self._closer = weakref.finalize(self, os.close, fd)
            _LIVE.add(self)

    def take(self) -> bool:
        """Wait for this process's turn, at most ``timeout`` seconds: whether it came."""
        fd = self._fd
        if fd < 0:  # (no turns)
            return True
        # The waiting thread may still be blocked in flock for a writer that gave up: a flock on
        # the same open file would then succeed at once, and the thread, once it gets the lock,
        # would let go of this writer's. So only while it is not blocked (it clears _blocked
        # after letting go of a lock it got for no one).
        if not self._blocked:
            try:
                _flock(fd, _NOW)
            except BlockingIOError:
                pass
            except OSError as error:  # (it worked when the file was opened: a fault of the moment)
                raise StoreError(f"could not take a turn at the write lock: {error.strerror}") from error
            else:
                self._held = True
                return True
        if self.timeout <= 0:  # (no waiting: and no thread to leave blocked for no one)
            return False
        return self._wait()

    def release(self) -> None:
        if self._held:
            self._held = False
            _flock(self._fd, _LET_GO)

    def close(self) -> None:
        """Close the side file. The waiting thread, if it is blocked in flock, closes it once it
        gets the lock (and lets it go)."""
        if self._fd < 0:
            return
        self.release()
        with self._changed:
            self._closed = True
            self._fd = -1
            self._changed.notify_all()
            if not self._blocked:
                self._close_file()

    def _close_file(self) -> None:
        self._closer()
        self._file = -1
        _LIVE.discard(self)

    def _wait(self) -> bool:
        got = False
        with self._changed:
            self._wanted = True
            try:
                if not self._blocked:
                    self._blocked = True
                    if self._waiter is None:
                        waiter = threading.Thread(
                            target=self._block, args=(self._fd,), name=f"turns {self.path}", daemon=True
                        )
                        try:
                            waiter.start()
                        except BaseException:  # (no thread: the next write tries the lock itself)
                            self._blocked = False
                            raise
                        self._waiter = waiter  # (the thread reads it only under _changed, held here)
                    else:
                        self._changed.notify_all()
                got = self._changed.wait_for(lambda: self._granted, self.timeout)
            finally:
                self._wanted = False
                if self._granted:  # (else, the thread lets go of the lock if it gets it)
                    self._granted = False
                    if got:
                        self._held = True
                    else:  # granted, but this writer was interrupted meanwhile
                        _flock(self._fd, _LET_GO)
        return got

    def _block(self, fd: int) -> None:
        """The waiting thread: block in flock whenever a writer asks (``_blocked``), then hand the
        lock to the writer, or let it go if the writer gave up. It ends once idle for IDLE seconds
        (a writer that waits again starts another)."""
        while True:
            try:
                _flock(fd, _WAIT)  # (retried by Python if a signal interrupts it)
            except OSError:  # (its writer waits out its time; the next write tries the lock itself)
                with self._changed:
                    self._blocked = False
                    self._waiter = None
                    if self._closed:
                        self._close_file()
                return
            with self._changed:
                if self._wanted and not self._closed:
                    self._granted = True
                else:
                    _flock(fd, _LET_GO)
                self._blocked = False  # (only once any lock got for no one is let go: see take)
                self._changed.notify_all()
                if self._closed:  # while this thread was blocked: the side file is its to close
                    self._close_file()
                # Wait for the next writer that waits (close() closes the side file meanwhile).
                self._changed.wait_for(lambda: self._blocked or self._closed, IDLE)
                if not self._blocked:  # idle, or closed
                    self._waiter = None
                    return

    def _after_fork_in_child(self) -> None:
        """In a forked child: close the side file without letting go of the lock (the parent's),
        and open it again, so that the child's own turns are its own."""
        if self._file >= 0:
            self._closer()
        self._changed = threading.Condition(threading.Lock())  # (another thread may have held it)
        self._held = self._blocked = self._wanted = self._granted = False
        self._waiter = None  # (threads do not survive a fork)
        assert self.path is not None  # (a side file was open)
        _LIVE.discard(self)
        self._adopt(-1 if self._closed else _open(self.path, None))


_LIVE: Final[weakref.WeakSet[Turns]] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for turns in list(_LIVE):
        turns._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _open(path: str, mode: int | None) -> int:
    """The side file, opened (created if missing) with the database's permissions, or -1 where it
    cannot be. For writing where it may be (NFS grants an exclusive flock only on a file open for
    writing), else for reading."""
    for flags in (os.O_RDWR, os.O_RDONLY):
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, 0o644 if mode is None else mode)
        except OSError:
            continue
        if mode is not None:
            with suppress(OSError):  # (not this user's file: its mode is its owner's business)
                os.fchmod(fd, mode)  # as given, not as the umask leaves it
        return fd
    return -1


def _locks(fd: int) -> bool:
    """Whether ``flock`` works on ``fd``'s file system: a lock taken and let go, or one another
    process holds."""
    try:
        _flock(fd, _NOW)
    except BlockingIOError:
        return True
    except OSError:
        return False
    _flock(fd, _LET_GO)
    return True


def _mode_of(database: str) -> int | None:
    """The database file's permissions, for the side file (as SQLite does for its -wal and -shm)."""
    try:
        return os.stat(database).st_mode & 0o666
    except OSError:
        return None
