"""SqliteStore: the Store protocol in one SQLite file, which several processes may share.

The file is in WAL mode: readers never wait for the writer, and a commit appends to the log instead
of rewriting pages. An event's write is one ``BEGIN IMMEDIATE`` transaction: it takes the file's
write lock *before* reading the task's version, so the version a writer works from is the one its
write replaces (another process waits on ``busy_timeout`` meanwhile, instead of failing at once).
The row's version is still checked by the write itself (``UPDATE ... WHERE version = ?``) and the
journal's primary key is (key, version): a writer from a stale copy gets ``StoreConflict``.

In this process, one connection serves every thread, guarded by a lock held for a whole ``lock()``
block (blocks are short: the Fleet does no I/O inside them but the store's own). A thread's
``lock()`` blocks do not nest, and ``create`` is not called inside one: each is its own transaction.
Inside ``batch()`` they are savepoints of the batch's one transaction, which holds the connection
(and the file's write lock) until it commits: one commit for many events.

A disk with no room left refuses a write with ``StoreError`` and keeps nothing of it. The WAL is
checkpointed before it can take more than a share of the room the disk had, cut back once
checkpointed (``journal_size_limit``), and, after a refused write, copied into the file and cut to
nothing where it can be: so once there is room again, writes work again.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any, Final

from streamlife.jsontext import to_json
from streamlife.lifecycle import TERMINAL

from .base import (
    DeadLetter,
    JournalEntry,
    ParkedCallback,
    StoreConflict,
    StoreError,
    TaskRow,
    check_numbering,
    dead_letter_fields,
    dead_letter_ids,
    dead_letter_page,
)

BUSY_TIMEOUT_MS: Final = 30_000  # how long a writer waits for another process's transaction

_TERMINAL_STATES: Final = frozenset(state.value for state in TERMINAL)

CACHE_KIB: Final = 64 * 1024  # the page cache's ceiling, per connection
CHECKPOINT_PAGES: Final = 10_000  # how long the WAL grows (in pages) before a commit checkpoints it
# Less where the disk has less room: the WAL grows to at most this share of the free space (but no
# shorter than MIN_CHECKPOINT_PAGES), so a checkpoint always finds room to copy it into the file.
CHECKPOINT_SHARE_OF_FREE: Final = 4  # a quarter
MIN_CHECKPOINT_PAGES: Final = 16
# What the WAL file is cut back to once checkpointed (SQLite otherwise keeps it at its longest, for
# reuse, holding that much disk for good).
WAL_SIZE_LIMIT: Final = 4 * 1024 * 1024

# The schema, one migration a step: PRAGMA user_version counts the steps applied. Append, never edit.
_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """CREATE TABLE tasks (
            key TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            task_id TEXT,
            state TEXT NOT NULL,
            terminal INTEGER NOT NULL,  -- state is stopped, ended or failed: rows() asks for these last
            version INTEGER NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            facts TEXT NOT NULL  -- JSON
        )""",
        "CREATE INDEX tasks_task_id ON tasks (task_id)",
        "CREATE INDEX tasks_open ON tasks (terminal, created_at)",
        """CREATE TABLE journal (
            key TEXT NOT NULL,
            version INTEGER NOT NULL,
            at REAL NOT NULL,
            trigger TEXT NOT NULL,
            from_state TEXT NOT NULL,
            to_state TEXT NOT NULL,
            args TEXT,  -- JSON, or NULL for a trigger without an argument
            PRIMARY KEY (key, version)
        )""",
        """CREATE TABLE parked (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- arrival order; never reused
            task_id TEXT NOT NULL,
            at REAL NOT NULL,
            payload TEXT NOT NULL  -- JSON
        )""",
        "CREATE INDEX parked_task_id ON parked (task_id)",
    ),
    (  # 2: orphans' task_ids, claimed once
        "CREATE TABLE claims (task_id TEXT PRIMARY KEY, key TEXT NOT NULL)",
    ),
    (  # 3: payloads the parser refused
        """CREATE TABLE dead_letters (
            id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, even after a purge
            at REAL NOT NULL,
            reason TEXT NOT NULL,
            field TEXT,
            size INTEGER NOT NULL,  -- the body's length as received
            body BLOB NOT NULL  -- the body as received, up to DEAD_LETTER_MAX_BODY bytes
        )""",
    ),
)

_ROW_COLUMNS: Final = "key, kind, task_id, state, version, created_at, updated_at, facts"
# The row's columns that an index holds. SQLite rewrites an index's entry whenever an UPDATE sets one
# of its columns, changed or not: at 100,000 tasks that doubled an event's cost. So an event's write
# sets these only when they change (the start answer names the task; the last event ends it).
_INDEXED_COLUMNS: Final = "task_id, terminal, created_at"
_UPDATE_ROW: Final = (
    "UPDATE tasks SET kind = ?, state = ?, version = ?, updated_at = ?, facts = ?{indexed}"
    " WHERE key = ? AND version = ?"
)
_LOCK_ROW: Final = f"SELECT version, {_INDEXED_COLUMNS} FROM tasks WHERE key = ?"
_UPDATE_UNINDEXED: Final = _UPDATE_ROW.format(indexed="")
_UPDATE_ALL: Final = _UPDATE_ROW.format(indexed=", task_id = ?, terminal = ?, created_at = ?")
# write(entries, None): the row moves on to the last entry, its other columns as they were.
_MOVE_ROW_ON: Final = "UPDATE tasks SET version = ?, updated_at = ? WHERE key = ? AND version = ?"
_ENTRY_COLUMNS: Final = "version, at, trigger, from_state, to_state, args"
_INSERT_ENTRY: Final = f"INSERT INTO journal (key, {_ENTRY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
_LETTER_COLUMNS: Final = "id, at, reason, field, size, body"


class SqliteStore:
    shared = True  # other processes may open the same file

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._lock = threading.RLock()  # one connection for every thread: held for a whole transaction
        self._in_txn = False  # inside a lock() block or a create
        self._batching = False  # inside a batch(): transactions are its savepoints
        with _errors(f"could not open {self.path!r}"):
            self._db = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,  # autocommit: every transaction here is an explicit BEGIN/COMMIT
                check_same_thread=False,  # threads take turns through self._lock
            )
        try:
            with _errors(f"could not set up {self.path!r}"):
                self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                self._wal()
                # NORMAL in WAL mode: a commit reaches the OS before it returns, so it survives this
                # process crashing (which is what a restart needs); only a power loss or OS crash may
                # take back the last commits. FULL would fsync every event's write.
                self._db.execute("PRAGMA synchronous = NORMAL")
                # Up to 64 MiB of pages in this process (SQLite's default is 2 MiB): 100,000 live
                # tasks' rows and recent journal pages stay cached, so an event reads no page back
                # from the OS. Taken as pages are read, so a small store costs what it holds.
                self._db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
                # A checkpoint copies the WAL's pages into the file and syncs it: the one sync a
                # NORMAL commit pays for. Events dirty pages all over the journal's index, so at
                # SQLite's default (1,000 pages) the syncs were half of an event's cost at 100,000
                # tasks; ten times the pages takes a tenth of the syncs, and each copies a page
                # written many times once. The WAL grows to about 40 MiB so, where the disk has
                # room for it; on a small volume, less (see _fit_wal_to_disk).
                self._fit_wal_to_disk()
                self._migrate()
        except BaseException:
            self._db.close()
            raise

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    def create(self, row: TaskRow, entries: Sequence[JournalEntry], *, claim: str | None = None) -> None:
        check_numbering(row.key, entries, 0, row)
        with self._transaction(f"could not create task {row.key!r}") as db:
            try:
                db.execute(
                    f"INSERT INTO tasks ({_ROW_COLUMNS}, terminal) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*_row_values(row), row.state in _TERMINAL_STATES),
                )
            except sqlite3.IntegrityError as exc:
                raise StoreConflict(f"a task with key {row.key!r} exists") from exc
            if claim is not None:
                try:  # the unique constraint decides, never a look first
                    db.execute("INSERT INTO claims (task_id, key) VALUES (?, ?)", (claim, row.key))
                except sqlite3.IntegrityError as exc:
                    raise StoreConflict(f"task_id {claim!r} is claimed by another task") from exc
            _insert_entries(db, row.key, entries)

    @contextmanager
    def batch(self) -> Iterator[None]:
        with self._lock:
            if self._batching or self._in_txn:
                raise StoreError(f"a batch of {self!r} cannot start inside a batch or a lock() block")
            with _errors("could not start a batch"):
                self._db.execute("BEGIN IMMEDIATE")
            self._batching = True
            try:
                yield
            except BaseException as exc:
                with suppress(sqlite3.Error):  # the first error is the one to report
                    self._db.execute("ROLLBACK")
                self._batching = False
                self._after_failure(exc)
                raise
            else:
                self._commit("could not commit a batch")
            finally:
                self._batching = False

    @contextmanager
    def lock(self, key: str) -> Iterator[_Txn]:
        with self._transaction(f"could not write task {key!r}") as db:
            found = db.execute(_LOCK_ROW, (key,)).fetchone()
            # In a batch the block is a savepoint already, which a failed write rolls back to.
            yield _Txn(db, key, found, inside_savepoint=self._batching)

    def row(self, key: str) -> TaskRow | None:
        with self._connection() as db:
            found = db.execute(f"SELECT {_ROW_COLUMNS} FROM tasks WHERE key = ?", (key,)).fetchone()
        return None if found is None else _row(found)

    def find(self, task_id: str) -> TaskRow | None:
        with self._connection() as db:
            found = db.execute(
                f"SELECT {_ROW_COLUMNS} FROM tasks WHERE task_id = ? ORDER BY created_at, rowid LIMIT 1",
                (task_id,),
            ).fetchone()
        return None if found is None else _row(found)

    def journal(self, key: str) -> list[JournalEntry]:
        with self._connection() as db:
            found = db.execute(
                f"SELECT {_ENTRY_COLUMNS} FROM journal WHERE key = ? ORDER BY version", (key,)
            ).fetchall()
        return [_entry(values) for values in found]

    def rows(self, *, terminal: bool = False) -> Iterator[TaskRow]:
        where = "" if terminal else "WHERE terminal = 0"
        with self._connection() as db:
            found = db.execute(
                f"SELECT {_ROW_COLUMNS} FROM tasks {where} ORDER BY terminal, created_at, rowid"
            ).fetchall()
        return iter([_row(values) for values in found])

    def park(self, task_id: str, at: float, payload: Mapping[str, Any]) -> None:
        text = to_json(payload)
        with self._connection() as db:  # one statement: autocommit is its own transaction
            db.execute("INSERT INTO parked (task_id, at, payload) VALUES (?, ?, ?)", (task_id, at, text))

    def unpark(self, task_id: str, *, upto: int | None = None) -> None:
        with self._connection() as db:
            if upto is None:
                db.execute("DELETE FROM parked WHERE task_id = ?", (task_id,))
            else:
                db.execute("DELETE FROM parked WHERE task_id = ? AND seq <= ?", (task_id, upto))

    def parked(self, task_id: str | None = None) -> list[ParkedCallback]:
        with self._connection() as db:
            if task_id is None:
                found = db.execute("SELECT seq, task_id, at, payload FROM parked ORDER BY seq").fetchall()
            else:
                found = db.execute(
                    "SELECT seq, task_id, at, payload FROM parked WHERE task_id = ? ORDER BY seq", (task_id,)
                ).fetchall()
        return [ParkedCallback(seq, task_id, at, json.loads(payload)) for seq, task_id, at, payload in found]

    def dead_letter(self, at: float, reason: str, field: str | None, body: bytes) -> int:
        kept = dead_letter_fields(reason, field, body)
        with self._connection() as db:
            letter_id = db.execute(
                "INSERT INTO dead_letters (at, reason, field, size, body) VALUES (?, ?, ?, ?, ?)", (at, *kept)
            ).lastrowid
        assert letter_id is not None  # (an INSERT's)
        return letter_id

    def dead_letters(self, *, after: int = 0, limit: int | None = None) -> list[DeadLetter]:
        after, limit = dead_letter_page(after, limit)
        with self._connection() as db:
            found = db.execute(
                f"SELECT {_LETTER_COLUMNS} FROM dead_letters WHERE id > ? ORDER BY id LIMIT ?",
                (after, -1 if limit is None else limit),  # (a negative LIMIT: no limit)
            ).fetchall()
        return [DeadLetter(*values) for values in found]

    def dead_letter_by_id(self, letter_id: int) -> DeadLetter | None:
        if not dead_letter_ids([letter_id]):
            return None
        with self._connection() as db:
            found = db.execute(
                f"SELECT {_LETTER_COLUMNS} FROM dead_letters WHERE id = ?", (letter_id,)
            ).fetchone()
        return None if found is None else DeadLetter(*found)

    def purge_dead_letters(self, ids: Iterable[int] | None = None) -> int:
        if ids is None:
            with self._connection() as db:
                return db.execute("DELETE FROM dead_letters").rowcount
        wanted = [(letter_id,) for letter_id in dead_letter_ids(ids)]
        if not wanted:
            return 0
        with self._transaction("could not purge dead letters") as db:  # one commit for the lot
            return db.executemany("DELETE FROM dead_letters WHERE id = ?", wanted).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """The connection, for a statement or two: inside this thread's ``lock()`` block, part of
        its transaction (what it reads includes what it wrote, and what it writes is kept or rolled
        back with the block); elsewhere, each statement commits on its own."""
        with self._lock:
            try:
                with _errors(f"{self!r} failed"):
                    yield self._db
            except StoreError as exc:
                self._after_failure(exc)
                raise

    @contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding the file's write lock from its start: committed if the
        block ends normally, rolled back if it raises."""
        with self._lock:
            if self._in_txn:
                raise StoreError(f"{what}: this thread is inside a lock() block of {self!r} already")
            batching = self._batching  # a batch's transaction is open: this one is its savepoint
            with _errors(what):
                self._db.execute("SAVEPOINT event" if batching else "BEGIN IMMEDIATE")
            self._in_txn = True
            try:
                yield self._db
            except BaseException as exc:
                with suppress(sqlite3.Error):  # the first error is the one to report
                    self._db.execute("ROLLBACK TO event" if batching else "ROLLBACK")
                    if batching:
                        self._db.execute("RELEASE event")
                self._in_txn = False
                self._after_failure(exc)
                raise
            else:
                if batching:
                    with _errors(what):
                        self._db.execute("RELEASE event")
                else:
                    self._commit(what)
            finally:
                self._in_txn = False

    def _commit(self, what: str) -> None:
        try:
            with _errors(what):
                self._db.execute("COMMIT")
        except BaseException as exc:
            with suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            self._batching = self._in_txn = False
            self._after_failure(exc)
            raise

    def _after_failure(self, exc: BaseException) -> None:
        """After a write the disk refused (full, or the file may grow no more), rolled back: give
        the WAL's room back if this connection can. The WAL holds every commit since the last
        checkpoint; left as it is, on a full volume, it holds the room a checkpoint needs for good.
        Copied into the file and cut to nothing, it frees what the file did not take, and the WAL's
        limits are fitted to the room left."""
        if not _out_of_room(exc) or self._db.in_transaction or self._in_txn or self._batching:
            return
        with suppress(sqlite3.Error):  # another process reading may hold it up: then the next failure
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        with suppress(sqlite3.Error):
            self._fit_wal_to_disk()

    def _fit_wal_to_disk(self) -> None:
        """How long the WAL grows before a commit checkpoints it (CHECKPOINT_PAGES, or a share of
        the disk's free room where that is less), and what it is cut back to once checkpointed."""
        (page_size,) = self._db.execute("PRAGMA page_size").fetchone()
        pages = CHECKPOINT_PAGES
        free = _free_bytes(self.path)
        if free is not None:
            pages = max(MIN_CHECKPOINT_PAGES, min(pages, free // CHECKPOINT_SHARE_OF_FREE // page_size))
        self._db.execute(f"PRAGMA wal_autocheckpoint = {pages}")
        self._db.execute(f"PRAGMA journal_size_limit = {min(WAL_SIZE_LIMIT, pages * page_size)}")

    def _wal(self) -> None:
        """Put the file in WAL mode (once set, it stays). Processes that open a new file together
        each want the file to themselves for the switch, and SQLite answers "locked" at once,
        without waiting: so wait here, as long as busy_timeout would."""
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        pause = 0.001
        while True:
            try:
                (mode,) = self._db.execute("PRAGMA journal_mode = WAL").fetchone()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
                continue
            if str(mode).lower() not in ("wal", "memory"):  # ":memory:" has no WAL, nor other processes
                raise StoreError(f"{self.path!r} cannot be in WAL mode (it is in {mode!r} mode)")
            return

    def _migrate(self) -> None:
        (done,) = self._db.execute("PRAGMA user_version").fetchone()
        if done > len(_MIGRATIONS):
            raise StoreError(
                f"{self.path!r} has schema version {done}, newer than this streamlife's "
                f"({len(_MIGRATIONS)}): upgrade streamlife to open it"
            )
        if done == len(_MIGRATIONS):
            return
        self._db.execute("BEGIN IMMEDIATE")  # several processes may open a new file at once
        try:
            (done,) = self._db.execute("PRAGMA user_version").fetchone()
            for statements in _MIGRATIONS[done:]:
                for statement in statements:
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {len(_MIGRATIONS)}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise


class _Txn:
    __slots__ = ("_db", "_exists", "_indexed", "_own_savepoint", "_written", "key", "version")

    def __init__(
        self, db: sqlite3.Connection, key: str, found: Sequence[Any] | None, *, inside_savepoint: bool = False
    ) -> None:
        self._db = db
        self.key = key
        # Read under the write lock: the version, then the row's indexed columns (_INDEXED_COLUMNS).
        self.version = 0 if found is None else found[0]
        self._indexed = None if found is None else tuple(found[1:])
        self._exists = found is not None
        self._written = False
        # A write that fails leaves nothing behind: it rolls back to a savepoint of its own, or, in
        # a batch, to its block's (only the version was read since that began): two statements fewer.
        self._own_savepoint = not inside_savepoint

    def entries_after(self, version: int) -> list[JournalEntry]:
        with _errors(f"could not read the journal of {self.key!r}"):
            found = self._db.execute(
                f"SELECT {_ENTRY_COLUMNS} FROM journal WHERE key = ? AND version > ? ORDER BY version",
                (self.key, version),
            ).fetchall()
        return [_entry(values) for values in found]

    def write(self, entries: Sequence[JournalEntry], row: TaskRow | None) -> None:
        if self._written:
            raise StoreConflict("one write per lock")
        if row is not None and row.key != self.key:
            raise ValueError(f"the lock is on task {self.key!r}, the row is task {row.key!r}")
        if not self._exists:
            raise StoreConflict(f"no task with key {self.key!r}: create it first")
        check_numbering(self.key, entries, self.version, row)
        own = self._own_savepoint
        with _errors(f"could not write task {self.key!r}"):
            if own:
                self._db.execute("SAVEPOINT write")
            try:
                where = (self.key, self.version)
                if row is None:
                    last = entries[-1]
                    updated = self._db.execute(_MOVE_ROW_ON, (last.version, last.at, *where)).rowcount
                else:
                    values = (row.kind, row.state, row.version, row.updated_at, to_json(row.facts))
                    indexed = (row.task_id, int(row.state in _TERMINAL_STATES), row.created_at)
                    if indexed == self._indexed:
                        updated = self._db.execute(_UPDATE_UNINDEXED, (*values, *where)).rowcount
                    else:
                        updated = self._db.execute(_UPDATE_ALL, (*values, *indexed, *where)).rowcount
                if updated != 1:
                    raise StoreConflict(f"task {self.key!r} is no longer at version {self.version}")
                try:
                    _insert_entries(self._db, self.key, entries)
                except sqlite3.IntegrityError as exc:
                    raise StoreConflict(f"a version of task {self.key!r} is taken") from exc
            except BaseException:
                self._db.execute("ROLLBACK TO write" if own else "ROLLBACK TO event")
                if own:
                    self._db.execute("RELEASE write")
                raise
            if own:
                self._db.execute("RELEASE write")
        self._written = True


def _insert_entries(db: sqlite3.Connection, key: str, entries: Sequence[JournalEntry]) -> None:
    values = [
        (
            key,
            entry.version,
            entry.at,
            entry.trigger,
            entry.from_state,
            entry.to_state,
            None if entry.args is None else to_json(entry.args),
        )
        for entry in entries
    ]
    if len(values) == 1:  # the usual case, and executemany costs more for one
        db.execute(_INSERT_ENTRY, values[0])
    else:
        db.executemany(_INSERT_ENTRY, values)


def _row_values(row: TaskRow) -> tuple[Any, ...]:
    return (
        row.key,
        row.kind,
        row.task_id,
        row.state,
        row.version,
        row.created_at,
        row.updated_at,
        to_json(row.facts),
    )


def _row(values: Sequence[Any]) -> TaskRow:
    key, kind, task_id, state, version, created_at, updated_at, facts = values
    return TaskRow(key, kind, task_id, state, version, created_at, updated_at, json.loads(facts))


def _entry(values: Sequence[Any]) -> JournalEntry:
    version, at, trigger, from_state, to_state, args = values
    args = None if args is None else json.loads(args)
    return JournalEntry(version, at, trigger, from_state, to_state, args)


@contextmanager
def _errors(what: str) -> Iterator[None]:
    """sqlite3's errors as the store's: a constraint is a conflict, anything else a failure."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise StoreConflict(f"{what}: {exc}") from exc
    except sqlite3.Error as exc:
        if _out_of_room(exc):
            raise StoreError(
                f"{what}: {exc}: the disk is full, or the file may grow no more (a size limit)."
                " Nothing of this write was kept; writes work again once there is room"
            ) from exc
        raise StoreError(f"{what}: {exc}") from exc


# A write the disk refused: SQLite says SQLITE_FULL when a write falls short, SQLITE_IOERR when it
# fails whole (a file past RLIMIT_FSIZE, say: EFBIG).
_OUT_OF_ROOM: Final = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR})


def _out_of_room(exc: BaseException) -> bool:
    cause = exc if isinstance(exc, sqlite3.Error) else exc.__cause__
    code = getattr(cause, "sqlite_errorcode", None)
    return isinstance(cause, sqlite3.Error) and code is not None and code & 0xFF in _OUT_OF_ROOM


def _free_bytes(path: str) -> int | None:
    """The room left for the store's files on their volume; None where it cannot be told."""
    try:
        found = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except (OSError, AttributeError):  # ":memory:"'s directory is ours; no statvfs on Windows
        return None
    return found.f_bavail * found.f_frsize
