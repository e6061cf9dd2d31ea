"""Dead letters: the webhook payloads the parser refused, kept in the store and replayed once it reads them.

Theory of operation
-------------------
The Fleet keeps every payload ``parse_callback`` refuses in its store (``Store.dead_letter``), with
the parser's reason, and the webhook answers 400. memories.ai does not send a refused callback again,
so a payload refused only because the parser did not know its shape yet (a new provider message, a
field in a new form) would be lost. Kept, it waits: once a newer streamlife reads that shape,
``replay_dead_letters`` parses each kept body again and hands the event to ``Fleet.deliver``, as if
the callback had just come.

Nothing is lost on the way: a letter is purged only after ``deliver`` returned, that is once its
event is journaled (or parked in the store). A crash between the two leaves the letter, and the next
replay hands the event over again, which its task takes as it takes any callback delivered twice.
A letter still refused stays, and its new error is reported. A letter whose body was cut when it was
kept (over ``DEAD_LETTER_MAX_BODY``) holds only the start of the payload: it is never replayed.

A payload that came by a task's own callback URL (``CallbackUrls``: the Fleet was given its key)
and that the parser refuses is not kept: a replay delivers by the task_id a letter names, as for
the account-wide URL, whose token opens every task, while a task's URL opens that one task only.
It is counted as malformed, logged, and answered 400 all the same.

Replay needs no ``Fleet.recover()`` first: ``deliver`` finds a task this Fleet does not hold in the
store, and applies the event to it under the store's lock on the task's row, so a replay from a
one-shot process reaches the tasks a running ``serve`` holds. (``recover()`` would do harm there: it
takes over every unfinished task, and files a start still in flight in another process as uncertain.)
An event for a task_id no task holds is parked in the store, as a live callback would be, and
becomes an orphan for the process that parks it again (the next ``serve``, on ``recover()``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Final

from streamlife._logging import get_logger

from ._callbacks import parse_callback
from ._events import Outcome
from ._jsontext import dead_letter_body
from .errors import CallbackError
from .store.base import DeadLetter, Store, dead_letter_ids

if TYPE_CHECKING:
    from .fleet import Fleet

__all__ = ["ReplayResult", "dead_letter_body", "kept_letters", "replay_dead_letters"]

ReplayResult = tuple[int, Outcome | CallbackError]

_PAGE: Final = 100  # letters read at a time: each may hold up to DEAD_LETTER_MAX_BODY bytes

_log = get_logger()


def replay_dead_letters(fleet: Fleet, ids: Iterable[int] | None = None) -> list[ReplayResult]:
    """Parse the kept letters ``ids`` (None: every one) again, in id order, which is the order they
    came in; deliver each one the parser reads now to its task, then purge it.

    Returns (id, result) for each letter found: the ``Outcome`` of its delivery (purged), or the
    ``CallbackError`` that keeps it (still refused, or cut when it was kept). An id not kept (never,
    or replayed or purged meanwhile) has no result. Every outcome purges its letter, a rejection
    too: the lifecycle's answer is the one a callback coming now would get. If ``deliver`` raises
    (the store failed), the letter stays, the letters after it are not tried, and the error is
    raised.
    """
    results: list[ReplayResult] = []
    for letter in _kept(fleet.store, ids):
        if letter.truncated:
            problem = (
                f"kept cut at {len(letter.body)} of its {letter.size} bytes: what is left is not the"
                " payload, so it is never replayed"
            )
            results.append((letter.id, CallbackError(None, problem)))
            continue
        try:
            event = parse_callback(letter.body, statuses=fleet.policy.statuses)
        except CallbackError as error:
            results.append((letter.id, error))
            continue
        outcome = fleet.deliver(event)  # journaled (or parked in the store) when it returns
        fleet.store.purge_dead_letters([letter.id])
        rejected = {} if outcome.reason is None else {"reason": outcome.reason}
        _log.info(
            "streamlife.dead_letter_replayed",
            id=letter.id,
            task_id=event.task_id,
            outcome=outcome.kind.value,
            **rejected,
        )
        results.append((letter.id, outcome))
    return results


def _kept(store: Store, ids: Iterable[int] | None) -> Iterator[DeadLetter]:
    """The letters ``ids`` that the store keeps (None: every one), in id order."""
    if ids is not None:
        for letter_id in dead_letter_ids(ids):
            letter = store.dead_letter_by_id(letter_id)
            if letter is not None:
                yield letter
        return
    yield from kept_letters(store)


def kept_letters(store: Store, *, after: int = 0, limit: int | None = None) -> Iterator[DeadLetter]:
    """The letters the store keeps after the id ``after`` (at most ``limit`` of them), in id order.

    They are read a page at a time, because each may hold up to ``DEAD_LETTER_MAX_BODY`` bytes.
    """
    left = limit
    while left is None or left > 0:
        page = store.dead_letters(after=after, limit=_PAGE if left is None else min(_PAGE, left))
        if not page:
            return
        yield from page
        after = page[-1].id
        if left is not None:
            left -= len(page)
