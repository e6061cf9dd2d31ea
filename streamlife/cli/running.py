"""What a long-running command needs: its sockets opened as bad usage when they cannot be, and a
wait for SIGTERM or SIGINT that lets it leave cleanly."""

from __future__ import annotations

import _thread
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from types import FrameType
from typing import Any, TypeVar

from .exits import Usage

Served = TypeVar("Served")


@contextmanager
def listening(server: AbstractContextManager[Served], host: str, port: int) -> Iterator[Served]:
    """Enter a server's block; an address that cannot be listened on is bad usage."""
    try:
        running = server.__enter__()
    except OSError as error:
        # A server of several ports names the one it could not take (``serve_http``).
        where = error.filename if isinstance(error.filename, str) else f"{host}:{port}"
        raise Usage(f"cannot listen on {where}: {error.strerror or error}") from None
    try:
        yield running
    except BaseException:
        if not server.__exit__(*sys.exc_info()):
            raise
    else:
        server.__exit__(None, None, None)


def reachable(host: str) -> str:
    """Where a local client reaches a server listening on ``host``."""
    return "127.0.0.1" if host in ("", "0.0.0.0") else host


@contextmanager
def until_signalled(stopping: threading.Event) -> Iterator[None]:
    """Set ``stopping`` on SIGTERM or SIGINT; a second one acts as it would without this."""
    wanted = (signal.SIGTERM, signal.SIGINT)
    before: dict[int, Any] = {signum: signal.getsignal(signum) for signum in wanted}

    def handle(signum: int, _frame: FrameType | None) -> None:
        # Set from a thread of its own, started without a lock: the handler runs on the main thread
        # between two of its bytecodes, which may be where the main thread holds the Event's lock
        # (inside ``stopping.wait()``, or inside this handler's own ``set()`` when a second signal
        # comes, as a worker gets one from its supervisor and one from its process group), and a
        # ``set()`` there would wait for that lock for ever.
        try:
            _thread.start_new_thread(stopping.set, ())
        except RuntimeError:  # no thread to be had (at the system's limit): set it here
            stopping.set()
        signal.signal(signum, before[signum])

    for signum in wanted:
        signal.signal(signum, handle)
    try:
        yield
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)
