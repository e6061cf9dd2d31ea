"""The Store protocol: where a Fleet keeps its tasks so that a restart, or another process, finds them.

Theory of operation
-------------------
Each task is a row (its current state and facts) and a journal (every event applied to it, in
order). The two are written together, in one transaction, before the Fleet acknowledges the event:
after a crash the journal holds everything the service was told "applied", and replaying it
rebuilds the task, row for row.

A task's ``version`` counts its journal entries. An event is written with ``lock(key)``: the store
locks the task's row (and, where other processes write, reads its version under the lock), the
Fleet catches its copy up with ``entries_after`` if another process moved the task, fires the event,
and ``write``s entry and row. Entry ``n`` is claimed once: (key, version) is the journal's primary
key and the row's version moves from n-1 to n only, so two writers can never both apply an event
to the same version of a task (the second gets ``StoreConflict``, never a silent second effect).

The same goes for a stream no start of ours named (an orphan): the task that adopts it claims its
task_id in the same transaction that makes it (``create(..., claim=)``), so two processes reaping
the same orphan at once make one task of it, not two.

Callbacks that wait for their start answer (the parking lot) are kept too: one acknowledged and then
lost with the process would be a lost transition.

Lock order, for implementers: a store's own locks are taken inside the Fleet's per-task lock and
never while the Fleet's shared lock is held; a store never calls back into the Fleet.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, NamedTuple, Protocol

from streamlife.errors import StoreConflict, StoreError
from streamlife.lifecycle import TERMINAL, TaskState

__all__ = ["JournalEntry", "ParkedCallback", "Store", "StoreConflict", "StoreError", "TaskRow", "TaskTxn"]


# The records are NamedTuples, immutable as frozen dataclasses are and four times cheaper to make:
# two of them are made for every event the Fleet journals.


class JournalEntry(NamedTuple):
    """One event applied to one task, with what replaying it needs."""

    version: int  # 1, 2, 3 ... per task: the task's version once this entry is applied
    at: float  # when it applied (the Fleet's clock)
    trigger: str
    from_state: str
    to_state: str
    args: Mapping[str, Any] | None = None  # the trigger's argument, as JSON (see streamlife.journal)


class TaskRow(NamedTuple):
    """A task as it stands after its last journal entry."""

    key: str  # the task's durable id, made by the Fleet when the task is made
    kind: str  # "audio" | "video"
    task_id: str | None  # memories.ai's id, once known
    state: str
    version: int  # how many journal entries the task has
    created_at: float
    updated_at: float
    facts: Mapping[str, Any]  # the task's flags and counters, as JSON (see streamlife.journal)

    @property
    def terminal(self) -> bool:
        return TaskState(self.state) in TERMINAL


class ParkedCallback(NamedTuple):
    """A callback kept for a task_id no task holds yet, in arrival order (``seq``)."""

    seq: int
    task_id: str
    at: float
    payload: Mapping[str, Any]  # the callback as received


def check_numbering(key: str, entries: Sequence[JournalEntry], version: int, row: TaskRow | None) -> None:
    """Entries must number on from ``version`` and end at the row's version (with no row: there
    must be entries, the row moving on to the last one's): anything else is a writer working from
    a stale copy. Every store checks it before it writes."""
    end = version + len(entries)
    if len(entries) == 1 and entries[0].version == end and (row is None or row.version == end):
        return  # the usual case: one event
    if row is None and not entries:
        raise ValueError(
            f"task {key!r}: a write with no row moves the row on to its last entry, and has none"
        )
    numbers = [entry.version for entry in entries]
    if numbers != list(range(version + 1, end + 1)) or (row is not None and row.version != end):
        raise StoreConflict(
            f"task {key!r} is at version {version}; entries {numbers}"
            + ("" if row is None else f" and row version {row.version}")
            + " do not follow it"
        )


class TaskTxn(Protocol):
    """A task's row, locked for one event. Leaving the ``with`` block commits what ``write`` wrote;
    an exception rolls it back."""

    @property
    def version(self) -> int:
        """The stored version, read under the lock (0 if the task has no row: see ``Store.create``)."""
        ...

    def entries_after(self, version: int) -> list[JournalEntry]:
        """The journal entries after ``version``, in order: what another writer applied since."""
        ...

    def write(self, entries: Sequence[JournalEntry], row: TaskRow | None) -> None:
        """Append ``entries`` (numbered on from ``version``) and replace the row with ``row``.
        Raises ``StoreConflict`` if a version is already taken.

        ``row`` None: the entries moved neither the task's kind, task_id, state nor facts (a
        segment applied while running: most events), so the stored row keeps them, and moves on to
        the last entry's version and time (``updated_at``). The writer builds and the store
        serialises no row for such an event."""
        ...


class Store(Protocol):
    """Tasks, their journals, and parked callbacks. Every method is safe to call from any thread."""

    shared: bool
    """True when other processes may write the same tasks: the Fleet then reads each task's version
    under its lock, and looks in the store for task_ids it does not hold."""

    def create(self, row: TaskRow, entries: Sequence[JournalEntry], *, claim: str | None = None) -> None:
        """Insert a new task with its first entries. ``StoreConflict`` if the key exists.

        ``claim``: a task_id this task takes for its own, once for ever (an orphan's: two processes
        that adopt the same stream at once must not both make a task of it). A unique constraint,
        in the same transaction: ``StoreConflict`` if another task claimed it first, and nothing
        is kept.
        """
        ...

    def lock(self, key: str) -> AbstractContextManager[TaskTxn]:
        """Lock the task's row for one event (see ``TaskTxn``)."""
        ...

    def batch(self) -> AbstractContextManager[None]:
        """Group this thread's writes until the block ends into one commit: many events for the
        price of one transaction (a commit is most of an event's cost on disk).

        Inside it, each ``lock()`` block and ``create`` is kept or rolled back on its own, as
        outside, but nothing is committed before the block ends; row locks are held until then.
        If the block raises, or its commit fails, nothing written inside it is kept. Batches do not
        nest. A store with nothing to group (memory) keeps each write at once.
        """
        ...

    def row(self, key: str) -> TaskRow | None: ...

    def find(self, task_id: str) -> TaskRow | None:
        """The task that memories.ai knows as ``task_id``: the first made, if two claimed it."""
        ...

    def journal(self, key: str) -> list[JournalEntry]:
        """Every entry of the task, in order."""
        ...

    def rows(self, *, terminal: bool = False) -> Iterator[TaskRow]:
        """The tasks not yet terminal, oldest first; then, with ``terminal=True``, the terminal ones."""
        ...

    def park(self, task_id: str, at: float, payload: Mapping[str, Any]) -> None:
        """Keep a callback for a task_id no task holds yet."""
        ...

    def unpark(self, task_id: str) -> None:
        """Forget the callbacks kept for ``task_id``: a task holds them now."""
        ...

    def parked(self, task_id: str | None = None) -> list[ParkedCallback]:
        """Every kept callback (or those for ``task_id``), in arrival order: other processes' too."""
        ...

    def close(self) -> None: ...
