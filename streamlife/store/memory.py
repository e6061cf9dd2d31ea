"""MemoryStore: the Store protocol in this process's memory. Survives nothing; costs little.

The Fleet's default, so the journal exists (and ``Fleet.journal`` answers) even when nothing is
written to disk. ``shared=True`` makes it behave as a store other writers use too: two Fleets in one
process then share tasks as two processes share a PostgreSQL database, which the tests use.

Rows and entries are kept serialised, as the durable stores keep them: facts, arguments and parked
payloads as the same JSON text (``streamlife._jsontext``), so what this store refuses, they refuse,
and what it hands back is what they would; states as plain strings. What it hands back is a copy
nobody else holds (a hook that changes a payload changes no journal), and a kept record is a tuple
of strings and numbers, which the garbage collector stops tracking. Kept as live dicts, every event
would leave tracked objects behind for the collector's full passes to walk, and take more bytes (the
cost per callback and the bytes kept are in bench/RESULTS.md). A dead letter is kept as a plain
tuple of its fields, cut to the caps as the durable stores cut it (``dead_letter_fields``).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final, TypeAlias

from streamlife._events import StreamKind
from streamlife._jsontext import read_stored, to_json
from streamlife.lifecycle import TERMINAL, TaskState

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

# A JournalEntry, and a TaskRow, as kept: the same fields, with JSON text for the mappings.
_KeptEntry: TypeAlias = tuple[int, float, str, str, str, str | None]
_KeptRow: TypeAlias = tuple[str, str, str | None, str, int, float, float, str]
_KeptLetter: TypeAlias = tuple[int, float, str, str | None, int, bytes]  # a DeadLetter's fields
_Kept: TypeAlias = list[Any]  # [_KeptRow, _KeptEntry, _KeptEntry, ...]: a task's row, then its journal
_TakeBack: TypeAlias = tuple[Any, ...]  # (a function, its arguments...): what takes one write back
_ROW: Final = 0
_TASK_ID, _STATE, _UPDATED_AT = 2, 3, 6  # where a _KeptRow holds them
_TERMINAL_STATES: Final = frozenset(state.value for state in TERMINAL)
_NOTHING: Final[_Kept] = [None]  # as a _Kept reads for a task not here: no row, no entries (only sliced)


class MemoryStore:
    def __init__(self, *, shared: bool = False) -> None:
        self.shared = shared
        self._lock = threading.RLock()  # one for the whole store: an event's write takes microseconds
        # key -> [row, entry 1, entry 2, ...]: a task's row and journal in one list, so an event
        # reaches both with one lookup, and its version is the list's length less one.
        self._tasks: dict[str, _Kept] = {}
        self._made: dict[str, int] = {}  # key -> made order, the tie-break after created_at
        self._by_task_id: dict[str, set[str]] = {}  # keys, because two tasks may claim one task_id
        self._parked: dict[int, tuple[int, str, float, str]] = {}  # by seq: arrival order
        self._parked_by_task_id: dict[str, list[int]] = {}  # so unparking one task_id scans no other
        self._claims: dict[str, str] = {}  # task_id -> the key of the task that claimed it
        self._dues: dict[str, Due] = {}  # key -> the task's deadlines, for a task that has some
        self._claimed: dict[str, float] = {}  # key -> until when claim_due's claim holds it
        self._next_seq = itertools.count(1).__next__
        self._dead_letters: dict[int, _KeptLetter] = {}  # by id: ids increase, so in id order
        self._next_letter_id = itertools.count(1).__next__
        self._locked = 0  # lock() blocks open, one inside another (on the thread that holds _lock)
        # Inside a batch: how to take back each write made in it, in the order made, each as a
        # function and its arguments (a tuple costs less than a closure, and every batched event
        # makes one); None outside. Only the batch's thread writes meanwhile (it holds the lock), so
        # no other write is undone.
        self._undo: list[_TakeBack] | None = None

    def __repr__(self) -> str:
        return f"MemoryStore(tasks={len(self._tasks)}, shared={self.shared})"

    def create(
        self, row: TaskRow, entries: Sequence[JournalEntry], *, claim: str | None = None, due: Due = NO_DUE
    ) -> None:
        with self._lock:
            if row.key in self._tasks:
                raise StoreConflict(f"a task with key {row.key!r} exists")
            check_key(row.key)
            check_numbering(row.key, entries, 0, row)
            kept: _Kept = [_kept_row(row), *map(_kept_entry, entries)]
            if claim is not None:
                if claim in self._claims:
                    raise StoreConflict(f"task_id {claim!r} is claimed by task {self._claims[claim]!r}")
                self._claims[claim] = row.key
            self._made[row.key] = len(self._made)
            self._tasks[row.key] = kept
            self._index(None, row)
            self._set_due(row.key, due)
            if self._undo is not None:
                self._undo.append((self._uncreate, row, claim))

    def lock(self, key: str) -> _Txn:
        return _Txn(self, key)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """All or nothing, as a durable store's transaction: each write is made when its block ends,
        and taken back, last first, if the batch raises. The store's lock is held for the whole
        batch (as SQLite holds its connection), so no other thread's write is mixed in with it, and no
        other thread reads half of it."""
        with self._lock:
            if self._undo is not None:
                raise StoreError(f"a batch of {self!r} cannot start inside a batch")
            undo: list[_TakeBack] = []
            self._undo = undo
            try:
                yield
            except BaseException:
                for take_back in reversed(undo):
                    take_back[0](*take_back[1:])
                raise
            finally:
                self._undo = None

    # Every read takes the lock: a batch holds it until it ends, so no reader sees half of one.

    def row(self, key: str) -> TaskRow | None:
        with self._lock:
            kept = self._tasks.get(key)
            found = None if kept is None else kept[_ROW]  # a tuple, never changed: decoded outside the lock
        return None if found is None else _row(found)

    def find(self, task_id: str) -> TaskRow | None:
        with self._lock:
            claims = [_row(self._tasks[key][_ROW]) for key in self._by_task_id.get(task_id, ())]
            return min(claims, key=self._made_order, default=None)

    def journal(self, key: str) -> list[JournalEntry]:
        with self._lock:
            return [_entry(kept) for kept in self._tasks.get(key, _NOTHING)[1:]]

    def rows(self, *, terminal: bool = False) -> Iterator[TaskRow]:
        with self._lock:
            everyone = sorted((_row(kept[_ROW]) for kept in self._tasks.values()), key=self._made_order)
        yield from (row for row in everyone if not row.terminal)
        if terminal:
            yield from (row for row in everyone if row.terminal)

    def claim_due(self, now: float, *, until: float, limit: int) -> list[str]:
        """A scan of the tasks with deadlines: a Fleet claims from a shared store only, and one
        that is shared here is a test's."""
        check_claim_limit(limit)
        with self._lock:
            if self._undo is not None or self._locked:
                raise StoreError(f"{self!r} cannot claim tasks inside a batch or a lock() block")
            keys: list[str] = []
            for key, (due_at, quiet) in self._dues.items():
                if len(keys) == limit:
                    break
                row = self._tasks[key][_ROW]
                if row[_STATE] in _TERMINAL_STATES or self._claimed.get(key, now) > now:
                    continue
                if (due_at is not None and due_at <= now) or (
                    quiet is not None and row[_UPDATED_AT] + quiet <= now
                ):
                    keys.append(key)
            self._claimed.update(dict.fromkeys(keys, until))
        return keys

    def park(self, task_id: str, at: float, payload: Mapping[str, Any]) -> None:
        with self._lock:
            seq = self._next_seq()
            self._parked[seq] = (seq, task_id, at, to_json(payload))
            self._parked_by_task_id.setdefault(task_id, []).append(seq)
            if self._undo is not None:
                self._undo.append((self._unpark_one, seq))

    def unpark(self, task_id: str, *, upto: int | None = None) -> None:
        with self._lock:
            seqs = self._parked_by_task_id.pop(task_id, [])
            if upto is not None and (later := [seq for seq in seqs if seq > upto]):
                self._parked_by_task_id[task_id] = later
            gone = [self._parked.pop(seq) for seq in seqs if upto is None or seq <= upto]
            if self._undo is not None and gone:
                self._undo.append((self._repark, gone))

    def parked(self, task_id: str | None = None, *, before: float | None = None) -> list[ParkedCallback]:
        with self._lock:
            if task_id is None:
                kept = list(self._parked.values())
            else:
                kept = [self._parked[seq] for seq in self._parked_by_task_id.get(task_id, ())]
        return [
            ParkedCallback(seq, on, at, read_stored(payload))
            for seq, on, at, payload in kept
            if before is None or at < before
        ]

    def dead_letter(self, at: float, reason: str, field: str | None, body: bytes) -> int:
        kept_reason, kept_field, size, kept_body = dead_letter_fields(reason, field, body)
        with self._lock:
            letter_id = self._next_letter_id()
            self._dead_letters[letter_id] = (letter_id, at, kept_reason, kept_field, size, kept_body)
            if self._undo is not None:
                self._undo.append((self._unkeep_letters, [letter_id]))
        return letter_id

    def dead_letters(self, *, after: int = 0, limit: int | None = None) -> list[DeadLetter]:
        after, limit = dead_letter_page(after, limit)
        with self._lock:
            kept = [letter for letter_id, letter in self._dead_letters.items() if letter_id > after]
        return [DeadLetter(*letter) for letter in kept[:limit]]

    def dead_letter_by_id(self, letter_id: int) -> DeadLetter | None:
        with self._lock:
            kept = self._dead_letters.get(letter_id)
        return None if kept is None else DeadLetter(*kept)

    def purge_dead_letters(self, ids: Iterable[int] | None = None) -> int:
        with self._lock:
            wanted = list(self._dead_letters) if ids is None else dead_letter_ids(ids)
            popped = [self._dead_letters.pop(letter_id, None) for letter_id in wanted]
            gone = [letter for letter in popped if letter is not None]
            if self._undo is not None and gone:
                self._undo.append((self._rekeep_letters, gone))
        return len(gone)

    def prune(
        self, before: float, *, dry_run: bool = False, stop: threading.Event | None = None
    ) -> PruneResult:
        """Under the store's lock, as every write: no event is half applied meanwhile. In one go:
        ``stop`` counts only if it is set before the prune starts."""
        before = prune_cutoff(before)
        if not dry_run and stopped(stop):
            return PruneResult(0, 0, 0)
        with self._lock:
            if self._undo is not None:
                raise StoreError(f"{self!r} cannot prune inside a batch")
            due = [
                (key, kept)
                for key, kept in self._tasks.items()
                if kept[_ROW][_STATE] in _TERMINAL_STATES and _due(kept[_ROW], before)
            ]
            letters = [letter_id for letter_id, letter in self._dead_letters.items() if letter[1] < before]
            result = PruneResult(len(due), sum(len(kept) - 1 for _, kept in due), len(letters))
            if dry_run:
                return result
            for key, kept in due:
                self._forget(key, kept[_ROW][_TASK_ID])
            gone = {key for key, _ in due}
            self._claims = {task_id: key for task_id, key in self._claims.items() if key not in gone}
            self._unkeep_letters(letters)
        return result

    def close(self) -> None:
        pass

    def _forget(self, key: str, task_id: str | None) -> None:
        """Let a task go: its row and journal, its deadlines, and its place in the indexes."""
        del self._tasks[key]
        del self._made[key]
        self._dues.pop(key, None)
        self._claimed.pop(key, None)
        if task_id is not None:
            holders = self._by_task_id[task_id]
            holders.discard(key)
            if not holders:
                del self._by_task_id[task_id]

    # What undoes each write of a failed batch (called with the lock held, last write first).

    def _set_due(self, key: str, due: Due) -> None:
        """Keep a task's deadlines (a task with none is left out of claim_due's scan); in a batch,
        with what takes them back."""
        old = self._dues.get(key, NO_DUE)
        if due == old:
            return
        if due == NO_DUE:
            del self._dues[key]
        else:
            self._dues[key] = due
        if self._undo is not None:
            self._undo.append((self._set_due, key, old))

    def _uncreate(self, row: TaskRow, claim: str | None) -> None:
        del self._tasks[row.key]
        del self._made[row.key]
        if row.task_id is not None:
            self._by_task_id[row.task_id].discard(row.key)
        if claim is not None:
            del self._claims[claim]

    def _unwrite(self, kept: _Kept, version: int, old_row: _KeptRow) -> None:
        """Put a task's list back as it was at ``version`` (its row ``old_row``)."""
        new_row: _KeptRow = kept[_ROW]
        del kept[version + 1 :]
        kept[_ROW] = old_row
        if new_row[_TASK_ID] != old_row[_TASK_ID]:
            self._index(_row(new_row), _row(old_row))

    def _unpark_one(self, seq: int) -> None:
        _, task_id, _, _ = self._parked.pop(seq)
        self._parked_by_task_id[task_id].remove(seq)
        if not self._parked_by_task_id[task_id]:
            del self._parked_by_task_id[task_id]

    def _repark(self, gone: list[tuple[int, str, float, str]]) -> None:
        for kept in gone:
            self._parked[kept[0]] = kept
            self._parked_by_task_id.setdefault(kept[1], []).append(kept[0])
        self._parked = dict(sorted(self._parked.items()))  # back in arrival order
        for seqs in self._parked_by_task_id.values():
            seqs.sort()

    def _unkeep_letters(self, ids: list[int]) -> None:
        for letter_id in ids:
            del self._dead_letters[letter_id]

    def _rekeep_letters(self, gone: list[_KeptLetter]) -> None:
        self._dead_letters.update((letter[0], letter) for letter in gone)
        self._dead_letters = dict(sorted(self._dead_letters.items()))  # back in id order

    def _made_order(self, row: TaskRow) -> tuple[float, int]:
        return (row.created_at, self._made[row.key])

    def _index(self, old: TaskRow | None, new: TaskRow) -> None:
        if old is not None and old.task_id is not None and old.task_id != new.task_id:
            self._by_task_id[old.task_id].discard(old.key)
        if new.task_id is not None:
            self._by_task_id.setdefault(new.task_id, set()).add(new.key)


def _due(row: _KeptRow, before: float) -> bool:
    """Whether a terminal task's row is old enough to prune, as the SQL stores tell it: last
    updated, and made, before ``before``."""
    _, _, _, _, _, created_at, updated_at, _ = row
    return updated_at < before and created_at < before


class _Txn:
    """The store's lock, held from ``__enter__`` to ``__exit__``; a write is kept at the exit, and
    only if the block did not raise. (A class, not a generator: it runs for every event.)"""

    __slots__ = ("kept", "key", "staged", "store", "version")

    def __init__(self, store: MemoryStore, key: str) -> None:
        self.store = store
        self.key = key
        self.kept: _Kept | None = None  # the task's list, found at the enter: no other writer changes it
        self.version = 0
        # What ``write`` wrote, kept at the exit: its new entries, its new row.
        self.staged: tuple[list[_KeptEntry], _KeptRow | None, TaskRow | None, Due] | None = None

    def __enter__(self) -> _Txn:
        store = self.store
        store._lock.acquire()
        store._locked += 1
        self.kept = kept = store._tasks.get(self.key)
        self.version = 0 if kept is None else len(kept) - 1
        return self

    def __exit__(self, error_type: type[BaseException] | None, error: object, traceback: object) -> None:
        store = self.store
        try:
            if self.staged is not None and self.kept is not None and error_type is None:
                kept, (entries, kept_row, row, due) = self.kept, self.staged
                old = kept[_ROW]
                if store._undo is not None:
                    store._undo.append((store._unwrite, kept, self.version, old))
                if kept_row is None:  # moved on to the last entry's version and time, as it was otherwise
                    version, at = entries[-1][:2]
                    key, kind, task_id, state, _, created_at, _, facts = old
                    kept_row = (key, kind, task_id, state, version, created_at, at, facts)
                else:
                    if row is not None and old[_TASK_ID] != row.task_id:
                        store._index(_row(old), row)
                    store._set_due(self.key, due)
                kept[_ROW] = kept_row
                kept.extend(entries)
        finally:
            store._locked -= 1
            store._lock.release()

    def entries_after(self, version: int) -> list[JournalEntry]:
        return [_entry(kept) for kept in (self.kept or _NOTHING)[version + 1 :]]

    def write(self, entries: Sequence[JournalEntry], row: TaskRow | None, due: Due = NO_DUE) -> None:
        exists = self.kept is not None
        check_write(self.key, self.version if exists else None, entries, row, written=self.staged is not None)
        # Serialised here, in the block: a value it cannot keep is refused by the write.
        kept_row = None if row is None else _kept_row(row)
        self.staged = (list(map(_kept_entry, entries)), kept_row, row, due)


# TaskState and StreamKind members are str subclasses, which the collector tracks (and a tuple
# holding one with it): the plain value is kept instead. (The Fleet's rows and entries hold plain
# strings already; a caller's may not.)
_PLAIN: Final[dict[str, str]] = {member: member.value for enum in (TaskState, StreamKind) for member in enum}


def _kept_entry(entry: JournalEntry) -> _KeptEntry:
    version, at, trigger, from_state, to_state, args = entry
    plain = _PLAIN.get
    kept_args = None if args is None else to_json(args)
    return (version, at, trigger, plain(from_state, from_state), plain(to_state, to_state), kept_args)


def _entry(kept: _KeptEntry) -> JournalEntry:
    version, at, trigger, from_state, to_state, args = kept
    loaded = None if args is None else read_stored(args)
    return JournalEntry(version, at, trigger, from_state, to_state, loaded)


def _kept_row(row: TaskRow) -> _KeptRow:
    key, kind, task_id, state, version, created_at, updated_at, facts = row
    plain = _PLAIN.get
    kept_facts = to_json(facts)
    return (key, plain(kind, kind), task_id, plain(state, state), version, created_at, updated_at, kept_facts)


def _row(kept: _KeptRow) -> TaskRow:
    key, kind, task_id, state, version, created_at, updated_at, facts = kept
    return TaskRow(key, kind, task_id, state, version, created_at, updated_at, read_stored(facts))
