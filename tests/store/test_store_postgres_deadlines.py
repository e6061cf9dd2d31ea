"""PostgresStore's claim of due tasks reads an index of when each task may first be due
(``look_at``), not every live row; and what it claims is exactly what is due, however the rows
were written.

The index holds a lower bound of each row's deadlines, which an event that only moves the row on
leaves as it is for a while (so that the row is updated in place). The property below drives rows
through creates, events (one or several a write), rewrites (with an entry or none), writes rolled
back with their lock block or their batch, and claims at any time, clocks going back included, and
compares every claim with the deadlines as ``Store.claim_due`` defines them.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from streamlife.store import Due, JournalEntry, TaskRow
from streamlife.store._postgres_schema import MIGRATIONS
from streamlife.store.postgres import _CLAIM, PostgresStore
from tests.pg import truncate

from .test_store_contract import entry, task_row

LIVE = 500  # live tasks in the look, none of them due


@pytest.fixture
def store(pg_store_dsn: str) -> Iterator[PostgresStore]:
    opened = PostgresStore(pg_store_dsn)
    yield opened
    opened.close()


def scanned(dsn: str, now: float) -> list[tuple[str, str, int]]:
    """What the claim's statement reads at ``now``: each scan of streamlife_tasks in its plan, as
    (node type, index or "", rows it read: those it kept and those its filter dropped). It runs,
    and is rolled back."""
    marks = (now,) * (_CLAIM.count("%s") - 2)  # (between the claim's end and the limit)
    with psycopg.connect(dsn) as conn:
        (plan,) = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + _CLAIM, (now + 60, *marks, 100)
        ).fetchone() or (None,)
        conn.rollback()
    found: list[tuple[str, str, int]] = []

    def walk(node: dict[str, Any]) -> None:
        if node.get("Relation Name") == "streamlife_tasks" and "Scan" in node["Node Type"]:
            read = node["Actual Rows"] + node.get("Rows Removed by Filter", 0)
            found.append((node["Node Type"], node.get("Index Name", ""), read))
        for child in node.get("Plans", []):
            walk(child)

    walk((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"])
    return found


def test_a_look_over_live_tasks_none_of_them_due_reads_none_of_their_rows(
    store: PostgresStore, pg_store_dsn: str
) -> None:
    for n in range(LIVE):
        silent = Due(quiet=40.0) if n % 2 else Due(at=5000.0)  # a stream heard from; a stop awaited
        store.create(task_row(f"k{n}", 1), [entry(1, trigger="make")], due=silent)
    for n in range(0, LIVE, 3):  # events move some silences on, as a stream's segments do
        with store.lock(f"k{n}") as txn:
            txn.write([entry(2)], None)
    with psycopg.connect(pg_store_dsn, autocommit=True) as conn:
        conn.execute("ANALYZE streamlife_tasks")
    now = 1030.0  # before any deadline
    scans = scanned(pg_store_dsn, now)
    assert scans, "the claim reads the tasks' table"
    assert all(read == 0 for _, _, read in scans), scans
    assert store.claim_due(now, until=now + 60, limit=100) == []
    assert len(store.claim_due(6000.0, until=6060.0, limit=LIVE)) == LIVE  # and each, once due


def test_a_database_from_before_the_index_gains_it_and_claims_what_is_due(pg_store_dsn: str) -> None:
    """A database a streamlife before migration 6 made has no look_at: opening a store fills it in
    from each live row's deadlines, and the claims go on as before."""
    old = PostgresStore(pg_store_dsn)
    old.create(task_row("silent", 1), [entry(1, trigger="make")], due=Due(quiet=30.0))
    old.create(task_row("stopping", 1), [entry(1, trigger="make")], due=Due(at=2000.0, quiet=3000.0))
    old.create(task_row("stopped", 1, state="stopped"), [entry(1, trigger="make")])
    old.close()
    with psycopg.connect(pg_store_dsn, autocommit=True) as conn:
        conn.execute("DROP INDEX streamlife_tasks_look")
        conn.execute("ALTER TABLE streamlife_tasks DROP COLUMN look_at")
        conn.execute("DROP INDEX streamlife_parked_at")  # (migration 7's)
        conn.execute("UPDATE streamlife_schema SET version = 5")
    store = PostgresStore(pg_store_dsn)
    try:
        updated = task_row("silent", 1).updated_at
        assert store.claim_due(updated + 29.0, until=0.0, limit=10) == []
        assert store.claim_due(updated + 30.0, until=0.0, limit=10) == ["silent"]
        assert store.claim_due(1999.0, until=0.0, limit=10) == ["silent"]
        assert sorted(store.claim_due(2000.0, until=0.0, limit=10)) == ["silent", "stopping"]
    finally:
        store.close()
    with psycopg.connect(pg_store_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT version FROM streamlife_schema").fetchone() == (len(MIGRATIONS),)


def test_a_deadline_that_is_not_a_number_leaves_the_other_to_make_the_task_due(store: PostgresStore) -> None:
    """NaN is never ``<= now``, so a task with ``Due.at`` NaN is due by its silence alone, as on
    every store: its look_at is the silence's time, not NaN (which the server sorts above every
    time, so a look would never reach the row)."""
    updated = task_row("made", 1).updated_at
    store.create(task_row("made", 1), [entry(1, trigger="make")], due=Due(at=math.nan, quiet=30.0))
    store.create(task_row("written", 1), [entry(1, trigger="make")])
    with store.lock("written") as txn:
        txn.write([entry(2)], task_row("written", 2), Due(at=math.nan, quiet=30.0))
    written = task_row("written", 2).updated_at
    assert store.claim_due(updated + 29.0, until=0.0, limit=10) == []
    assert store.claim_due(updated + 30.0, until=0.0, limit=10) == ["made"]
    assert sorted(store.claim_due(written + 30.0, until=0.0, limit=10)) == ["made", "written"]


# The property: every claim is exactly the tasks due, as Store.claim_due defines them.

KEYS = st.sampled_from(["a", "b", "c"])
AT = st.none() | st.sampled_from([1004.0, 1020.0, 1041.5, 0.0, math.inf, -math.inf])
QUIET = st.none() | st.sampled_from([4.0, 8.0, 30.0, 0.0, -5.0, math.inf])
# How a write ends: kept, or rolled back with its lock block (in a batch that commits) or its batch.
UNDONE = st.sampled_from(["kept", "kept", "block", "batch"])


@dataclass(frozen=True)
class Make:
    key: str
    at: float | None
    quiet: float | None
    time: float


@dataclass(frozen=True)
class Event:  # a segment: the row moves on to the event's time, its deadlines as they were
    key: str
    step: float  # from the row's last time; below 0 for a clock behind the last writer's
    more: tuple[float, ...] = ()  # the steps of more entries in the same write
    undone: str = "kept"


@dataclass(frozen=True)
class Rewrite:  # an event that writes the row, and its deadlines with it
    key: str
    at: float | None
    quiet: float | None
    step: float
    terminal: bool
    undone: str = "kept"


@dataclass(frozen=True)
class Renew:  # the row and its deadlines written again at its version, with no entry
    key: str
    at: float | None
    quiet: float | None
    step: float  # of updated_at (the time the silence counts from), from the row's last time
    undone: str = "kept"


@dataclass(frozen=True)
class Claim:
    now: float
    hold: float


@dataclass(frozen=True)
class ClaimNear:  # a claim just before, at or just after a task's first deadline: where a wrong bound shows
    key: str
    offset: float
    hold: float


Op = Make | Event | Rewrite | Renew | Claim | ClaimNear

STEPS = st.sampled_from([-3.0, 0.5, 1.0, 2.5, 5.0, 7.0, 12.0])
OPS: st.SearchStrategy[Op] = st.one_of(
    st.builds(Make, KEYS, AT, QUIET, st.sampled_from([1000.0, 1003.0, 1010.0])),
    st.builds(Event, KEYS, STEPS, st.lists(STEPS, max_size=2).map(tuple), UNDONE),
    st.builds(Rewrite, KEYS, AT, QUIET, STEPS, st.booleans(), UNDONE),
    st.builds(Renew, KEYS, AT, QUIET, STEPS, UNDONE),
    st.builds(Claim, st.floats(995.0, 1100.0, allow_nan=False), st.sampled_from([0.0, 6.0])),
    st.builds(ClaimNear, KEYS, st.sampled_from([-0.25, 0.0, 0.25]), st.sampled_from([0.0, 6.0])),
)


@dataclass
class Expected:
    """A task as the model holds it: its deadlines as claim_due reads them."""

    version: int
    updated: float
    due: Due
    terminal: bool = False
    claimed_until: float | None = None

    def first_due(self) -> float | None:
        at, quiet = self.due
        times = [time for time in (at, None if quiet is None else self.updated + quiet) if time is not None]
        return None if self.terminal or not times else min(times)

    def due_by(self, now: float) -> bool:
        if self.claimed_until is not None and self.claimed_until > now:
            return False
        first = self.first_due()
        return first is not None and first <= now


def assert_bounds(conn: psycopg.Connection[Any], model: dict[str, Expected]) -> None:
    """The index's invariant: a task's look_at is never later than its first deadline (else a claim
    would find it late), and a task with none has none."""
    for key, look_at in conn.execute("SELECT key, look_at FROM streamlife_tasks").fetchall():
        first = model[key].first_due()
        assert (look_at is None) == (first is None), (key, look_at, model[key])
        assert first is None or look_at <= first, (key, look_at, model[key])


class Undo(Exception):
    """Rolls a write's lock block or batch back."""


def write(
    store: PostgresStore,
    key: str,
    entries: Sequence[JournalEntry],
    row: TaskRow | None,
    due: Due,
    undone: str,
) -> bool:
    """Write in a lock block of its own, or in a batch that rolls back the block or itself; whether
    the write was kept."""
    if undone == "kept":
        with store.lock(key) as txn:
            txn.write(entries, row, due)
        return True
    with contextlib.suppress(Undo), store.batch():
        with contextlib.suppress(Undo), store.lock(key) as txn:
            txn.write(entries, row, due)
            if undone == "block":
                raise Undo
        if undone == "batch":
            raise Undo
    return False


def run(store: PostgresStore, conn: psycopg.Connection[Any], ops: list[Op]) -> None:
    model: dict[str, Expected] = {}
    for op in ops:
        assert_bounds(conn, model)
        if isinstance(op, ClaimNear):
            near = model.get(op.key)
            first = None if near is None else near.first_due()
            op = Claim(1000.0 if first is None else first + op.offset, op.hold)
        if isinstance(op, Claim):
            due = sorted(key for key, task in model.items() if task.due_by(op.now))
            assert sorted(store.claim_due(op.now, until=op.now + op.hold, limit=10)) == due, op
            for key in due:
                model[key].claimed_until = op.now + op.hold
            continue
        task = model.get(op.key)
        if isinstance(op, Make):
            if task is None:
                made = TaskRow(op.key, "audio", None, "running", 1, op.time, op.time, {})
                store.create(
                    made, [JournalEntry(1, op.time, "make", "new", "running", None)], due=Due(op.at, op.quiet)
                )
                model[op.key] = Expected(1, op.time, Due(op.at, op.quiet))
            continue
        if task is None:
            continue
        steps = () if isinstance(op, Renew) else (op.step, *op.more) if isinstance(op, Event) else (op.step,)
        version, time = task.version, task.updated
        entries: list[JournalEntry] = []
        for step in steps:
            version, time = version + 1, time + step
            entries.append(JournalEntry(version, time, "segment", "running", "running", None))
        row = None
        deadlines = Due()
        if not isinstance(op, Event):
            terminal = isinstance(op, Rewrite) and op.terminal
            time += op.step if isinstance(op, Renew) else 0.0
            row = TaskRow(
                op.key, "audio", None, "stopped" if terminal else "running", version, 1000.0, time, {}
            )
            deadlines = Due() if terminal else Due(op.at, op.quiet)
        if not write(store, op.key, entries, row, deadlines, op.undone):
            continue
        task.version, task.updated = version, time
        if row is not None:
            task.terminal, task.due = row.terminal, deadlines
    assert_bounds(conn, model)


def test_every_claim_takes_exactly_the_tasks_due_however_their_rows_were_written(pg_store_dsn: str) -> None:
    store = PostgresStore(pg_store_dsn)
    conn = psycopg.connect(pg_store_dsn, autocommit=True)

    @settings(max_examples=max(10, settings().max_examples // 2))
    @given(st.lists(OPS, max_size=25))
    # An event from a clock behind the last one's brings the silence nearer than look_at was.
    @example([Make("a", None, 30.0, 1010.0), Event("a", -3.0), ClaimNear("a", 0.0, 0.0)])
    # look_at made exact again by an event: the stop's deadline comes before the silence.
    @example([Make("a", 1020.0, 30.0, 1000.0), Event("a", 12.0), Event("a", 12.0), ClaimNear("a", 0.0, 0.0)])
    def check(ops: list[Op]) -> None:
        truncate(pg_store_dsn)
        run(store, conn, ops)

    try:
        check()
    finally:
        conn.close()
        store.close()
