"""The floor for the PostgreSQL store: bare psycopg doing the writes PostgresStore does per callback.

``PostgresFloor`` is ``DictIngest`` (orjson, a dict lookup, a dict FSM fire) with each applied
callback written as the store writes a segment applied while running, on one connection of its
own (autocommit, transactions begun and committed by hand; psycopg prepares a statement once it
has run it a few times, for the floor as for the store): in one transaction, lock the task's row
and read its version (``SELECT version ... FOR UPDATE``), move the row on to the next version
(``UPDATE ... WHERE key = %s AND version = %s``, refused unless it moves one row) and insert the
journal row, then commit. The store's move also keeps the row's ``look_at`` (when it may first be
due), which a stream's events change about once per three quarters of its silence: the floor's
leaves it as it is. ``handle_batch`` does the same for every applied callback of a batch in
one transaction, the rows locked in key order, as ``Fleet.handle_callbacks`` locks them. The tables
are the store's own, made by ``PostgresStore``: the same columns, keys and indexes.

The floor starts from a copy of the store's own rows and journals (``source_dsn``: the database the
store made the live tasks in), so that it writes the same rows, under the same keys, into indexes of
the same size and order: the Fleet's keys are random, and a floor keyed by task_id (numbered in the
order the callbacks go round) would find each next row, and the journal's index page, beside the
last one's, where the store goes to a page anywhere in the index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import psycopg
from psycopg.types.string import TextLoader

from .references import DictIngest

_LOCK = "SELECT version FROM streamlife_tasks WHERE key = %s FOR UPDATE"
_MOVE_ON = "UPDATE streamlife_tasks SET version = %s, updated_at = %s WHERE key = %s AND version = %s"
_APPEND = (
    "INSERT INTO streamlife_journal (key, version, at, trigger, from_state, to_state, args)"
    " VALUES (%s, %s, %s, 'segment', 'running', 'running', %s::json)"
)

# What the floor copies of the store's live tasks: every column a store's write keeps (the
# identity column ``seq`` is numbered afresh, in the same order).
_TASKS = "streamlife_tasks"
_TASK_COLUMNS = (
    "key, kind, task_id, state, terminal, version, created_at, updated_at, facts, due_at, quiet,"
    " claimed_until, look_at"
)
_JOURNAL = "streamlife_journal"
_JOURNAL_COLUMNS = "key, version, at, trigger, from_state, to_state, args"


def _copy(table: str, columns: str) -> str:
    marks = ", ".join(["%s"] * len(columns.split(",")))
    return f"INSERT INTO {table} ({columns}) VALUES ({marks})"


class PostgresFloor(DictIngest):
    """``DictIngest``, with each applied callback written in its own transaction (``handle``), or
    a whole batch's in one (``handle_batch``). The row's key is the store's key for the task."""

    def __init__(self, task_ids: Sequence[str], dsn: str, source_dsn: str) -> None:
        super().__init__(task_ids)
        with psycopg.connect(source_dsn, autocommit=True) as source:
            source.adapters.register_loader("json", TextLoader)  # (copied as the text it is)
            tasks = source.execute(
                f"SELECT {_TASK_COLUMNS} FROM streamlife_tasks WHERE task_id = ANY(%s) ORDER BY seq",
                (list(task_ids),),
            ).fetchall()
            keys = [row[0] for row in tasks]
            journal = source.execute(  # (in the order the store wrote them: task by task)
                f"SELECT {_JOURNAL_COLUMNS} FROM streamlife_journal AS j WHERE key = ANY(%s)"
                " ORDER BY (SELECT seq FROM streamlife_tasks AS t WHERE t.key = j.key), version",
                (keys,),
            ).fetchall()
        self.keys = {row[2]: row[0] for row in tasks}  # task_id -> the store's key for the task
        if len(self.keys) != len(task_ids):
            raise RuntimeError(f"{len(task_ids)} task_ids, {len(self.keys)} of them in the store")
        self.conn: psycopg.Connection[tuple[Any, ...]] = psycopg.connect(dsn, autocommit=True)
        self.conn.execute("BEGIN")
        with self.conn.cursor() as cur:
            cur.executemany(_copy(_TASKS, _TASK_COLUMNS), tasks)
            cur.executemany(_copy(_JOURNAL, _JOURNAL_COLUMNS), journal)
        self.conn.execute("COMMIT")

    def handle(self, body: bytes) -> str:
        message = orjson.loads(body)
        data = message["data"]
        task_id = message["task_id"]
        task = self.tasks[task_id]
        outcome = task.segment(data["segment_index"], data["transcript"]["text"], 0.0)
        if outcome == "applied":
            conn = self.conn
            conn.execute("BEGIN")
            try:
                self._write(self.keys[task_id], body)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return outcome

    def handle_batch(self, bodies: Sequence[bytes]) -> list[str]:
        """The bodies in order, every applied one written in one transaction for the batch, the
        rows locked in key order."""
        tasks, keys = self.tasks, self.keys
        outcomes: list[str] = []
        applied: list[tuple[str, bytes]] = []
        for body in bodies:
            message = orjson.loads(body)
            data = message["data"]
            task_id = message["task_id"]
            task = tasks[task_id]
            outcome = task.segment(data["segment_index"], data["transcript"]["text"], 0.0)
            if outcome == "applied":
                applied.append((keys[task_id], body))
            outcomes.append(outcome)
        applied.sort(key=lambda item: item[0])  # (stable: each task's callbacks in arrival order)
        conn, write = self.conn, self._write
        conn.execute("BEGIN")
        try:
            for key, body in applied:
                write(key, body)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return outcomes

    def _write(self, key: str, body: bytes) -> None:
        """An applied callback, in the open transaction: the row locked, moved on, a journal row."""
        conn = self.conn
        found = conn.execute(_LOCK, (key,)).fetchone()
        assert found is not None
        version = found[0]
        if conn.execute(_MOVE_ON, (version + 1, 0.0, key, version)).rowcount != 1:
            raise RuntimeError(f"task {key} moved under its row lock")
        conn.execute(_APPEND, (key, version + 1, 0.0, body.decode()))

    def close(self) -> None:
        self.conn.close()
