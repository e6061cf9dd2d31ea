"""``/healthz``: is this process fit to take callbacks? Its store answers, and its timers run.

A load balancer asks this without credentials, so the answer is made of fixed words and a number
of seconds only: never an error's text (a store's may quote its DSN, password and all), never a
task_id, never the token. 200 when both checks pass, else 503 naming the check that failed::

    {"status": "ok", "store": "ok", "timers": "ok"}
    {"status": "unavailable", "store": "failed", "timers": "ok"}
    {"status": "unavailable", "store": "no answer", "timers": "late", "last_tick_seconds_ago": 41.2}

The store is asked one cheap query (a lookup of a task_id nobody has), in a thread of its own and
for ``store_timeout`` seconds at most: a PostgreSQL that no longer answers must not hold the probe,
or the event loop, for the pool's whole connect timeout. While one probe hangs, the next ones
queue behind it and answer "no answer" when their time is up, so a hung store costs one thread.
"""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, Protocol

from ._timer_loop import TimerLoop
from ._webhook_server import JSON_TYPE, Response

DEFAULT_STORE_TIMEOUT: Final = 2.0  # seconds for the store's probe
# Seconds since the timers' last turn past which they count as stuck. A turn happens at least every
# second; one that takes longer is a tick firing a great many deadlines, or waiting on the store.
DEFAULT_STALE_AFTER: Final = 15.0
_PROBE_ID: Final = "streamlife-healthz-probe"  # no task_id memories.ai hands out looks like this


class Probed(Protocol):
    """What the probe asks: a ``Store``."""

    def find(self, task_id: str) -> object: ...


class Health:
    """The two checks behind ``/healthz``; ``answer()`` is the response (await it on the loop)."""

    def __init__(
        self,
        store: Probed,
        timers: TimerLoop,
        *,
        store_timeout: float = DEFAULT_STORE_TIMEOUT,
        stale_after: float = DEFAULT_STALE_AFTER,
    ) -> None:
        self.store = store
        self.timers = timers
        self.store_timeout = store_timeout
        self.stale_after = stale_after
        self._since = time.monotonic()
        self._probe = ThreadPoolExecutor(1, thread_name_prefix="streamlife-health")

    def close(self) -> None:
        self._probe.shutdown(wait=False, cancel_futures=True)

    async def answer(self) -> Response:
        store = await self._store()
        timers, ago = self._timers()
        healthy = store == "ok" and timers == "ok"
        fields: dict[str, Any] = {
            "status": "ok" if healthy else "unavailable",
            "store": store,
            "timers": timers,
        }
        if ago is not None and timers != "ok":
            fields["last_tick_seconds_ago"] = round(ago, 1)
        return Response(200 if healthy else 503, json.dumps(fields).encode(), JSON_TYPE)

    async def _store(self) -> str:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.run_in_executor(self._probe, self.store.find, _PROBE_ID), self.store_timeout
            )
        except TimeoutError:
            return "no answer"
        except Exception:  # whatever it was, its text may hold the DSN: the word alone is said
            return "failed"
        return "ok"

    def _timers(self) -> tuple[str, float | None]:
        if not self.timers.alive:
            return "stopped", None
        last = self.timers.last_turn
        ago = time.monotonic() - (self._since if last is None else last)
        return ("ok" if ago <= self.stale_after else "late"), ago
