"""What the two SQL stores share: the columns they read, and how a record goes to and from a row.

Both keep the same columns, and a mapping (a row's facts, an entry's arguments, a parked payload) as
JSON text (``json_text``). Both hand the text back as it was written, and it is read here, with
``read_stored``: so SQLite and PostgreSQL read back the same values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from streamlife._jsontext import read_stored, to_json
from streamlife.lifecycle import TERMINAL

from .base import DeadLetter, JournalEntry, ParkedCallback, StoreError, TaskRow

TERMINAL_STATES: Final = frozenset(state.value for state in TERMINAL)

# Tasks pruned in one transaction: other writers wait for a batch, never for a whole prune.
PRUNE_BATCH: Final = 500

ROW_COLUMNS: Final = "key, kind, task_id, state, version, created_at, updated_at, facts"
DUE_COLUMNS: Final = "due_at, quiet"  # a task's Due, beside its row
# The tasks Store.claim_due may claim, with (now, now, now) for its parameters' marks.
CLAIMABLE: Final = (
    "terminal = {false} AND (claimed_until IS NULL OR claimed_until <= {mark})"
    " AND (due_at <= {mark} OR updated_at + quiet <= {mark})"
)
ENTRY_COLUMNS: Final = "version, at, trigger, from_state, to_state, args"
PARKED_COLUMNS: Final = "seq, task_id, at, payload"
LETTER_COLUMNS: Final = "id, at, reason, field, size, body"


def row_values(row: TaskRow) -> tuple[Any, ...]:
    """A row's ``ROW_COLUMNS``, then whether it is terminal (the column ``rows()`` sorts by)."""
    key, kind, task_id, state, version, created_at, updated_at, facts = row
    return (
        key,
        kind,
        task_id,
        state,
        version,
        created_at,
        updated_at,
        to_json(facts),
        state in TERMINAL_STATES,
    )


def entry_values(key: str, entries: Sequence[JournalEntry]) -> list[tuple[Any, ...]]:
    """Each entry's journal row: the task's key, then ``ENTRY_COLUMNS``."""
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


def row_from(values: Sequence[Any]) -> TaskRow:
    key, kind, task_id, state, version, created_at, updated_at, facts = values
    return TaskRow(key, kind, task_id, state, version, created_at, updated_at, read_stored(facts))


def entry_from(values: Sequence[Any]) -> JournalEntry:
    version, at, trigger, from_state, to_state, args = values
    return JournalEntry(
        version, at, trigger, from_state, to_state, None if args is None else read_stored(args)
    )


def parked_where(task_id: str | None, before: float | None, mark: str) -> tuple[str, tuple[Any, ...]]:
    """The WHERE clause of ``Store.parked``'s query (empty for every kept callback), and its values;
    ``mark``: the driver's placeholder."""
    tests = [(f"task_id = {mark}", task_id), (f"at < {mark}", before)]
    given = [(test, value) for test, value in tests if value is not None]
    if not given:
        return "", ()
    return " WHERE " + " AND ".join(test for test, _ in given), tuple(value for _, value in given)


def parked_from(values: Sequence[Any]) -> ParkedCallback:
    seq, task_id, at, payload = values
    return ParkedCallback(seq, task_id, at, read_stored(payload))


def letter_from(values: Sequence[Any]) -> DeadLetter:
    letter_id, at, reason, field, size, body = values
    return DeadLetter(letter_id, at, reason, field, size, bytes(body))  # (psycopg may read a memoryview)


def migrations_after(
    done: int, migrations: tuple[tuple[str, ...], ...], where: str
) -> tuple[tuple[str, ...], ...]:
    """The migrations a schema ``done`` steps in has still to take (a schema counts the steps it
    took). A newer schema than ``migrations`` reach is refused: this streamlife cannot read it."""
    if done > len(migrations):
        raise StoreError(
            f"{where} has streamlife schema version {done}, newer than this streamlife's"
            f" ({len(migrations)}): upgrade streamlife to open it"
        )
    return migrations[done:]
