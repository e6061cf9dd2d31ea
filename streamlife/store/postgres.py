"""PostgresStore: the Store protocol in PostgreSQL, for many processes sharing the same tasks.

Needs the ``postgres`` extra (psycopg 3 and its pool). The tables (``streamlife_tasks``,
``streamlife_journal``, ``streamlife_parked``, ``streamlife_claims``, ``streamlife_dead_letters``)
are made, and migrated, by the store itself when it opens, under an advisory lock so that processes
opening at once do not race; ``streamlife_schema`` holds how many migrations were applied. A store
made by an older streamlife gains the newer tables so.

An event's write is one transaction on a pooled connection: ``SELECT ... FOR UPDATE`` locks the
task's row and reads its version (one row lock per transition: other tasks are not held up), and the
write moves it on with ``UPDATE ... WHERE version = %s``. The journal's primary key is (key, version),
so a writer from a stale copy gets ``StoreConflict`` whatever happens to the lock.

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
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Final

import psycopg
import psycopg.conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

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
from .dsn import mask, meant_passwords, secrets_of

_TERMINAL_STATES: Final = frozenset(state.value for state in TERMINAL)

# Taken (for the migrating transaction only) by every store that opens: one migrates, the others
# wait and then find the schema current. A constant of our own: b"strmlife" as a signed 64-bit int.
_MIGRATION_LOCK: Final = int.from_bytes(b"strmlife", "big", signed=True)

# The schema, one migration a step: streamlife_schema.version counts the steps applied. Append, never edit.
_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """CREATE TABLE streamlife_tasks (
            key TEXT PRIMARY KEY,
            seq BIGINT GENERATED ALWAYS AS IDENTITY,  -- the order tasks were made in, for ties
            kind TEXT NOT NULL,
            task_id TEXT,
            state TEXT NOT NULL,
            terminal BOOLEAN NOT NULL,  -- state is stopped, ended or failed: rows() asks for these last
            version INTEGER NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            facts JSON NOT NULL
        )""",
        "CREATE INDEX streamlife_tasks_task_id ON streamlife_tasks (task_id)",
        "CREATE INDEX streamlife_tasks_open ON streamlife_tasks (terminal, created_at, seq)",
        """CREATE TABLE streamlife_journal (
            key TEXT NOT NULL,
            version INTEGER NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            trigger TEXT NOT NULL,
            from_state TEXT NOT NULL,
            to_state TEXT NOT NULL,
            args JSON,  -- NULL for a trigger without an argument
            PRIMARY KEY (key, version)
        )""",
        """CREATE TABLE streamlife_parked (
            seq BIGSERIAL PRIMARY KEY,  -- arrival order
            task_id TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            payload JSON NOT NULL
        )""",
        "CREATE INDEX streamlife_parked_task_id ON streamlife_parked (task_id)",
    ),
    (  # 2: orphans' task_ids, claimed once
        "CREATE TABLE streamlife_claims (task_id TEXT PRIMARY KEY, key TEXT NOT NULL)",
    ),
    (  # 3: payloads the parser refused
        """CREATE TABLE streamlife_dead_letters (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- one sequence for every process
            at DOUBLE PRECISION NOT NULL,
            reason TEXT NOT NULL,
            field TEXT,
            size INTEGER NOT NULL,  -- the body's length as received
            body BYTEA NOT NULL  -- the body as received, up to DEAD_LETTER_MAX_BODY bytes
        )""",
    ),
)

_ROW_COLUMNS: Final = "key, kind, task_id, state, version, created_at, updated_at, facts"
_ENTRY_COLUMNS: Final = "version, at, trigger, from_state, to_state, args"
_LETTER_COLUMNS: Final = "id, at, reason, field, size, body"

_Connection = psycopg.Connection[tuple[Any, ...]]


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
        self._secrets, self._where = _secrets_and_where(dsn)
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
        self._pool: ConnectionPool[_Connection] = ConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            # autocommit: every transaction here is an explicit conn.transaction()
            kwargs={"autocommit": True, "connect_timeout": connect_timeout},
            configure=self._configure,
            # A connection the server closed while it sat in the pool fails its first statement:
            # an empty query on the way out finds it, and the pool hands out another.
            check=ConnectionPool.check_connection,
            open=False,
            name="streamlife",
        )
        try:
            with self._errors(f"could not open {self!r}"):
                self._pool.open()
                with self._pool.connection() as conn:
                    _migrate(conn)
        except BaseException:
            self._pool.close()
            raise

    def _errors(self, what: str) -> AbstractContextManager[None]:
        return _errors(what, self._secrets)

    def _configure(self, conn: _Connection) -> None:
        """Bound every wait of a new connection's session (autocommit: the settings outlive any
        transaction)."""
        for name, value in self._session.items():
            conn.execute("SELECT set_config(%s, %s, false)", (name, value))

    def __repr__(self) -> str:
        return f"PostgresStore({self._where})"

    def create(self, row: TaskRow, entries: Sequence[JournalEntry], *, claim: str | None = None) -> None:
        check_numbering(row.key, entries, 0, row)
        facts = to_json(row.facts)
        journal = _entry_values(row.key, entries)
        with (
            self._errors(f"could not create task {row.key!r}"),
            self._own_connection(f"could not create task {row.key!r}") as conn,
            conn.transaction(),
        ):
            try:
                conn.execute(
                    f"INSERT INTO streamlife_tasks ({_ROW_COLUMNS}, terminal)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s::json, %s)",
                    (
                        row.key,
                        row.kind,
                        row.task_id,
                        row.state,
                        row.version,
                        row.created_at,
                        row.updated_at,
                        facts,
                        row.state in _TERMINAL_STATES,
                    ),
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
            try:
                yield
            finally:
                self._local.batch = self._local.conn = None

    @contextmanager
    def lock(self, key: str) -> Iterator[_Txn]:
        # psycopg's errors become StoreError wherever they come from (taking a connection, the lock,
        # the commit); the block's own exceptions pass through, after the rollback.
        what = f"could not write task {key!r}"
        with self._errors(what), self._own_connection(what) as conn, conn.transaction():
            found = conn.execute(
                "SELECT version FROM streamlife_tasks WHERE key = %s FOR UPDATE", (key,)
            ).fetchone()
            self._local.conn = conn  # this thread's other calls, until the block ends, go through it
            self._local.locked = True
            try:
                yield _Txn(conn, key, None if found is None else found[0], self._secrets)
            finally:
                self._local.conn = getattr(self._local, "batch", None)
                self._local.locked = False

    def row(self, key: str) -> TaskRow | None:
        with self._errors(f"could not read task {key!r}"), self._connection() as conn:
            found = conn.execute(
                f"SELECT {_ROW_COLUMNS} FROM streamlife_tasks WHERE key = %s", (key,)
            ).fetchone()
        return None if found is None else _row(found)

    def find(self, task_id: str) -> TaskRow | None:
        with self._errors(f"could not look up task_id {task_id!r}"), self._connection() as conn:
            found = conn.execute(
                f"SELECT {_ROW_COLUMNS} FROM streamlife_tasks WHERE task_id = %s"
                " ORDER BY created_at, seq LIMIT 1",
                (task_id,),
            ).fetchone()
        return None if found is None else _row(found)

    def journal(self, key: str) -> list[JournalEntry]:
        with self._errors(f"could not read the journal of {key!r}"), self._connection() as conn:
            found = conn.execute(
                f"SELECT {_ENTRY_COLUMNS} FROM streamlife_journal WHERE key = %s ORDER BY version", (key,)
            ).fetchall()
        return [_entry(values) for values in found]

    def rows(self, *, terminal: bool = False) -> Iterator[TaskRow]:
        where = "" if terminal else "WHERE NOT terminal"
        with self._errors("could not read the tasks"), self._connection() as conn:
            found = conn.execute(
                f"SELECT {_ROW_COLUMNS} FROM streamlife_tasks {where} ORDER BY terminal, created_at, seq"
            ).fetchall()
        return iter([_row(values) for values in found])

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

    def parked(self, task_id: str | None = None) -> list[ParkedCallback]:
        with self._errors("could not read the parked callbacks"), self._connection() as conn:
            if task_id is None:
                found = conn.execute(
                    "SELECT seq, task_id, at, payload FROM streamlife_parked ORDER BY seq"
                ).fetchall()
            else:
                found = conn.execute(
                    "SELECT seq, task_id, at, payload FROM streamlife_parked WHERE task_id = %s ORDER BY seq",
                    (task_id,),
                ).fetchall()
        return [ParkedCallback(seq, task_id, at, payload) for seq, task_id, at, payload in found]

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
                f"SELECT {_LETTER_COLUMNS} FROM streamlife_dead_letters WHERE id > %s ORDER BY id LIMIT %s",
                (after, limit),  # (LIMIT NULL: no limit)
            ).fetchall()
        return [_letter(values) for values in found]

    def dead_letter_by_id(self, letter_id: int) -> DeadLetter | None:
        if not dead_letter_ids([letter_id]):
            return None
        with self._errors(f"could not read dead letter {letter_id}"), self._connection() as conn:
            found = conn.execute(
                f"SELECT {_LETTER_COLUMNS} FROM streamlife_dead_letters WHERE id = %s", (letter_id,)
            ).fetchone()
        return None if found is None else _letter(found)

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
            yield current
        else:
            with self._pool.connection() as conn:
                yield conn


class _Txn:
    __slots__ = ("_conn", "_exists", "_secrets", "_written", "key", "version")

    def __init__(self, conn: _Connection, key: str, version: int | None, secrets: tuple[str, ...]) -> None:
        self._conn = conn
        self._secrets = secrets
        self.key = key
        self.version = version or 0  # read under the row lock
        self._exists = version is not None
        self._written = False

    def entries_after(self, version: int) -> list[JournalEntry]:
        with _errors(f"could not read the journal of {self.key!r}", self._secrets):
            found = self._conn.execute(
                f"SELECT {_ENTRY_COLUMNS} FROM streamlife_journal WHERE key = %s AND version > %s"
                " ORDER BY version",
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
        facts = None if row is None else to_json(row.facts)
        journal = _entry_values(self.key, entries)
        where = (self.key, self.version)
        what = f"could not write task {self.key!r}"
        with _errors(what, self._secrets), self._conn.transaction():  # a savepoint
            if row is None:  # moved on to the last entry's version and time, as it was otherwise
                moved_on = (entries[-1].version, entries[-1].at, *where)
                updated = self._conn.execute(_MOVE_ROW_ON, moved_on).rowcount
            else:
                values = (row.kind, row.task_id, row.state, row.state in _TERMINAL_STATES, row.version)
                updated = self._conn.execute(
                    _UPDATE_ROW, (*values, row.created_at, row.updated_at, facts, *where)
                ).rowcount
            if updated != 1:
                raise StoreConflict(f"task {self.key!r} is no longer at version {self.version}")
            _insert_entries(self._conn, journal)
        self._written = True


_UPDATE_ROW: Final = (
    "UPDATE streamlife_tasks SET kind = %s, task_id = %s, state = %s, terminal = %s, version = %s,"
    " created_at = %s, updated_at = %s, facts = %s::json WHERE key = %s AND version = %s"
)
_MOVE_ROW_ON: Final = (
    "UPDATE streamlife_tasks SET version = %s, updated_at = %s WHERE key = %s AND version = %s"
)


def _migrate(conn: _Connection) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS streamlife_schema (version INTEGER NOT NULL)")
        found = conn.execute("SELECT version FROM streamlife_schema").fetchone()
        if found is None:
            conn.execute("INSERT INTO streamlife_schema (version) VALUES (0)")
        done = 0 if found is None else found[0]
        if done > len(_MIGRATIONS):
            raise StoreError(
                f"the database has streamlife schema version {done}, newer than this streamlife's "
                f"({len(_MIGRATIONS)}): upgrade streamlife to open it"
            )
        for statements in _MIGRATIONS[done:]:
            for statement in statements:
                conn.execute(statement)
        if done < len(_MIGRATIONS):
            conn.execute("UPDATE streamlife_schema SET version = %s", (len(_MIGRATIONS),))


def _insert_entries(conn: _Connection, values: list[tuple[Any, ...]]) -> None:
    if not values:
        return
    try:
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO streamlife_journal (key, {_ENTRY_COLUMNS})"
                " VALUES (%s, %s, %s, %s, %s, %s, %s::json)",
                values,
            )
    except psycopg.errors.UniqueViolation as exc:
        raise StoreConflict(f"a version of task {values[0][0]!r} is taken") from exc


def _entry_values(key: str, entries: Sequence[JournalEntry]) -> list[tuple[Any, ...]]:
    return [
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


def _row(values: Sequence[Any]) -> TaskRow:
    key, kind, task_id, state, version, created_at, updated_at, facts = values
    return TaskRow(key, kind, task_id, state, version, created_at, updated_at, facts)


def _entry(values: Sequence[Any]) -> JournalEntry:
    version, at, trigger, from_state, to_state, args = values
    return JournalEntry(version, at, trigger, from_state, to_state, args)


def _letter(values: Sequence[Any]) -> DeadLetter:
    letter_id, at, reason, field, size, body = values
    return DeadLetter(
        letter_id, at, reason, field, size, bytes(body)
    )  # (bytes: psycopg may read a memoryview)


def _secrets_and_where(dsn: str) -> tuple[tuple[str, ...], str]:
    """What would give the DSN's password away (see ``streamlife.store.dsn``), and where the store
    is, for messages: host, port and database, as libpq reads them. A DSN libpq reads otherwise than
    it is written (a URL's password with an unencoded ``/`` or ``@`` becomes part of the host, the
    port, the database) is refused: it names no database the user meant, and its parts would show
    pieces of the password."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error as exc:  # libpq's reason may quote the DSN
        _mask_in_place(exc, secrets_of(dsn))
        raise StoreError(f"not a PostgreSQL DSN: {str(exc).strip()}") from exc
    parsed_password = params.get("password")
    secrets = secrets_of(dsn, None if parsed_password is None else str(parsed_password))
    if set(meant_passwords(dsn)) - {parsed_password}:
        raise StoreError(
            "not a PostgreSQL DSN as written: libpq reads its user, password, host or database"
            " otherwise (in a URL, percent-encode the password's / @ : ? # % and spaces: %2F %40 ...)"
        )
    where = {name: params[name] for name in ("host", "port", "dbname") if params.get(name)}
    shown = " ".join(f"{name}={value}" for name, value in where.items()) or "<dsn hidden>"
    return secrets, mask(shown, secrets)


def _check_seconds(name: str, seconds: float) -> None:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds < math.inf:
        raise ValueError(f"{name} is a number of seconds above 0, got {seconds!r}")


@contextmanager
def _errors(what: str, secrets: tuple[str, ...]) -> Iterator[None]:
    """psycopg's errors as the store's: a constraint is a conflict, anything else a failure. libpq
    may quote the DSN, password and all: the message, and the psycopg error it is chained from, are
    masked (``secrets``)."""
    try:
        yield
    except psycopg.Error as exc:
        _mask_in_place(exc, secrets)
        raise _store_error(what, exc) from exc


def _mask_in_place(exc: BaseException, secrets: tuple[str, ...]) -> None:
    """Mask the password in a psycopg error's text (which its str and repr, and a traceback, show),
    and in the errors psycopg chained it to."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.args = tuple(mask(arg, secrets) if isinstance(arg, str) else arg for arg in current.args)
        current = current.__cause__ or current.__context__


def _store_error(what: str, exc: psycopg.Error) -> StoreError:
    if isinstance(exc, psycopg.IntegrityError):
        return StoreConflict(f"{what}: {exc}")
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return StoreError(f"{what}: another process holds the task's row past lock_timeout ({exc})")
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return StoreError(f"{what}: a statement ran past statement_timeout ({exc})")
    if isinstance(exc, PoolTimeout):
        return StoreError(
            f"{what}: no connection within the pool's timeout (the server is down or unreachable,"
            f" or every pooled connection is busy): {exc}"
        )
    return StoreError(f"{what}: {exc}")
