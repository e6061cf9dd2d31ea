"""The Fleet's timers run from a thread that says when it last ticked: what ``/healthz`` reads.

``Fleet.run_timers`` runs one; ``serve`` keeps its own, to read. A server behind a load balancer
must be able to tell that its timers still run: a Fleet whose timer thread died takes
callbacks and answers 200, and no stop is ever retried, no final wait ever runs out. This loop uses
the Fleet's public ``tick`` and ``next_deadline`` alone, and stamps each turn.
"""

from __future__ import annotations

import threading
import time
from typing import Final, Protocol

from streamlife._logging import get_logger

from ._clock import Clock

DEFAULT_INTERVAL: Final = 1.0  # real seconds between two ticks at most, as Fleet.run_timers

_log = get_logger()


class Ticking(Protocol):
    """What the loop drives: a ``Fleet``."""

    def tick(self) -> int: ...

    def next_deadline(self) -> float | None: ...

    @property
    def clock(self) -> Clock: ...


class TimerLoop:
    """Call ``fleet.tick()`` from a daemon thread, at least every ``interval`` real seconds and at
    each deadline, from ``start()`` until ``stop()``; a tick that raises is logged and the loop goes
    on. ``last_turn`` is the ``time.monotonic()`` of the last turn that ended (None before the
    first); ``alive`` whether the thread runs."""

    def __init__(self, fleet: Ticking, *, interval: float = DEFAULT_INTERVAL) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be positive seconds, got {interval!r}")
        self.fleet = fleet
        self.interval = interval
        self.last_turn: float | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="streamlife-timers", daemon=True)

    def __enter__(self) -> TimerLoop:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop ticking; returns once the tick under way has ended."""
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        fleet, done = self.fleet, self._done
        while not done.is_set():
            try:
                fleet.tick()
            except Exception:
                _log.exception("streamlife.tick_failed")
            self.last_turn = time.monotonic()
            try:
                soonest = fleet.next_deadline()
                pause = self.interval if soonest is None else soonest - fleet.clock.now()
            except Exception:  # (a fault here must not end the only thread that fires deadlines)
                _log.exception("streamlife.tick_failed")
                pause = self.interval
            done.wait(min(self.interval, max(pause, 0.001)))
