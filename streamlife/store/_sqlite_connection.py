"""SqliteStore's connection: how the file is opened and set up, how sqlite3's errors become the
store's, and how the WAL is kept within the room the disk has.

The file is in WAL mode. A commit reaches the OS before it returns (``synchronous = NORMAL``), so
it survives the process crashing; only a power loss or an OS crash may take back the last commits.
The WAL is checkpointed before it can take more than a share of the disk's free room, and cut back
once checkpointed (``journal_size_limit``). After a write the disk refused, it is copied into the
file and cut to nothing where it can be (``give_room_back``): so once there is room again, writes
work again.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Final

from ._sqlite_schema import migrate
from ._sqlite_turns import Turns
from .base import StoreConflict, StoreError

# How long a writer waits for another process's transaction, unless the store says otherwise.
BUSY_TIMEOUT_MS: Final = 30_000
MAX_BUSY_TIMEOUT: Final = 2_000_000  # seconds: SQLite keeps it in milliseconds, in 32 bits

CACHE_KIB: Final = 64 * 1024  # the page cache's ceiling, per connection
CHECKPOINT_PAGES: Final = 10_000  # how long the WAL grows (in pages) before a commit checkpoints it
# Less where the disk has less room: the WAL grows to at most this share of the free space (but no
# shorter than MIN_CHECKPOINT_PAGES), so a checkpoint always finds room to copy it into the file.
CHECKPOINT_SHARE_OF_FREE: Final = 4  # a quarter
MIN_CHECKPOINT_PAGES: Final = 16
# What the WAL file is cut back to once checkpointed, at most (SQLite otherwise keeps it at its
# longest, for reuse, holding that much disk for good): twice the length a commit checkpoints it
# at, so that a WAL that grew only to that length is never cut. A cut is made in the commit that
# starts the WAL again, with the write lock held, and takes the longer the more it gives back.
WAL_SIZE_LIMIT: Final = 64 * 1024 * 1024


def connect(path: str, turns: Turns) -> sqlite3.Connection:
    """The file at ``path``, opened for every thread of this process, in WAL mode, at the current
    schema, waiting ``turns.timeout`` seconds at most for another process's write. The caller makes
    the threads take turns; ``turns`` are opened here, once the file exists, and taken for the
    migration's write."""
    with errors(f"could not open {path!r}"):
        db = sqlite3.connect(
            path,
            timeout=turns.timeout,
            isolation_level=None,  # autocommit: every transaction is an explicit BEGIN/COMMIT
            check_same_thread=False,  # threads take turns through the store's lock
        )
    try:
        with errors(f"could not set up {path!r}"):
            db.execute(f"PRAGMA busy_timeout = {round(turns.timeout * 1000)}")
            _set_wal_mode(db, path, turns.timeout)
            # NORMAL in WAL mode: FULL would fsync every event's write, and a restart after a crash
            # of this process needs no more than NORMAL keeps.
            db.execute("PRAGMA synchronous = NORMAL")
            # Up to CACHE_KIB of pages in this process (SQLite's default is 2 MiB): the live tasks'
            # rows and recent journal pages stay cached, so an event reads no page back from the
            # OS. Taken as pages are read, so a small store costs what it holds.
            db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            # A checkpoint copies the WAL's pages into the file and syncs it: the one sync a NORMAL
            # commit pays for. Events dirty pages all over the journal's index, so a longer WAL
            # takes fewer syncs, and copies a page written many times once.
            fit_wal_to_disk(db, path)
        turns.open()
        with errors(f"could not set up {path!r}"):
            migrate(db, path, lambda: in_turn(turns, f"could not set up {path!r}"))
    except BaseException:
        turns.close()
        db.close()
        raise
    return db


def take_turn(turns: Turns, what: str) -> None:
    """Wait for this process's turn at the write lock (``_sqlite_turns``); on giving up, the error
    SQLite's busy timeout gives (``no_turn``)."""
    if not turns.take():
        raise no_turn(what)


def no_turn(what: str) -> StoreError:
    """The error of a write whose turn did not come within the busy timeout: the one SQLite gives
    when its busy timeout runs out."""
    return StoreError(f"{what}: database is locked")


@contextmanager
def in_turn(turns: Turns, what: str) -> Iterator[None]:
    """A block in this process's turn at the write lock (``take_turn``)."""
    take_turn(turns, what)
    try:
        yield
    finally:
        turns.release()


def check_busy_timeout(seconds: float) -> float:
    """A store's busy timeout, checked: a number of seconds, from 0 to MAX_BUSY_TIMEOUT."""
    number = seconds if isinstance(seconds, int | float) and not isinstance(seconds, bool) else -1
    if not 0 <= number <= MAX_BUSY_TIMEOUT:  # (NaN is refused too)
        raise ValueError(
            f"a SqliteStore's busy_timeout is a number of seconds, from 0 to {MAX_BUSY_TIMEOUT:,},"
            f" got {seconds!r}"
        )
    return float(number)


def give_room_back(db: sqlite3.Connection, path: str) -> None:
    """After a write the disk refused, rolled back: give the WAL's room back if this connection
    can. The WAL holds every commit since the last checkpoint; left as it is, on a full volume, it
    holds the room a checkpoint needs for good. Copied into the file and cut to nothing, it frees
    what the file did not take, and the WAL's limits are fitted to the room left."""
    with suppress(sqlite3.Error):  # another process reading may hold it up: then the next failure
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with suppress(sqlite3.Error):
        fit_wal_to_disk(db, path)


def fit_wal_to_disk(db: sqlite3.Connection, path: str) -> None:
    """How long the WAL grows before a commit checkpoints it (CHECKPOINT_PAGES, or a share of the
    disk's free room where that is less), and what it is cut back to once checkpointed."""
    (page_size,) = db.execute("PRAGMA page_size").fetchone()
    pages = CHECKPOINT_PAGES
    free = _free_bytes(path)
    if free is not None:
        pages = max(MIN_CHECKPOINT_PAGES, min(pages, free // CHECKPOINT_SHARE_OF_FREE // page_size))
    db.execute(f"PRAGMA wal_autocheckpoint = {pages}")
    db.execute(f"PRAGMA journal_size_limit = {min(WAL_SIZE_LIMIT, 2 * pages * page_size)}")


def keep_wal_long(db: sqlite3.Connection) -> None:
    """Until ``fit_wal_to_disk`` is called again, a commit of ``db``'s that starts the WAL again
    leaves the file as long as it is, instead of cutting it back to journal_size_limit. For a
    prune: its batches fill the WAL again at once, and a WAL cut back and grown again costs the
    commit that next starts it a sync of the file's new length (the cut's blocks given back), with
    the write lock held."""
    with suppress(sqlite3.Error):  # (then cut as usual)
        db.execute("PRAGMA journal_size_limit = -1")


def checkpointer(path: str) -> sqlite3.Connection:
    """A second connection to ``path``, for ``checkpoint_aside`` alone: it never waits for a lock
    (busy timeout 0), and holds none between its statements."""
    with errors(f"could not open {path!r}"):
        return sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)


def checkpoint_aside(db: sqlite3.Connection) -> int | None:
    """Copy the WAL into the file while no write lock is held (PASSIVE: writers go on meanwhile),
    so that no writer's commit is left to copy it: a commit that finds the WAL past
    wal_autocheckpoint then copies only the pages written since. The frames the WAL held, or None
    where the checkpoint failed: that is left to the commits' own, as without this."""
    try:
        (_, frames, _) = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    except sqlite3.Error:
        return None
    return int(frames)


class errors:  # (lower case: it reads as a word in ``with errors(...)``)
    """sqlite3's errors as the store's, in a ``with`` block: a constraint is a conflict, anything
    else a failure. (A class, not a generator: each event's write passes through several, and a
    generator's way in and out costs more than the statements they wrap.)"""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: object) -> None:
        if isinstance(exc, sqlite3.IntegrityError):
            raise StoreConflict(f"{self.what}: {exc}") from exc
        if isinstance(exc, sqlite3.Error):
            if out_of_room(exc):
                raise StoreError(
                    f"{self.what}: {exc}: the disk is full, or the file may grow no more (a size limit)."
                    " Nothing of this write was kept; writes work again once there is room"
                ) from exc
            raise StoreError(f"{self.what}: {exc}") from exc


# A write the disk refused: SQLite says SQLITE_FULL when a write falls short, SQLITE_IOERR when it
# fails whole (a file past RLIMIT_FSIZE, say: EFBIG).
_OUT_OF_ROOM: Final = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR})


def out_of_room(exc: BaseException) -> bool:
    """Whether ``exc`` (sqlite3's, or the store's made from it) is a write the disk refused."""
    cause = exc if isinstance(exc, sqlite3.Error) else exc.__cause__
    code = getattr(cause, "sqlite_errorcode", None)
    return isinstance(cause, sqlite3.Error) and code is not None and code & 0xFF in _OUT_OF_ROOM


def _set_wal_mode(db: sqlite3.Connection, path: str, timeout: float) -> None:
    """Put the file in WAL mode (once set, it stays). Processes that open a new file together each
    want the file to themselves for the switch, and SQLite answers "locked" at once, without
    waiting: so wait here, as long as busy_timeout would."""
    deadline = time.monotonic() + timeout
    pause = 0.001
    while True:
        try:
            (mode,) = db.execute("PRAGMA journal_mode = WAL").fetchone()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
            continue
        if str(mode).lower() not in ("wal", "memory"):  # ":memory:" has no WAL, nor other processes
            raise StoreError(f"{path!r} cannot be in WAL mode (it is in {mode!r} mode)")
        return


def _free_bytes(path: str) -> int | None:
    """The room left for the store's files on their volume; None where it cannot be told."""
    try:
        found = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except (OSError, AttributeError):  # ":memory:"'s directory is ours; no statvfs on Windows
        return None
    return found.f_bavail * found.f_frsize
