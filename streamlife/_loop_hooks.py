"""An AsyncFleet's hooks, called on its event loop, one at a time, in the order of their events.

The Fleet underneath calls one bridge per kind of hook, on whichever thread applied the event
(after the task's lock is let go, a task's events in order: ``fleet/_notices.py``). The bridge only
queues the call and wakes the loop; one dispatcher task on the loop takes the queue in order and
calls each hook: a coroutine function is awaited before the next hook runs, a plain function is
called on the loop. So every hook of an AsyncFleet runs on its loop, after the event it reports,
in the order the events were applied, and may ``await fleet.stop(...)``: nothing the Fleet does
waits for a hook, so the stop's own events queue behind it and run once it returns. A hook that
raises is logged (``streamlife.hook_failed``, as a sync Fleet logs it) and the next one runs.

Calls queued before the loop is known wait for it; ``close`` runs what is queued, then ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections import deque
from collections.abc import Callable
from typing import Any

from ._logging import get_logger

_log = get_logger()

Hook = Callable[..., Any]


class LoopHooks:
    """Hook calls handed over from any thread, made on one loop in order."""

    def __init__(self) -> None:
        self._calls: deque[tuple[tuple[Hook, ...], tuple[Any, ...]]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Event | None = None
        self._signalled = False  # a wake-up is on its way to the loop: no need for another
        self._dispatcher: asyncio.Task[None] | None = None
        self._closing = False

    def bridge(self, hooks: Callable[[], tuple[Hook, ...]]) -> Callable[..., None]:
        """The sync hook to give the Fleet: it queues a call of ``hooks()`` (read when the call is
        made, so hooks added later are heard) with the event's arguments."""

        def queue(*args: Any) -> None:
            self.post(hooks(), args)

        return queue

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Call the hooks on ``loop`` from now on (on it, once)."""
        self._ready = asyncio.Event()  # before the loop: post() reads the loop, then the event
        self._loop = loop
        self._dispatcher = loop.create_task(self._dispatch(), name="streamlife-hooks")
        if self._calls:
            self._signal()

    def post(self, hooks: tuple[Hook, ...], args: tuple[Any, ...]) -> None:
        """Queue a call of each of ``hooks`` with ``args``; from any thread."""
        self._calls.append((hooks, args))  # (a deque's append is atomic)
        if not self._signalled and self._loop is not None:
            self._signal()

    def _signal(self) -> None:
        loop, ready = self._loop, self._ready
        assert loop is not None
        assert ready is not None
        self._signalled = True
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is left to call the hooks
            loop.call_soon_threadsafe(ready.set)

    async def _dispatch(self) -> None:
        ready, calls = self._ready, self._calls
        assert ready is not None
        while True:
            await ready.wait()
            ready.clear()
            self._signalled = False  # before taking the queue: what comes after this wakes us again
            while calls:
                hooks, args = calls.popleft()
                for hook in hooks:
                    await _call(hook, args)
            if self._closing:
                return

    async def close(self) -> None:
        """Make the calls queued so far, then end the dispatcher. On the loop."""
        if self._dispatcher is None or self._ready is None:
            return
        self._closing = True
        self._ready.set()
        await self._dispatcher


async def _call(hook: Hook, args: tuple[Any, ...]) -> None:
    try:
        result = hook(*args)
        if inspect.isawaitable(result):
            await result
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # the dispatcher is cancelled (its loop is ending)
        # The hook's own: it awaited something that was cancelled. It must not end the dispatcher,
        # and with it every later hook call.
        _log.exception("streamlife.hook_failed", hook=getattr(hook, "__qualname__", repr(hook)))
    except Exception:
        _log.exception("streamlife.hook_failed", hook=getattr(hook, "__qualname__", repr(hook)))
