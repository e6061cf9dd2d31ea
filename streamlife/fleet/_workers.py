"""Workers: the threads that send requests for the Fleet, and the waits between retries."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from streamlife._policy import Policy
from streamlife.errors import RateLimitedError


@dataclass(slots=True, eq=False)
class Workers:
    """``Policy.stop_concurrency`` threads, made on the first request that needs one; with 0, each
    request goes out on the thread that asks."""

    policy: Policy
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _pool: ThreadPoolExecutor | None = field(init=False, default=None)
    _waiting: int = field(init=False, default=0)  # requests handed over (or expected) and not begun

    def waiting(self) -> int:
        """Requests that go out before one handed over now: how late its answer may come."""
        return self._waiting

    def expect(self, count: int) -> None:
        """Count ``count`` requests more (fewer, if negative) as waiting: a caller's own, to be
        sent in turn on its thread or handed over later (``Fleet.stop_all``)."""
        with self._lock:
            self._waiting += count

    @property
    def threaded(self) -> bool:
        """Whether requests go out from worker threads (else on the thread that asks)."""
        return self.policy.stop_concurrency > 0

    def submit(self, work: Callable[..., None], *args: Any) -> Future[None]:
        """Run ``work(*args)`` on a worker thread. Only when ``threaded``."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self.policy.stop_concurrency, thread_name_prefix="streamlife-stop"
                )
            pool = self._pool
            self._waiting += 1
        try:
            return pool.submit(self._begin, work, args)
        except BaseException:
            self.expect(-1)
            raise

    def _begin(self, work: Callable[..., None], args: tuple[Any, ...]) -> None:
        self.expect(-1)
        work(*args)

    def close(self) -> None:
        """Wait for the requests in flight, then let the threads go."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


@dataclass(slots=True, eq=False)
class Backoff:
    """How long to wait before trying a refused start or a failed stop again."""

    policy: Policy
    _jitter: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._jitter = random.Random(self.policy.seed)

    def retry_after(self, error: BaseException) -> float | None:
        """The wait the service asked for with ``error``, if any, capped by ``Policy.max_retry_after``."""
        asked = error.retry_after if isinstance(error, RateLimitedError) else None
        if asked is None or not asked > 0:  # (NaN too: a transport that parsed it loosely)
            return None
        return min(asked, self.policy.max_retry_after)

    def wait(self, failures: int, retry_after: float | None) -> float:
        """The wait before the next try after ``failures`` failures; ``retry_after`` already capped."""
        ceiling = longest_wait(self.policy, failures)
        wait = ceiling * (0.5 + 0.5 * self._jitter.random())  # "equal jitter": never sooner than half
        return max(wait, retry_after or 0.0)


def longest_wait(policy: Policy, failures: int) -> float:
    """The longest backoff ``Backoff.wait`` waits after ``failures`` failures, Retry-After aside."""
    doublings = min(max(failures - 1, 0), 64)  # (past 1,024, 2.0 ** n overflows: a day of failing stops)
    return min(policy.stop_retry_cap, policy.stop_retry_base * 2.0**doublings)
