"""PostgresStore's schema, and how a database is brought up to it when a store opens."""

from __future__ import annotations

from typing import Any, Final

import psycopg

from ._sql import migrations_after

# Taken (for the migrating transaction only) by every store that opens: one migrates, the others
# wait and then find the schema current. A constant of our own: b"strmlife" as a signed 64-bit int.
MIGRATION_LOCK: Final = int.from_bytes(b"strmlife", "big", signed=True)

# The schema, one migration a step: streamlife_schema.version counts the steps applied. Append, never edit.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
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
    (  # 4: deadlines kept with the task, and their claims (Store.claim_due); not indexed, so an
        # event's write stays an update in place. A task from before them is due at once: whoever
        # claims it first finds out whether its holder is still there.
        "ALTER TABLE streamlife_tasks ADD COLUMN due_at DOUBLE PRECISION",
        "ALTER TABLE streamlife_tasks ADD COLUMN quiet DOUBLE PRECISION",
        "ALTER TABLE streamlife_tasks ADD COLUMN claimed_until DOUBLE PRECISION",
        "UPDATE streamlife_tasks SET due_at = updated_at WHERE NOT terminal",
    ),
    (  # 5: an event's row lock, as a function: the server plans a PL/pgSQL function's query once per
        # connection and keeps the plan, where the same query sent as text is planned at every event
        # (it goes as text to share its message with BEGIN or SAVEPOINT). NULL: no such row.
        """CREATE FUNCTION streamlife_lock_task(task_key TEXT) RETURNS INTEGER LANGUAGE plpgsql AS $$
        DECLARE
            locked_version INTEGER;
        BEGIN
            SELECT version INTO locked_version FROM streamlife_tasks WHERE key = task_key FOR UPDATE;
            RETURN locked_version;
        END
        $$""",
    ),
    (  # 6: claim_due reads an index of when each task may first be due (see postgres._MOVE_ROW_ON),
        # not every live row. A partial index: terminal tasks, due never, are not in it.
        "ALTER TABLE streamlife_tasks ADD COLUMN look_at DOUBLE PRECISION",
        "UPDATE streamlife_tasks SET look_at = LEAST(due_at, updated_at + quiet) WHERE NOT terminal",
        "CREATE INDEX streamlife_tasks_look ON streamlife_tasks (look_at) WHERE look_at IS NOT NULL",
    ),
    (  # 7: the parked callbacks left past their time, which every process looks for
        # (Store.parked(before=)), read without a scan of the table
        "CREATE INDEX streamlife_parked_at ON streamlife_parked (at)",
    ),
)


def migrate(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
    """Apply the migrations the database lacks; refuse a database a newer streamlife made."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS streamlife_schema (version INTEGER NOT NULL)")
        found = conn.execute("SELECT version FROM streamlife_schema").fetchone()
        if found is None:
            conn.execute("INSERT INTO streamlife_schema (version) VALUES (0)")
        done = 0 if found is None else found[0]
        steps = migrations_after(done, MIGRATIONS, "the database")
        for statements in steps:
            for statement in statements:
                conn.execute(statement)
        if steps:
            conn.execute("UPDATE streamlife_schema SET version = %s", (len(MIGRATIONS),))
