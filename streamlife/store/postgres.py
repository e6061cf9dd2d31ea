"""PostgresStore: the Store protocol in PostgreSQL, for many processes sharing the same tasks.

Needs the ``postgres`` extra (psycopg 3 and its pool). The tables (``streamlife_tasks``,
``streamlife_journal``, ``streamlife_parked``, ``streamlife_claims``, ``streamlife_dead_letters``)
are made, and migrated, by the store itself when it opens, under an advisory lock so that processes
opening at once do not race; ``streamlife_schema`` holds how many migrations were applied. A store
made by an older streamlife gains the newer tables so.

An event's write is one transaction on a pooled connection: ``SELECT ... FOR UPDATE`` (in the
schema's function ``streamlife_lock_task``) locks the task's row and reads its version (one row lock
per transition: other tasks are not held up), and one
statement moves the row on with ``UPDATE ... WHERE version = %s`` and appends the entry to the rows it
moved (``WITH moved AS (UPDATE ...) INSERT ...``), or does neither. The journal's primary key is (key,
version), so a writer from a stale copy gets ``StoreConflict`` whatever happens to the lock.

No wait is unbounded: a row lock waits ``lock_timeout``, a statement ``statement_timeout`` (both
set on each pooled connection's session), a connection the pool's ``timeout``; each ends in
``StoreError``. A process frozen while it holds a task's row (SIGSTOP, a VM paused) or a server
gone away costs a caller seconds, not the rest of its life.

Inside a ``lock()`` block, the thread's other calls (``row``, ``park`` ...) go through the block's
connection and transaction; a thread's blocks do not nest, and ``create`` is not called inside one.

JSON columns are ``json``, not ``jsonb``: ``json`` keeps the text it was given, so a value reads back
as it was written. ``jsonb`` would turn ``1e23`` into the integer 10**23 (a different number from the
float), ``-0.0`` into ``0``, and refuse a ``\\u0000`` in a string, none of which the journal may do.
"""

from __future__ import annotations

import math
import re
import select
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Final, NoReturn

import psycopg
from psycopg.types.string import TextLoader
from psycopg_pool import ConnectionPool

from streamlife._jsontext import to_json

from ._postgres_errors import errors, secrets_and_where
from ._postgres_schema import migrate
from ._prune_pacing import Pacer, ServerPacer
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

_Connection = psycopg.Connection[tuple[Any, ...]]
_Cursor = psycopg.Cursor[tuple[Any, ...]]
# One batch of a prune, in its transaction: (connection, pacer, most rows) -> (journal entries it
# weighed, whether more may be left).
_PruneStep = Callable[[_Connection, Pacer, int], tuple[int, bool]]


# How long a call waits before it raises StoreError (see PostgresStore's arguments).
POOL_TIMEOUT: Final = 5.0  # for a pooled connection: the server down, or every connection busy
LOCK_TIMEOUT: Final = 5.0  # for a row lock: another process holds the task (frozen, say)
STATEMENT_TIMEOUT: Final = 10.0  # for one statement, lock wait included


class PostgresStore:
    shared = True  # other processes may use the same database

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 8,
        timeout: float = POOL_TIMEOUT,
        lock_timeout: float = LOCK_TIMEOUT,
        statement_timeout: float = STATEMENT_TIMEOUT,
    ) -> None:
        """Every wait is bounded, and ends in ``StoreError``: ``timeout`` seconds for a connection
        (the server down or unreachable, or every pooled connection busy; connecting to a server
        that does not answer too), ``lock_timeout`` seconds for a task's row lock (another process
        holds it: a process frozen in the middle of an event would otherwise hold the task's
        callbacks up for ever), ``statement_timeout`` seconds for any one statement. A pooled
        connection the server closed (a restart, an administrator) is found out and replaced
        before it is used."""
        for name, seconds in (
            ("timeout", timeout),
            ("lock_timeout", lock_timeout),
            ("statement_timeout", statement_timeout),
        ):
            _check_seconds(name, seconds)
        self._secrets, self._where = secrets_and_where(dsn)
        # The server's settings are in whole milliseconds; 0 would turn the limit off.
        self._session = {
            "lock_timeout": f"{max(1, round(lock_timeout * 1000))}ms",
            "statement_timeout": f"{max(1, round(statement_timeout * 1000))}ms",
        }
        # libpq's connect_timeout is whole seconds, and it takes anything under 2 as 2.
        connect_timeout = max(2, math.ceil(timeout))
        # One plain connection first: a pool that cannot connect retries until ``timeout`` and then
        # says only that; this says why (no such database, authentication failed) at once.
        with self._errors(f"could not open {self!r}"):
            psycopg.connect(dsn, connect_timeout=connect_timeout).close()
        # .conn: the connection of this thread's lock() block or batch; .locked: inside a lock() block;
        # .batch: the connection of its batch.
        self._local = threading.local()
        self._cursors: weakref.WeakKeyDictionary[_Connection, _Cursor] = weakref.WeakKeyDictionary()
        self._pool: ConnectionPool[_Connection] = ConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            # autocommit: every transaction here is an explicit conn.transaction()
            kwargs={"autocommit": True, "connect_timeout": connect_timeout},
            configure=self._configure,
            # A connection the server closed while it sat in the pool fails its first statement:
            # the check finds it on the way out, and the pool hands out another.
            check=_check,
            open=False,
            name="streamlife",
        )
        try:
            with self._errors(f"could not open {self!r}"):
                self._pool.open()
                with self._pool.connection() as conn:
                    migrate(conn)
        except BaseException:
            self._pool.close()
            raise

    def _errors(self, what: str) -> AbstractContextManager[None]:
        return errors(what, self._secrets)

    def _configure(self, conn: _Connection) -> None:
        """Bound every wait of a new connection's session (autocommit: the settings outlive any
        transaction). JSON columns come back as their text, which ``_sql`` reads as it reads
        SQLite's."""
        for name, value in self._session.items():
            conn.execute("SELECT set_config(%s, %s, false)", (name, value))
        conn.adapters.register_loader("json", TextLoader)
        # The cursor an event's write goes through, made once: conn.execute makes a cursor for
        # each statement, which costs a share of the write.
        self._cursors[conn] = conn.cursor()

    def __repr__(self) -> str:
        return f"PostgresStore({self._where})"

    def create(
        self, row: TaskRow, entries: Sequence[JournalEntry], *, claim: str | None = None, due: Due = NO_DUE
    ) -> None:
        check_key(row.key)
        check_numbering(row.key, entries, 0, row)
        values = (*row_values(row), *_deadlines(row, due))
        journal = entry_values(row.key, entries)
        with (
            self._errors(f"could not create task {row.key!r}"),
            self._own_connection(f"could not create task {row.key!r}") as conn,
            conn.transaction(),
        ):
            try:
                conn.execute(
                    f"INSERT INTO streamlife_tasks ({ROW_COLUMNS}, terminal, {DUE_COLUMNS}, look_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s::json, %s, %s, %s, %s)",
                    values,
                )
            except psycopg.errors.UniqueViolation as exc:
                raise StoreConflict(f"a task with key {row.key!r} exists") from exc
            if claim is not None:
                try:  # the unique constraint decides, never a look first
                    conn.execute(
                        "INSERT INTO streamlife_claims (task_id, key) VALUES (%s, %s)", (claim, row.key)
                    )
                except psycopg.errors.UniqueViolation as exc:
                    raise StoreConflict(f"task_id {claim!r} is claimed by another task") from exc
            _insert_entries(conn, journal)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction on one connection; each ``lock()`` and ``create`` inside it is a savepoint
        (psycopg nests ``transaction()`` so), and the row locks taken are held until the commit."""
        what = "could not write a batch"
        if getattr(self._local, "batch", None) is not None:
            raise StoreError(f"{what}: this thread is inside a batch of {self!r} already")
        with self._errors(what), self._own_connection(what) as conn, conn.transaction():
            self._local.batch = self._local.conn = conn
            self._local.release_owed = False
            try:
                yield
            finally:
                self._local.batch = self._local.conn = None
                self._local.release_owed = False
            _refuse_failed(conn, f"{what}: a statement of the batch failed")

    def lock(self, key: str) -> _Lock:
        return _Lock(self, key)

    def row(self, key: str) -> TaskRow | None:
        with self._errors(f"could not read task {key!r}"), self._connection() as conn:
            found = conn.execute(
                f"SELECT {ROW_COLUMNS} FROM streamlife_tasks WHERE key = %s", (key,)
            ).fetchone()
        return None if found is None else row_from(found)

    def find(self, task_id: str) -> TaskRow | None:
        with self._errors(f"could not look up task_id {task_id!r}"), self._connection() as conn:
            found = conn.execute(
                f"SELECT {ROW_COLUMNS} FROM streamlife_tasks WHERE task_id = %s"
                " ORDER BY created_at, seq LIMIT 1",
                (task_id,),
            ).fetchone()
        return None if found is None else row_from(found)

    def journal(self, key: str) -> list[JournalEntry]:
        with self._errors(f"could not read the journal of {key!r}"), self._connection() as conn:
            found = conn.execute(
                f"SELECT {ENTRY_COLUMNS} FROM streamlife_journal WHERE key = %s ORDER BY version", (key,)
            ).fetchall()
        return [entry_from(values) for values in found]

    def rows(self, *, terminal: bool = False) -> Iterator[TaskRow]:
        where = "" if terminal else "WHERE NOT terminal"
        with self._errors("could not read the tasks"), self._connection() as conn:
            found = conn.execute(
                f"SELECT {ROW_COLUMNS} FROM streamlife_tasks {where} ORDER BY terminal, created_at, seq"
            ).fetchall()
        return iter([row_from(values) for values in found])

    def park(self, task_id: str, at: float, payload: Mapping[str, Any]) -> None:
        text = to_json(payload)
        with self._errors(f"could not park a callback for {task_id!r}"), self._connection() as conn:
            conn.execute(
                "INSERT INTO streamlife_parked (task_id, at, payload) VALUES (%s, %s, %s::json)",
                (task_id, at, text),
            )

    def unpark(self, task_id: str, *, upto: int | None = None) -> None:
        with self._errors(f"could not unpark the callbacks for {task_id!r}"), self._connection() as conn:
            if upto is None:
                conn.execute("DELETE FROM streamlife_parked WHERE task_id = %s", (task_id,))
            else:
                conn.execute(
                    "DELETE FROM streamlife_parked WHERE task_id = %s AND seq <= %s", (task_id, upto)
                )

    def parked(self, task_id: str | None = None, *, before: float | None = None) -> list[ParkedCallback]:
        where, bound = parked_where(task_id, before, "%s")
        with self._errors("could not read the parked callbacks"), self._connection() as conn:
            found = conn.execute(
                f"SELECT {PARKED_COLUMNS} FROM streamlife_parked{where} ORDER BY seq", bound
            ).fetchall()
        return [parked_from(values) for values in found]

    def dead_letter(self, at: float, reason: str, field: str | None, body: bytes) -> int:
        kept = dead_letter_fields(reason, field, body)
        with self._errors("could not keep a dead letter"), self._connection() as conn:
            found = conn.execute(
                "INSERT INTO streamlife_dead_letters (at, reason, field, size, body)"
                " VALUES (%s, %s, %s, %s, %s) RETURNING id",
                (at, *kept),
            ).fetchone()
        assert found is not None  # (an INSERT's RETURNING)
        letter_id: int = found[0]
        return letter_id

    def dead_letters(self, *, after: int = 0, limit: int | None = None) -> list[DeadLetter]:
        after, limit = dead_letter_page(after, limit)
        with self._errors("could not read the dead letters"), self._connection() as conn:
            found = conn.execute(
                f"SELECT {LETTER_COLUMNS} FROM streamlife_dead_letters WHERE id > %s ORDER BY id LIMIT %s",
                (after, limit),  # (LIMIT NULL: no limit)
            ).fetchall()
        return [letter_from(values) for values in found]

    def dead_letter_by_id(self, letter_id: int) -> DeadLetter | None:
        if not dead_letter_ids([letter_id]):
            return None
        with self._errors(f"could not read dead letter {letter_id}"), self._connection() as conn:
            found = conn.execute(
                f"SELECT {LETTER_COLUMNS} FROM streamlife_dead_letters WHERE id = %s", (letter_id,)
            ).fetchone()
        return None if found is None else letter_from(found)

    def purge_dead_letters(self, ids: Iterable[int] | None = None) -> int:
        with self._errors("could not purge dead letters"), self._connection() as conn:
            if ids is None:
                return conn.execute("DELETE FROM streamlife_dead_letters").rowcount
            wanted = dead_letter_ids(ids)
            if not wanted:
                return 0
            return conn.execute(
                "DELETE FROM streamlife_dead_letters WHERE id = ANY(%s::bigint[])", (wanted,)
            ).rowcount

    def claim_due(self, now: float, *, until: float, limit: int) -> list[str]:
        """One statement: ``FOR UPDATE SKIP LOCKED`` picks the due rows no other transaction holds
        (a process writing the task, or claiming it at the same moment), and claims them."""
        check_claim_limit(limit)
        what = "could not claim the tasks due"
        if getattr(self._local, "conn", None) is not None:
            raise StoreError(f"{what}: {self!r} cannot claim tasks inside a batch or a lock() block")
        with self._errors(what), self._pool.connection() as conn, conn.transaction():
            found = conn.execute(_CLAIM, (until, now, now, now, now, limit)).fetchall()
        return [key for (key,) in found]

    def prune(
        self, before: float, *, dry_run: bool = False, stop: threading.Event | None = None
    ) -> PruneResult:
        """Each batch is one transaction: it locks its tasks' rows (``FOR UPDATE SKIP LOCKED``: a
        task another process is writing is left for a later prune, and nobody waits for the
        prune), then deletes their journals, claims and rows. A write that waited for one of these
        rows finds it gone once the batch commits, and is refused. A batch takes what it can delete
        in about ``_prune_pacing.HOLD``, counted in journal entries, and the prune then sleeps as
        long as the batch took (``_prune_pacing.ServerPacer``): other processes' writes, whose
        commits wait behind the prune's in the WAL, are held up by one short batch at most. A batch
        commits with ``synchronous_commit`` off (its transaction only): it does not hold on while
        the disk takes its WAL, and a batch a server crash loses is deleted by the next prune. It
        also has the server write back the pages it evicts as it goes (``backend_flush_after``, its
        transaction only): they do not pile up in the kernel's cache and go to the disk in a burst
        that other processes' commits wait behind. The dead letters then go in such batches too,
        in id order, a letter weighing a page of body as an entry; a letter another process holds
        (a purge) is left, as a task is."""
        cutoff = (prune_cutoff(before),) * 2
        what = "could not prune"
        if dry_run:
            with self._errors(what), self._connection() as conn:
                found = conn.execute(
                    f"SELECT count(*), coalesce(sum(version), 0) {_PRUNABLE}", cutoff
                ).fetchone()
                old_letters = conn.execute(
                    "SELECT count(*) FROM streamlife_dead_letters WHERE at < %s", cutoff[:1]
                ).fetchone()
            assert found is not None  # (an aggregate's one row)
            assert old_letters is not None
            return PruneResult(found[0], int(found[1]), old_letters[0])
        if getattr(self._local, "conn", None) is not None:
            raise StoreError(f"{what}: {self!r} cannot prune inside a batch or a lock() block")
        tasks = entries = letters = 0

        def tasks_batch(conn: _Connection, pacer: Pacer, limit: int) -> tuple[int, bool]:
            nonlocal tasks, entries
            batch = conn.execute(
                f"SELECT key, version {_PRUNABLE} ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED",
                (*cutoff, limit),
            ).fetchall()
            # (The rest, locked until the commit, go in a later batch.)
            taken: list[str] = pacer.take(batch)
            keys = (taken,)
            deleted = conn.execute(
                "DELETE FROM streamlife_journal WHERE key = ANY(%s::text[])", keys
            ).rowcount
            conn.execute("DELETE FROM streamlife_claims WHERE key = ANY(%s::text[])", keys)
            tasks += conn.execute("DELETE FROM streamlife_tasks WHERE key = ANY(%s::text[])", keys).rowcount
            entries += deleted
            return deleted, not len(taken) == len(batch) < limit

        after = 0  # the letters' ids go up: each batch reads on from the last one's

        def letters_batch(conn: _Connection, pacer: Pacer, limit: int) -> tuple[int, bool]:
            nonlocal letters, after
            batch = conn.execute(_OLD_LETTERS, (cutoff[0], after, limit)).fetchall()
            ids: list[int] = pacer.take(batch)
            letters += conn.execute(
                "DELETE FROM streamlife_dead_letters WHERE id = ANY(%s::bigint[])", (ids,)
            ).rowcount
            after = ids[-1] if ids else after
            return sum(pages for _, pages in batch[: len(ids)]), not len(ids) == len(batch) < limit

        with self._errors(what), self._pool.connection() as conn:
            self._in_batches(conn, tasks_batch, stop)
            self._in_batches(conn, letters_batch, stop)
        return PruneResult(tasks, entries, letters)

    def _in_batches(self, conn: _Connection, step: _PruneStep, stop: threading.Event | None = None) -> None:
        """Run ``step`` one transaction at a time, paced, until it says there is no more:
        ``step(conn, pacer, limit)`` deletes a batch of at most ``limit`` rows, and says how many
        journal entries it weighed and whether more may be left; none once ``stop`` is set."""
        pacer = self._pacer()
        while not stopped(stop):
            began = pacer.timer()
            limit = min(PRUNE_BATCH, pacer.budget)  # (a row weighs one entry at least)
            with conn.transaction():
                conn.execute(_PRUNE_SETTINGS)  # (its transaction only: nothing else is written in it)
                weighed, more = step(conn, pacer, limit)
            held = pacer.timer() - began
            pacer.learn(weighed, held)
            if not more:
                return
            pacer.pause(held, pacer.timer())

    def _pacer(self) -> Pacer:
        """A prune's pacing (a method of its own, so that a test may pace it on a clock of its own)."""
        return ServerPacer()

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def _own_connection(self, what: str) -> Iterator[_Connection]:
        """A pooled connection for a transaction of its own (not inside a ``lock()`` block); inside
        a ``batch()``, the batch's, on which the caller's transaction is a savepoint."""
        if getattr(self._local, "locked", False):
            raise StoreError(f"{what}: this thread is inside a lock() block of {self!r} already")
        batch: _Connection | None = getattr(self._local, "batch", None)
        if batch is not None:
            yield batch
            return
        with self._pool.connection() as conn:
            yield conn

    @contextmanager
    def _connection(self) -> Iterator[_Connection]:
        """A connection for a statement or two: inside a ``lock()`` block, the block's own (what it
        reads includes what it wrote, and what it writes is kept or rolled back with the block);
        elsewhere, a pooled one."""
        current: _Connection | None = getattr(self._local, "conn", None)
        if current is not None:
            self._local.touched = True
            yield current
        else:
            with self._pool.connection() as conn:
                yield conn


class _Lock:
    """``PostgresStore.lock``'s block. Written out by hand, not with ``contextmanager``: an event's
    Python costs a share of the floor's whole write, and the generator, the nested context managers
    and the pool's ``connection()`` (whose ``with conn`` calls a commit that has nothing to do) cost
    more than the work. psycopg's errors become ``StoreError`` wherever they come from (taking a
    connection, the lock, the block, the commit); the block's own exceptions pass through, after the
    rollback."""

    __slots__ = ("_conn", "_inside", "_key", "_pooled", "_store", "_txn")

    def __init__(self, store: PostgresStore, key: str) -> None:
        self._store = store
        self._key = key

    def _what(self) -> str:
        return f"could not write task {self._key!r}"

    def __enter__(self) -> _Txn:
        store, key = self._store, self._key
        local = store._local
        if getattr(local, "locked", False):
            raise StoreError(f"{self._what()}: this thread is inside a lock() block of {store!r} already")
        batch: _Connection | None = getattr(local, "batch", None)
        self._inside = inside = batch is not None
        self._pooled = False
        if batch is None:
            try:
                conn = store._pool.getconn()
            except psycopg.Error:
                with store._errors(self._what()):
                    raise
            self._pooled = True
        else:
            conn = batch
            # (Before the lock, not after: a rollback to the savepoint owed a release would undo that block.)
            _refuse_failed(conn, f"{self._what()}: a statement of its batch failed before it")
        self._conn = conn
        # The transaction (inside a batch: a savepoint) is opened by hand, not with conn.transaction(),
        # so that its BEGIN goes to the server in one message with the row lock: one round trip for the
        # two. (The key is quoted client-side: see _lock_row.) Inside a batch, the last block's
        # savepoint is released in the same message, not on its own.
        try:
            if not inside:
                version = _lock_row(conn, _BEGIN_AND_LOCK, key)
            elif local.release_owed:
                local.release_owed = False
                version = _lock_row(conn, _RELEASE_SAVEPOINT_AND_LOCK, key)
            else:
                version = _lock_row(conn, _SAVEPOINT_AND_LOCK, key)
        except BaseException as exc:
            self._leave(exc)
            raise  # (not reached: _leave raises)
        local.conn = conn  # this thread's other calls, until the block ends, go through it
        local.locked = True
        local.touched = False  # (set by those calls)
        self._txn = txn = _Txn(conn, store._cursors[conn], key, version, store._secrets)
        return txn

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        store, conn = self._store, self._conn
        local = store._local
        local.conn = local.batch if self._inside else None
        local.locked = False
        if exc is not None:
            self._leave(exc)
        try:
            _refuse_failed(conn, f"{self._what()}: a statement of the block failed")
        except BaseException as refused:
            self._leave(refused)
        try:
            if self._inside:  # released with the next block's lock, or by the batch's commit
                local.release_owed = True
            elif self._txn._written or local.touched:
                _commit(conn)
            else:
                # Nothing written (a duplicate, say): nothing to make durable, so no commit to wait
                # for the disk.
                _roll_back_keeping_prepared(conn)
        except psycopg.Error:
            self._release()
            with store._errors(self._what()):
                raise
        except BaseException:
            self._release()
            raise
        self._release()

    def _leave(self, exc: BaseException) -> NoReturn:
        """Roll the block back, give the connection back, and raise ``exc`` (psycopg's as the store's)."""
        _undo(self._conn, self._inside)
        self._release()
        if isinstance(exc, psycopg.Error):
            with self._store._errors(self._what()):
                raise exc
        raise exc

    def _release(self) -> None:
        if self._pooled:
            self._pooled = False
            self._store._pool.putconn(self._conn)


class _Txn:
    __slots__ = ("_conn", "_cursor", "_exists", "_secrets", "_written", "key", "version")

    def __init__(
        self, conn: _Connection, cursor: _Cursor, key: str, version: int | None, secrets: tuple[str, ...]
    ) -> None:
        self._conn = conn
        self._cursor = cursor  # (the connection's own: see PostgresStore._configure)
        self._secrets = secrets
        self.key = key
        self.version = version or 0  # read under the row lock
        self._exists = version is not None
        self._written = False

    def entries_after(self, version: int) -> list[JournalEntry]:
        with errors(f"could not read the journal of {self.key!r}", self._secrets):
            found = self._conn.execute(
                f"SELECT {ENTRY_COLUMNS} FROM streamlife_journal WHERE key = %s AND version > %s"
                " ORDER BY version",
                (self.key, version),
            ).fetchall()
        return [entry_from(values) for values in found]

    def write(self, entries: Sequence[JournalEntry], row: TaskRow | None, due: Due = NO_DUE) -> None:
        check_write(self.key, self.version if self._exists else None, entries, row, written=self._written)
        facts = None if row is None else to_json(row.facts)
        journal = entry_values(self.key, entries)
        if len(journal) == 1:  # one event: most writes
            self._write_one(journal[0], row, facts, due)
            self._written = True
            return
        where = (self.key, self.version)
        with (
            errors(f"could not write task {self.key!r}", self._secrets),
            self._conn.transaction(),
        ):  # a savepoint
            if row is None:  # moved on to the last entry's version and time, as it was otherwise
                moved_on = _moved_on(entries[-1].version, entries[-1].at, where)
                updated = self._conn.execute(_MOVE_ROW_ON, moved_on).rowcount
            else:
                values = (row.kind, row.task_id, row.state, row.state in TERMINAL_STATES, row.version)
                updated = self._conn.execute(
                    _UPDATE_ROW,
                    (*values, row.created_at, row.updated_at, facts, *_deadlines(row, due), *where),
                ).rowcount
            if updated != 1:
                raise StoreConflict(f"task {self.key!r} is no longer at version {self.version}")
            _insert_entries(self._conn, journal)
        self._written = True

    def _write_one(self, entry: tuple[Any, ...], row: TaskRow | None, facts: str | None, due: Due) -> None:
        """One statement, one round trip: it moves the row on from ``version`` and appends the entry,
        or, if the row is not at ``version``, does neither. With no savepoint around it: an error
        (the entry's version taken, a timeout) leaves the transaction failed, and the block is
        rolled back whole (``lock()`` raises at its end if the block caught the error and went on)."""
        where = (self.key, self.version)
        if row is None:  # moved on to the entry's version and time, as it was otherwise
            statement, params = _MOVE_ON_AND_APPEND, (*_moved_on(entry[1], entry[2], where), *entry[1:])
        else:
            values = (row.kind, row.task_id, row.state, row.state in TERMINAL_STATES, row.version)
            moved = (*values, row.created_at, row.updated_at, facts, *_deadlines(row, due), *where)
            statement, params = _UPDATE_AND_APPEND, (*moved, *entry[1:])
        try:  # (not in errors(): a context manager costs a share of the event)
            appended = self._cursor.execute(statement, params).fetchone()
        except psycopg.errors.UniqueViolation as exc:
            raise StoreConflict(f"a version of task {self.key!r} is taken") from exc
        except psycopg.Error:
            with errors(f"could not write task {self.key!r}", self._secrets):
                raise
        if appended is None:
            raise StoreConflict(f"task {self.key!r} is no longer at version {self.version}")


# A terminal task last updated before the cutoff. (created_at is never after updated_at, but for
# clocks apart: it lets the scan take the streamlife_tasks_open index, terminal tasks made before
# the cutoff. An index on updated_at would cost every event's write: a row whose indexed column
# changes is never updated in place.)
_PRUNABLE: Final = "FROM streamlife_tasks WHERE terminal AND created_at < %s AND updated_at < %s"
# A prune's batch, for its transaction only (_in_batches sets them):
# - its commit does not wait for the WAL to reach the disk: a batch holds its rows and the server for
#   its deletes only, not for a flush that every writer's commit waits behind anyway; a batch a crash
#   loses is one the next prune deletes again;
# - the pages it dirties and then evicts for the next ones (a prune reads more than the server's
#   buffers hold) are written back as it goes, every 256 kB (32 pages): left to the kernel, they go in
#   bursts of tens of megabytes, and a writer's commit, whose WAL flush queues behind such a burst on
#   the disk, waits for all of it.
_PRUNE_SETTINGS: Final = (
    "SELECT set_config('synchronous_commit', 'off', true), set_config('backend_flush_after', '32', true)"
)
# The next dead letters kept before the cutoff, in id order from the last batch's, each with what it
# weighs in journal entries: one for each page its body takes, as its deletion writes about as many.
# SKIP LOCKED: a letter another process is purging is its to delete.
_OLD_LETTERS: Final = (
    "SELECT id, 1 + octet_length(body) / 8192 FROM streamlife_dead_letters WHERE at < %s AND id > %s"
    " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED"
)
_UPDATE_ROW: Final = (
    "UPDATE streamlife_tasks SET kind = %s, task_id = %s, state = %s, terminal = %s, version = %s,"
    " created_at = %s, updated_at = %s, facts = %s::json, due_at = %s, quiet = %s, look_at = %s"
    " WHERE key = %s AND version = %s"
)
# The claimable rows, found through the index of look_at (each task's deadlines' lower bound, see
# _MOVE_ROW_ON), the most overdue first: a look reads the tasks that may be due, not every live one.
# (The ORDER BY also keeps the server on the index when its statistics of look_at are old.)
_CLAIM: Final = (
    "UPDATE streamlife_tasks SET claimed_until = %s WHERE key IN (SELECT key FROM streamlife_tasks"
    " WHERE look_at <= %s AND "
    + CLAIMABLE.format(false="false", mark="%s")
    + " ORDER BY look_at LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING key"
)
# An event that moves the row on moves its silence on (updated_at + quiet), and leaves look_at as it
# is while that stays a lower bound a quarter of the silence ahead of the event: no indexed column
# changes, so the row can be updated in place (where its page has room). Otherwise look_at becomes
# the deadlines' exact time again (an event from a clock behind the last one's may bring the
# silence nearer). So a stream heard from at least every quarter of its silence never shows up in
# a claim's look, and pays for the index about once per three quarters of its silence. The
# parameters: version, then the event's time four times.
_MOVE_ROW_ON: Final = (
    "UPDATE streamlife_tasks SET version = %s, updated_at = %s, look_at = CASE"
    " WHEN look_at IS NULL OR look_at <= %s + quiet / 4 THEN LEAST(due_at, %s + quiet)"
    " ELSE LEAST(look_at, %s + quiet) END"
    " WHERE key = %s AND version = %s"
)
# The row moved (as above) and one entry appended, in one statement: the entry only if the row moved.
_APPEND_TO_MOVED: Final = (
    f" RETURNING key) INSERT INTO streamlife_journal (key, {ENTRY_COLUMNS})"
    " SELECT key, %s::integer, %s::double precision, %s::text, %s::text, %s::text, %s::json FROM moved"
    " RETURNING version"
)
_MOVE_ON_AND_APPEND: Final = "WITH moved AS (" + _MOVE_ROW_ON + _APPEND_TO_MOVED
_UPDATE_AND_APPEND: Final = "WITH moved AS (" + _UPDATE_ROW + _APPEND_TO_MOVED


# lock()'s transaction, by hand (see there): a savepoint of its own inside a batch, else the
# transaction; the row lock is taken in the same message, by the schema's function (whose query the
# server plans once per connection, not at every event): the row's version, NULL if there is none.
_LOCK_ROW: Final = b"SELECT streamlife_lock_task("
_BEGIN_AND_LOCK: Final = b"BEGIN; " + _LOCK_ROW
_SAVEPOINT_AND_LOCK: Final = b"SAVEPOINT streamlife_lock; " + _LOCK_ROW
_RELEASE: Final = "RELEASE SAVEPOINT streamlife_lock"
_RELEASE_SAVEPOINT_AND_LOCK: Final = _RELEASE.encode() + b"; " + _SAVEPOINT_AND_LOCK
_INERROR: Final = int(psycopg.pq.TransactionStatus.INERROR)
_TUPLES_OK: Final = psycopg.pq.ExecStatus.TUPLES_OK
_COMMAND_OK: Final = psycopg.pq.ExecStatus.COMMAND_OK
_PLAIN_KEY: Final = re.compile(r"[0-9A-Za-z_-]+")


def _look_at(updated_at: float, due: Due) -> float | None:
    """When a row with these deadlines is first due: the look_at column's value for it, None for
    a row no deadline makes due. The least as the server's LEAST takes it (the migration's and
    _MOVE_ROW_ON's): NaN above any number, so a deadline that is NaN, never due, leaves the other
    to decide (Python's min would keep a NaN that came first, and hide the row from the claims)."""
    times = [
        time for time in (due.at, None if due.quiet is None else updated_at + due.quiet) if time is not None
    ]
    return min(times, key=lambda time: (math.isnan(time), time), default=None)


def _deadlines(row: TaskRow, due: Due) -> tuple[float | None, float | None, float | None]:
    """A row's due_at, quiet and look_at, as create and _UPDATE_ROW write them."""
    return (*due, _look_at(row.updated_at, due))


def _moved_on(version: int, at: float, where: tuple[str, int]) -> tuple[Any, ...]:
    """_MOVE_ROW_ON's parameters."""
    return (version, at, at, at, at, *where)


def _lock_row(conn: _Connection, statement: bytes, key: str) -> int | None:
    """Send ``statement`` (statements, the last one the row lock, its key to come) with the key
    quoted client-side, as one simple query through libpq itself; the row's version, or None if
    there is no such row. psycopg's cursor, its quoting and its wait loop cost more than the round
    trip they would wrap; libpq lets go of the GIL while it waits, as psycopg does. A key of ASCII
    letters, digits, ``-`` and ``_`` (the Fleet's: hex) cannot get out of its quotes, so it is put
    in them as it is; any other is quoted by libpq, for the connection's encoding."""
    pgconn = conn.pgconn
    if _PLAIN_KEY.fullmatch(key):
        quoted = b"'" + key.encode() + b"'"
    else:
        quoted = psycopg.pq.Escaping(pgconn).escape_literal(key.encode(conn.info.encoding))
    result = pgconn.exec_(statement + quoted + b")")
    if result.status != _TUPLES_OK:
        raise _error(conn, result)
    value = result.get_value(0, 0)
    return None if value is None else int(value)


def _commit(conn: _Connection) -> None:
    """Commit the open transaction through libpq itself (see ``_lock_row``): psycopg's ``commit``
    wraps the one round trip in more work than the rest of the write's."""
    result = conn.pgconn.exec_(b"COMMIT")
    if result.status != _COMMAND_OK:
        raise _error(conn, result)


def _error(conn: _Connection, result: psycopg.pq.abc.PGresult) -> psycopg.Error:
    """The psycopg error a failed result stands for, as psycopg would have raised it (a connection
    that broke included)."""
    if conn.pgconn.status != psycopg.pq.ConnStatus.OK:
        message = conn.pgconn.error_message.decode(errors="replace").strip()
        return psycopg.OperationalError(message or "the connection to the server was lost")
    return psycopg.errors.error_from_result(result, encoding=conn.info.encoding)


def _roll_back_keeping_prepared(conn: _Connection) -> None:
    """Roll back the open transaction, and keep the connection's prepared statements. psycopg
    forgets them at any ROLLBACK it runs (``rollback()``, or one passed to ``execute``) and has the
    server drop them (DEALLOCATE ALL): after every duplicate callback, the next events would be
    parsed and planned again. These transactions change no schema, so the statements stay valid;
    the ROLLBACK goes through libpq itself, which psycopg's cache of statements does not see."""
    result = conn.pgconn.exec_(b"ROLLBACK")
    if result.status != psycopg.pq.ExecStatus.COMMAND_OK:
        conn.rollback()  # (raises, saying why, if the connection is bad)


def _refuse_failed(conn: _Connection, why: str) -> None:
    """Raise, rather than commit, a transaction a statement failed in: the server would roll all of it
    back at the commit, which psycopg reports as a commit like any other."""
    if conn.pgconn.transaction_status == _INERROR:  # (libpq's own: conn.info makes an object, an enum)
        raise StoreError(f"{why}, so nothing of it is kept")


def _undo(conn: _Connection, inside: bool) -> None:
    """Roll back what a ``lock()`` block did, on its way out with an exception, which this never
    masks: a connection gone bad is left for the pool to throw away, a batch that cannot roll back
    to the savepoint fails at its commit."""
    try:
        if inside:
            conn.execute("ROLLBACK TO SAVEPOINT streamlife_lock", prepare=False)
            conn.execute(_RELEASE, prepare=False)
        else:
            conn.rollback()
    except psycopg.Error:
        pass


def _check(conn: _Connection) -> None:
    """The pool's check of a connection it is about to hand out. A server that closes a connection
    (a restart, an administrator, a crash) says why and closes the socket, so the socket of a
    connection it closed has something to read: only such a connection pays for an empty query,
    which fails if it is closed. Any other connection goes out with no round trip (nothing is
    waiting on it: the pool takes back only connections idle in no transaction)."""
    if not conn.closed:
        poll = select.poll()
        poll.register(conn.pgconn.socket, select.POLLIN | select.POLLPRI)
        if not poll.poll(0):
            return
    ConnectionPool.check_connection(conn)


def _insert_entries(conn: _Connection, values: list[tuple[Any, ...]]) -> None:
    if not values:
        return
    try:
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO streamlife_journal (key, {ENTRY_COLUMNS})"
                " VALUES (%s, %s, %s, %s, %s, %s, %s::json)",
                values,
            )
    except psycopg.errors.UniqueViolation as exc:
        raise StoreConflict(f"a version of task {values[0][0]!r} is taken") from exc


def _check_seconds(name: str, seconds: float) -> None:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds < math.inf:
        raise ValueError(f"{name} is a number of seconds above 0, got {seconds!r}")
