"""The floor for the PostgreSQL store: bare psycopg doing the writes PostgresStore does per callback.

``PostgresFloor`` is ``DictIngest`` (orjson, a dict lookup, a dict FSM fire) with each applied
callback written as the store writes a segment applied while running, on one connection of its
own (autocommit, transactions begun and committed by hand; psycopg prepares a statement once it
has run it a few times, for the floor as for the store): in one transaction, lock the task's row
and read its version (``SELECT version ... FOR UPDATE``), move the row on to the next version
(``UPDATE ... WHERE key = %s AND version = %s``, refused unless it moves one row) and insert the
journal row, then commit. ``handle_batch`` does the same for every applied callback of a batch in
one transaction, the rows locked in key order, as ``Fleet.handle_callbacks`` locks them. The tables
are the store's own, made by ``PostgresStore``: the same columns, keys and indexes.

Each task starts as a live task does in the store: its row at version 2, its journal holding the
entries of its start and of the answer, so each insert goes into an index of the same size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import psycopg

from .references import DictIngest, DictTask

_LOCK = "SELECT version FROM streamlife_tasks WHERE key = %s FOR UPDATE"
_MOVE_ON = "UPDATE streamlife_tasks SET version = %s, updated_at = %s WHERE key = %s AND version = %s"
_APPEND = (
    "INSERT INTO streamlife_journal (key, version, at, trigger, from_state, to_state, args)"
    " VALUES (%s, %s, %s, 'segment', 'running', 'running', %s::json)"
)


class PostgresFloor(DictIngest):
    """``DictIngest``, with each applied callback written in its own transaction (``handle``), or
    a whole batch's in one (``handle_batch``). The row's key is the task_id."""

    def __init__(self, task_ids: Sequence[str], dsn: str) -> None:
        super().__init__(task_ids)
        self.conn: psycopg.Connection[tuple[Any, ...]] = psycopg.connect(dsn, autocommit=True)
        self.conn.execute("BEGIN")
        with self.conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO streamlife_tasks (key, kind, task_id, state, terminal, version, created_at,"
                " updated_at, facts) VALUES (%s, 'audio', %s, 'running', false, 2, 0.0, 0.0, '{}')",
                [(task_id, task_id) for task_id in task_ids],
            )
            cur.executemany(  # what a started task's journal holds: its start, and the answer
                "INSERT INTO streamlife_journal (key, version, at, trigger, from_state, to_state, args)"
                " VALUES (%s, %s, 0.0, %s, %s, %s, %s::json)",
                [
                    (task_id, version, trigger, before, after, args)
                    for task_id in task_ids
                    for version, trigger, before, after, args in (
                        (1, "start", "pending", "starting", None),
                        (2, "start_ok", "starting", "running", f'{{"task_id":"{task_id}"}}'),
                    )
                ],
            )
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
                self._write(task_id, task, body)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return outcome

    def handle_batch(self, bodies: Sequence[bytes]) -> list[str]:
        """The bodies in order, every applied one written in one transaction for the batch, the
        rows locked in key order."""
        tasks = self.tasks
        outcomes: list[str] = []
        applied: list[tuple[str, DictTask, bytes]] = []
        for body in bodies:
            message = orjson.loads(body)
            data = message["data"]
            task_id = message["task_id"]
            task = tasks[task_id]
            outcome = task.segment(data["segment_index"], data["transcript"]["text"], 0.0)
            if outcome == "applied":
                applied.append((task_id, task, body))
            outcomes.append(outcome)
        applied.sort(key=lambda item: item[0])  # (stable: each task's callbacks in arrival order)
        conn, write = self.conn, self._write
        conn.execute("BEGIN")
        try:
            for task_id, task, body in applied:
                write(task_id, task, body)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return outcomes

    def _write(self, task_id: str, task: DictTask, body: bytes) -> None:
        """An applied callback, in the open transaction: the row locked, moved on, a journal row."""
        conn = self.conn
        found = conn.execute(_LOCK, (task_id,)).fetchone()
        assert found is not None
        version = found[0]
        if conn.execute(_MOVE_ON, (version + 1, 0.0, task_id, version)).rowcount != 1:
            raise RuntimeError(f"task {task_id} moved under its row lock")
        conn.execute(_APPEND, (task_id, version + 1, 0.0, body.decode()))

    def close(self) -> None:
        self.conn.close()
