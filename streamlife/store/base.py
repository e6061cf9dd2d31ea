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

Deadlines are kept with the task (``Due``), so that they outlive the process that armed them. Each
process fires its own tasks' deadlines from its own timers; a task whose deadline has passed, and
that nobody has written since, had a holder that is gone (or stuck). Any process may then claim it
(``claim_due``): the claim is atomic across processes, so one process takes the task over, and the
others leave it alone until the claim runs out.

Callbacks that wait for their start answer (the parking lot) are kept too: one acknowledged and then
lost with the process would be a lost transition.

So are the payloads the parser refused (dead letters): the service was answered 400 and will not send
them again, so a payload of a shape the parser does not know yet would otherwise be lost for good.
Each is kept as received, up to ``DEAD_LETTER_MAX_BODY`` bytes, with the parser's reason, until it is
replayed (``streamlife.deadletter``) or purged. Ids increase and are never reused, across processes
too, so an id read from a list names that letter or none.

Lock order, for implementers: a store's own locks are taken inside the Fleet's per-task lock and
never while the Fleet's shared lock is held; a store never calls back into the Fleet.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Final, NamedTuple, Protocol

from streamlife.errors import StoreConflict, StoreError
from streamlife.lifecycle import TERMINAL, TaskState

__all__ = [
    "DEAD_LETTER_MAX_BODY",
    "DEAD_LETTER_MAX_TEXT",
    "NO_DUE",
    "DeadLetter",
    "Due",
    "JournalEntry",
    "ParkedCallback",
    "PruneResult",
    "Store",
    "StoreConflict",
    "StoreError",
    "TaskRow",
    "TaskTxn",
]

# The webhook receiver's default max_body: a payload it let through is kept whole. A larger one (a
# receiver configured for more, a caller of handle_callback) is kept cut, and cannot be replayed.
DEAD_LETTER_MAX_BODY: Final = 64 * 1024
# The reason and the field, in characters. Both may quote the payload: a hostile one must not grow
# the store through them.
DEAD_LETTER_MAX_TEXT: Final = 1024
# The ids a store can hand out: 1 up to a signed 64-bit integer's largest.
_FIRST_ID, _ID_END = 1, 2**63


# The records are NamedTuples, immutable as frozen dataclasses are and four times cheaper to make:
# two of them are made for every event the Fleet journals.


class JournalEntry(NamedTuple):
    """One event applied to one task, with what replaying it needs."""

    version: int  # 1, 2, 3 ... per task: the task's version once this entry is applied
    at: float  # when it applied (the Fleet's clock)
    trigger: str
    from_state: str
    to_state: str
    args: Mapping[str, Any] | None = None  # the trigger's argument, as JSON (see streamlife._journal)


class TaskRow(NamedTuple):
    """A task as it stands after its last journal entry."""

    key: str  # the task's durable id, made by the Fleet when the task is made
    kind: str  # "audio" | "video"
    task_id: str | None  # memories.ai's id, once known
    state: str
    version: int  # how many journal entries the task has
    created_at: float
    updated_at: float
    facts: Mapping[str, Any]  # the task's flags and counters, as JSON (see streamlife._journal)

    @property
    def terminal(self) -> bool:
        return TaskState(self.state) in TERMINAL


class Due(NamedTuple):
    """When a task next needs its holder, unless an event comes first: what another process goes
    by to tell that the holder has gone (``Store.claim_due``). The Fleet adds its grace to both."""

    at: float | None = None  # a time (the Fleet's clock): the final callback's wait ends, say
    quiet: float | None = None  # seconds after the task's last event (``updated_at``): its silence


NO_DUE: Final = Due()  # a task that needs nobody: a terminal one


class ParkedCallback(NamedTuple):
    """A callback kept for a task_id no task holds yet, in arrival order (``seq``)."""

    seq: int
    task_id: str
    at: float
    payload: Mapping[str, Any]  # the callback as received


class DeadLetter(NamedTuple):
    """A webhook payload the parser refused, as kept: the body as received (up to the cap) and why."""

    id: int  # increasing, never reused: the order the letters were kept in
    at: float  # when it was refused (the Fleet's clock)
    reason: str  # the CallbackError's message, cut to DEAD_LETTER_MAX_TEXT characters
    field: str | None  # the field it names, as a dotted path; None for a payload unreadable as a whole
    size: int  # the body's length as received, in bytes
    body: bytes  # the body as received, cut to DEAD_LETTER_MAX_BODY bytes

    @property
    def truncated(self) -> bool:
        """Whether the body was cut when it was kept: what is left is not the payload, and is never
        replayed."""
        return self.size > len(self.body)


class PruneResult(NamedTuple):
    """What ``Store.prune`` let go (or, with ``dry_run``, would let go)."""

    tasks: int  # terminal tasks: their rows, and their task_id claims
    entries: int  # the journal entries of those tasks
    dead_letters: int


def dead_letter_fields(reason: str, field: str | None, body: bytes) -> tuple[str, str | None, int, bytes]:
    """What a store keeps of a refused payload: (reason, field, size, body), each within its cap.
    Every store keeps these, so all three read back the same letter.

    The texts become text every database takes: a lone surrogate (which an escaped payload can put
    in a message) and a NUL (which PostgreSQL refuses in text) are written as escapes."""
    return (
        _storable(reason),
        None if field is None else _storable(field),
        len(body),
        bytes(body[:DEAD_LETTER_MAX_BODY]),
    )


def dead_letter_ids(ids: Iterable[int]) -> list[int]:
    """The ids a store may hold, in order, once each; an id no store hands out (0, -1, 2**64) is
    dropped, so that it reaches no database as a number it cannot take."""
    return sorted({letter_id for letter_id in ids if _FIRST_ID <= letter_id < _ID_END})


def dead_letter_page(after: int, limit: int | None) -> tuple[int, int | None]:
    """``dead_letters``' arguments, checked (a limit is None, for none, or a count) and brought
    within what a database's 64-bit integers hold: an ``after`` beyond every id finds nothing, and
    a limit beyond every count is no limit."""
    if limit is not None and limit < 0:
        raise ValueError(f"a limit is a count, 0 or more (None: no limit), got {limit}")
    return min(max(after, 0), _ID_END - 1), None if limit is None or limit >= _ID_END else limit


def _storable(text: str) -> str:
    text = text[:DEAD_LETTER_MAX_TEXT]  # first: the escapes need not scan a hostile megabyte
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\x00", "\\x00")[:DEAD_LETTER_MAX_TEXT]


def prune_cutoff(before: float) -> float:
    """``prune``'s ``before``, checked: a time, as a float (infinity prunes every terminal task)."""
    if isinstance(before, bool) or not isinstance(before, int | float) or before != before:
        raise ValueError(f"prune's before is a time (a number), got {before!r}")
    try:
        return float(before)
    except OverflowError:  # an int past any float: no time a store keeps
        raise ValueError("prune's before is a time, got an int past any float") from None


def stopped(stop: threading.Event | None) -> bool:
    """Whether ``prune``'s ``stop`` is set: then it starts no other batch."""
    return stop is not None and stop.is_set()


def check_claim_limit(limit: int) -> None:
    """``claim_due``'s ``limit``, checked: a count of tasks, 1 or more."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"claim_due's limit is a count of tasks, 1 or more, got {limit!r}")


def check_key(key: str) -> None:
    """A new task's key, checked: text with no NUL character. PostgreSQL keeps no NUL in text, and
    SQLite's prune and claim, which pass their keys as one JSON array, would never find such a key
    (a prune would select the same tasks again and again)."""
    if "\x00" in key:
        raise ValueError(f"a task's key holds no NUL character, got {key!r}")


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


def check_write(
    key: str, version: int | None, entries: Sequence[JournalEntry], row: TaskRow | None, *, written: bool
) -> None:
    """What every store checks before a lock's ``write``: one write per lock (``written``: one was
    made), a row of the locked task, a task that exists (``version`` None: it has no row), and
    entries that number on from its version (``check_numbering``)."""
    if written:
        raise StoreConflict("one write per lock")
    if row is not None and row.key != key:
        raise ValueError(f"the lock is on task {key!r}, the row is task {row.key!r}")
    if version is None:
        raise StoreConflict(f"no task with key {key!r}: create it first")
    check_numbering(key, entries, version, row)


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

    def write(self, entries: Sequence[JournalEntry], row: TaskRow | None, due: Due = NO_DUE) -> None:
        """Append ``entries`` (numbered on from ``version``) and replace the row with ``row``, and
        its deadlines with ``due``. Raises ``StoreConflict`` if a version is already taken. With a
        row and no entries, the row and its deadlines are written again at their version.

        ``row`` None: the entries moved neither the task's kind, task_id, state nor facts (a
        segment applied while running: most events), so the stored row keeps them, its deadlines
        too (``due`` is not read), and moves on to the last entry's version and time
        (``updated_at``). The writer builds and the store serialises no row for such an event."""
        ...


class Store(Protocol):
    """Tasks, their journals, parked callbacks and dead letters. Every method is safe to call from
    any thread."""

    shared: bool
    """True when other processes may write the same tasks: the Fleet then reads each task's version
    under its lock, and looks in the store for task_ids it does not hold."""

    def create(
        self, row: TaskRow, entries: Sequence[JournalEntry], *, claim: str | None = None, due: Due = NO_DUE
    ) -> None:
        """Insert a new task with its first entries and its deadlines (``due``). ``StoreConflict``
        if the key exists.

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

        All or nothing, required of every store (a user's own too): if the block raises (a write
        refused with ``StoreConflict`` or ``StoreError``, or any other exception), or its commit
        fails, nothing written inside it is kept: no row, journal entry, claim, parked or unparked
        callback, dead letter or purge. The Fleet relies on it: it puts the batch's tasks back as
        the store holds them and asks for the batch again, and a write kept from a failed batch
        would make its callbacks duplicates on redelivery, never heard by the hooks.
        Batches do not nest (``StoreError``).
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

    def claim_due(self, now: float, *, until: float, limit: int) -> list[str]:
        """Claim up to ``limit`` tasks whose deadline has come by ``now``: not terminal, no claim
        running past ``now``, and ``Due.at <= now`` or ``updated_at + Due.quiet <= now``. Each is
        claimed until ``until``; its keys are returned.

        Atomic across processes: a task is claimed by one caller, and no other gets it before the
        claim runs out, so one process takes over a deadline whose holder has gone. A task another
        writer holds locked is skipped, and found by a later claim if it is still due. A write does
        not end a claim; it gives the task new deadlines, which may not be due any more. Not inside
        this thread's ``batch()`` or ``lock()`` block (``StoreError``)."""
        ...

    def park(self, task_id: str, at: float, payload: Mapping[str, Any]) -> None:
        """Keep a callback for a task_id no task holds yet."""
        ...

    def unpark(self, task_id: str, *, upto: int | None = None) -> None:
        """Forget the callbacks kept for ``task_id``: a task holds them now. ``upto``: only those
        with a ``seq`` up to it (the ones the caller read and applied), so that one another
        process parked since is kept for whoever applies it."""
        ...

    def parked(self, task_id: str | None = None, *, before: float | None = None) -> list[ParkedCallback]:
        """Every kept callback (or those for ``task_id``), in arrival order: other processes' too.
        ``before``: only those kept with an ``at`` before it."""
        ...

    def dead_letter(self, at: float, reason: str, field: str | None, body: bytes) -> int:
        """Keep a payload the parser refused (see ``DeadLetter``; ``dead_letter_fields`` caps it);
        return its id. ``at``: when it was refused, on the Fleet's clock. Inside this thread's
        ``batch()`` it is written with the batch, as every write is: kept if the batch is."""
        ...

    def dead_letters(self, *, after: int = 0, limit: int | None = None) -> list[DeadLetter]:
        """The kept letters with an id above ``after``, in id order; at most ``limit`` of them
        (None: all). Page through many with ``after=`` the last id read."""
        ...

    def dead_letter_by_id(self, letter_id: int) -> DeadLetter | None:
        """The letter kept as ``letter_id``, or None."""
        ...

    def purge_dead_letters(self, ids: Iterable[int] | None = None) -> int:
        """Forget the letters ``ids`` (None: every letter; an empty list: none). Returns how many
        went; an id not kept counts for nothing."""
        ...

    def prune(
        self, before: float, *, dry_run: bool = False, stop: threading.Event | None = None
    ) -> PruneResult:
        """Forget what is older than ``before`` (a time on the Fleet's clock, as ``updated_at`` and
        a letter's ``at`` are): every terminal task last updated before it (its row, its journal
        and its task_id claim, all together) and every dead letter kept before it. Returns how
        much went; ``dry_run``: counts it, and forgets nothing.

        Never a task that is not terminal, and never half a task: a task goes whole, with all its
        entries, or stays whole. Safe while other processes write: a task another writer holds
        locked is left for a later prune, and a write that comes for a task once it is gone is
        refused (``StoreConflict``: there is no task to write), so no entry outlives its task.
        Parked callbacks are not touched: they belong to no task yet. The work is done in batches
        of tasks, each its own transaction, so other writers wait for a batch, never for the whole
        prune. Not inside this thread's ``batch()`` or ``lock()`` block (``StoreError``).

        ``stop``: once it is set, the prune starts no other batch, and returns what it let go so
        far; a later prune goes on from there. So a process shutting down waits for one batch,
        not for a whole prune of a store that grew for months.

        A pruned task is gone for good: ``row``, ``find`` and ``journal`` know it no more, and its
        task_id may be claimed again. So a callback that comes for it later is one for a task_id
        no task holds: a Fleet that holds no copy of the task parks it, and after
        ``Policy.park_ttl`` adopts the stream as an orphan and (``Policy.reap_orphans``) stops it.
        The stream ended long ago: the stop is answered "not found", and the orphan's task is
        ``stopped`` at once (or answered 200, as the service may for an ended stream, and
        ``stopped`` after ``Policy.final_callback_wait``). A stop is safe to repeat, and nothing
        bills. A Fleet that still holds a copy of the task finds its row gone when the late
        callback comes: it answers it LATE and lets the copy go, so the next one takes the same
        orphan's path. Keep the retention period well above how late the service may deliver a
        callback.

        A task whose ``created_at`` is after its ``updated_at`` (clocks of two processes apart)
        goes once ``before`` passes both: later, never sooner.
        """
        ...

    def close(self) -> None: ...
