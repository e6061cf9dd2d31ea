"""A background thread that does one thing again and again while a ``with`` block runs."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def repeating(turn: Callable[[], None], every: float, name: str) -> Iterator[None]:
    """Call ``turn`` from a daemon thread named ``name``, at once and then every ``every`` real
    seconds, until the block ends; leaving it waits for the turn under way. ``turn`` handles its
    own errors: one that escapes ends the thread."""
    done = threading.Event()

    def loop() -> None:
        while not done.is_set():
            turn()
            done.wait(every)

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
