"""Where streamlife reads the time: injected, so tests and the simulator run on virtual time.

Times are seconds since the epoch (a float), because they outlive the process: history is
journaled, and deadlines are armed again from it after a restart, perhaps in another process. A
monotonic clock's times mean nothing outside the process that read them.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Anything that tells the time in seconds since the epoch."""

    def now(self) -> float: ...


class SystemClock:
    """The real wall clock (``time.time``)."""

    __slots__ = ()

    def now(self) -> float:
        return time.time()

    def __repr__(self) -> str:
        return "SystemClock()"


class ManualClock:
    """A clock that moves only when told to: for tests and simulated runs.

    It never goes backwards; ``advance`` and ``set`` refuse to, with a ``ValueError``.
    Safe to read from several threads while one thread moves it.
    """

    __slots__ = ("_lock", "_now")

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds`` (>= 0) and return the new time."""
        if seconds < 0:
            raise ValueError(f"a ManualClock cannot go backwards (advance by {seconds!r})")
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, when: float) -> None:
        """Jump to ``when``, which must not be earlier than the current time."""
        with self._lock:
            if when < self._now:
                raise ValueError(f"a ManualClock cannot go backwards ({when!r} < {self._now!r})")
            self._now = float(when)

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now!r})"


SYSTEM_CLOCK: Clock = SystemClock()
