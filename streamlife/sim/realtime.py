"""RealTime: the simulator's virtual clock moved along with the wall clock, from a thread.

``SimulatedService`` runs on a ``ManualClock`` that only moves when told, which keeps tests exact. A
simulator that other processes talk to (``streamlife sim serve``, ``streamlife serve --sim``, or your
own) must move by itself instead: segments every 5 seconds, callbacks posted as they fall due::

    service = SimulatedService(clock=ManualClock(time.time()))
    with serve_http(service, webhook_url="http://127.0.0.1:8080/<token>"), RealTime(service):
        ...  # the simulator lives as memories.ai would, until the block ends

``speed`` scales time: at 10, a minute of the stream's life passes in six real seconds.
"""

from __future__ import annotations

import math
import threading
import time
from types import TracebackType
from typing import Final, Self

import structlog

from .service import SimulatedService

DEFAULT_TICK: Final = 0.1  # real seconds between two advances of the clock


class RealTime:
    """Move ``service``'s clock ``speed`` virtual seconds per real second, every ``tick`` real seconds,
    from a daemon thread: while the ``with`` block runs, or from ``start()`` to ``close()``.

    Virtual time goes on from wherever the service's clock stands at the start, and never goes back.
    Each advance sends every callback that fell due, from the driver's thread; a callback sink that
    raises is logged (``streamlife.sim_failed``, with the traceback) and the clock goes on.
    ``close()`` waits for the advance under way, and may be called more than once.
    """

    def __init__(self, service: SimulatedService, *, speed: float = 1.0, tick: float = DEFAULT_TICK) -> None:
        if not (isinstance(speed, int | float) and speed > 0 and math.isfinite(speed)):
            raise ValueError(
                f"speed must be a positive number of virtual seconds a real second, got {speed!r}"
            )
        if not (isinstance(tick, int | float) and tick > 0 and math.isfinite(tick)):
            raise ValueError(f"tick must be a positive number of seconds, got {tick!r}")
        self.service = service
        self.speed = float(speed)
        self.tick = float(tick)
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._origin = (0.0, 0.0)  # (real monotonic time, virtual time) when the driver started

    def __repr__(self) -> str:
        state = "running" if self.running else "idle"
        return f"RealTime(speed={self.speed:g}, tick={self.tick:g}, {state})"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def virtual_now(self) -> float:
        """Where the service's clock should stand now."""
        real, virtual = self._origin
        return virtual + (time.monotonic() - real) * self.speed

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("a RealTime driver starts once")
        self._origin = (time.monotonic(), self.service.clock.now())
        self._thread = threading.Thread(target=self._run, name="streamlife-sim-clock", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._done.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def _run(self) -> None:
        log = structlog.get_logger("streamlife")
        while not self._done.is_set():
            try:
                self.service.run_until(max(self.virtual_now(), self.service.clock.now()))
            except Exception:
                log.exception("streamlife.sim_failed")
            self._done.wait(self.tick)
