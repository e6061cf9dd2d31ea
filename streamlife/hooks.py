"""The shapes of the hooks a Fleet calls, as Protocols: a hook of the wrong shape fails mypy.

``Fleet.on_transition(hook)`` takes a ``TransitionHook``, ``on_segment`` a ``SegmentHook``,
``on_orphan`` an ``OrphanHook``, ``on_foreign`` a ``ForeignHook``. Each is called with its
arguments by position, so the names of a hook's parameters are free; what it returns is ignored,
but a sync Fleet's hook must return None: a coroutine function handed to a ``Fleet`` would make a
coroutine nobody awaits, and mypy says so. ``AsyncFleet`` takes either shape: the ``Async...``
Protocols are the coroutine functions it awaits on its event loop.

    fleet.on_segment(lambda task, segment: print(segment.text))   # fine
    fleet.on_segment(lambda task: print(task))                    # mypy: error [type-var]
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # (the Fleet imports this module: the names are for the checker only)
    from ._events import ForeignCallback, Segment
    from ._history import HistoryEntry
    from ._task import StreamTask
    from .fleet import Orphan

__all__ = [
    "AsyncForeignHook",
    "AsyncOrphanHook",
    "AsyncSegmentHook",
    "AsyncTransitionHook",
    "ForeignHook",
    "OrphanHook",
    "SegmentHook",
    "TransitionHook",
]


class TransitionHook(Protocol):
    """``hook(task, entry)``: after every applied event but segments."""

    def __call__(self, task: StreamTask, entry: HistoryEntry, /) -> None: ...


class SegmentHook(Protocol):
    """``hook(task, segment)``: for every new segment (a partial, or a final)."""

    def __call__(self, task: StreamTask, segment: Segment, /) -> None: ...


class OrphanHook(Protocol):
    """``hook(orphan)``: when a stream nobody started is adopted."""

    def __call__(self, orphan: Orphan, /) -> None: ...


class ForeignHook(Protocol):
    """``hook(callback)``: for every well-formed callback that is not a stream event."""

    def __call__(self, callback: ForeignCallback, /) -> None: ...


class AsyncTransitionHook(Protocol):
    """``async def hook(task, entry)``, for ``AsyncFleet.on_transition``."""

    def __call__(self, task: StreamTask, entry: HistoryEntry, /) -> Awaitable[None]: ...


class AsyncSegmentHook(Protocol):
    """``async def hook(task, segment)``, for ``AsyncFleet.on_segment``."""

    def __call__(self, task: StreamTask, segment: Segment, /) -> Awaitable[None]: ...


class AsyncOrphanHook(Protocol):
    """``async def hook(orphan)``, for ``AsyncFleet.on_orphan``."""

    def __call__(self, orphan: Orphan, /) -> Awaitable[None]: ...


class AsyncForeignHook(Protocol):
    """``async def hook(callback)``, for ``AsyncFleet.on_foreign``."""

    def __call__(self, callback: ForeignCallback, /) -> Awaitable[None]: ...
