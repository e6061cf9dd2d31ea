"""Blocking calls handed from an event loop to a few threads, and their results handed back in
batches: what ``WebhookReceiver.asgi`` applies callbacks with.

``loop.run_in_executor`` costs each call a wake-up of a thread and a wake-up of the loop, and under
load the two sides take the interpreter's lock from each other at every one: several times the
work of applying a callback in memory. Here a thread that finishes a call takes the next ones
queued meanwhile (up to ``BATCH``) before it wakes the loop once for all their results: under load
the hand-offs are shared by many calls, and with one call at a time nothing waits longer than it
would have. Each call runs in the context (``contextvars``) of the code that handed it over, and at
most ``threads`` threads run calls at once. Calls that say how to be made together (``many``) are,
when they queue up together: a receiver's callbacks then share one store commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

BATCH: Final = 32  # calls a thread takes in a row before it hands their results back

T = TypeVar("T")
_Done = tuple["asyncio.Future[Any]", Any, BaseException | None]


@dataclass(frozen=True, slots=True)
class _Job:
    context: contextvars.Context
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: asyncio.Future[Any]
    many: Callable[[list[Any]], list[Any]] | None


class Handoff:
    """``await handoff.call(fn, *args)``: ``fn(*args)`` on one of ``threads`` daemon threads named
    ``name-N``, started on the first call by a thread of their own. A thread hands results back
    after at most ``batch`` calls in a row: 1 for calls that wait on the network, whose answers
    must not wait for the next call's.

    With ``many``, calls queued together may be made as one: ``many([args, ...])`` returns each
    call's result, in order (a receiver applies several callbacks with one store commit). It runs
    in the context of the first of them; if it raises, each of them raises it.
    """

    def __init__(self, threads: int, name: str, *, batch: int = BATCH) -> None:
        if threads < 1:
            raise ValueError(f"threads must be 1 or more, got {threads!r}")
        self.threads = threads
        self.batch = batch
        self.name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._started = False
        self._closed = False
        self._starting = threading.Lock()
        # Calls handed over and not handed back yet: counted on the loop, for ``idle``.
        self._in_flight = 0
        self._idle: asyncio.Event | None = None

    async def call(
        self, fn: Callable[..., T], *args: Any, many: Callable[[list[Any]], list[T]] | None = None
    ) -> T:
        if not self._started or self._closed:
            self._start()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._in_flight += 1
        self._jobs.put(_Job(contextvars.copy_context(), fn, args, future, many))
        return await future

    async def idle(self) -> None:
        """Until every call handed over (from this loop, the one it serves) is made and handed
        back, those whose awaits were cancelled too."""
        while self._in_flight:
            if self._idle is None or self._idle.is_set():  # (one Event for every waiter at once)
                self._idle = asyncio.Event()
            await self._idle.wait()

    def close(self) -> None:
        """Let the threads go once the calls handed over so far are made. A call after this raises."""
        with self._starting:
            self._closed = True
            if self._started:
                for _ in range(self.threads):
                    self._jobs.put(None)  # one each: a thread that takes it ends

    def _start(self) -> None:
        with self._starting:
            if self._closed:
                raise RuntimeError(f"{self.name}: closed")
            if self._started:
                return
            # Thread.start waits until the thread runs: one wait on the caller's thread (the loop),
            # not one per thread. Calls queue meanwhile, for the threads to take as they come.
            threading.Thread(target=self._spawn, name=f"{self.name}-spawner", daemon=True).start()
            self._started = True

    def _spawn(self) -> None:
        for n in range(self.threads):
            threading.Thread(target=self._work, name=f"{self.name}-{n}", daemon=True).start()

    def _next(self, done: list[_Done]) -> _Job | None:
        if len(done) >= self.batch:
            return None
        try:
            job = self._jobs.get_nowait()
        except queue.Empty:
            return None
        if job is None:  # closing: left for the wait below, this thread's or another's, to end on
            self._jobs.put(None)
        return job

    def _work(self) -> None:
        while True:
            done: list[_Done] = []
            job: _Job | None = self._jobs.get()
            if job is None:
                return
            while job is not None:
                if job.many is None:
                    done.append(_run(job))
                    job = self._next(done)
                    continue
                group, job = [job], None
                while len(group) + len(done) < self.batch and (job := self._next(done)) is not None:
                    if job.many != group[0].many:
                        break
                    group.append(job)
                    job = None
                done += _run_many(group)
                if job is None:
                    job = self._next(done)
            self._hand_back(done)

    def _hand_back(self, done: list[_Done]) -> None:
        """Wake each loop once, with the results of every call it handed over in ``done``."""
        by_loop: dict[asyncio.AbstractEventLoop, list[_Done]] = {}
        for item in done:
            by_loop.setdefault(item[0].get_loop(), []).append(item)
        for loop, results in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a loop that closed: nobody awaits these any more
                loop.call_soon_threadsafe(self._settle, results)

    def _settle(self, results: list[_Done]) -> None:
        for future, result, error in results:
            self._in_flight -= 1
            if future.cancelled():
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
        if not self._in_flight and self._idle is not None:
            self._idle.set()


def _run(job: _Job) -> _Done:
    try:
        return job.future, job.context.run(job.fn, *job.args), None
    except BaseException as error:  # handed back, raised where it was awaited
        return job.future, None, error


def _run_many(group: list[_Job]) -> list[_Done]:
    first = group[0]
    if len(group) == 1 or first.many is None:
        return [_run(job) for job in group]
    try:
        results = first.context.run(first.many, [job.args for job in group])
    except BaseException as error:
        return [(job.future, None, error) for job in group]
    return [(job.future, result, None) for job, result in zip(group, results, strict=True)]
