"""The stateful Fleet property (tests/fleet/test_fleet_stateful.py), its rules driven through an
AsyncFleet: start, stop (with its waits), stop_all and every callback are awaited on an event loop,
the AsyncFleet's threads doing the work; the invariants and the end of every run are the same."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar, cast

from streamlife import Fleet, Outcome, StreamKind, StreamTask
from streamlife.aio import AsyncFleet
from tests.fleet.test_fleet_stateful import FleetMachine

T = TypeVar("T")


class Awaited:
    """A Fleet's face whose start, stop, stop_all and handle_callback are an AsyncFleet's, each
    awaited on a loop of its own thread from the caller's thread. Everything else is the Fleet's."""

    def __init__(self, fleet: Fleet) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-aio-loop", daemon=True)
        self.thread.start()
        self.aio = AsyncFleet.from_fleet(fleet)
        self._fleet = fleet

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fleet, name)

    def _await(self, work: Coroutine[Any, Any, T]) -> T:
        assert threading.current_thread() is not self.thread, "the loop would wait for itself"
        return asyncio.run_coroutine_threadsafe(work, self.loop).result()

    def start(self, kind: StreamKind | str, **params: Any) -> StreamTask:
        return self._await(self.aio.start(kind, **params))

    def stop(self, task_or_id: StreamTask | str, wait: float | None = None) -> StreamTask:
        return self._await(self.aio.stop(task_or_id, wait=wait))

    def stop_all(self, wait: float | None = None) -> list[StreamTask]:
        return self._await(self.aio.stop_all(wait=wait))

    def handle_callback(self, payload: bytes | str | Mapping[str, Any], *, key: str | None = None) -> Outcome:
        return self._await(self.aio.handle_callback(payload, key=key))

    def close(self) -> None:
        self._await(self.aio.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class AsyncFleetMachine(FleetMachine):
    def driven(self, fleet: Fleet) -> Fleet:
        self.awaited = Awaited(fleet)
        return cast(Fleet, self.awaited)  # (it answers as the Fleet does: the rules cannot tell)

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            if hasattr(self, "awaited"):
                self.awaited.close()


TestAsyncFleet = AsyncFleetMachine.TestCase
