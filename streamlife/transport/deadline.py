"""A wall-clock deadline for one whole request, which a server that drips its answer cannot stretch.

requests and urllib3 only have per-read timeouts: a server that sends a byte just before each one
runs out holds a request open for as long as it likes. Here a timer shuts the connection's socket
down when the request's time is up; the read blocked on it wakes at once and fails, and the caller
asks ``Deadline.finish`` whether that was the timer.

The socket is found through the connection classes of the adapter that ``GuardedAdapter`` mounts:
``getresponse`` (called once the request is written, before the answer is read) hands its socket
to the deadline running in that thread.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from functools import cache
from typing import Any

from requests.adapters import HTTPAdapter

_running = threading.local()  # .deadline: the Deadline of the request this thread is making


class Deadline:
    """One request's deadline: ``with Deadline(seconds) as deadline: ...; deadline.finish()``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._socket: object = None
        self._expired = False
        self._finished = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Deadline:
        _running.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.finish()
        _running.deadline = None

    def watch(self, sock: object) -> None:
        """The socket this request's answer comes on: shut down when time is up."""
        with self._lock:
            self._socket = sock
            expired = self._expired and not self._finished
        if expired:
            _shut_down(sock)

    def finish(self) -> bool:
        """Stop the timer; True if it had already shut the request down (what was read since may
        look whole, cut at the moment of the shutdown, but it is not)."""
        self._timer.cancel()
        with self._lock:
            self._finished = True
            return self._expired

    def _expire(self) -> None:
        with self._lock:
            if self._finished:
                return
            self._expired = True
            sock = self._socket
        if sock is not None:
            _shut_down(sock)


def _shut_down(sock: object) -> None:
    """Shut the socket down under any TLS layer: a blocked read in another thread sees the end of
    the stream at once. (``SSLSocket.shutdown`` would also drop its TLS state under that reader.)"""
    while not isinstance(sock, socket.socket) and sock is not None:
        sock = getattr(sock, "socket", None)  # urllib3's SSLTransport, for TLS through a proxy
    if sock is None:
        return
    with contextlib.suppress(OSError):  # closed already: nothing left to stop
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _WatchedConnection:
    """Mixed into urllib3's connection classes: tells the running Deadline which socket to watch."""

    sock: Any

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        deadline = getattr(_running, "deadline", None)
        if deadline is not None and self.sock is not None:
            deadline.watch(self.sock)
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]


@cache
def _watched(pool_class: type[Any]) -> type[Any]:
    """A subclass of a urllib3 pool class whose connections are watched."""
    if issubclass(pool_class.ConnectionCls, _WatchedConnection):
        return pool_class
    connection = type(
        f"Watched{pool_class.ConnectionCls.__name__}", (_WatchedConnection, pool_class.ConnectionCls), {}
    )
    return type(f"Watched{pool_class.__name__}", (pool_class,), {"ConnectionCls": connection})


def _watch_pools_of(manager: Any) -> Any:
    manager.pool_classes_by_scheme = {
        scheme: _watched(pool_class) for scheme, pool_class in manager.pool_classes_by_scheme.items()
    }
    return manager


class GuardedAdapter(HTTPAdapter):
    """requests' adapter, with connections a ``Deadline`` can shut down (proxied ones too)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _watch_pools_of(self.poolmanager)

    def proxy_manager_for(self, *args: Any, **kwargs: Any) -> Any:
        return _watch_pools_of(super().proxy_manager_for(*args, **kwargs))
