"""Workers: the threads that send requests for the Fleet, and the waits between retries."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from streamlife.errors import RateLimitedError
from streamlife.policy import Policy


class Workers:
    """``Policy.stop_concurrency`` threads, made on the first request that needs one; with 0, each
    request goes out on the thread that asks."""

    __slots__ = ("_lock", "_policy", "_pool")

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    @property
    def threaded(self) -> bool:
        """Whether requests go out from worker threads (else on the thread that asks)."""
        return self._policy.stop_concurrency > 0

    def submit(self, work: Callable[..., None], *args: Any) -> Future[None]:
        """Run ``work(*args)`` on a worker thread. Only when ``threaded``."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self._policy.stop_concurrency, thread_name_prefix="streamlife-stop"
                )
            pool = self._pool
        return pool.submit(work, *args)

    def close(self) -> None:
        """Wait for the requests in flight, then let the threads go."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


class Backoff:
    """How long to wait before trying a refused start or a failed stop again."""

    __slots__ = ("_jitter", "_policy")

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._jitter = random.Random(policy.seed)

    def retry_after(self, error: BaseException) -> float | None:
        """The wait the service asked for with ``error``, if any, capped by ``Policy.max_retry_after``."""
        asked = error.retry_after if isinstance(error, RateLimitedError) else None
        if asked is None or not asked > 0:  # (NaN too: a transport that parsed it loosely)
            return None
        return min(asked, self._policy.max_retry_after)

    def wait(self, failures: int, retry_after: float | None) -> float:
        """The wait before the next try after ``failures`` failures; ``retry_after`` already capped."""
        policy = self._policy
        doublings = min(max(failures - 1, 0), 64)  # (past 1,024, 2.0 ** n overflows: a day of failing stops)
        ceiling = min(policy.stop_retry_cap, policy.stop_retry_base * 2.0**doublings)
        wait = ceiling * (0.5 + 0.5 * self._jitter.random())  # "equal jitter": never sooner than half
        return max(wait, retry_after or 0.0)
