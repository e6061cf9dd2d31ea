"""A task as the Fleet holds it: the StreamTask, its lock, and what the Fleet keeps beside it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from streamlife._events import StreamKind
from streamlife._task import StreamTask
from streamlife.lifecycle import Deadline, StopReason

Hooks = tuple[Callable[..., None], ...]
NO_DEADLINES: frozenset[Deadline] = frozenset()


class Tracked:
    """A task with what the Fleet keeps beside it. Touched only under ``lock``."""

    __slots__ = (
        "created_at",
        "delivering",
        "heard_unjournaled",
        "held_back",
        "kind_guessed",
        "last_heard",
        "live_as",
        "lock",
        "notices",
        "stale",
        "start_deferrals",
        "start_not_before",
        "stop_in_flight",
        "stop_wanted",
        "task",
        "timers",
        "version",
    )

    def __init__(self, task: StreamTask, now: float, version: int = 0) -> None:
        self.task = task
        self.lock = threading.Lock()
        self.version = version  # the task's journal entries in the store (0: it has no row yet)
        self.created_at = now
        self.timers = NO_DEADLINES  # the state-driven deadlines armed for this task
        self.last_heard = now  # when the last callback came (the silence window counts from it)
        # Heard from since the store's row last moved, with nothing journaled (a silent segment):
        # the row looks silent to other processes until ``Ledger.renew`` writes it again.
        self.heard_unjournaled = False
        self.stop_in_flight = False
        # A stop asked for that the journal could not keep: this process honours it all the same
        # (no deferred start goes out; a start answer is met with a stop).
        self.stop_wanted: tuple[StopReason, ...] | None = None  # its stop's reason, if it has one
        self.held_back: tuple[float, float] | None = None  # (a journaled stop wait, as capped here)
        self.stale = False  # a write failed and so did reading the task back: reload it before its next event
        self.start_deferrals = 0  # starts refused for now, in this process (the backoff grows with them)
        self.start_not_before = 0.0  # a deferred start goes out again no sooner than this
        self.kind_guessed = False  # an orphan whose product its callbacks did not show
        # The product this task is counted under in ``Registry.live`` (None: not counted). Kept by
        # ``Registry.recount`` from the task's state, touched under the registry's lock too.
        self.live_as: StreamKind | None = None
        self.notices: list[tuple[Hooks, tuple[Any, ...]]] | None = None  # hook calls to make
        self.delivering = False  # a thread is calling this task's hooks
