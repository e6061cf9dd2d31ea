"""The simulator behind real HTTP on loopback: the documented paths, the real auth check, real webhooks.

``serve_http(service)`` answers ``POST /serve/api/v2/audio-stream/start`` (and the other three paths)
on 127.0.0.1, so ``HttpTransport`` talks to it exactly as it would talk to memories.ai. A start
answer the service marks as lost is never written: the connection is closed after the request was
read (or, with ``lost_answer_stall``, after holding it that many seconds: past the client's read
timeout), which the client sees as "sent, no answer". With ``webhook_url``, every callback is POSTed
there as JSON, as the service posts to the account's webhook; with ``redeliver`` too, one that fails
is kept and sent again, in order, before newer ones.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import KW_ONLY, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

import requests

from streamlife.protocol import Payload

from .service import SimulatedService

API_PREFIX: Final = "/serve/api/v2"
MAX_BODY: Final = 1 << 20


@dataclass
class WebhookPoster:
    """Posts each callback to a URL, and logs every one the receiver acknowledged (``delivered``).

    A delivery fails when the connection is refused or lost, when it times out, or when the answer
    is not 2xx; each failed attempt is recorded in ``failures``. What happens next is up to
    ``redeliver`` (memories.ai does not document its own behaviour, so the simulator offers both):

    * off (the default): the callback is dropped;
    * on: it is kept, in order, and sent again before any newer callback, on the next post and by
      ``flush()``. A service that redelivers this way never reorders: while the oldest kept callback
      is refused, newer ones queue behind it.

    With ``redeliver`` on, one lock covers the queue and the post, so callbacks posted from several
    threads go out one at a time, in the order they were queued. A receiver must then not wait, while
    answering, for a request to this simulator that would post a callback of its own (an early
    callback of a new start): that post would wait for the answer.
    """

    url: str
    _: KW_ONLY
    redeliver: bool = False
    timeout: float = 5.0
    failures: list[tuple[Payload, str]] = field(default_factory=list)
    delivered: list[Payload] = field(default_factory=list)
    _pending: deque[Payload] = field(default_factory=deque, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _session: requests.Session = field(default_factory=requests.Session, repr=False)

    def __call__(self, payload: Payload) -> bool:
        """Post ``payload`` (after the kept ones, with ``redeliver``): True if the receiver
        acknowledged it, False if it was dropped or kept for later."""
        if not self.redeliver:
            return self._post(payload)
        with self._lock:
            self._pending.append(payload)
            return self._drain() == 0

    @property
    def pending(self) -> list[Payload]:
        """The callbacks kept for redelivery, oldest first (always empty without ``redeliver``)."""
        with self._lock:
            return list(self._pending)

    def flush(self) -> int:
        """Send the kept callbacks again, oldest first, until one fails; return how many are left."""
        with self._lock:
            return self._drain()

    def _drain(self) -> int:
        """Post the kept callbacks in order, stopping at the first that fails. Caller holds the lock."""
        while self._pending:
            if not self._post(self._pending[0]):
                break
            self._pending.popleft()
        return len(self._pending)

    def _post(self, payload: Payload) -> bool:
        """One delivery attempt: True if the receiver acknowledged it (2xx)."""
        try:
            response = self._session.post(self.url, json=payload, timeout=self.timeout)
        except requests.RequestException as exc:
            failure = type(exc).__name__
        else:
            response.close()
            if 200 <= response.status_code < 300:
                self.delivered.append(payload)
                return True
            failure = f"HTTP {response.status_code}"
        self.failures.append((payload, failure))
        return False

    def close(self) -> None:
        self._session.close()


@dataclass
class SimHttpServer:
    service: SimulatedService
    server: ThreadingHTTPServer
    poster: WebhookPoster | None

    @property
    def base_url(self) -> str:
        """What to give ``HttpTransport(base_url=...)``."""
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}{API_PREFIX}"


def _handler(service: SimulatedService, lost_answer_stall: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; with Nagle's algorithm on, the second waits for
        # the client's delayed ACK: 40 ms a request on loopback.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._send(413, {"code": 413, "msg": "Request body too large", "data": None}, {})
                return
            raw = self.rfile.read(length)
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = None
            path = self.path.split("?", 1)[0]
            if not path.startswith(API_PREFIX + "/"):
                self._send(404, {"code": 404, "msg": "Not found", "data": None}, {})
                return
            headers = {"Authorization": self.headers.get("Authorization", "")}
            answer = service.request(path[len(API_PREFIX) :], headers, body)
            if answer.lost:
                time.sleep(lost_answer_stall)
                self.close_connection = True  # read, then silence: the client cannot know what happened
                return
            self._send(answer.status, answer.body, answer.headers)

        def _send(self, status: int, body: Any, headers: dict[str, str] | Any) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in dict(headers).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the simulator logs nothing of its own."""

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = socket.SOMAXCONN  # a burst of stops must not meet connection resets


@contextmanager
def serve_http(
    service: SimulatedService,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    webhook_url: str | None = None,
    lost_answer_stall: float = 0.0,
    redeliver: bool = False,
) -> Iterator[SimHttpServer]:
    """Serve ``service`` on ``host:port`` (0 picks a free port) until the block ends.

    A lost start answer closes the connection at once, or after ``lost_answer_stall`` seconds:
    set it above the client's read timeout to make the client time out instead. With
    ``redeliver``, a webhook that fails is sent again, in order (see ``WebhookPoster``).
    """
    server = _Server((host, port), _handler(service, lost_answer_stall))
    poster = WebhookPoster(webhook_url, redeliver=redeliver) if webhook_url else None
    if poster is not None:
        service.on_callback(poster)
    # A short poll interval, because shutdown() waits for one to pass.
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="streamlife-sim-http", daemon=True
    )
    thread.start()
    try:
        yield SimHttpServer(service, server, poster)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        if poster is not None:
            service.off_callback(poster)
            poster.close()
