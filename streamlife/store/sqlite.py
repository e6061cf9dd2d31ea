"""SqliteStore: the Store protocol in one SQLite file, which several processes may share.

The file is in WAL mode: readers never wait for the writer, and a commit appends to the log instead
of rewriting pages. An event's write is one ``BEGIN IMMEDIATE`` transaction: it takes the file's
write lock *before* reading the task's version, so the version a writer works from is the one its
write replaces (another process waits meanwhile, instead of failing at once). The row's version is
still checked by the write itself (``UPDATE ... WHERE version = ?``) and the journal's primary key
is (key, version): a writer from a stale copy gets ``StoreConflict``.

Processes take turns at the write lock. Every write transaction (an event's, a batch's, a
create's, a claim's, each batch of a prune's) and every write outside one (``park``,
``dead_letter``...) first takes the process's turn: an exclusive ``flock`` on a side file,
``<file>-turn``; the turn is let go once the transaction commits or rolls back. The reason:
SQLite's own wait for the lock (its busy handler) sleeps 1, 2, 5, 10 ... up to 100 ms between
tries and is not woken when the lock is let go, so writers of several processes spend their time
asleep while the lock is free; a writer blocked in ``flock`` is woken the moment the holder lets
go. A writer waits at most ``busy_timeout`` seconds for its turn, then fails with the error an
expired busy timeout gives (``StoreError``, "database is locked"). The side file is never unlinked
(a process that opened it before would lock a file the others no longer share). A child forked
while this process holds its turn does not keep it: the turn ends with the process that took it.
``:memory:``, and a file whose side file cannot be opened or locked (``turn_file`` is then None),
have no turns: writes wait in SQLite's busy handler, as a writer that takes no turns (the sqlite3
shell) does. How the turns are taken: ``_sqlite_turns``.

In this process, one connection serves every thread, guarded by a lock held for a whole ``lock()``
block (blocks are short: the Fleet does no I/O inside them but the store's own). A thread's
``lock()`` blocks do not nest, and ``create`` is not called inside one: each is its own transaction.
Inside ``batch()`` they are savepoints of the batch's one transaction, which holds the connection
(and the file's write lock) until it commits: one commit for many events. A ``lock()`` block takes
its savepoint only when it first needs one: an event that only moves its row on (most) takes none,
and what it wrote is taken back by hand if it fails (``_Scope``).

A disk with no room left refuses a write with ``StoreError`` and keeps nothing of it; once there is
room again, writes work again (``_sqlite_connection`` keeps the WAL within the disk's room).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any, Final

from streamlife._jsontext import to_json

from ._prune_pacing import Pacer
from ._sql import (
    CLAIMABLE,
    DUE_COLUMNS,
    ENTRY_COLUMNS,
    LETTER_COLUMNS,
    PARKED_COLUMNS,
    PRUNE_BATCH,
    ROW_COLUMNS,
    TERMINAL_STATES,
    entry_from,
    entry_values,
    letter_from,
    parked_from,
    parked_where,
    row_from,
    row_values,
)
from ._sqlite_checkpoints import Checkpoints
from ._sqlite_connection import (
    BUSY_TIMEOUT_MS,
    CACHE_KIB,
    CHECKPOINT_PAGES,
    CHECKPOINT_SHARE_OF_FREE,
    MIN_CHECKPOINT_PAGES,
    WAL_SIZE_LIMIT,
    check_busy_timeout,
    checkpoint_aside,
    checkpointer,
    connect,
    errors,
    fit_wal_to_disk,
    give_room_back,
    keep_wal_long,
    no_turn,
    out_of_room,
    take_turn,
)
from ._sqlite_turns import Turns
from .base import (
    NO_DUE,
    DeadLetter,
    Due,
    JournalEntry,
    ParkedCallback,
    PruneResult,
    StoreConflict,
    StoreError,
    TaskRow,
    check_claim_limit,
    check_key,
    check_numbering,
    check_write,
    dead_letter_fields,
    dead_letter_ids,
    dead_letter_page,
    prune_cutoff,
    stopped,
)

# The file's settings stay importable from here, where they were defined before _sqlite_connection.
__all__ = [
    "BUSY_TIMEOUT_MS",
    "CACHE_KIB",
    "CHECKPOINT_PAGES",
    "CHECKPOINT_SHARE_OF_FREE",
    "MIN_CHECKPOINT_PAGES",
    "WAL_SIZE_LIMIT",
    "SqliteStore",
]

# The row's columns that an index holds. An event's write sets these only when they change (the
# start answer names the task; the last event ends it): SQLite rewrites an index's entry whenever an
# UPDATE sets one of its columns, changed or not.
_INDEXED_COLUMNS: Final = "task_id, terminal, created_at"
_UPDATE_ROW: Final = (
    "UPDATE tasks SET kind = ?, state = ?, version = ?, updated_at = ?, facts = ?, due_at = ?, quiet = ?"
    "{indexed} WHERE key = ? AND version = ?"
)
# The version, then what a write that moves the row on changes (see _MOVE_ROW_BACK), then the
# indexed columns.
_LOCK_ROW: Final = f"SELECT version, updated_at, {_INDEXED_COLUMNS} FROM tasks WHERE key = ?"
_UPDATE_UNINDEXED: Final = _UPDATE_ROW.format(indexed="")
_UPDATE_ALL: Final = _UPDATE_ROW.format(indexed=", task_id = ?, terminal = ?, created_at = ?")
# write(entries, None): the row moves on to the last entry, its other columns as they were.
_MOVE_ROW_ON: Final = "UPDATE tasks SET version = ?, updated_at = ? WHERE key = ? AND version = ?"
# What takes such a write back by hand, where no savepoint was taken for it (see _Txn._move_on):
# the same statement, to the old version and time. The row goes back only if it is at the version
# the write moved it on to: only that write did.
_MOVE_ROW_BACK: Final = _MOVE_ROW_ON
_DELETE_ENTRY: Final = "DELETE FROM journal WHERE key = ? AND version = ?"
_INSERT_ENTRY: Final = f"INSERT INTO journal (key, {ENTRY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
# A terminal task last updated before the cutoff. (created_at is never after updated_at, but for
# clocks apart: it lets the scan take the tasks_open index, terminal tasks made before the cutoff.)
_PRUNABLE: Final = "FROM tasks WHERE terminal = 1 AND created_at < ? AND updated_at < ?"
_KEYS: Final = "(SELECT value FROM json_each(?))"  # the keys of one batch, as one JSON array
# Dead letters kept before a time, oldest first, with the pages each body takes (one at least).
_OLD_LETTERS: Final = "SELECT id, 1 + length(body) / 4096 FROM dead_letters WHERE at < ? ORDER BY id LIMIT ?"
_CLAIMABLE: Final = "FROM tasks WHERE " + CLAIMABLE.format(false="0", mark="?")
# The savepoint of a lock() block (taken when it first writes) or a create inside a batch, and
# what takes it back.
_EVENT: Final = "event"
_BEGIN_EVENT: Final = f"SAVEPOINT {_EVENT}"
_KEEP_EVENT: Final = f"RELEASE {_EVENT}"
_UNDO_EVENT: Final = (f"ROLLBACK TO {_EVENT}", _KEEP_EVENT)


# Statements and their values, run in order.
_Statements = tuple[tuple[str, tuple[Any, ...]], ...]


class SqliteStore:
    shared = True  # other processes may open the same file

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = BUSY_TIMEOUT_MS / 1000) -> None:
        """The file at ``path`` (created if missing). ``busy_timeout``: how many seconds a write
        waits for other processes' writes before it fails with ``StoreError`` ("database is
        locked")."""
        self.path = os.fspath(path)
        self.busy_timeout = check_busy_timeout(busy_timeout)
        self._lock = threading.RLock()  # one connection for every thread: held for a whole transaction
        # What is open on the connection, outermost first: ("batch",), ("event",) (a lock() block,
        # a create) or ("batch", "event"). Set and cleared by _scope alone.
        self._open: tuple[str, ...] = ()
        # This thread's lock() block inside a batch, while it has taken no savepoint yet (_Scope).
        self._unsaved: _Scope | None = None
        # This process's turns at the file's write lock, taken by every write transaction.
        self._turns = Turns(self.path, self.busy_timeout)
        self._db = connect(self.path, self._turns)
        # The WAL's copies into the file, on a thread of the store's own, off the writers' commits.
        self._checkpoints = Checkpoints(self.path)

    @property
    def turn_file(self) -> str | None:
        """The side file through which processes take turns at the file's write lock; None where
        writes wait in SQLite's busy handler instead (see the module's docstring)."""
        return self._turns.path

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    def create(
        self, row: TaskRow, entries: Sequence[JournalEntry], *, claim: str | None = None, due: Due = NO_DUE
    ) -> None:
        check_key(row.key)
        check_numbering(row.key, entries, 0, row)
        with self._transaction(f"could not create task {row.key!r}") as db:
            try:
                db.execute(
                    f"INSERT INTO tasks ({ROW_COLUMNS}, terminal, {DUE_COLUMNS})"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*row_values(row), *due),
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
            if self._open:
                raise StoreError(f"a batch of {self!r} cannot start inside a batch or a lock() block")
            with self._scope("batch", "could not write a batch"):
                yield

    def lock(self, key: str) -> AbstractContextManager[_Txn]:
        return _Lock(self, key)

    def row(self, key: str) -> TaskRow | None:
        with self._connection() as db:
            found = db.execute(f"SELECT {ROW_COLUMNS} FROM tasks WHERE key = ?", (key,)).fetchone()
        return None if found is None else row_from(found)

    def find(self, task_id: str) -> TaskRow | None:
        with self._connection() as db:
            found = db.execute(
                f"SELECT {ROW_COLUMNS} FROM tasks WHERE task_id = ? ORDER BY created_at, rowid LIMIT 1",
                (task_id,),
            ).fetchone()
        return None if found is None else row_from(found)

    def journal(self, key: str) -> list[JournalEntry]:
        with self._connection() as db:
            found = db.execute(
                f"SELECT {ENTRY_COLUMNS} FROM journal WHERE key = ? ORDER BY version", (key,)
            ).fetchall()
        return [entry_from(values) for values in found]

    def rows(self, *, terminal: bool = False) -> Iterator[TaskRow]:
        where = "" if terminal else "WHERE terminal = 0"
        with self._connection() as db:
            found = db.execute(
                f"SELECT {ROW_COLUMNS} FROM tasks {where} ORDER BY terminal, created_at, rowid"
            ).fetchall()
        return iter([row_from(values) for values in found])

    def claim_due(self, now: float, *, until: float, limit: int) -> list[str]:
        """One write transaction (``BEGIN IMMEDIATE``): no other process claims, or writes, between
        the read of the due tasks and their claim."""
        check_claim_limit(limit)
        with self._lock:
            if self._open:
                raise StoreError(f"{self!r} cannot claim tasks inside a batch or a lock() block")
            with self._transaction("could not claim the tasks due") as db:
                found = db.execute(f"SELECT key {_CLAIMABLE} LIMIT ?", (now, now, now, limit))
                keys = [key for (key,) in found]
                if keys:
                    db.execute(
                        f"UPDATE tasks SET claimed_until = ? WHERE key IN {_KEYS}", (until, json.dumps(keys))
                    )
        return keys

    def park(self, task_id: str, at: float, payload: Mapping[str, Any]) -> None:
        text = to_json(payload)
        with self._writing() as db:  # one statement: autocommit is its own transaction
            db.execute("INSERT INTO parked (task_id, at, payload) VALUES (?, ?, ?)", (task_id, at, text))

    def unpark(self, task_id: str, *, upto: int | None = None) -> None:
        with self._writing() as db:
            if upto is None:
                db.execute("DELETE FROM parked WHERE task_id = ?", (task_id,))
            else:
                db.execute("DELETE FROM parked WHERE task_id = ? AND seq <= ?", (task_id, upto))

    def parked(self, task_id: str | None = None, *, before: float | None = None) -> list[ParkedCallback]:
        where, bound = parked_where(task_id, before, "?")
        with self._connection() as db:
            found = db.execute(f"SELECT {PARKED_COLUMNS} FROM parked{where} ORDER BY seq", bound).fetchall()
        return [parked_from(values) for values in found]

    def dead_letter(self, at: float, reason: str, field: str | None, body: bytes) -> int:
        kept = dead_letter_fields(reason, field, body)
        with self._writing() as db:
            letter_id = db.execute(
                "INSERT INTO dead_letters (at, reason, field, size, body) VALUES (?, ?, ?, ?, ?)", (at, *kept)
            ).lastrowid
        assert letter_id is not None  # (an INSERT's)
        return letter_id

    def dead_letters(self, *, after: int = 0, limit: int | None = None) -> list[DeadLetter]:
        after, limit = dead_letter_page(after, limit)
        with self._connection() as db:
            found = db.execute(
                f"SELECT {LETTER_COLUMNS} FROM dead_letters WHERE id > ? ORDER BY id LIMIT ?",
                (after, -1 if limit is None else limit),  # (a negative LIMIT: no limit)
            ).fetchall()
        return [letter_from(values) for values in found]

    def dead_letter_by_id(self, letter_id: int) -> DeadLetter | None:
        if not dead_letter_ids([letter_id]):
            return None
        with self._connection() as db:
            found = db.execute(
                f"SELECT {LETTER_COLUMNS} FROM dead_letters WHERE id = ?", (letter_id,)
            ).fetchone()
        return None if found is None else letter_from(found)

    def purge_dead_letters(self, ids: Iterable[int] | None = None) -> int:
        if ids is None:
            with self._writing() as db:
                return db.execute("DELETE FROM dead_letters").rowcount
        wanted = [(letter_id,) for letter_id in dead_letter_ids(ids)]
        if not wanted:
            return 0
        with self._transaction("could not purge dead letters") as db:  # one commit for the lot
            return db.executemany("DELETE FROM dead_letters WHERE id = ?", wanted).rowcount

    def prune(
        self, before: float, *, dry_run: bool = False, stop: threading.Event | None = None
    ) -> PruneResult:
        """Each batch is one write transaction (``BEGIN IMMEDIATE``): it holds the file's write lock
        from the read of the batch's tasks to their deletion, so no other writer moves them between.
        A batch takes what it can delete in about ``_prune_pacing.HOLD``, counted in journal
        entries; after it, the lock is let go long enough for a writer waiting in SQLite's busy
        handler to find it free (``_prune_pacing``). At the end of that pause, just before the next
        batch, the WAL is checkpointed on a connection of its own, without the write lock, so that
        no writer's commit copies the prune's pages. Just before: once the WAL is copied whole, the
        next transaction that writes starts it again from its top and syncs it, and that should be
        the prune's batch, in the time it holds the lock and is paced by, not a writer's commit.
        While the prune runs, the WAL is not cut back when it starts again (``keep_wal_long``):
        the next batch would grow it again. The last batch's pages are copied once it is done."""
        cutoff = (prune_cutoff(before),) * 2
        if dry_run:
            with self._connection() as db:
                tasks, entries = db.execute(f"SELECT count(*), total(version) {_PRUNABLE}", cutoff).fetchone()
                (letters,) = db.execute(
                    "SELECT count(*) FROM dead_letters WHERE at < ?", cutoff[:1]
                ).fetchone()
            return PruneResult(tasks, int(entries), letters)
        pacer = self._pacer()
        tasks = entries = 0
        aside = checkpointer(self.path)
        with self._lock:
            keep_wal_long(self._db)
        try:
            while not stopped(stop):
                checkpointed = _timed(pacer, lambda: checkpoint_aside(aside))
                with self._lock:  # (this process's other threads write between two batches too)
                    if self._open:
                        raise StoreError(f"{self!r} cannot prune inside a batch or a lock() block")
                    with self._transaction("could not prune the tasks") as db:
                        began = pacer.timer()
                        limit = min(PRUNE_BATCH, pacer.budget)  # (a task has one entry at least)
                        found = db.execute(f"SELECT key, version {_PRUNABLE} LIMIT ?", (*cutoff, limit))
                        batch = found.fetchall()
                        keys = pacer.take(batch)
                        taken = (json.dumps(keys),)
                        deleted = db.execute(f"DELETE FROM journal WHERE key IN {_KEYS}", taken).rowcount
                        db.execute(f"DELETE FROM claims WHERE key IN {_KEYS}", taken)
                        tasks += db.execute(f"DELETE FROM tasks WHERE key IN {_KEYS}", taken).rowcount
                held = pacer.timer() - began
                entries += deleted
                pacer.learn(deleted, held)
                if len(keys) == len(batch) < limit:
                    break
                pacer.pause(held, pacer.timer(), ahead=checkpointed)
            letters = self._prune_letters(cutoff[0], aside, stop)
            # Whole, so that the next write cuts the WAL back: after the store's thread's copy, if
            # one runs, which this checkpoint would otherwise give up to at once.
            with self._checkpoints.copying:
                checkpoint_aside(aside)
        finally:
            aside.close()
            with self._lock, suppress(sqlite3.Error):  # (the WAL is cut at its next start)
                fit_wal_to_disk(self._db, self.path)
        return PruneResult(tasks, entries, letters)

    def _prune_letters(self, before: float, aside: sqlite3.Connection, stop: threading.Event | None) -> int:
        """The dead letters kept before ``before``, paced as the tasks are: a letter counts one
        entry for each page its body takes, as its deletion writes about as many."""
        pacer = self._pacer()
        letters = 0
        while not stopped(stop):
            checkpointed = _timed(pacer, lambda: checkpoint_aside(aside))  # (as for the tasks)
            with self._transaction("could not prune the dead letters") as db:
                began = pacer.timer()
                limit = min(PRUNE_BATCH, pacer.budget)
                batch = db.execute(_OLD_LETTERS, (before, limit)).fetchall()
                ids = pacer.take(batch)
                deleted = db.execute(
                    f"DELETE FROM dead_letters WHERE id IN {_KEYS}", (json.dumps(ids),)
                ).rowcount
            held = pacer.timer() - began
            letters += deleted
            pacer.learn(sum(pages for _, pages in batch[: len(ids)]), held)
            if len(ids) == len(batch) < limit:
                return letters
            pacer.pause(held, pacer.timer(), ahead=checkpointed)
        return letters

    def _pacer(self) -> Pacer:
        """A prune's pacing (a method of its own, so that a test may pace it on a clock of its own)."""
        return Pacer()

    def close(self) -> None:
        with self._lock:
            self._checkpoints.close()
            self._db.close()
            self._turns.close()

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """The connection, for a statement or two: inside this thread's ``lock()`` block, part of
        its transaction (what it reads includes what it wrote, and what it writes is kept or rolled
        back with the block); elsewhere, each statement commits on its own."""
        with self._lock:
            self._check_still_open(f"{self!r} failed")
            try:
                if self._unsaved is not None:  # (what it writes is rolled back with the block)
                    self._unsaved.take_savepoint()
                with errors(f"{self!r} failed"):
                    yield self._db
            except StoreError as exc:
                self._after_failure(exc)
                raise

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """The connection, for a statement that writes: as ``_connection``, and outside a
        transaction (where the statement is its own), in this process's turn."""
        with self._lock:
            turn = not self._open  # (inside a transaction, its turn is taken)
            if turn:
                take_turn(self._turns, f"{self!r} failed")
            try:
                with self._connection() as db:
                    yield db
            finally:
                if turn:
                    self._turns.release()
                    self._checkpoints.after_write()

    @contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding the file's write lock from its start (inside a batch, a
        savepoint of the batch's): kept if the block ends normally, rolled back if it raises."""
        with self._lock:
            self._check_not_in_event(what)
            with self._scope("event", what), errors(what):  # (whatever statement the block runs)
                yield self._db

    def _check_not_in_event(self, what: str) -> None:
        """Refuse a write transaction inside this thread's ``lock()`` block: they do not nest."""
        if "event" in self._open:
            raise StoreError(f"{what}: this thread is inside a lock() block of {self!r} already")

    def _scope(self, name: str, what: str, *, put_off: bool = False) -> _Scope:
        """Open ``name`` on the connection: a transaction, or, inside a batch's, a savepoint. It is
        kept if the block ends normally and rolled back if the block, or keeping it, fails. The one
        place that opens and closes them, so ``_open`` says what is open whichever way it ends.
        ``put_off``: the savepoint is taken when the block first needs it (``_Scope``)."""
        return _Scope(self, name, what, put_off=put_off)

    def _check_still_open(self, what: str) -> None:
        """Refuse to write inside a batch whose transaction SQLite rolled back by itself, as it may
        after SQLITE_FULL, SQLITE_IOERR or SQLITE_NOMEM. A statement run then would start a
        transaction of its own and commit it, outside the batch, which fails all the same."""
        if self._open and not self._db.in_transaction:
            raise StoreError(f"{what}: SQLite rolled back the {self._open[0]}'s transaction after a failure")

    def _after_failure(self, exc: BaseException) -> None:
        """After a write the disk refused, rolled back: give the WAL's room back, once nothing is
        open on the connection (see ``give_room_back``). Its checkpoint gives up at once where the
        store's thread is copying the WAL (``_sqlite_checkpoints``), so it waits for that copy."""
        if out_of_room(exc) and not (self._db.in_transaction or self._open):
            with self._checkpoints.copying:
                give_room_back(self._db, self.path)


class _Scope:
    """``SqliteStore._scope``'s block. (A class, not a generator: every event written opens one,
    and a generator's way in and out costs more than the statements it runs.)

    Put off (a ``lock()`` block inside a batch), the savepoint is taken only when the block first
    writes what cannot be taken back by hand (``take_savepoint``). Most events write one journal
    entry and move their row on, and nothing else: that is taken back by hand if the block fails
    (``taken_back_by``), and the event costs two statements fewer."""

    __slots__ = ("_keep", "_name", "_outer", "_put_off", "_store", "_turn", "_undo", "_undo_by_hand", "_what")

    def __init__(self, store: SqliteStore, name: str, what: str, *, put_off: bool = False) -> None:
        self._store, self._name, self._what = store, name, what
        self._put_off = put_off
        self._outer: tuple[str, ...] = ()
        self._keep = ""
        self._undo: tuple[str, ...] = ()
        self._undo_by_hand: _Statements = ()
        self._turn = False  # whether the block took this process's turn (a transaction's)

    @property
    def in_batch(self) -> bool:
        return bool(self._outer)

    @property
    def saved(self) -> bool:
        """Whether the block took its savepoint (in a batch): it wrote something already."""
        return bool(self._outer) and bool(self._keep)

    def __enter__(self) -> None:
        store = self._store
        outer = self._outer = store._open
        store._check_still_open(self._what)
        if outer and self._put_off:
            store._unsaved = self
        elif outer:  # a batch's transaction is open: this is its savepoint
            self._keep, self._undo = _KEEP_EVENT, _UNDO_EVENT
            with errors(self._what):
                store._db.execute(_BEGIN_EVENT)
        else:  # a transaction: in this process's turn, taken first
            self._keep, self._undo = "COMMIT", ("ROLLBACK",)
            if not store._turns.take():  # (take_turn's, inline: every event's write takes one)
                raise no_turn(self._what)
            try:
                with errors(self._what):
                    store._db.execute("BEGIN IMMEDIATE")
            except BaseException:
                store._turns.release()
                raise
            self._turn = True
        store._open = (*outer, self._name)

    def take_savepoint(self) -> None:
        """Take the savepoint put off, before a write that only a savepoint takes back."""
        if self._keep or not self._outer:  # taken already, or a transaction
            return
        with errors(self._what):
            self._store._db.execute(_BEGIN_EVENT)
        self._keep, self._undo = _KEEP_EVENT, _UNDO_EVENT
        self._store._unsaved = None

    def taken_back_by(self, statements: _Statements) -> None:
        """What takes back a write the block made, if the block fails and has no savepoint or
        transaction of its own to roll back."""
        if not self._keep:
            self._undo_by_hand = statements

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: object) -> None:
        store = self._store
        try:
            try:
                try:
                    if exc is None and self._keep:
                        with errors(self._what):
                            store._db.execute(self._keep)
                finally:
                    store._open = self._outer
                    if store._unsaved is self:
                        store._unsaved = None
            except BaseException as failure:  # keeping it failed
                self._roll_back(failure)
                raise
            if exc is not None:  # the block failed: rolled back, and its error goes on
                self._roll_back(exc)
        finally:
            if self._turn:  # once committed or rolled back, whichever way
                self._turn = False
                store._turns.release()
                store._checkpoints.after_write()

    def _roll_back(self, exc: BaseException) -> None:
        db = self._store._db
        with suppress(sqlite3.Error):  # the first error is the one to report
            for statement in self._undo:
                db.execute(statement)
        if self._undo_by_hand:
            _take_back(db, self._undo_by_hand)
        self._store._after_failure(exc)


class _Lock:
    """``SqliteStore.lock``'s block: a ``_transaction`` that reads the row's version first. (A class,
    not a generator, as ``_Scope`` is: every event written opens one.)"""

    __slots__ = ("_errors", "_key", "_scope", "_store")

    def __init__(self, store: SqliteStore, key: str) -> None:
        self._store, self._key = store, key
        self._errors = errors(f"could not write task {key!r}")  # (whatever statement the block runs)
        self._scope: _Scope | None = None

    def __enter__(self) -> _Txn:
        store, what = self._store, self._errors.what
        store._lock.acquire()
        try:
            store._check_not_in_event(what)
            scope = self._scope = store._scope("event", what, put_off=True)
            scope.__enter__()
            try:
                with self._errors:
                    found = store._db.execute(_LOCK_ROW, (self._key,)).fetchone()
            except BaseException as exc:
                scope.__exit__(type(exc), exc, exc.__traceback__)
                raise
        except BaseException:
            store._lock.release()
            raise
        return _Txn(store._db, self._key, found, scope, self._errors)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        scope = self._scope
        assert scope is not None  # (entered)
        try:
            try:
                self._errors.__exit__(kind, exc, tb)  # raises the store's error for sqlite3's
            except BaseException as failure:
                scope.__exit__(type(failure), failure, failure.__traceback__)
                raise
            scope.__exit__(kind, exc, tb)
        finally:
            self._store._lock.release()


class _Txn:
    __slots__ = (
        "_db",
        "_exists",
        "_indexed",
        "_scope",
        "_updated_at",
        "_write_errors",
        "_written",
        "key",
        "version",
    )

    def __init__(
        self,
        db: sqlite3.Connection,
        key: str,
        found: tuple[Any, ...] | None,
        scope: _Scope,
        write_errors: errors,
    ) -> None:
        self._db = db
        self.key = key
        self._scope = scope
        self._write_errors = write_errors  # its lock's: "could not write task ..."
        # Read under the write lock: the version and updated_at, then the row's indexed columns.
        self.version = 0 if found is None else found[0]
        self._updated_at = None if found is None else found[1]
        self._indexed = None if found is None else found[2:]
        self._exists = found is not None
        self._written = False

    def entries_after(self, version: int) -> list[JournalEntry]:
        with errors(f"could not read the journal of {self.key!r}"):
            found = self._db.execute(
                f"SELECT {ENTRY_COLUMNS} FROM journal WHERE key = ? AND version > ? ORDER BY version",
                (self.key, version),
            ).fetchall()
        return [entry_from(values) for values in found]

    def write(self, entries: Sequence[JournalEntry], row: TaskRow | None, due: Due = NO_DUE) -> None:
        check_write(self.key, self.version if self._exists else None, entries, row, written=self._written)
        if row is None and len(entries) == 1:  # most events
            self._move_on(entries[0])
        else:
            self._write(entries, row, due)
        self._written = True

    def _move_on(self, entry: JournalEntry) -> None:
        """Move the row on to ``entry`` and journal it, with no savepoint: what this writes is taken
        back by hand, if it fails midway or its block does (inside a batch). The row's version and
        updated_at are all it changes, and they were read under the lock; the entry's (key,
        version) was free, or the INSERT would have failed."""
        db, key, version = self._db, self.key, self.version
        # What takes back the entry, then the row: the last of them, one for each row written (the
        # schema has no triggers: a row changed is one a statement here wrote).
        written = (
            (_DELETE_ENTRY, (key, entry.version)),
            (_MOVE_ROW_BACK, (version, self._updated_at, key, entry.version)),
        )
        changes = db.total_changes  # (a statement that fails changes no row)
        with self._write_errors:
            try:
                if db.execute(_MOVE_ROW_ON, (entry.version, entry.at, key, version)).rowcount != 1:
                    raise StoreConflict(f"task {key!r} is no longer at version {version}")
                try:
                    _insert_entries(db, key, (entry,))
                except sqlite3.IntegrityError as exc:
                    raise StoreConflict(f"a version of task {key!r} is taken") from exc
                self._scope.taken_back_by(written)
            except BaseException:  # (a KeyboardInterrupt too, wherever it came)
                self._scope.taken_back_by(())
                _take_back(db, written[max(0, len(written) - (db.total_changes - changes)) :])
                raise

    def _write(self, entries: Sequence[JournalEntry], row: TaskRow | None, due: Due) -> None:
        """Any other write: a savepoint takes back what it wrote if it fails midway, and that alone,
        as ``_move_on`` does. Inside a batch, its block's, taken now, if the block wrote nothing
        before (only the version was read since it began)."""
        scope = self._scope
        own = not scope.in_batch or scope.saved
        if not own:
            scope.take_savepoint()
        with self._write_errors:
            if own:
                self._db.execute("SAVEPOINT write")
            try:
                where = (self.key, self.version)
                if row is None:
                    last = entries[-1]
                    updated = self._db.execute(_MOVE_ROW_ON, (last.version, last.at, *where)).rowcount
                else:
                    values = (row.kind, row.state, row.version, row.updated_at, to_json(row.facts), *due)
                    indexed = (row.task_id, int(row.state in TERMINAL_STATES), row.created_at)
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
                self._db.execute("ROLLBACK TO write" if own else f"ROLLBACK TO {_EVENT}")
                if own:
                    self._db.execute("RELEASE write")
                raise
            if own:
                self._db.execute("RELEASE write")


def _take_back(db: sqlite3.Connection, statements: _Statements) -> None:
    """Take back by hand a write made without a savepoint. Nothing is left to take back if SQLite
    rolled the transaction back by itself (and a statement run then would commit on its own). If
    taking it back fails, the transaction is rolled back whole: what it holds is never committed
    (a batch then fails, as a batch SQLite rolled back does)."""
    if not db.in_transaction:
        return
    try:
        for statement, values in statements:
            db.execute(statement, values)
    except BaseException as exc:
        with suppress(sqlite3.Error):  # (then a batch fails: SqliteStore._check_still_open)
            db.execute("ROLLBACK")
        if not isinstance(exc, sqlite3.Error):
            raise


def _timed(pacer: Pacer, step: Callable[[], object]) -> float:
    """How long ``step`` took, on ``pacer``'s clock."""
    began = pacer.timer()
    step()
    return pacer.timer() - began


def _insert_entries(db: sqlite3.Connection, key: str, entries: Sequence[JournalEntry]) -> None:
    values = entry_values(key, entries)
    if len(values) == 1:  # the usual case, and executemany costs more for one
        db.execute(_INSERT_ENTRY, values[0])
    else:
        db.executemany(_INSERT_ENTRY, values)
