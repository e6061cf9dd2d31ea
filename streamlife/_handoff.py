"""Blocking calls handed from an event loop to a few threads, and their results handed back in
batches: what ``WebhookReceiver.asgi`` applies callbacks with.

``loop.run_in_executor`` costs each call a wake-up of a thread and a wake-up of the loop, and under
load the two sides take the interpreter's lock from each other at every one: several times the
work of applying a callback in memory. Here a thread that finishes a call takes the next ones
queued meanwhile (up to ``BATCH``) before it wakes the loop once for all their results: under load
the hand-offs are shared by many calls, and with one call at a time nothing waits longer than it
would have. Each call still runs alone, in the context (``contextvars``) of the code that handed
it over, and at most ``threads`` run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar

BATCH: Final = 32  # calls a thread takes in a row before it hands their results back

T = TypeVar("T")
_Job = tuple[contextvars.Context, Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]"]


class Handoff:
    """``await handoff.call(fn, *args)``: ``fn(*args)`` on one of ``threads`` daemon threads named
    ``name-N``, started on the first call."""

    def __init__(self, threads: int, name: str) -> None:
        if threads < 1:
            raise ValueError(f"threads must be 1 or more, got {threads!r}")
        self.threads = threads
        self.name = name
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._started = False
        self._starting = threading.Lock()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        if not self._started:
            self._start()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.put((contextvars.copy_context(), fn, args, future))
        return await future

    def _start(self) -> None:
        with self._starting:
            if self._started:
                return
            for n in range(self.threads):
                threading.Thread(target=self._work, name=f"{self.name}-{n}", daemon=True).start()
            self._started = True

    def _work(self) -> None:
        jobs = self._jobs
        while True:
            done: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
            job: _Job | None = jobs.get()
            while job is not None:
                context, fn, args, future = job
                try:
                    done.append((future, context.run(fn, *args), None))
                except BaseException as error:  # handed back, raised where it was awaited
                    done.append((future, None, error))
                job = None
                if len(done) < BATCH:
                    with contextlib.suppress(queue.Empty):
                        job = jobs.get_nowait()
            _hand_back(done)


def _hand_back(done: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    """Wake each loop once, with the results of every call it handed over in ``done``."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]] = {}
    for item in done:
        by_loop.setdefault(item[0].get_loop(), []).append(item)
    for loop, results in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a loop that closed: nobody awaits these any more
            loop.call_soon_threadsafe(_settle, results)


def _settle(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in results:
        if future.cancelled():
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
