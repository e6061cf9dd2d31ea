"""One contract, three stores: MemoryStore, SqliteStore and PostgresStore behave alike.

Every test here runs against each backend (the ``backend`` fixture), but what a MemoryStore cannot
have (reopening what was written, other processes), which runs against the two durable ones
(``durable_backend``). The PostgreSQL tests never skip: the ``pg_store_dsn`` fixture finds or starts
a server, or fails (see tests/pg.py).
"""

from __future__ import annotations

import enum
import multiprocessing
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlife.lifecycle import TaskState
from streamlife.store._prune_pacing import Pacer, ServerPacer
from streamlife.store.base import (
    DEAD_LETTER_MAX_BODY,
    DEAD_LETTER_MAX_TEXT,
    DeadLetter,
    Due,
    JournalEntry,
    ParkedCallback,
    PruneResult,
    Store,
    StoreConflict,
    StoreError,
    TaskRow,
    dead_letter_fields,
)
from streamlife.store.memory import MemoryStore
from streamlife.store.postgres import PostgresStore
from streamlife.store.sqlite import SqliteStore
from tests.pg import truncate

BACKENDS = ["memory", "sqlite", "postgres"]


def open_store(kind: str, location: str) -> Store:
    if kind == "sqlite":
        return SqliteStore(location)
    if kind == "postgres":
        return PostgresStore(location)
    raise ValueError(kind)


@dataclass
class Backend:
    """One store under test, and how to open another handle on the same data."""

    kind: str
    location: str  # the file or the DSN; "" for memory
    opened: list[Store] = field(default_factory=list)

    def open(self) -> Store:
        """A new store on the same data (for memory, the one store there is)."""
        if self.kind == "memory":
            if not self.opened:
                self.opened.append(MemoryStore(shared=True))
            return self.opened[0]
        store = open_store(self.kind, self.location)
        self.opened.append(store)
        return store

    def close_all(self) -> None:
        for store in self.opened:
            store.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    kind: str = request.param
    if kind == "sqlite":
        location = str(tmp_path / "streams.db")
    elif kind == "postgres":
        location = request.getfixturevalue("pg_store_dsn")
    else:
        location = ""
    backend = Backend(kind, location)
    yield backend
    backend.close_all()


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.open()


@pytest.fixture(params=[kind for kind in BACKENDS if kind != "memory"])
def durable_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """For what a MemoryStore cannot have: reopening what was written, and other processes."""
    location = (
        str(tmp_path / "streams.db") if request.param == "sqlite" else request.getfixturevalue("pg_store_dsn")
    )
    backend = Backend(request.param, location)
    yield backend
    backend.close_all()


# Rows and entries as a Fleet would write them.


def entry(version: int, *, trigger: str = "segment", args: Mapping[str, Any] | None = None) -> JournalEntry:
    return JournalEntry(version, 1000.0 + version / 8, trigger, "running", "running", args)


def task_row(
    key: str,
    version: int,
    *,
    state: str = "running",
    task_id: str | None = None,
    created_at: float = 100.0,
    facts: Mapping[str, Any] | None = None,
) -> TaskRow:
    facts = {"stop_failures": 0} if facts is None else facts
    return TaskRow(key, "audio", task_id, state, version, created_at, 1000.0 + version / 8, facts)


def make(store: Store, key: str, **fields: Any) -> TaskRow:
    row = task_row(key, 1, **fields)
    store.create(row, [entry(1, trigger="make")])
    return row


def advance(store: Store, key: str, **changes: Any) -> TaskRow:
    """One event on the task, as the Fleet writes it: lock, read the version, write the next."""
    with store.lock(key) as txn:
        current = store.row(key) if txn.version else None
        assert current is not None
        row = current._replace(version=txn.version + 1, updated_at=current.updated_at + 1, **changes)
        txn.write([entry(txn.version + 1)], row)
    return row


# Create, read back.


FACTS = {
    "stop_requested": True,
    "stop_failures": 3,
    "end_status": None,
    "last_error": "OutcomeUnknownError: read timed out — ünïcødé",
    "floats": [0.1, 1 / 3, 1e-300, 1e23, 2.5e-08, -0.0, 1_700_000_000.123456],
    "big": 2**70,
    "nested": {"a": [{"b": None}, [], {}], "": "empty key"},
}


def test_create_reads_back_exactly(store: Store) -> None:
    row = TaskRow("k", "video", "tid-1", "running", 3, 1_700_000_000.123456, 1_700_000_001.000001, FACTS)
    entries = [
        JournalEntry(1, 1_700_000_000.123456, "start", "pending", "starting", None),
        JournalEntry(2, 1_700_000_000.5, "start_ok", "starting", "running", {"task_id": "tid-1"}),
        JournalEntry(3, 1_700_000_000.75, "segment", "running", "running", {"segment": {"start": 0.1}}),
    ]
    store.create(row, entries)

    assert store.row("k") == row
    assert store.journal("k") == entries
    stored = store.row("k")
    assert stored is not None
    assert stored.created_at == 1_700_000_000.123456
    assert [type(value) for value in stored.facts["floats"]] == [float] * 7  # floats stay floats
    assert stored.facts["floats"] == FACTS["floats"]
    assert store.journal("k")[0].args is None
    assert store.row("unknown") is None
    assert store.journal("unknown") == []


def test_a_write_with_no_row_moves_the_row_on_to_its_last_entry_and_keeps_the_rest(store: Store) -> None:
    """What a Fleet writes for a segment applied while running: entries, and the row only moved on."""
    made = make(store, "k", task_id="tid-1", facts=FACTS)
    with store.lock("k") as txn:
        txn.write([entry(2), entry(3)], None)
    assert store.row("k") == made._replace(version=3, updated_at=entry(3).at)
    assert store.journal("k") == [entry(1, trigger="make"), entry(2), entry(3)]
    assert store.find("tid-1") == store.row("k")
    assert list(store.rows()) == [store.row("k")]
    advanced = advance(store, "k", state="stopping")  # a whole row after it, as before
    assert store.row("k") == advanced


def test_a_write_with_no_row_is_numbered_as_any_other(store: Store) -> None:
    made = make(store, "k")
    for stale in ([entry(1)], [entry(3)], [entry(2), entry(4)]):
        with pytest.raises(StoreConflict), store.lock("k") as txn:
            txn.write(stale, None)
    with pytest.raises(ValueError, match="no row"), store.lock("k") as txn:
        txn.write([], None)
    with pytest.raises(StoreConflict), store.lock("nobody") as txn:
        txn.write([entry(1)], None)
    assert store.row("k") == made
    assert store.journal("k") == [entry(1, trigger="make")]


def test_a_write_with_no_row_is_rolled_back_with_its_block(store: Store) -> None:
    made = make(store, "k")

    def event_failing_after_its_write() -> None:
        with store.lock("k") as txn:
            txn.write([entry(2)], None)
            raise RuntimeError("the event failed after its write")

    with pytest.raises(RuntimeError):
        event_failing_after_its_write()
    assert store.row("k") == made
    assert store.journal("k") == [entry(1, trigger="make")]


def test_a_task_with_no_entries_yet(store: Store) -> None:
    row = task_row("k", 0, state="pending")
    store.create(row, [])
    assert store.row("k") == row
    assert store.journal("k") == []
    with store.lock("k") as txn:
        assert txn.version == 0
        txn.write([entry(1)], task_row("k", 1))
    assert [e.version for e in store.journal("k")] == [1]


def test_creating_a_key_twice_conflicts_and_keeps_the_first(store: Store) -> None:
    first = make(store, "k", task_id="tid-1")
    with pytest.raises(StoreConflict):
        store.create(task_row("k", 2, task_id="tid-2"), [entry(1), entry(2)])
    assert store.row("k") == first
    assert [e.version for e in store.journal("k")] == [1]


def test_a_task_id_is_claimed_once_and_a_second_claim_keeps_nothing(store: Store) -> None:
    store.create(task_row("first", 1, task_id="orphan-1"), [entry(1, trigger="adopt")], claim="orphan-1")
    with pytest.raises(StoreConflict, match="claimed"):
        store.create(task_row("second", 1, task_id="orphan-1"), [entry(1, trigger="adopt")], claim="orphan-1")
    assert store.row("second") is None
    assert store.journal("second") == []
    found = store.find("orphan-1")
    assert found is not None
    assert found.key == "first"
    # Claims are for orphans only: a start answer may name a task_id an orphan claimed (both stop it).
    store.create(task_row("started", 1, task_id="orphan-1"), [entry(1, trigger="start_ok")])
    store.create(task_row("other", 1, task_id="orphan-2"), [entry(1, trigger="adopt")], claim="orphan-2")


@pytest.mark.parametrize(
    ("versions", "row_version"),
    [([2], 2), ([1, 3], 3), ([1, 2], 1), ([1], 2), ([], 1), ([0], 0)],
    ids=["starts-at-2", "gap", "row-behind", "row-ahead", "no-entries-row-at-1", "zero"],
)
def test_create_with_bad_numbering_conflicts(store: Store, versions: list[int], row_version: int) -> None:
    with pytest.raises(StoreConflict):
        store.create(task_row("k", row_version), [entry(v) for v in versions])
    assert store.row("k") is None
    assert store.journal("k") == []


# Locked writes.


def test_lock_write_appends_and_moves_the_version(store: Store) -> None:
    make(store, "k")
    with store.lock("k") as txn:
        assert txn.version == 1
        assert txn.entries_after(1) == []
        row = task_row("k", 3, state="stopping")
        txn.write([entry(2), entry(3, trigger="stop", args={"why": "asked"})], row)
    assert store.row("k") == row
    assert [e.version for e in store.journal("k")] == [1, 2, 3]
    assert store.journal("k")[2].args == {"why": "asked"}
    with store.lock("k") as txn:
        assert txn.version == 3


def test_a_lock_without_a_write_changes_nothing(store: Store) -> None:
    row = make(store, "k")
    with store.lock("k") as txn:
        assert txn.version == 1
    assert store.row("k") == row
    assert store.journal("k") == [entry(1, trigger="make")]


def test_writing_a_task_that_was_never_made_conflicts(store: Store) -> None:
    with store.lock("nobody") as txn:
        assert txn.version == 0
        with pytest.raises(StoreConflict):
            txn.write([entry(1)], task_row("nobody", 1))
    assert store.row("nobody") is None
    assert store.journal("nobody") == []


@pytest.mark.parametrize(
    ("versions", "row_version"),
    [([1], 1), ([3], 3), ([2, 4], 4), ([2], 3), ([2, 3], 2), ([], 2)],
    ids=["taken", "skips-one", "gap", "row-ahead", "row-behind", "row-without-entries"],
)
def test_a_write_that_does_not_follow_the_version_conflicts_and_keeps_nothing(
    store: Store, versions: list[int], row_version: int
) -> None:
    made = make(store, "k")
    with store.lock("k") as txn, pytest.raises(StoreConflict):
        txn.write([entry(v) for v in versions], task_row("k", row_version, state="stopping"))
    # the lock's block went on after the conflict and ended normally: still nothing is kept
    assert store.row("k") == made
    assert store.journal("k") == [entry(1, trigger="make")]
    advance(store, "k")  # and the task takes its next version as usual
    assert [e.version for e in store.journal("k")] == [1, 2]


def test_a_stale_writer_conflicts(store: Store) -> None:
    """The Fleet's copy says version 1; another writer moved the task to 2 meanwhile."""
    make(store, "k")
    advance(store, "k")
    with store.lock("k") as txn, pytest.raises(StoreConflict):
        txn.write([entry(2)], task_row("k", 2))
    assert [e.version for e in store.journal("k")] == [1, 2]


def test_an_exception_in_the_block_rolls_the_write_back(store: Store) -> None:
    made = make(store, "k")

    def write_then_fail() -> None:
        with store.lock("k") as txn:
            txn.write([entry(2)], task_row("k", 2, state="stopping", task_id="tid"))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_then_fail()
    assert store.row("k") == made
    assert store.journal("k") == [entry(1, trigger="make")]
    assert store.find("tid") is None
    assert [row.key for row in store.rows()] == ["k"]
    advance(store, "k")  # the lock was let go
    assert [e.version for e in store.journal("k")] == [1, 2]


def test_one_write_per_lock(store: Store) -> None:
    make(store, "k")
    with store.lock("k") as txn:
        txn.write([entry(2)], task_row("k", 2))
        with pytest.raises(StoreConflict):
            txn.write([entry(3)], task_row("k", 3))
    assert [e.version for e in store.journal("k")] == [1, 2]
    row = store.row("k")
    assert row is not None
    assert row.version == 2


def test_entries_after(store: Store) -> None:
    make(store, "k")
    for _ in range(3):
        advance(store, "k")
    with store.lock("k") as txn:
        assert txn.version == 4
        assert [e.version for e in txn.entries_after(0)] == [1, 2, 3, 4]
        assert txn.entries_after(1) == store.journal("k")[1:]
        assert txn.entries_after(4) == []


def test_a_lock_sees_what_another_handle_wrote(backend: Backend) -> None:
    """What a second Fleet (another process, for the shared stores) applied is what the first one
    reads under its lock and catches up from."""
    mine, theirs = backend.open(), backend.open()
    make(mine, "k")
    advance(theirs, "k", state="stopping")
    advance(theirs, "k", state="stopped")
    with mine.lock("k") as txn:
        assert txn.version == 3
        assert [e.version for e in txn.entries_after(1)] == [2, 3]
    assert mine.row("k") == theirs.row("k")
    assert [row.key for row in mine.rows()] == []


# find and rows.


def test_find(store: Store) -> None:
    assert store.find("tid-1") is None
    make(store, "a", task_id="tid-1", created_at=1.0)
    make(store, "b", task_id="tid-1", created_at=2.0)  # a second claim: the first made wins
    make(store, "c", task_id="tid-1", created_at=2.0)
    make(store, "d", created_at=0.5)  # no task_id yet
    found = store.find("tid-1")
    assert found is not None
    assert found.key == "a"
    assert store.find("tid-2") is None
    advance(store, "d", task_id="tid-2")  # start_ok: the task_id comes with a write
    found = store.find("tid-2")
    assert found is not None
    assert (found.key, found.version, found.task_id) == ("d", 2, "tid-2")
    advance(store, "a", state="stopped")  # a terminal task is still found
    found = store.find("tid-1")
    assert found is not None
    assert (found.key, found.state) == ("a", "stopped")


def test_find_same_made_time_first_created_wins(store: Store) -> None:
    make(store, "z", task_id="tid", created_at=5.0)
    make(store, "a", task_id="tid", created_at=5.0)
    found = store.find("tid")
    assert found is not None
    assert found.key == "z"


@pytest.mark.parametrize("how", ["claimed-later", "stored-later"])
def test_find_answers_the_first_made_however_the_claims_came(
    request: pytest.FixtureRequest, store: Store, how: str
) -> None:
    """``Store.find``: "the first made, if two claimed it". The first made may claim its task_id
    after a later task did (its start answer came last), or be stored after a later-made task (two
    processes, whose inserts crossed)."""
    if how == "claimed-later":
        make(store, "early", created_at=1.0)
        make(store, "late", task_id="tid", created_at=2.0)
        advance(store, "early", task_id="tid")
    else:
        make(store, "late", task_id="tid", created_at=2.0)
        make(store, "early", task_id="tid", created_at=1.0)
    found = store.find("tid")
    assert found is not None
    assert found.key == "early"


def test_rows_open_ones_oldest_first_then_terminal_ones(store: Store) -> None:
    make(store, "third", created_at=3.0)
    make(store, "first", created_at=1.0)
    make(store, "done-late", created_at=4.0, state="ended")
    make(store, "second-a", created_at=2.0)
    make(store, "second-b", created_at=2.0)  # a tie: made order
    make(store, "done-early", created_at=0.5, state="failed")
    assert [row.key for row in store.rows()] == ["first", "second-a", "second-b", "third"]
    assert [row.key for row in store.rows(terminal=True)] == [
        *["first", "second-a", "second-b", "third"],
        *["done-early", "done-late"],
    ]
    advance(store, "first", state="stopped")  # a task that ends moves to the terminal ones
    assert [row.key for row in store.rows()] == ["second-a", "second-b", "third"]
    assert [row.key for row in store.rows(terminal=True)][3:] == ["done-early", "first", "done-late"]
    assert all(isinstance(row, TaskRow) for row in store.rows(terminal=True))
    assert next(iter(store.rows())) == store.row("second-a")


def test_rows_of_an_empty_store(store: Store) -> None:
    assert list(store.rows()) == []
    assert list(store.rows(terminal=True)) == []


# The parking lot.


def test_park_unpark_parked_in_arrival_order(store: Store) -> None:
    assert store.parked() == []
    payloads: list[dict[str, Any]] = [
        {"taskId": "t1", "status": 0, "data": {"text": "hi", "start": 0.1}},
        {"n": 2},
        {"n": 3},
    ]
    store.park("t1", 10.5, payloads[0])
    store.park("t2", 10.25, payloads[1])  # arrival order, not time order
    store.park("t1", 11.0, payloads[2])
    kept = store.parked()
    assert [(p.task_id, p.at, p.payload) for p in kept] == [
        ("t1", 10.5, payloads[0]),
        ("t2", 10.25, payloads[1]),
        ("t1", 11.0, payloads[2]),
    ]
    assert all(isinstance(p, ParkedCallback) for p in kept)
    assert [p.payload for p in store.parked("t1")] == [payloads[0], payloads[2]]
    assert store.parked("nobody") == []
    assert [p.seq for p in kept] == sorted({p.seq for p in kept})  # increasing, no repeats
    store.unpark("t1")
    assert [(p.task_id, p.payload) for p in store.parked()] == [("t2", payloads[1])]
    store.unpark("nobody")
    store.park("t1", 12.0, {"n": 4})  # a later arrival numbers after every earlier one
    again = store.parked()
    assert [p.task_id for p in again] == ["t2", "t1"]
    assert again[1].seq > max(p.seq for p in kept)
    store.unpark("t2")
    store.unpark("t1")
    assert store.parked() == []


def test_unpark_upto_a_seq_keeps_what_was_parked_after_it(store: Store) -> None:
    """A process that read and applied a task_id's kept callbacks forgets only those: one another
    process parked since (answered "parked") stays for whoever applies it."""
    store.park("t1", 1.0, {"n": 1})
    store.park("t1", 2.0, {"n": 2})
    read = store.parked("t1")
    store.park("t1", 3.0, {"n": 3})  # another process, between the read and the unpark
    store.park("t2", 3.5, {"n": 9})
    store.unpark("t1", upto=max(kept.seq for kept in read))
    assert [(kept.task_id, kept.payload) for kept in store.parked()] == [("t1", {"n": 3}), ("t2", {"n": 9})]
    store.unpark("t1", upto=0)  # nothing up to it
    assert [kept.payload for kept in store.parked("t1")] == [{"n": 3}]
    store.unpark("t1")
    assert [kept.task_id for kept in store.parked()] == ["t2"]


def test_parked_before_a_time_gives_only_those_kept_earlier(store: Store) -> None:
    """What a process reads to take over callbacks another left parked past their TTL."""
    store.park("t1", 10.0, {"n": 1})
    store.park("t2", 12.0, {"n": 2})
    store.park("t1", 20.0, {"n": 3})
    assert [kept.payload for kept in store.parked(before=12.0)] == [{"n": 1}]  # (before: not at)
    assert [kept.payload for kept in store.parked(before=20.5)] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert [kept.payload for kept in store.parked("t1", before=15.0)] == [{"n": 1}]
    assert store.parked("t2", before=12.0) == []
    assert store.parked(before=10.0) == []


# Dead letters: payloads the parser refused.

# Text as a hostile payload can make a parser's message: any code point, lone surrogates and NULs too.
ANY_TEXT = st.text(st.characters(exclude_categories=()) | st.sampled_from(["\x00", "\ud800", "\udfff", "é"]))


def test_a_dead_letter_keeps_any_bytes_as_received(backend: Backend) -> None:
    store = backend.open()
    examples = (
        settings().max_examples if backend.kind != "postgres" else max(10, settings().max_examples // 4)
    )

    @settings(max_examples=examples)
    @given(
        st.binary(max_size=300) | st.sampled_from([b"", b"\x00", b"\xff\xfe", "\u00e9\U0001f600".encode()]),
        ANY_TEXT,
        st.none() | ANY_TEXT,
        TIMES,
    )
    def check(body: bytes, reason: str, field: str | None, at: float) -> None:
        letter_id = store.dead_letter(at, reason, field, body)
        kept = store.dead_letter_by_id(letter_id)
        assert kept == DeadLetter(letter_id, at, *dead_letter_fields(reason, field, body))
        assert isinstance(kept.body, bytes)
        assert kept.body == body  # under the cap: byte for byte
        assert kept.size == len(body)
        assert not kept.truncated
        assert store.dead_letters()[-1] == kept

    check()


def test_dead_letter_fields_keeps_clean_text_as_it_is_and_escapes_what_no_database_takes() -> None:
    body = b"{}"
    assert dead_letter_fields("data.status: must be an integer", "data.status", body) == (
        "data.status: must be an integer", "data.status", 2, body
    )  # fmt: skip
    assert dead_letter_fields("ünïcødé 😀", None, body)[:2] == ("ünïcødé 😀", None)
    reason, field, _, _ = dead_letter_fields("a\x00b \ud800 c", "x\x00", body)
    assert (reason, field) == ("a\\x00b \\ud800 c", "x\\x00")  # escaped where it stood
    reason, field, _, _ = dead_letter_fields("\x00" * 5_000, "f" * 5_000, body)
    assert reason == "\\x00" * (DEAD_LETTER_MAX_TEXT // 4)  # escapes grow it: cut after them too
    assert field == "f" * DEAD_LETTER_MAX_TEXT


def test_a_dead_letter_body_is_kept_up_to_the_cap_and_says_when_it_was_cut(store: Store) -> None:
    whole = store.dead_letter(1.0, "r", None, b"x" * DEAD_LETTER_MAX_BODY)
    cut = store.dead_letter(2.0, "r", None, b"y" * (DEAD_LETTER_MAX_BODY + 1))
    huge = store.dead_letter(3.0, "r", None, bytes(range(256)) * 1_000)
    kept = store.dead_letter_by_id(whole)
    assert kept is not None
    assert kept.body == b"x" * DEAD_LETTER_MAX_BODY
    assert (kept.size, kept.truncated) == (DEAD_LETTER_MAX_BODY, False)
    kept = store.dead_letter_by_id(cut)
    assert kept is not None
    assert kept.body == b"y" * DEAD_LETTER_MAX_BODY
    assert (kept.size, kept.truncated) == (DEAD_LETTER_MAX_BODY + 1, True)
    kept = store.dead_letter_by_id(huge)
    assert kept is not None
    assert kept.body == (bytes(range(256)) * 1_000)[:DEAD_LETTER_MAX_BODY]
    assert (kept.size, kept.truncated) == (256_000, True)


def test_a_dead_letter_reason_and_field_are_capped(store: Store) -> None:
    """A hostile payload may be quoted in the parser's message: the store keeps only so much of it."""
    letter_id = store.dead_letter(1.0, "why " * 100_000, "data." * 100_000, b"{}")
    kept = store.dead_letter_by_id(letter_id)
    assert kept is not None
    assert kept.reason == ("why " * 100_000)[:DEAD_LETTER_MAX_TEXT]
    assert kept.field == ("data." * 100_000)[:DEAD_LETTER_MAX_TEXT]
    assert (kept.size, kept.body) == (2, b"{}")


def test_dead_letters_in_id_order_after_and_limit(store: Store) -> None:
    assert store.dead_letters() == []
    ids = [store.dead_letter(10.0 - n, f"reason {n}", f"field{n}", bytes([n])) for n in range(5)]
    assert ids == sorted(set(ids))  # increasing, whatever the times say
    every = store.dead_letters()
    assert [letter.id for letter in every] == ids
    assert [(letter.reason, letter.field, letter.body) for letter in every] == [
        (f"reason {n}", f"field{n}", bytes([n])) for n in range(5)
    ]
    assert store.dead_letters(after=ids[1]) == every[2:]
    assert store.dead_letters(limit=2) == every[:2]
    assert store.dead_letters(after=ids[1], limit=2) == every[2:4]
    assert store.dead_letters(after=ids[-1]) == []
    assert store.dead_letters(after=2**70) == []  # beyond any id: none, not an error
    assert store.dead_letters(after=-5) == every
    assert store.dead_letters(limit=0) == []
    assert store.dead_letters(limit=2**70) == every
    with pytest.raises(ValueError, match="limit"):
        store.dead_letters(limit=-1)
    # Paging on from the last id read finds each letter once.
    paged: list[DeadLetter] = []
    while page := store.dead_letters(after=paged[-1].id if paged else 0, limit=2):
        paged.extend(page)
    assert paged == every
    assert [store.dead_letter_by_id(letter_id) for letter_id in ids] == every
    for nobody in (0, -1, ids[-1] + 1, 2**63, 2**80):
        assert store.dead_letter_by_id(nobody) is None


def test_purging_some_dead_letters_then_all(store: Store) -> None:
    ids = [store.dead_letter(float(n), "r", None, b"b") for n in range(5)]
    assert store.purge_dead_letters([]) == 0  # an empty list purges nothing, not everything
    assert len(store.dead_letters()) == 5
    assert store.purge_dead_letters([ids[1], ids[3], ids[3], 0, -1, 2**80, ids[-1] + 100]) == 2
    assert [letter.id for letter in store.dead_letters()] == [ids[0], ids[2], ids[4]]
    assert store.purge_dead_letters([ids[1]]) == 0  # gone already
    assert store.purge_dead_letters(iter([ids[0]])) == 1  # any iterable
    assert store.purge_dead_letters() == 2
    assert store.dead_letters() == []
    assert store.purge_dead_letters() == 0
    later = store.dead_letter(9.0, "r", None, b"b")
    assert later > ids[-1]  # an id is never reused, even once every letter is gone
    assert [letter.id for letter in store.dead_letters()] == [later]


def test_dead_letters_do_not_touch_tasks_or_parked_callbacks(store: Store) -> None:
    make(store, "k", task_id="tid-1")
    store.park("tid-2", 1.0, {"n": 1})
    store.dead_letter(2.0, "r", None, b"not json")
    store.purge_dead_letters()
    assert store.row("k") is not None
    assert [p.task_id for p in store.parked()] == ["tid-2"]
    store.unpark("tid-2")
    assert len(store.dead_letters()) == 0


def test_handles_keeping_dead_letters_at_once_take_each_id_once(durable_backend: Backend) -> None:
    """Each handle is its own connection, as each process's store is: the database hands out the ids."""
    handles = [durable_backend.open() for _ in range(4)]
    start = threading.Barrier(len(handles))
    taken: list[list[int]] = [[] for _ in handles]

    def keep(n: int) -> None:
        start.wait()
        for m in range(25):
            taken[n].append(handles[n].dead_letter(float(m), f"from {n}", None, f"{n}/{m}".encode()))

    threads = [threading.Thread(target=keep, args=(n,)) for n in range(len(handles))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [letter_id for ids in taken for letter_id in ids]
    assert len(set(every)) == 100
    assert all(ids == sorted(ids) for ids in taken)  # each handle's own, increasing
    kept = handles[0].dead_letters()
    assert [letter.id for letter in kept] == sorted(every)
    assert {letter.body for letter in kept} == {f"{n}/{m}".encode() for n in range(4) for m in range(25)}


# Durability.


def test_everything_survives_close_and_reopen(durable_backend: Backend) -> None:
    store = durable_backend.open()
    make(store, "a", task_id="tid-a", created_at=1.0, facts=FACTS)
    make(store, "b", created_at=2.0)
    advance(store, "a", state="stopping")
    advance(store, "b", state="failed")
    store.park("tid-x", 5.0, {"taskId": "tid-x", "status": 14})
    before = (
        [store.row(key) for key in "ab"],
        [store.journal(key) for key in "ab"],
        list(store.rows(terminal=True)),
        store.find("tid-a"),
        store.parked(),
    )
    store.close()

    again = durable_backend.open()
    after = (
        [again.row(key) for key in "ab"],
        [again.journal(key) for key in "ab"],
        list(again.rows(terminal=True)),
        again.find("tid-a"),
        again.parked(),
    )
    assert after == before
    advance(again, "a", state="stopped")  # and it takes writes as before
    assert [e.version for e in again.journal("a")] == [1, 2, 3]
    again.park("tid-y", 6.0, {})
    assert [p.task_id for p in again.parked()] == ["tid-x", "tid-y"]


def test_dead_letters_survive_close_and_reopen(durable_backend: Backend) -> None:
    store = durable_backend.open()
    first = store.dead_letter(1.5, "not JSON: Expecting value", None, b"\x00\xffnot json")
    second = store.dead_letter(2.5, "data.status: missing", "data.status", b"x" * (DEAD_LETTER_MAX_BODY + 7))
    before = store.dead_letters()
    store.purge_dead_letters([second])
    store.close()

    again = durable_backend.open()
    assert again.dead_letters() == before[:1]
    assert again.dead_letter_by_id(first) == before[0]
    third = again.dead_letter(3.5, "r", None, b"{}")
    assert third > second  # the numbering goes on, past the purged one
    assert [letter.id for letter in again.dead_letters()] == [first, third]


def test_a_store_made_before_dead_letters_gains_their_table_when_opened(durable_backend: Backend) -> None:
    """A file or database at schema version 2 (as the streamlife before dead letters left it), with a
    task in it: opened now, it keeps the task and takes dead letters."""
    old = durable_backend.open()
    made = make(old, "k", task_id="tid-1")
    old.park("tid-2", 1.0, {"n": 1})
    old.close()
    if durable_backend.kind == "sqlite":
        import sqlite3

        with sqlite3.connect(durable_backend.location) as db:
            db.execute("DROP TABLE dead_letters")
            db.execute("DELETE FROM sqlite_sequence WHERE name = 'dead_letters'")
            for column in ("due_at", "quiet", "claimed_until"):
                db.execute(f"ALTER TABLE tasks DROP COLUMN {column}")
            db.execute("DROP INDEX parked_at")
            db.execute("PRAGMA user_version = 2")
        db.close()
    else:
        import psycopg

        with psycopg.connect(durable_backend.location, autocommit=True) as conn:
            conn.execute("DROP TABLE streamlife_dead_letters")
            for column in ("due_at", "quiet", "claimed_until", "look_at"):
                conn.execute(f"ALTER TABLE streamlife_tasks DROP COLUMN {column}")
            conn.execute("DROP FUNCTION streamlife_lock_task")
            conn.execute("DROP INDEX streamlife_parked_at")
            conn.execute("UPDATE streamlife_schema SET version = 2")

    store = durable_backend.open()
    assert store.row("k") == made
    assert store.journal("k") == [entry(1, trigger="make")]
    assert [p.task_id for p in store.parked()] == ["tid-2"]
    # Kept before deadlines were: due at once, for whoever claims it to find out if its holder lives.
    assert store.claim_due(made.updated_at, until=made.updated_at + 60, limit=10) == ["k"]
    assert store.dead_letters() == []
    letter_id = store.dead_letter(2.0, "r", None, b"{}")
    assert [letter.id for letter in store.dead_letters()] == [letter_id]
    advance(store, "k", state="stopping")  # and the tasks take writes as before
    if durable_backend.kind == "sqlite":
        import sqlite3

        from streamlife.store._sqlite_schema import MIGRATIONS

        with sqlite3.connect(durable_backend.location) as db:
            (version,) = db.execute("PRAGMA user_version").fetchone()
            indexed = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'parked_at'").fetchone()
        db.close()
    else:
        import psycopg

        from streamlife.store._postgres_schema import MIGRATIONS

        with psycopg.connect(durable_backend.location, autocommit=True) as conn:
            found = conn.execute("SELECT version FROM streamlife_schema").fetchone()
            assert found is not None
            (version,) = found
            index = "SELECT 1 FROM pg_indexes WHERE indexname = 'streamlife_parked_at'"
            indexed = conn.execute(index).fetchone()
    assert version == len(MIGRATIONS)  # every step applied
    assert indexed is not None  # the last one too


def test_a_schema_newer_than_this_code_is_refused(durable_backend: Backend) -> None:
    durable_backend.open().close()  # made and migrated
    if durable_backend.kind == "sqlite":
        import sqlite3

        with sqlite3.connect(durable_backend.location) as db:
            db.execute("PRAGMA user_version = 99")
        db.close()
    else:
        import psycopg

        with psycopg.connect(durable_backend.location, autocommit=True) as conn:
            conn.execute("UPDATE streamlife_schema SET version = 99")
    with pytest.raises(StoreError, match="newer"):
        durable_backend.open()


def test_stores_opening_at_once_migrate_once(durable_backend: Backend) -> None:
    stores: list[Store] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_one() -> None:
        start.wait()
        try:
            stores.append(durable_backend.open())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    make(stores[0], "k")
    assert all(store.row("k") is not None for store in stores)


# Many writers on one task: the row lock and the version check let each version be taken once.

THREADS, PROCESSES, WRITES = 8, 4, 50


def bump(store: Store, key: str, writes: int) -> None:
    for _ in range(writes):
        with store.lock(key) as txn:
            version = txn.version
            txn.write([entry(version + 1)], task_row(key, version + 1))


def assert_every_version_once(store: Store, key: str, total: int) -> None:
    row = store.row(key)
    assert row is not None
    assert row.version == total
    assert [e.version for e in store.journal(key)] == list(range(1, total + 1))


def test_threads_writing_one_task_take_each_version_once(store: Store) -> None:
    make(store, "k")
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            bump(store, "k", WRITES)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert_every_version_once(store, "k", 1 + THREADS * WRITES)


def hammer(kind: str, location: str, key: str, writes: int, start: Any, results: Any) -> None:
    """One process of ``test_processes_...``: open the store (all at once), make the task if no one
    has, then take ``writes`` versions of it."""
    try:
        start.wait(timeout=60)
        store = open_store(kind, location)
        try:
            made = 1
            try:
                store.create(task_row(key, 1), [entry(1, trigger="make")])
            except StoreConflict:
                made = 0
            bump(store, key, writes)
        finally:
            store.close()
        results.put((os.getpid(), made, None))
    except BaseException as exc:
        results.put((os.getpid(), 0, repr(exc)))
        raise


def test_processes_writing_one_task_take_each_version_once(durable_backend: Backend) -> None:
    """Four processes open the same new file or database at the same moment (each migrating it, or
    finding it migrated), race to make one task, and write it ``WRITES`` times each."""
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(PROCESSES)
    results = context.Queue()
    workers = [
        context.Process(
            target=hammer, args=(durable_backend.kind, durable_backend.location, "k", WRITES, start, results)
        )
        for _ in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    assert [error for _, _, error in outcomes] == [None] * PROCESSES
    assert [worker.exitcode for worker in workers] == [0] * PROCESSES
    assert sum(made for _, made, _ in outcomes) == 1  # one made the task; the others conflicted
    assert_every_version_once(durable_backend.open(), "k", 1 + PROCESSES * WRITES)


# Values: every store keeps JSON, one dialect (streamlife._jsontext), and refuses the rest.


class Colour(enum.Enum):
    RED = "red"


# What orjson writes itself, and what the standard encoder writes (a None, an integer beyond 64
# bits, a lone surrogate or a non-string key sends the whole value its way): each as given,
# then as every store reads it back.
AS_ORJSON_WRITES = (
    {"enum": Colour.RED, "id": uuid.UUID(int=7), "pair": (1, 2.5), "nested": [{"x": ("y",)}]},
    {"enum": "red", "id": "00000000-0000-0000-0000-000000000007", "pair": [1, 2.5], "nested": [{"x": ["y"]}]},
)
AS_THE_STANDARD_ENCODER_WRITES = (
    {"enum": Colour.RED, "big": -(2**70), "none": None, "lone": "\udc00 \u00e9", "keys": {1: "a", None: "b"}},
    {"enum": "red", "big": -(2**70), "none": None, "lone": "\udc00 \u00e9", "keys": {"1": "a", "null": "b"}},
)


@pytest.mark.parametrize(("given", "expected"), [AS_ORJSON_WRITES, AS_THE_STANDARD_ENCODER_WRITES])
def test_every_store_keeps_a_value_as_its_json_reads_back(
    store: Store, given: dict[Any, Any], expected: dict[str, Any]
) -> None:
    store.create(task_row("k", 1, facts=given), [entry(1, args=given)])
    store.park("tid", 1.0, given)
    row, (journaled,), (parked,) = store.row("k"), store.journal("k"), store.parked()
    assert row is not None
    for kept in (row.facts, journaled.args, parked.payload):
        assert repr(kept) == repr(expected)  # (repr: 1 == 1.0 == True, and "1" is not 1)


def test_a_value_that_is_not_json_is_refused_and_nothing_is_kept(store: Store) -> None:
    too_deep: list[Any] = []
    for _ in range(10_000):  # deeper than any stack an encoder recurses on
        too_deep = [too_deep]
    not_json = ({"x": float("nan")}, {"x": float("inf")}, {"x": object()}, {"x": b"raw"}, {"x": {1.5}})
    for bad in (*not_json, {"x": too_deep}, {"x": [None, float("nan")]}, {"x": datetime.now(UTC)}):
        with pytest.raises(StoreError, match="JSON"):
            store.create(task_row("k", 1, facts=bad), [entry(1)])
        assert store.row("k") is None
    make(store, "k")
    with store.lock("k") as txn, pytest.raises(StoreError, match="JSON"):
        txn.write([entry(2, args={"x": float("nan")})], task_row("k", 2))
    with pytest.raises(StoreError, match="JSON"):
        store.park("tid", 1.0, {"x": float("-inf")})
    assert [e.version for e in store.journal("k")] == [1]
    assert store.parked() == []


def test_sqlite_errors_are_store_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="could not open"):
        SqliteStore(tmp_path)  # a directory
    with pytest.raises(StoreError):
        SqliteStore(tmp_path / "no" / "such" / "dir" / "x.db")
    store = SqliteStore(tmp_path / "x.db")
    assert repr(store) == f"SqliteStore({str(tmp_path / 'x.db')!r})"
    make(store, "k")
    with store.lock("k"), pytest.raises(StoreError, match="inside a lock"):
        store.create(task_row("other", 1), [entry(1)])
    store.close()
    with pytest.raises(StoreError):
        store.row("k")
    with pytest.raises(StoreError):
        store.create(task_row("j", 1), [entry(1)])


def test_sqlite_waits_for_another_writer_instead_of_failing(tmp_path: Path) -> None:
    """A writer holding the file's lock makes another wait (busy_timeout), not fail."""
    path = tmp_path / "x.db"
    holder, waiter = SqliteStore(path), SqliteStore(path)
    make(holder, "k")
    make(holder, "j")
    done = threading.Event()

    def write_other_task() -> None:
        advance(waiter, "j")
        done.set()

    with holder.lock("k") as txn:
        thread = threading.Thread(target=write_other_task)
        thread.start()
        assert not done.wait(0.3)  # blocked on the file's write lock
        txn.write([entry(2)], task_row("k", 2))
    thread.join(timeout=10)
    assert done.is_set()
    assert [e.version for e in waiter.journal("k")] == [1, 2]
    assert [e.version for e in holder.journal("j")] == [1, 2]
    holder.close()
    waiter.close()


def test_postgres_errors_are_store_errors_and_the_password_stays_hidden(pg_store_dsn: str) -> None:
    import psycopg.conninfo

    from tests.pg import free_port

    nowhere = f"host=127.0.0.1 port={free_port()} dbname=x user=u password=hunter2 connect_timeout=1"
    with pytest.raises(StoreError) as raised:
        PostgresStore(nowhere, timeout=1.0)
    assert "hunter2" not in str(raised.value)
    assert "hunter2" not in repr(raised.value.__cause__)

    params = psycopg.conninfo.conninfo_to_dict(pg_store_dsn)
    host, port, dbname = params["host"], params.get("port", 5432), params["dbname"]
    as_url = f"postgresql://postgres:hunter2@{host}:{port}/{dbname}"  # trust: the password is ignored
    as_keywords = psycopg.conninfo.make_conninfo(pg_store_dsn, password="hunter2")
    for dsn in (as_url, as_keywords):
        store = PostgresStore(dsn)
        assert "hunter2" not in repr(store)
        assert f"dbname={dbname}" in repr(store)
        store.close()

    store = PostgresStore(pg_store_dsn)
    make(store, "k")
    with store.lock("k"), pytest.raises(StoreError, match="inside a lock"):
        store.create(task_row("other", 1), [entry(1)])
    store.close()
    with pytest.raises(StoreError):
        store.row("k")
    with pytest.raises(StoreError), store.lock("k"):
        pass


# The property: any sequence of operations leaves each store where MemoryStore (the model) is.


@dataclass(frozen=True)
class Create:
    key: str
    task_id: str | None
    state: str
    created_at: float
    entries: int  # how many entries it comes with
    facts: dict[str, Any]


@dataclass(frozen=True)
class Write:
    key: str
    entries: int
    skew: int  # 0: numbered on from the stored version; else a stale (or future) writer's numbering
    state: str
    task_id: str | None  # None: keep the task's
    facts: dict[str, Any]
    args: dict[str, Any] | None
    fail: bool  # the block raises after the write
    no_row: bool  # write(entries, None): the row only moves on to the last entry


@dataclass(frozen=True)
class Park:
    task_id: str
    at: float
    payload: dict[str, Any]


@dataclass(frozen=True)
class Unpark:
    task_id: str


@dataclass(frozen=True)
class KeepDeadLetter:
    at: float
    reason: str
    field: str | None
    body: bytes


@dataclass(frozen=True)
class PurgeDeadLetters:
    ids: list[int] | None  # None: all


@dataclass(frozen=True)
class Prune:
    before: float
    dry_run: bool


Op = Create | Write | Park | Unpark | KeepDeadLetter | PurgeDeadLetters | Prune

KEYS = st.sampled_from(["a", "b", "c", "d"])
TASK_IDS = st.sampled_from(["t1", "t2", "t3"])
STATES = st.sampled_from([state.value for state in TaskState])
JSON: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
OBJECTS = st.dictionaries(st.text(max_size=4), JSON, max_size=3)
TIMES = st.floats(allow_nan=False, allow_infinity=False)

OPS: st.SearchStrategy[Op] = st.one_of(
    st.builds(
        Create,
        KEYS,
        st.none() | TASK_IDS,
        STATES,
        st.sampled_from([1.0, 2.0, 3.0]),
        st.integers(0, 2),
        OBJECTS,
    ),
    st.builds(
        Write,
        KEYS,
        st.integers(0, 2),
        st.sampled_from([0, 0, 0, -1, 1]),
        STATES,
        st.none() | TASK_IDS,
        OBJECTS,
        st.none() | OBJECTS,
        st.booleans(),
        st.booleans(),
    ),
    st.builds(Park, TASK_IDS, TIMES, OBJECTS),
    st.builds(Unpark, TASK_IDS),
    st.builds(KeepDeadLetter, TIMES, ANY_TEXT, st.none() | ANY_TEXT, st.binary(max_size=40)),
    st.builds(PurgeDeadLetters, st.none() | st.lists(st.integers(-1, 8), max_size=4)),
    # Around the times the other ops write: made at 1-3, written at 9.0 or 1000 and after.
    st.builds(Prune, st.sampled_from([0.5, 2.0, 2.5, 9.0, 9.5, 1000.5, 2000.0]) | TIMES, st.booleans()),
)


class Boom(Exception):
    pass


def apply(store: Store, op: Op) -> str:
    """Do ``op`` to ``store``; what came of it ("ok", "conflict", "rolled back")."""
    if isinstance(op, Create):
        row = TaskRow(
            op.key, "audio", op.task_id, op.state, op.entries, op.created_at, op.created_at, op.facts
        )
        try:
            store.create(row, [entry(v) for v in range(1, op.entries + 1)])
        except StoreConflict:
            return "conflict"
        return "ok"
    if isinstance(op, Write):
        try:
            with store.lock(op.key) as txn:
                first = txn.version + 1 + op.skew
                current = store.row(op.key)
                task_id = op.task_id or (current.task_id if current else None)
                made_at = current.created_at if current else 1.0
                row = TaskRow(
                    op.key, "audio", task_id, op.state, first - 1 + op.entries, made_at, 9.0, op.facts
                )
                entries = [entry(v)._replace(args=op.args) for v in range(first, first + op.entries)]
                txn.write(entries, None if op.no_row and entries else row)
                if op.fail:
                    raise Boom
        except StoreConflict:
            return "conflict"
        except Boom:
            return "rolled back"
        return "ok"
    if isinstance(op, Park):
        store.park(op.task_id, op.at, op.payload)
    elif isinstance(op, Unpark):
        store.unpark(op.task_id)
    elif isinstance(op, KeepDeadLetter):
        return f"kept as {store.dead_letter(op.at, op.reason, op.field, op.body)}"
    elif isinstance(op, Prune):
        return f"pruned {store.prune(op.before, dry_run=op.dry_run)}"
    else:
        return f"purged {store.purge_dead_letters(op.ids)}"
    return "ok"


def first_made(rows: Sequence[TaskRow], made_order: list[str], task_id: str) -> str | None:
    """``Store.find``'s answer by its docstring: the first made (created_at, then made order)."""
    claims = [row for row in rows if row.task_id == task_id]
    if not claims:
        return None
    return min(claims, key=lambda row: (row.created_at, made_order.index(row.key))).key


def assert_agrees(store: Store, model: MemoryStore, made_order: list[str]) -> None:
    for key in ["a", "b", "c", "d"]:
        assert store.row(key) == model.row(key)
        assert store.journal(key) == model.journal(key)
    assert list(store.rows()) == list(model.rows())
    assert list(store.rows(terminal=True)) == list(model.rows(terminal=True))
    kept, expected = store.parked(), model.parked()
    assert [(p.task_id, p.at, p.payload) for p in kept] == [(p.task_id, p.at, p.payload) for p in expected]
    assert [p.seq for p in kept] == sorted({p.seq for p in kept})
    assert store.dead_letters() == model.dead_letters()
    everyone = list(model.rows(terminal=True))
    for task_id in ["t1", "t2", "t3"]:
        found = store.find(task_id)
        assert (found.key if found else None) == first_made(everyone, made_order, task_id)
        assert found is None or found == model.row(found.key)


def test_every_store_agrees_with_the_memory_store(backend: Backend, tmp_path: Path) -> None:
    """MemoryStore is the model for rows, journals, rows(), the parking lot and the dead letters (their
    ids too: each store numbers from 1, and none reuses one); ``find`` is checked against its
    docstring (the first made), MemoryStore's own included."""
    fresh: Callable[[], Store]
    if backend.kind == "memory":
        fresh = MemoryStore
        examples = settings().max_examples
    elif backend.kind == "sqlite":
        fresh = lambda: SqliteStore(tmp_path / f"{uuid.uuid4().hex}.db")  # noqa: E731
        examples = settings().max_examples
    else:
        shared = backend.open()

        def fresh() -> Store:
            truncate(backend.location)
            return shared

        examples = max(5, settings().max_examples // 8)  # a database round trip per call

    @settings(max_examples=examples)
    @given(st.lists(OPS, max_size=12))
    def check(ops: list[Op]) -> None:
        model, store = MemoryStore(), fresh()
        made_order: list[str] = []
        try:
            for op in ops:
                outcome = apply(model, op)
                assert apply(store, op) == outcome, op
                if isinstance(op, Create) and outcome == "ok":
                    made_order.append(op.key)
                if isinstance(op, Prune):  # a key pruned and made again is made anew
                    made_order[:] = [key for key in made_order if model.row(key) is not None]
            assert_agrees(store, model, made_order)
        finally:
            if backend.kind == "sqlite":
                store.close()

    check()


# Batches: many events, one commit.


def test_a_batch_keeps_every_write_inside_it_and_reads_its_own_writes(store: Store) -> None:
    make(store, "a")
    with store.batch():
        advance(store, "a")
        store.create(task_row("b", 1), [entry(1, trigger="make")])
        advance(store, "b")
        advance(store, "a")
        assert [row.key for row in store.rows()] == ["a", "b"]  # what the batch wrote, read inside it
        assert [e.version for e in store.journal("a")] == [1, 2, 3]
    assert [e.version for e in store.journal("a")] == [1, 2, 3]
    assert [e.version for e in store.journal("b")] == [1, 2]


def test_a_block_that_raises_inside_a_batch_is_rolled_back_alone(store: Store) -> None:
    make(store, "a")
    make(store, "b")

    def event_failing_after_its_write() -> None:
        with store.lock("b") as txn:
            txn.write([entry(2)], task_row("b", 2))
            raise RuntimeError("the event failed after its write")

    def stale_write() -> None:
        with store.lock("b") as txn:
            txn.write([entry(1)], task_row("b", 1))

    with store.batch():
        advance(store, "a")
        with pytest.raises(RuntimeError):
            event_failing_after_its_write()
        with pytest.raises(StoreConflict):  # refused, and nothing of it kept
            stale_write()
        advance(store, "b")
    assert [e.version for e in store.journal("a")] == [1, 2]
    assert [e.version for e in store.journal("b")] == [1, 2]
    row = store.row("b")
    assert row is not None
    assert row.version == 2


def test_a_batch_that_raises_keeps_nothing_written_inside_it(store: Store) -> None:
    make(store, "a")

    def batch_that_dies() -> None:
        with store.batch():
            advance(store, "a")
            store.create(task_row("b", 1), [entry(1, trigger="make")])
            raise RuntimeError("the consumer died")

    with pytest.raises(RuntimeError):
        batch_that_dies()
    assert [e.version for e in store.journal("a")] == [1]
    assert store.row("b") is None
    advance(store, "a")  # and the store goes on
    assert [e.version for e in store.journal("a")] == [1, 2]


def test_batches_do_not_nest(durable_backend: Backend) -> None:
    store = durable_backend.open()
    make(store, "a")
    with store.batch():
        with pytest.raises(StoreError), store.batch():
            pass
        advance(store, "a")
        with store.lock("a"), pytest.raises(StoreError):
            store.lock("a").__enter__()
    assert [e.version for e in store.journal("a")] == [1, 2]


def test_another_writer_waits_for_a_batch_and_then_sees_all_of_it(durable_backend: Backend) -> None:
    first, second = durable_backend.open(), durable_backend.open()
    make(first, "a")
    batch_open, may_commit = threading.Event(), threading.Event()

    def batch() -> None:
        with first.batch():
            advance(first, "a")
            advance(first, "a")
            batch_open.set()
            may_commit.wait(10)

    thread = threading.Thread(target=batch)
    thread.start()
    assert batch_open.wait(10)
    assert [e.version for e in second.journal("a")] == [1], "nothing is seen before the commit"
    may_commit.set()
    advance(second, "a")  # waits for the batch's lock, then numbers on from it
    thread.join(10)
    assert [e.version for e in second.journal("a")] == [1, 2, 3, 4]


def test_another_thread_reads_none_of_a_batch_that_is_still_open(store: Store) -> None:
    """A batch is all or nothing for a reader too: another thread on the same handle sees the batch's
    writes once it commits, or never, not while it is open."""
    letters: list[int] = []
    batch_open, may_end = threading.Event(), threading.Event()

    def batch_that_dies() -> None:
        with store.batch():
            store.create(task_row("b", 1, task_id="tid-b"), [entry(1, trigger="make")])
            letters.append(store.dead_letter(5.0, "kept inside", None, b"inside"))
            batch_open.set()
            may_end.wait(10)
            raise MidBatchFailure("the consumer died")

    def writer_dies() -> None:
        with pytest.raises(MidBatchFailure):
            batch_that_dies()

    seen: list[object] = []

    def read() -> None:
        seen.extend([store.row("b"), store.dead_letter_by_id(letters[0]), store.find("tid-b")])

    writer = threading.Thread(target=writer_dies)
    writer.start()
    assert batch_open.wait(10)
    reader = threading.Thread(target=read)
    reader.start()
    reader.join(0.5)  # a store that lets it read the open batch has answered by now
    may_end.set()
    writer.join(10)
    reader.join(10)
    assert seen == [None, None, None]


class MidBatchFailure(Exception):
    """What a consumer's code raises inside a batch, after some of its writes."""


def stale_write(store: Store, key: str) -> None:
    """A write from a stale copy: refused with StoreConflict."""
    with store.lock(key) as txn:
        txn.write([entry(1)], task_row(key, 1))


def raise_mid_batch(store: Store, key: str) -> None:
    raise MidBatchFailure(f"the consumer died after writing; {key!r} was next")


def everything_kept(store: Store) -> dict[str, Any]:
    """All a store holds, but the dead letters' ids (PostgreSQL does not hand a rolled-back id out
    again; the others may)."""
    rows = list(store.rows(terminal=True))
    return {
        "rows": rows,
        "journals": {row.key: store.journal(row.key) for row in rows},
        "parked": [(p.task_id, p.at, p.payload) for p in store.parked()],
        "letters": [letter[1:] for letter in store.dead_letters()],
    }


def write_a_batch_that_fails(store: Store, failure: Callable[[Store, str], None], letter: int) -> None:
    """Every kind of write, then ``failure`` at the third task write."""
    with store.batch():
        advance(store, "a")  # the first task's write
        with store.lock("a") as txn:  # and one that moves its row on (no row written)
            txn.write([entry(txn.version + 1)], None)
        store.create(task_row("b", 1, task_id="tid-b"), [entry(1, trigger="make")], claim="tid-b")
        advance(store, "c", task_id="tid-c2")  # the second task's: its task_id moves
        store.park("tid-late", 4.0, {"n": 2})
        store.unpark("tid-early")
        store.dead_letter(5.0, "kept inside", None, b"inside")
        assert store.purge_dead_letters([letter]) == 1
        failure(store, "c")
        advance(store, "c")


@pytest.mark.parametrize("failure", [stale_write, raise_mid_batch], ids=["conflict", "exception"])
def test_a_batch_that_fails_midway_keeps_nothing_of_it(
    store: Store, failure: Callable[[Store, str], None]
) -> None:
    make(store, "a")
    make(store, "c", task_id="tid-c")
    store.park("tid-early", 1.0, {"n": 1})
    store.dead_letter(2.0, "kept before", None, b"before")
    letter_to_purge = store.dead_letter(3.0, "purged inside", "data", b"purge me")
    before = everything_kept(store)

    with pytest.raises((StoreConflict, MidBatchFailure)):
        write_a_batch_that_fails(store, failure, letter_to_purge)

    assert everything_kept(store) == before
    assert store.row("b") is None
    assert store.find("tid-b") is None
    assert store.find("tid-c2") is None
    found = store.find("tid-c")
    assert found is not None
    assert found.key == "c"
    # The store goes on, and what the batch claimed is free again.
    store.create(task_row("b", 1, task_id="tid-b"), [entry(1, trigger="make")], claim="tid-b")
    advance(store, "a")
    assert [e.version for e in store.journal("a")] == [1, 2]
    assert [p.task_id for p in store.parked()] == ["tid-early"]


def test_memory_batches_do_not_nest() -> None:
    store = MemoryStore()
    make(store, "a")
    with store.batch():
        with pytest.raises(StoreError), store.batch():
            pass
        advance(store, "a")
    assert [e.version for e in store.journal("a")] == [1, 2]


# Retention: prune lets old terminal tasks and dead letters go, whole, and nothing else.


def ended(
    store: Store,
    key: str,
    updated_at: float,
    *,
    state: str = "stopped",
    task_id: str | None = None,
    claim: str | None = None,
    entries: int = 3,
) -> TaskRow:
    """A task made at 5.0 whose last entry (of ``entries``) was at ``updated_at``, now ``state``."""
    journal = [JournalEntry(v, updated_at, "segment", "running", state, None) for v in range(1, entries + 1)]
    row = TaskRow(key, "audio", task_id, state, entries, 5.0, updated_at, {"stop_failures": 0})
    store.create(row, journal, claim=claim)
    return row


def test_prune_lets_go_of_old_terminal_tasks_and_letters_and_nothing_else(store: Store) -> None:
    for n, state in enumerate(["stopped", "ended", "failed"]):
        ended(store, f"old-{state}", 50.0 + n, state=state, task_id=f"tid-{state}", entries=n + 1)
    recent = ended(store, "recent", 150.0, task_id="tid-recent")
    live = [ended(store, f"live-{state}", 10.0, state=state) for state in ("pending", "running", "stopping")]
    store.park("tid-stopped", 20.0, {"late": True})  # parked callbacks belong to no task: kept
    old_letters = [store.dead_letter(at, "r", None, b"old") for at in (1.0, 99.5)]
    new_letter = store.dead_letter(100.0, "r", None, b"new")

    assert store.prune(100.0, dry_run=True) == PruneResult(tasks=3, entries=6, dead_letters=2)
    assert len(list(store.rows(terminal=True))) == 7  # a dry run keeps everything

    assert store.prune(100.0) == PruneResult(tasks=3, entries=6, dead_letters=2)
    assert list(store.rows(terminal=True)) == [*live, recent]
    for state in ("stopped", "ended", "failed"):
        assert store.row(f"old-{state}") is None
        assert store.journal(f"old-{state}") == []
        assert store.find(f"tid-{state}") is None
    assert store.find("tid-recent") == recent
    assert [letter.id for letter in store.dead_letters()] == [new_letter]
    assert all(store.dead_letter_by_id(letter_id) is None for letter_id in old_letters)
    assert [p.payload for p in store.parked("tid-stopped")] == [{"late": True}]
    assert store.prune(100.0) == PruneResult(0, 0, 0)  # nothing left to go


def test_prune_takes_a_task_last_updated_before_the_cutoff_not_at_it(store: Store) -> None:
    ended(store, "at", 100.0)
    ended(store, "just-before", 99.999)
    assert store.prune(100.0) == PruneResult(1, 3, 0)
    assert [row.key for row in store.rows(terminal=True)] == ["at"]


def test_a_pruned_task_id_may_be_claimed_again(store: Store) -> None:
    ended(store, "orphan", 10.0, task_id="tid-1", claim="tid-1")
    with pytest.raises(StoreConflict):
        ended(store, "again", 20.0, task_id="tid-1", claim="tid-1")
    store.prune(15.0)
    again = ended(store, "again", 20.0, task_id="tid-1", claim="tid-1")
    assert store.find("tid-1") == again


def test_a_write_for_a_pruned_task_is_refused_and_keeps_nothing(store: Store) -> None:
    ended(store, "k", 10.0, task_id="tid-1")
    store.prune(15.0)
    with store.lock("k") as txn:
        assert txn.version == 0
        with pytest.raises(StoreConflict):
            txn.write([JournalEntry(4, 20.0, "segment", "stopped", "stopped", None)], None)
    assert store.row("k") is None
    assert store.journal("k") == []


@pytest.mark.parametrize(
    "before", [float("nan"), "100", None, True, pytest.param(10**400, id="past-any-float")]
)
def test_prune_wants_a_time(store: Store, before: Any) -> None:
    ended(store, "k", 10.0)
    with pytest.raises(ValueError, match="time"):
        store.prune(before)
    assert store.row("k") is not None


def test_prune_is_refused_inside_a_batch_and_keeps_nothing_of_it(store: Store) -> None:
    ended(store, "k", 10.0)
    with store.batch(), pytest.raises(StoreError, match="prune"):
        store.prune(15.0)
    assert store.row("k") is not None
    assert store.prune(15.0) == PruneResult(1, 3, 0)


def test_prune_goes_in_batches_and_takes_them_all(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("streamlife.store.sqlite.PRUNE_BATCH", 4)
    monkeypatch.setattr("streamlife.store.postgres.PRUNE_BATCH", 4)
    for n in range(10):
        ended(store, f"k{n}", 10.0 + n, entries=2)
    assert store.prune(19.5) == PruneResult(10, 20, 0)
    assert list(store.rows(terminal=True)) == []


def test_a_key_with_a_nul_is_refused_and_nothing_of_it_kept(store: Store) -> None:
    """SQLite's prune could never find such a task: 500 of them and it would select them for ever."""
    with pytest.raises(ValueError, match="NUL"):
        ended(store, "a\x00b", 10.0)
    assert list(store.rows(terminal=True)) == []
    assert store.prune(15.0) == PruneResult(0, 0, 0)


def test_a_prune_stopped_before_it_starts_lets_nothing_go(store: Store) -> None:
    ended(store, "k", 10.0)
    store.dead_letter(1.0, "r", None, b"old")
    stop = threading.Event()
    stop.set()
    assert store.prune(15.0, stop=stop) == PruneResult(0, 0, 0)
    assert store.prune(15.0, dry_run=True, stop=stop) == PruneResult(1, 3, 1)  # (a count: no batch)
    assert store.prune(15.0) == PruneResult(1, 3, 1)


def test_a_prune_stopped_between_batches_ends_there_and_the_next_one_goes_on(
    durable_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``stop`` set in the pause after the first batch: that batch's tasks went, whole, and no
    other batch ran."""
    monkeypatch.setattr("streamlife.store.sqlite.PRUNE_BATCH", 2)
    monkeypatch.setattr("streamlife.store.postgres.PRUNE_BATCH", 2)
    store = durable_backend.open()
    for n in range(6):
        ended(store, f"k{n}", 10.0 + n, entries=2)
    store.dead_letter(1.0, "r", None, b"old")
    stop = threading.Event()
    pacer = Pacer if durable_backend.kind == "sqlite" else ServerPacer
    monkeypatch.setattr(store, "_pacer", lambda: pacer(sleep=lambda _: stop.set()))
    assert store.prune(19.5, stop=stop) == PruneResult(2, 4, 0)
    kept = list(store.rows(terminal=True))
    assert len(kept) == 4
    assert all([e.version for e in store.journal(row.key)] == [1, 2] for row in kept)
    monkeypatch.undo()
    assert store.prune(19.5) == PruneResult(4, 8, 1)


LATE_KEYS = [f"k{n:02}" for n in range(40)]


def write_late_segments(writer: Store, written: dict[str, list[int]], refused: set[str], wrote: Any) -> None:
    """Journal a late segment, at a recent time, into each of ``LATE_KEYS`` twice, from the youngest
    (which the prunes reach last); ``wrote.set()`` after the first."""
    for key in LATE_KEYS[::-1] * 2:
        try:
            with writer.lock(key) as txn:
                late = JournalEntry(txn.version + 1, 500.0, "segment", "stopped", "stopped", None)
                txn.write([late], None)
                time.sleep(0.001)  # holding the task: a prune meanwhile must leave it whole
            written.setdefault(key, []).append(late.version)
        except StoreConflict:
            refused.add(key)
        wrote.set()
        time.sleep(0.001)  # a prune's turn (a lock is no queue: this writer would win it again)


def prune_while_written(pruner: Store, wrote: Any) -> None:
    """Old terminal tasks ``LATE_KEYS``, last updated at 10, 11, ... 49; once the writer has written
    one, prunes take them one age after another."""
    assert wrote.wait(60)
    for cutoff in range(11, 51):
        pruner.prune(float(cutoff))
        time.sleep(0.001)


def assert_kept_whole_or_gone(store: Store, written: dict[str, list[int]], refused: set[str]) -> None:
    """Each task is kept whole with every entry the writer wrote (written first, it was old no
    longer), or gone whole, every write for it refused: never an entry without its task, never a
    write lost."""
    assert refused
    assert written  # both ways happened: the prunes raced the writes
    for key in LATE_KEYS:
        row, journal = store.row(key), store.journal(key)
        if key in written:
            assert key not in refused, key  # once written, it was never old enough again
            assert row is not None
            assert row.updated_at == 500.0
            assert [e.version for e in journal] == list(range(1, row.version + 1))
            assert written[key] == list(range(3, row.version + 1))
        else:
            assert key in refused
            assert (row, journal) == (None, [])


def test_a_late_write_racing_a_prune_is_kept_with_its_task_or_refused(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer on another handle (another connection); the prunes in small batches."""
    monkeypatch.setattr("streamlife.store.sqlite.PRUNE_BATCH", 2)
    monkeypatch.setattr("streamlife.store.postgres.PRUNE_BATCH", 2)
    pruner, writer = backend.open(), backend.open()
    for n, key in enumerate(LATE_KEYS):
        ended(pruner, key, 10.0 + n, entries=2)
    written: dict[str, list[int]] = {}
    refused: set[str] = set()
    errors: list[BaseException] = []
    wrote = threading.Event()

    def write() -> None:
        try:
            write_late_segments(writer, written, refused, wrote)
        except BaseException as exc:
            errors.append(exc)
            wrote.set()

    thread = threading.Thread(target=write)
    thread.start()
    prune_while_written(pruner, wrote)
    thread.join()
    assert errors == []
    assert_kept_whole_or_gone(pruner, written, refused)


def late_writer(kind: str, location: str, wrote: Any, results: Any) -> None:
    """The writing process of ``test_a_late_write_from_another_process_...``."""
    written: dict[str, list[int]] = {}
    refused: set[str] = set()
    try:
        store = open_store(kind, location)
        try:
            write_late_segments(store, written, refused, wrote)
        finally:
            store.close()
        results.put((written, refused, None))
    except BaseException as exc:
        wrote.set()
        results.put((written, refused, repr(exc)))
        raise


def test_a_late_write_from_another_process_racing_a_prune_is_kept_with_its_task_or_refused(
    durable_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("streamlife.store.sqlite.PRUNE_BATCH", 2)
    monkeypatch.setattr("streamlife.store.postgres.PRUNE_BATCH", 2)
    pruner = durable_backend.open()
    for n, key in enumerate(LATE_KEYS):
        ended(pruner, key, 10.0 + n, entries=2)
    context = multiprocessing.get_context("spawn")
    wrote, results = context.Event(), context.Queue()
    worker = context.Process(
        target=late_writer, args=(durable_backend.kind, durable_backend.location, wrote, results)
    )
    worker.start()
    prune_while_written(pruner, wrote)
    written, refused, error = results.get(timeout=120)
    worker.join(timeout=30)
    assert error is None
    assert worker.exitcode == 0
    assert_kept_whole_or_gone(pruner, written, refused)


def test_a_task_another_writer_holds_is_left_whole(backend: Backend) -> None:
    """A prune while another handle holds an old task mid-event (a late segment written, not yet
    committed): PostgreSQL skips the locked row at once; SQLite and memory wait for the writer.
    Either way the task is kept, with the segment, and the other old task goes."""
    pruner, writer = backend.open(), backend.open()
    ended(pruner, "held", 10.0)
    ended(pruner, "free", 10.0)
    holding, pruned = threading.Event(), threading.Event()

    def hold_mid_event() -> None:
        with writer.lock("held") as txn:
            txn.write([JournalEntry(4, 500.0, "segment", "stopped", "stopped", None)], None)
            holding.set()
            pruned.wait(0.5)

    thread = threading.Thread(target=hold_mid_event)
    thread.start()
    assert holding.wait(10)
    assert pruner.prune(100.0) == PruneResult(1, 3, 0)
    pruned.set()
    thread.join(10)
    row = pruner.row("held")
    assert row is not None
    assert (row.version, row.updated_at) == (4, 500.0)
    assert [e.version for e in pruner.journal("held")] == [1, 2, 3, 4]
    assert pruner.row("free") is None


# Deadlines kept with the task, and their claims.


def test_a_task_is_claimed_once_its_deadline_has_come_and_not_again_while_the_claim_holds(
    store: Store,
) -> None:
    store.create(task_row("soon", 1), [entry(1, trigger="make")], due=Due(at=2000.0))
    store.create(task_row("later", 1), [entry(1, trigger="make")], due=Due(at=3000.0))
    store.create(task_row("never", 1), [entry(1, trigger="make")])  # no deadline: needs nobody
    assert store.claim_due(1999.0, until=2100.0, limit=10) == []
    assert store.claim_due(2000.0, until=2100.0, limit=10) == ["soon"]
    assert store.claim_due(2050.0, until=2150.0, limit=10) == []  # claimed until 2100
    assert store.claim_due(2100.0, until=2200.0, limit=10) == ["soon"]  # the claim ran out
    assert sorted(store.claim_due(5000.0, until=5100.0, limit=10)) == ["later", "soon"]


def test_a_silence_is_due_counted_from_the_last_event_which_every_write_moves_on(store: Store) -> None:
    row = task_row("k", 1)  # updated at 1000.125
    store.create(row, [entry(1, trigger="make")], due=Due(quiet=30.0))
    assert store.claim_due(1030.0, until=1030.0, limit=10) == []
    with store.lock("k") as txn:  # a segment: no row, so the deadlines stay, counted from its time
        txn.write([entry(2)], None, Due(at=0.0))  # (``due`` goes with a row only: this one is not read)
    moved_to = entry(2).at
    assert store.claim_due(moved_to + 29.0, until=moved_to + 29.0, limit=10) == []
    assert store.claim_due(moved_to + 30.0, until=moved_to + 30.0, limit=10) == ["k"]


def test_a_row_written_replaces_the_deadlines_and_a_terminal_task_is_never_claimed(store: Store) -> None:
    store.create(task_row("k", 1), [entry(1, trigger="make")], due=Due(at=2000.0))
    with store.lock("k") as txn:
        txn.write([entry(2)], task_row("k", 2), Due(at=4000.0))
    assert store.claim_due(3999.0, until=3999.0, limit=10) == []
    assert store.claim_due(4000.0, until=4000.0, limit=10) == ["k"]
    with store.lock("k") as txn:  # (a Fleet writes NO_DUE for a terminal task; a store checks all the same)
        txn.write([entry(3)], task_row("k", 3, state="stopped"), Due(at=4000.0))
    assert store.claim_due(9999.0, until=9999.0, limit=10) == []


def test_a_claim_takes_at_most_its_limit_and_refuses_a_limit_that_counts_nothing(store: Store) -> None:
    for n in range(5):
        store.create(task_row(f"k{n}", 1), [entry(1, trigger="make")], due=Due(at=2000.0))
    first = store.claim_due(2000.0, until=2100.0, limit=3)
    rest = store.claim_due(2000.0, until=2100.0, limit=3)
    assert (len(first), len(rest)) == (3, 2)
    assert sorted(first + rest) == [f"k{n}" for n in range(5)]
    for limit in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="limit"):
            store.claim_due(2000.0, until=2100.0, limit=limit)  # type: ignore[arg-type]


def test_a_claim_inside_a_lock_block_or_a_batch_is_refused(store: Store) -> None:
    make(store, "k")
    with store.lock("k"), pytest.raises(StoreError, match="claim"):
        store.claim_due(2000.0, until=2100.0, limit=1)
    with store.batch(), pytest.raises(StoreError, match="claim"):
        store.claim_due(2000.0, until=2100.0, limit=1)


def test_the_deadlines_of_a_batch_that_failed_are_not_kept(store: Store) -> None:
    store.create(task_row("k", 1), [entry(1, trigger="make")], due=Due(at=2000.0))

    def fails() -> None:
        with store.batch():
            store.create(task_row("new", 1), [entry(1, trigger="make")], due=Due(at=1.0))
            with store.lock("k") as txn:
                txn.write([entry(2)], task_row("k", 2), Due(at=1.0))
            raise RuntimeError("the batch fails")

    with pytest.raises(RuntimeError):
        fails()
    assert store.claim_due(1999.0, until=1999.0, limit=10) == []
    assert store.claim_due(2000.0, until=2000.0, limit=10) == ["k"]


def test_processes_claiming_at_once_each_get_their_own_tasks_and_together_every_one(
    durable_backend: Backend,
) -> None:
    """Four handles on one file or database (as four processes hold them), claiming 200 due tasks at
    once, a few at a time: no task is claimed twice, none is left."""
    first = durable_backend.open()
    keys = [f"k{n:03}" for n in range(200)]
    for key in keys:
        first.create(task_row(key, 1), [entry(1, trigger="make")], due=Due(at=2000.0))
    handles = [first, *(durable_backend.open() for _ in range(3))]
    claimed: list[list[str]] = [[] for _ in handles]
    go = threading.Barrier(len(handles))

    def claim(n: int) -> None:
        go.wait()
        while found := handles[n].claim_due(2000.0, until=2100.0, limit=7):
            claimed[n].extend(found)

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(len(handles))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    every = [key for found in claimed for key in found]
    assert sorted(every) == keys  # each once
    if durable_backend.kind == "postgres":  # (SQLite's writers take turns: one may win every turn)
        assert sum(1 for found in claimed if found) >= 2


def test_a_row_written_again_at_its_version_renews_its_deadlines_and_keeps_the_journal(store: Store) -> None:
    """What a Fleet writes for a task heard from with nothing to journal (``Ledger.renew``)."""
    store.create(task_row("k", 1), [entry(1, trigger="make")], due=Due(quiet=30.0))
    with store.lock("k") as txn:
        txn.write([], task_row("k", 1), Due(quiet=90.0))
    row = store.row("k")
    assert row is not None
    assert row.version == 1
    assert [e.version for e in store.journal("k")] == [1]
    assert store.claim_due(row.updated_at + 89.0, until=0.0, limit=10) == []
    assert store.claim_due(row.updated_at + 90.0, until=0.0, limit=10) == ["k"]


def test_a_memory_claim_after_an_inner_lock_block_is_still_refused_in_the_outer_one() -> None:
    """The memory store lets a lock() block open inside another (SQLite refuses it): leaving the
    inner one must not let a claim through inside the outer one."""
    store = MemoryStore(shared=True)
    make(store, "a")
    make(store, "b")
    with store.lock("a"):
        with store.lock("b"):
            pass
        with pytest.raises(StoreError, match="claim"):
            store.claim_due(2000.0, until=2100.0, limit=1)
