"""A wall-clock deadline for one whole request, which a server that drips its answer cannot stretch.

requests and urllib3 only have per-read timeouts: a server that sends a byte just before each one
runs out holds a request open for as long as it likes. Here a timer shuts the connection's socket
down when the request's time is up; the read blocked on it wakes at once and fails, and the caller
asks ``Deadline.finish`` whether that was the timer.

The socket is found through the connection classes of the adapter that ``GuardedAdapter`` mounts:
``getresponse`` (called once the request is written, before the answer is read) hands its socket
to the deadline running in that thread.

The timer may only shut down a socket its own request still owns. urllib3 puts a connection back
in the session's shared pool as the last byte of an answer is read, before the request's code
runs again, and another thread may take it from there at once. So the pool releases the
deadline's hold on the connection before taking it back (after that the timer does nothing: the
request has done reading), and the timer shuts the socket down while holding the lock that release
takes: it either shuts the socket before the connection goes back (the pool's next user finds it
dropped and opens another) or not at all.
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
        self._released = False  # the connection went back to the pool: the request has done reading
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
            self._released = False
            if self._expired and not self._finished:
                _shut_down(sock)

    def release(self) -> None:
        """The request is done with its connection, which goes back to the pool for another
        request: stop watching its socket. A timer that fires from now on changes nothing."""
        with self._lock:
            self._socket = None
            self._released = True

    def finish(self) -> bool:
        """Stop the timer; True if it had already shut the request down (what was read since may
        look whole, cut at the moment of the shutdown, but it is not)."""
        self._timer.cancel()
        with self._lock:
            self._finished = True
            return self._expired

    def _expire(self) -> None:
        with self._lock:
            if self._finished or self._released:
                return
            self._expired = True
            if self._socket is not None:
                _shut_down(self._socket)  # under the lock: release waits until it is done


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
    """Mixed into urllib3's connection classes: tells the running Deadline which socket to watch,
    and keeps that Deadline until the connection goes back to its pool."""

    sock: Any
    streamlife_deadline: Deadline | None = None

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        deadline = getattr(_running, "deadline", None)
        if deadline is not None and self.sock is not None:
            deadline.watch(self.sock)
            self.streamlife_deadline = deadline
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]


class _ReleasingPool:
    """Mixed into urllib3's pool classes: a connection coming back is no longer watched by the
    deadline of the request that used it, before any other request can take it."""

    def _put_conn(self, conn: Any) -> None:
        deadline = getattr(conn, "streamlife_deadline", None)
        if deadline is not None:
            conn.streamlife_deadline = None
            deadline.release()
        super()._put_conn(conn)  # type: ignore[misc]


@cache
def _watched(pool_class: type[Any]) -> type[Any]:
    """A subclass of a urllib3 pool class whose connections are watched."""
    if issubclass(pool_class, _ReleasingPool):
        return pool_class
    connection = type(
        f"Watched{pool_class.ConnectionCls.__name__}", (_WatchedConnection, pool_class.ConnectionCls), {}
    )
    return type(f"Watched{pool_class.__name__}", (_ReleasingPool, pool_class), {"ConnectionCls": connection})


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
