"""SqliteStore's schema, and how a file is brought up to it when it opens."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Final

from ._sql import migrations_after

# The schema, one migration a step: PRAGMA user_version counts the steps applied. Append, never edit.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
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
    (  # 4: deadlines kept with the task, and their claims (Store.claim_due); not indexed, so an
        # event's write rewrites no index entry for them. A task from before them is due at once:
        # whoever claims it first finds out whether its holder is still there.
        "ALTER TABLE tasks ADD COLUMN due_at REAL",
        "ALTER TABLE tasks ADD COLUMN quiet REAL",
        "ALTER TABLE tasks ADD COLUMN claimed_until REAL",
        "UPDATE tasks SET due_at = updated_at WHERE terminal = 0",
    ),
    (  # 5: the parked callbacks left past their time, which every process on the file looks for
        # (Store.parked(before=)), read without a scan of the table
        "CREATE INDEX parked_at ON parked (at)",
    ),
)


def migrate(db: sqlite3.Connection, path: str, turn: Callable[[], AbstractContextManager[None]]) -> None:
    """Apply the migrations the file lacks, in ``turn`` (the process's turn at the write lock);
    refuse a file a newer streamlife made."""
    (done,) = db.execute("PRAGMA user_version").fetchone()
    if not migrations_after(done, MIGRATIONS, repr(path)):
        return
    with turn():
        _migrate(db, path)


def _migrate(db: sqlite3.Connection, path: str) -> None:
    db.execute("BEGIN IMMEDIATE")  # several processes may open a new file at once
    try:
        (done,) = db.execute("PRAGMA user_version").fetchone()
        for statements in migrations_after(done, MIGRATIONS, repr(path)):
            for statement in statements:
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
