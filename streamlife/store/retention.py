"""Retention: prune a store now and then, from a thread, so that its journal stops growing for ever.

``Store.prune`` does the work; this calls it every ``every`` real seconds, the first time at once,
with the cutoff ``clock.now() - retention`` (the clock the Fleet writes its times with). A prune that
fails is logged (``streamlife.prune_failed``) and tried again at the next turn; one that let
anything go is logged too (``streamlife.pruned``, at info).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from streamlife._clock import SYSTEM_CLOCK, Clock
from streamlife._logging import get_logger
from streamlife._repeating import repeating

from .base import Store

EVERY: Final = 3600.0  # real seconds between two prunes: a day's retention moves on by an hour at most

_log = get_logger()


@contextmanager
def pruning(
    store: Store, retention: float, *, clock: Clock = SYSTEM_CLOCK, every: float = EVERY
) -> Iterator[None]:
    """Prune ``store`` of what is older than ``retention`` seconds, from a background thread, while
    the block runs: at once, then every ``every`` real seconds. Leaving the block stops the thread,
    after the batch under way of the prune under way, if one is (``Store.prune``'s ``stop``)."""
    for name, seconds in (("retention", retention), ("every", every)):
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not 0 < seconds < float("inf")
        ):
            raise ValueError(f"{name} must be positive, finite seconds, got {seconds!r}")
    stop = threading.Event()
    with repeating(lambda: prune_once(store, clock.now() - retention, stop), every, "streamlife-retention"):
        try:
            yield
        finally:
            stop.set()  # first: the prune under way ends after its batch, and the thread with it


def prune_once(store: Store, before: float, stop: threading.Event | None = None) -> None:
    """One turn of ``pruning``: a failure is logged, never raised (the next turn tries again)."""
    try:
        result = store.prune(before, stop=stop)
    except Exception:
        _log.exception("streamlife.prune_failed", before=before)
        return
    if any(result):
        _log.info(
            "streamlife.pruned",
            before=before,
            tasks=result.tasks,
            entries=result.entries,
            dead_letters=result.dead_letters,
        )
