"""Notices: the user's hooks, and each task's queue of calls to them.

A task's events queue their notices while its lock is held; after the lock is let go, one thread
at a time delivers the task's queue, in order. So a hook always runs after the event it reports,
hears of a task's events in the order they were applied, and may call the Fleet about any task. A
hook that raises is logged and skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streamlife._events import ForeignCallback
from streamlife._logging import get_logger

from ._tracked import Hooks, Tracked

_log = get_logger()


@dataclass(slots=True, eq=False)
class Notices:
    transition: Hooks = ()
    segment: Hooks = ()
    orphan: Hooks = ()
    foreign: Hooks = ()

    def drop(self, hooks: Hooks) -> None:
        """Call ``hooks`` no more, whatever their kind. Calls already queued are still made."""
        self.transition = tuple(hook for hook in self.transition if hook not in hooks)
        self.segment = tuple(hook for hook in self.segment if hook not in hooks)
        self.orphan = tuple(hook for hook in self.orphan if hook not in hooks)
        self.foreign = tuple(hook for hook in self.foreign if hook not in hooks)

    def queue(self, tracked: Tracked, hooks: Hooks, args: tuple[Any, ...]) -> None:
        """Queue a call of ``hooks`` for after the task's lock is let go. Caller holds the lock."""
        if tracked.notices is None:
            tracked.notices = []
        tracked.notices.append((hooks, args))

    def deliver(self, tracked: Tracked) -> None:
        """Call the task's queued hooks, in order, on this thread, unless another thread is at it
        (it will call the new ones too). Called with the task's lock not held."""
        if tracked.notices is None:
            return  # nothing queued: the common case, without taking the lock
        with tracked.lock:
            if tracked.delivering:
                return
            tracked.delivering = True
        try:
            while True:
                with tracked.lock:
                    batch, tracked.notices = tracked.notices, None
                    if batch is None:
                        tracked.delivering = False
                        return
                for hooks, args in batch:
                    for hook in hooks:
                        _call(hook, args)
        except BaseException:
            with tracked.lock:
                tracked.delivering = False
            raise

    def tell_foreign(self, callback: ForeignCallback) -> None:
        """Call the ``on_foreign`` hooks, here and in turn: a foreign callback has no task, so no queue."""
        for hook in self.foreign:
            _call(hook, (callback,))


def _call(hook: Callable[..., None], args: tuple[Any, ...]) -> None:
    try:
        hook(*args)
    except Exception:
        _log.exception("streamlife.hook_failed", hook=getattr(hook, "__qualname__", repr(hook)))
