"""The references every figure is compared with, measured in the same run.

* ``DictTask``: a hand-written dict FSM doing the same bookkeeping as a StreamTask (a table lookup,
  the state set, a history entry appended; a segment is also kept by index, so a repeat is seen as
  one). The limit for a lifecycle in pure Python.
* ``machine_task``: ``transitions`` the way it is usually used, one ``Machine`` per task.
* ``DictIngest``: a callback body through ``orjson.loads`` (the JSON reader streamlife uses), a
  dict lookup of its task, a DictTask fire and a list append (the journal): the floor for "parse,
  transition, record" in Python.
* ``SqliteFloor``: the same, recording each callback in its own bare sqlite3 transaction (read the
  task's version, update its row, insert a journal row; WAL, synchronous=NORMAL and the page
  cache SqliteStore runs with): the floor for one durable write per callback. Its journal starts
  as a live task's does, with the two entries of its start, so each insert goes into an index as
  large as the store's (an empty one made the floor flatter than any journal at 100,000 tasks). Its
  ``handle_batch`` writes a whole batch in one bare transaction (the floor for
  ``Fleet.handle_callbacks``: one commit per batch).
* ``NullSink`` (in ``http_ingest``): the webhook receiver in the same server, handing callbacks to
  a sink that does nothing: the floor of the HTTP server that ships with streamlife.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from typing import Any

import orjson
from transitions import Machine

from streamlife.lifecycle import CELLS, STATES, TaskState
from streamlife.store.sqlite import CACHE_KIB, CHECKPOINT_PAGES

# -- a hand-written dict FSM -----------------------------------------------------------------------
DICT_TABLE: dict[tuple[str, str], str] = {
    (state.value, trigger): cell.value
    for (state, trigger), cell in CELLS.items()
    if isinstance(cell, TaskState)
}


class DictTask:
    __slots__ = ("history", "segments", "state", "task_id")

    def __init__(self, task_id: str | None = None) -> None:
        self.state = "pending"
        self.task_id = task_id
        self.history: list[tuple[int, float, str, str, str]] = []
        self.segments: dict[int, str] | None = None  # made on the first segment, as StreamTask does

    def fire(self, trigger: str, now: float) -> str:
        before = self.state
        after = DICT_TABLE[before, trigger]  # a KeyError is the illegal move
        self.state = after
        self.history.append((len(self.history) + 1, now, trigger, before, after))
        return "applied"

    def segment(self, index: int, text: str, now: float) -> str:
        before = self.state
        after = DICT_TABLE[before, "segment"]
        segments = self.segments
        if segments is None:
            segments = self.segments = {}
        elif index in segments:
            outcome = "duplicate"
            self.history.append((len(self.history) + 1, now, "segment", before, after))
            return outcome
        segments[index] = text
        self.state = after
        self.history.append((len(self.history) + 1, now, "segment", before, after))
        return "applied"


def dict_running(task_id: str = "t") -> DictTask:
    task = DictTask(task_id)
    task.fire("start", 0.0)
    task.fire("start_ok", 0.0)
    return task


# -- transitions, one Machine per task ---------------------------------------------------------------
class MachineTask:
    def __init__(self) -> None:
        self.history: list[tuple[str, str]] = []


MACHINE_TRANSITIONS = [
    {"trigger": trigger, "source": state.value, "dest": cell.value if cell is not state else None}
    for (state, trigger), cell in CELLS.items()
    if isinstance(cell, TaskState)
]


def machine_task() -> Any:  # the triggers are attributes transitions adds: typed as Any
    task = MachineTask()
    Machine(
        model=task,
        states=[state.value for state in STATES],
        transitions=MACHINE_TRANSITIONS,
        initial="pending",
        auto_transitions=False,
    )
    return task


def machine_running() -> Any:
    task = machine_task()
    task.start()
    task.start_ok()
    return task


# -- ingest floors -------------------------------------------------------------------------------
class DictIngest:
    """Raw bytes -> orjson.loads -> the task by task_id -> a DictTask fire -> a journal list."""

    def __init__(self, task_ids: Sequence[str]) -> None:
        self.tasks = {task_id: dict_running(task_id) for task_id in task_ids}
        self.journal: list[tuple[str, int, str]] = []

    def handle(self, body: bytes) -> str:
        message = orjson.loads(body)
        data = message["data"]
        task = self.tasks[message["task_id"]]
        outcome = task.segment(data["segment_index"], data["transcript"]["text"], 0.0)
        if outcome == "applied":
            self.journal.append((message["task_id"], len(task.history), body.decode()))
        return outcome

    def handle_batch(self, bodies: Sequence[bytes]) -> list[str]:
        """A batch of bodies, in order (in memory there is nothing to share: one by one)."""
        handle = self.handle
        return [handle(body) for body in bodies]


class SqliteFloor(DictIngest):
    """``DictIngest``, with each applied callback written in its own sqlite3 transaction
    (``handle``), or a whole batch's in one (``handle_batch``)."""

    def __init__(self, task_ids: Sequence[str], directory: str) -> None:
        super().__init__(task_ids)
        self.path = os.path.join(directory, f"floor-{len(task_ids)}.db")
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
        self.db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        self.db.execute(f"PRAGMA wal_autocheckpoint = {CHECKPOINT_PAGES}")
        self.db.execute(
            "CREATE TABLE tasks (key TEXT PRIMARY KEY, state TEXT NOT NULL, version INTEGER NOT NULL,"
            " updated_at REAL NOT NULL, facts TEXT NOT NULL)"
        )
        self.db.execute(
            "CREATE TABLE journal (key TEXT NOT NULL, version INTEGER NOT NULL, at REAL NOT NULL,"
            " trigger TEXT NOT NULL, args TEXT, PRIMARY KEY (key, version))"
        )
        self.db.execute("BEGIN")
        self.db.executemany(
            "INSERT INTO tasks VALUES (?, 'running', 2, 0.0, '{}')", [(task_id,) for task_id in task_ids]
        )
        self.db.executemany(  # what a started task's journal holds: its start, and the answer
            "INSERT INTO journal VALUES (?, ?, 0.0, ?, ?)",
            [
                (task_id, version, trigger, args)
                for task_id in task_ids
                for version, trigger, args in (
                    (1, "start", None),
                    (2, "start_ok", f'{{"task_id":"{task_id}"}}'),
                )
            ],
        )
        self.db.execute("COMMIT")

    def handle(self, body: bytes) -> str:
        message = orjson.loads(body)
        data = message["data"]
        task_id = message["task_id"]
        task = self.tasks[task_id]
        outcome = task.segment(data["segment_index"], data["transcript"]["text"], 0.0)
        if outcome == "applied":
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            self._write(task_id, task, body)
            db.execute("COMMIT")
        return outcome

    def handle_batch(self, bodies: Sequence[bytes]) -> list[str]:
        """The bodies in order, every applied one written in one bare transaction for the batch."""
        db = self.db
        tasks, write = self.tasks, self._write
        outcomes: list[str] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            for body in bodies:
                message = orjson.loads(body)
                data = message["data"]
                task_id = message["task_id"]
                task = tasks[task_id]
                outcome = task.segment(data["segment_index"], data["transcript"]["text"], 0.0)
                if outcome == "applied":
                    write(task_id, task, body)
                outcomes.append(outcome)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return outcomes

    def _write(self, task_id: str, task: DictTask, body: bytes) -> None:
        """An applied callback, in the open transaction: the task's row and a journal row."""
        db = self.db
        (version,) = db.execute("SELECT version FROM tasks WHERE key = ?", (task_id,)).fetchone()
        db.execute(
            "UPDATE tasks SET state = ?, version = ?, updated_at = ?, facts = ?"
            " WHERE key = ? AND version = ?",
            (task.state, version + 1, 0.0, '{"stalled":false}', task_id, version),
        )
        db.execute(
            "INSERT INTO journal VALUES (?, ?, ?, 'segment', ?)",
            (task_id, version + 1, 0.0, body.decode()),
        )

    def close(self) -> None:
        self.db.close()
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.path + suffix):
                os.remove(self.path + suffix)
