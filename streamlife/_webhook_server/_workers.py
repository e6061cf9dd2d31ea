"""The worker pool: a fixed number of threads that apply complete requests, away from the loop.

Only a complete request reaches a worker. A worker hands its body to the application (the
receiver's ``apply``) and the answer back to the loop, which it wakes to write it. A request with a
worker has no deadline: the sink's own timeouts (the store's) bound it. A fault in the sink is
answered 500 and logged, and the worker goes on to its next request.

On shutdown the pool gives back the requests no worker has taken: their callbacks were never
applied, and the loop answers them 503 so that the sender delivers them again.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Final

from streamlife._logging import get_logger

from ._connections import Connection
from ._request import Head
from ._response import Response, json_response

_FAILED: Final = json_response(500, error="the callback could not be applied")

_log = get_logger()

Apply = Callable[[bytes, dict[str, str], str | None], Response]  # (body, headers, path)


class WorkerPool:
    """``size`` threads that ``apply`` each submitted request and call ``wake`` with its answer ready."""

    def __init__(self, apply: Apply, size: int, wake: Callable[[], None]) -> None:
        self.size = size
        self._apply = apply
        self._wake = wake
        self._jobs: queue.SimpleQueue[tuple[Connection, Head, bytes] | None] = queue.SimpleQueue()
        self._answers: queue.SimpleQueue[tuple[Connection, Response]] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._dismissed = False

    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._work, name=f"streamlife-webhook-worker-{n}", daemon=True)
            for n in range(self.size)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, connection: Connection, head: Head, body: bytes) -> None:
        self._jobs.put((connection, head, body))

    def answers(self) -> list[tuple[Connection, Response]]:
        """The answers the workers have made since the last call, each with its connection."""
        ready: list[tuple[Connection, Response]] = []
        while True:
            try:
                ready.append(self._answers.get_nowait())
            except queue.Empty:
                return ready

    def dismiss(self) -> list[Connection]:
        """Take back every job no worker has taken, and tell each worker to stop after its current
        one; return the connections taken back: their callbacks were never applied. Only the loop's
        thread submits jobs, and it calls this, so no job can slip in behind the stop signals."""
        if self._dismissed:
            return []
        self._dismissed = True
        withdrawn: list[Connection] = []
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                withdrawn.append(job[0])
        for _ in self._threads:
            self._jobs.put(None)
        return withdrawn

    def join(self, give_up_at: float) -> None:
        """Wait for the workers to finish, until ``give_up_at``: a sink call that outlasts it is left
        to end on its own (the threads are daemons, and take no job after it)."""
        for thread in self._threads:
            thread.join(max(0.0, give_up_at - time.monotonic()))

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            connection, head, body = job
            self._answers.put((connection, self._answer(head, body)))
            self._wake()

    def _answer(self, head: Head, body: bytes) -> Response:
        try:
            return self._apply(body, head.headers, head.path)
        except BaseException:  # the sink's fault, answered 500; the server goes on
            # Not only Exception: anything else would end this worker and shrink the pool for good.
            # Nothing is lost by catching KeyboardInterrupt and SystemExit here: a signal raises
            # them in the main thread only, and in a worker thread they would end the thread alone,
            # never the process.
            _log.exception("streamlife.webhook_failed")
            return _FAILED
