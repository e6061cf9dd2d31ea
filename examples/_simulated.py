"""memories.ai's simulator behind real HTTP on loopback, in real time: what the web application
examples run against when no ``MEMORIES_API_KEY`` is given. Production needs none of this."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from streamlife import ManualClock
from streamlife.sim import SimHttpServer, SimulatedService, serve_http

API_KEY = "sk-mai-simulated"  # the key the simulator accepts


@contextmanager
def simulated_memories(webhook_url: str, *, speed: float = 1.0) -> Iterator[SimHttpServer]:
    """Serve the simulator's API on 127.0.0.1 until the block ends (``face.base_url`` is what
    ``HttpTransport`` takes), posting its callbacks to ``webhook_url``. Its clock follows the real
    one, ``speed`` times as fast: at 10, a stream sends a 5-second segment every half second."""
    clock = ManualClock(time.time())
    service = SimulatedService(clock=clock, api_key=API_KEY)
    began, origin = time.monotonic(), clock.now()
    done = threading.Event()

    def follow_the_clock() -> None:
        while not done.wait(0.05):
            service.run_until(origin + (time.monotonic() - began) * speed)  # sends what fell due

    with serve_http(service, webhook_url=webhook_url) as face:
        thread = threading.Thread(target=follow_the_clock, name="simulated-memories", daemon=True)
        thread.start()
        try:
            yield face
        finally:
            done.set()
            thread.join()
