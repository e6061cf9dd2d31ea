"""The loop: one thread that accepts, reads, screens, dispatches to the workers, and writes.

(The theory of operation starts in the package's docstring.)

When accept() fails for want of descriptors (EMFILE, ENFILE) or memory, the loop evicts what it
may (up to a turn's worth of accepts) and stops accepting for ``ACCEPT_PAUSE``: the listening socket
stays readable while its backlog holds connections, and polling it again at once would spin.

On shutdown the server stops accepting and closes its listening socket, drops the connections that
have not delivered a complete request, answers 503 to each request still queued for a worker (its
callback was never applied: the sender may deliver it again), gives the requests a worker has taken
``request_timeout`` to be answered, and joins the workers, for that long at most. No callback is
handed to the application after ``serve_forever`` returns, so its caller may close the store; only
a sink call that outlasts ``request_timeout`` can still be running then.

A refusal answered before its body was read (a 413, say) shuts the connection's writing side and
reads what the client still sends, for ``LINGER`` seconds at most, before closing: closing with
unread data would reset the connection, and the reset can destroy the refusal on its way.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import threading
import time
from typing import Final, Protocol

from streamlife._logging import get_logger

from ._connections import Connection, ConnectionTable, Phase, descriptor_budget
from ._request import HEAD_END, MAX_HEAD, Head, Malformed, parse_head
from ._response import JSON_TYPE, Response, json_response
from ._workers import WorkerPool

DEFAULT_REQUEST_TIMEOUT: Final = 10.0  # seconds for a whole request; a callback takes milliseconds
DEFAULT_MAX_CONNECTIONS: Final = 256
DEFAULT_WORKERS: Final = 8  # the sink serializes callbacks per task; more threads buy little
LINGER: Final = 2.0  # seconds to read what a client still sends after a refusal, before closing
ACCEPT_PAUSE: Final = 0.1  # seconds without accepting after accept() ran out of descriptors

_READ_SIZE: Final = 64 * 1024
_ACCEPTS_PER_TURN: Final = 64  # a flood of connections must not starve the connections already open
_LONGEST_WAIT: Final = 1.0
_OUT_OF_RESOURCES: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"

_log = get_logger()


class Application(Protocol):
    """What the server serves: a ``WebhookReceiver``. The loop calls ``screen`` on each head, and
    refuses the request with its answer; a worker calls ``apply`` only with a body ``screen`` let
    through, so nothing is checked twice."""

    def screen(
        self, method: str, path: str, headers: dict[str, str], content_length: int | None
    ) -> Response | None: ...

    def apply(self, body: bytes, headers: dict[str, str], path: str | None = None) -> Response: ...


_MALFORMED: Final = json_response(400, error="not an HTTP request this server understands")
_HEAD_TOO_LARGE: Final = json_response(431, error=f"the request line and headers are over {MAX_HEAD} bytes")
_TIMED_OUT: Final = json_response(408, error="the request did not arrive in time")
_SHUTTING_DOWN: Final = json_response(
    503,
    (*JSON_TYPE, ("Retry-After", "1")),
    error="the server is shutting down; deliver the callback again",
)


_LISTENER: Final = object()  # the selector's mark on the listening socket
_WAKE: Final = object()  # and on the socket the workers wake the loop through


class WebhookServer:
    """An HTTP/1.1 server for one ``Application``; the package's docstring says how it works.

    ``serve_forever`` runs it (in a thread of its own); ``shutdown`` asks it to stop: it stops
    accepting, answers 503 to the requests still waiting for a worker, lets the callbacks with a
    worker finish (``request_timeout`` at most), joins the workers and closes.
    """

    def __init__(
        self,
        app: Application,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        workers: int = DEFAULT_WORKERS,
    ) -> None:
        if not isinstance(request_timeout, int | float) or not request_timeout > 0:
            raise ValueError(f"request_timeout must be a positive number of seconds, got {request_timeout!r}")
        for name, value in (("max_connections", max_connections), ("workers", workers)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive whole number, got {value!r}")
        self.app = app
        self.request_timeout = float(request_timeout)
        self.max_connections = min(max_connections, descriptor_budget())
        self.workers = workers
        with contextlib.ExitStack() as made:  # on a failure (out of descriptors), close what was made
            self._listener = made.enter_context(_listen(host, port))
            self.server_address: tuple[str, int] = self._listener.getsockname()[:2]
            self._selector = made.enter_context(selectors.DefaultSelector())
            self._wake_reader, self._wake_writer = socket.socketpair()
            made.enter_context(self._wake_reader)
            made.enter_context(self._wake_writer)
            for end in (self._wake_reader, self._wake_writer):
                end.setblocking(False)
            self._selector.register(self._wake_reader, selectors.EVENT_READ, _WAKE)
            made.pop_all()
        self._connections = ConnectionTable(self._selector, self.max_connections)
        self._workers = WorkerPool(app.apply, workers, self._wake)
        self._stopping = threading.Event()
        self._listening = False
        self._accept_paused_until = 0.0

    def __repr__(self) -> str:
        host, port = self.server_address
        return f"WebhookServer({host}:{port}, max_connections={self.max_connections}, workers={self.workers})"

    # -- running -----------------------------------------------------------------------------------
    def serve_forever(self) -> None:
        self._workers.start()
        give_up_at = float("inf")
        try:
            while not self._stopping.is_set():
                self._turn_safely()
            give_up_at = time.monotonic() + self.request_timeout
            self._wind_down(give_up_at)
        finally:
            for connection in self._workers.dismiss():  # only after a fault while winding down
                self._connections.close(connection)
            self.server_close()
            self._workers.join(min(give_up_at, time.monotonic() + self.request_timeout))

    def shutdown(self) -> None:
        """Ask ``serve_forever`` to stop; join its thread to wait for it."""
        self._stopping.set()
        self._wake()

    def server_close(self) -> None:
        """Close every socket the server holds (what ``serve_forever`` does when it stops)."""
        for connection in self._connections.connections():
            self._connections.close(connection)
        self._stop_listening()
        self._listener.close()
        self._selector.close()
        self._wake_reader.close()
        self._wake_writer.close()

    def _wind_down(self, give_up_at: float) -> None:
        """Stop accepting, drop what is not yet a request, answer 503 to the requests no worker has
        taken, and give those a worker has taken until ``give_up_at`` to be answered."""
        self._stop_listening()
        self._listener.close()  # a newcomer is refused at once rather than left in the backlog
        for connection in self._connections.connections():
            if connection.phase not in (Phase.APPLYING, Phase.WRITING):
                self._connections.close(connection)
        for connection in self._workers.dismiss():
            self._answer_or_close(connection, _SHUTTING_DOWN)
        while self._connections and time.monotonic() < give_up_at:
            self._turn()

    def _turn_safely(self) -> None:
        """A turn of the loop; a fault in it is logged, and the loop, which serves every connection,
        goes on after a pause (a fault that repeats must not spin)."""
        try:
            self._turn()
        except Exception:
            _log.exception("streamlife.webhook_failed")
            self._stopping.wait(ACCEPT_PAUSE)

    def _turn(self) -> None:
        """One turn of the loop: wait for sockets, serve them, hand out answers, enforce deadlines."""
        self._watch_listener(time.monotonic())
        ready = self._selector.select(self._wait(time.monotonic()))
        listener_ready = False
        for key, events in ready:
            if key.data is _LISTENER:
                listener_ready = True
            elif key.data is _WAKE:
                self._drain_wake()
            else:
                self._serve(key.data, events)
        self._deliver_answers()
        if listener_ready and not self._stopping.is_set():
            self._accept()
        self._expire(time.monotonic())

    def _wait(self, now: float) -> float:
        until = self._connections.next_expiry
        evictable_at = self._connections.evictable_at()
        if self._connections.full and evictable_at > now:
            until = min(until, evictable_at)  # then the listening socket is polled again
        if self._accept_paused_until > now:
            until = min(until, self._accept_paused_until)
        return max(0.0, min(until - now, _LONGEST_WAIT))

    # -- accepting ---------------------------------------------------------------------------------
    def _watch_listener(self, now: float) -> None:
        """Poll the listening socket only when an accept can be taken in: never while paused, nor
        while the slots are full with nothing to evict yet."""
        paused = self._stopping.is_set() or now < self._accept_paused_until
        wanted = not paused and self._connections.room(now)
        if wanted and not self._listening:
            self._selector.register(self._listener, selectors.EVENT_READ, _LISTENER)
            self._listening = True
        elif not wanted:
            self._stop_listening()

    def _stop_listening(self) -> None:
        if self._listening:
            self._selector.unregister(self._listener)
            self._listening = False

    def _accept(self) -> None:
        for _ in range(_ACCEPTS_PER_TURN):
            if not self._connections.room(time.monotonic()):
                return
            try:
                sock, _ = self._listener.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:
                continue  # the client gave up while in the backlog
            except OSError as error:
                self._pause_accepting(error)
                return
            if self._connections.full:
                self._connections.evict_oldest()
            self._admit(sock)

    def _pause_accepting(self, error: OSError) -> None:
        if error.errno in _OUT_OF_RESOURCES:  # descriptors for the accepts after the pause
            now = time.monotonic()
            for _ in range(_ACCEPTS_PER_TURN):
                if now < self._connections.evictable_at() or not self._connections.evict_oldest():
                    break
        self._accept_paused_until = time.monotonic() + ACCEPT_PAUSE
        self._stop_listening()
        _log.debug(
            "streamlife.webhook_accept_paused", error=errno.errorcode.get(error.errno or 0, str(error))
        )

    def _admit(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        with contextlib.suppress(OSError):  # the answer's small writes must not wait for delayed ACKs
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        now = time.monotonic()
        self._connections.admit(sock, now, deadline=now + self.request_timeout)

    # -- one connection ----------------------------------------------------------------------------
    def _serve(self, connection: Connection, events: int) -> None:
        if connection.closed:
            return
        try:
            if connection.phase is Phase.WRITING:
                self._write(connection)
            elif connection.phase is Phase.DRAINING:
                self._receive(connection)  # and drop it: the answer has gone
            elif events & selectors.EVENT_READ:
                self._read(connection)
        except Exception:  # a fault in one connection must not stop the loop that serves them all
            _log.exception("streamlife.webhook_failed")
            self._connections.close(connection)

    def _read(self, connection: Connection) -> None:
        data = self._receive(connection)
        if data:
            connection.inbox += data
            self._progress(connection)

    def _progress(self, connection: Connection) -> None:
        """Act on what has arrived: parse and screen the head, then, once the body is in, apply."""
        if connection.head is None:
            end = connection.inbox.find(HEAD_END)
            if end < 0 or end + len(HEAD_END) > MAX_HEAD:
                if end >= 0 or len(connection.inbox) > MAX_HEAD:
                    self._answer(connection, _HEAD_TOO_LARGE)
                return
            try:
                head = parse_head(bytes(connection.inbox[:end]))
            except Malformed:
                self._answer(connection, _MALFORMED)
                return
            connection.head = head
            refusal = self.app.screen(head.method, head.path, head.headers, head.length)
            if refusal is not None:
                self._answer(connection, refusal)
                return
            connection.phase = Phase.BODY
            if head.expects_continue and len(connection.inbox) < head.size + (head.length or 0):
                _send_now(connection.sock, _CONTINUE)
        head = connection.head
        assert head.length is not None  # screen refused a request without one
        if len(connection.inbox) >= head.size + head.length:
            body = bytes(connection.inbox[head.size : head.size + head.length])
            self._dispatch(connection, head, body)

    def _dispatch(self, connection: Connection, head: Head, body: bytes) -> None:
        self._connections.hand_to_worker(connection)
        self._workers.submit(connection, head, body)

    def _answer(self, connection: Connection, answer: Response) -> None:
        head_only = connection.head is not None and connection.head.method == "HEAD"
        connection.outbox = answer.render(head_only=head_only)
        self._connections.write(connection, deadline=time.monotonic() + self.request_timeout)
        self._write(connection)

    def _write(self, connection: Connection) -> None:
        try:
            sent = connection.sock.send(connection.outbox)
        except BlockingIOError:
            return
        except OSError:
            self._connections.close(connection)
            return
        connection.outbox = connection.outbox[sent:]
        if connection.outbox:
            return
        if connection.consumed:
            self._connections.close(connection)
            return
        self._linger(connection)

    def _linger(self, connection: Connection) -> None:
        """Answered before the client finished sending: read the rest, for a while, then close."""
        try:
            connection.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._connections.close(connection)
            return
        self._connections.drain(connection, deadline=time.monotonic() + min(LINGER, self.request_timeout))

    def _receive(self, connection: Connection) -> bytes:
        """What the client has sent, b"" if nothing yet. A client that closed, or a read that
        failed, closes the connection."""
        try:
            data = connection.sock.recv(_READ_SIZE)
        except BlockingIOError:
            return b""
        except OSError:
            data = b""
        if not data:
            self._connections.close(connection)
        return data

    def _expire(self, now: float) -> None:
        """Answer 408 to each request past its deadline; close each answer or drain past its own."""
        for connection in self._connections.expired(now):
            if connection.phase in (Phase.HEAD, Phase.BODY):
                self._answer(connection, _TIMED_OUT)
            else:
                self._connections.close(connection)

    # -- the workers' answers ----------------------------------------------------------------------
    def _deliver_answers(self) -> None:
        for connection, answer in self._workers.answers():
            if not connection.closed:
                self._answer_or_close(connection, answer)

    def _answer_or_close(self, connection: Connection, answer: Response) -> None:
        """Answer a request a worker applied. If that fails (an answer that cannot be rendered, a
        selector that cannot take the socket), close it: a connection with a worker has no deadline
        and is never evicted, so nothing else ever would."""
        try:
            self._answer(connection, answer)
        except Exception:
            _log.exception("streamlife.webhook_failed")
            self._connections.close(connection)

    def _wake(self) -> None:
        # A full buffer means a wake is pending already; a closed socket, that the server stopped.
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"\0")

    def _drain_wake(self) -> None:
        try:
            while self._wake_reader.recv(4096):
                pass
        except OSError:
            pass


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # Streams' callbacks fall due on the same 5-second marks: bursts. A short backlog would reset
    # the connections beyond it, and a reset callback is a lost one.
    listener = socket.create_server((host, port), family=family, backlog=socket.SOMAXCONN)
    listener.setblocking(False)
    return listener


def _send_now(sock: socket.socket, data: bytes) -> None:
    """Best effort: an interim answer that does not fit the socket's buffer is not worth waiting for."""
    with contextlib.suppress(OSError):
        sock.send(data)
