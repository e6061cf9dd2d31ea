"""The simulator behind real HTTP on loopback: the documented paths, the real auth check, real webhooks.

``serve_http(service)`` listens on two ports of 127.0.0.1, one per host memories.ai serves its
stream products from, so ``HttpTransport`` talks to it exactly as it would talk to memories.ai:

* ``base_url`` (MAVI v2): ``POST /serve/api/v2/audio-stream/start`` and ``/stop``,
  ``/serve/api/v2/stream/start`` and ``/stop``;
* ``understand_url`` (Live Video Understanding): ``POST /v1/understand/streamConnect`` and
  ``POST /v1/understand/stop/{task_id}``.

Each host serves its own products' paths only, and checks the API key the same way. A start
answer the service marks as lost is never written: the connection is closed after the request was
read (or, with ``lost_answer_stall``, after holding it that many seconds: past the client's read
timeout), which the client sees as "sent, no answer".

Callbacks are POSTed as JSON where the product sends them: audio's and video's to ``webhook_url``,
the account's webhook (none without it); Live Video Understanding's to the ``callback`` URL its
start named, as given. With ``redeliver``, one that fails is kept and sent again, in order, before
newer ones to the same URL.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import KW_ONLY, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import urlsplit

import requests

from streamlife.protocol import BASE_URLS, MAVI_BASE_URL, UNDERSTAND_BASE_URL, Payload

from ._records import Delivery
from .service import SimulatedService, path_kind

# Each host's paths begin with its base URL's path.
API_PREFIX: Final = urlsplit(MAVI_BASE_URL).path
UNDERSTAND_PREFIX: Final = urlsplit(UNDERSTAND_BASE_URL).path
MAX_BODY: Final = 1 << 20


@dataclass
class WebhookPoster:
    """Posts each callback to its URL, and logs every one the receiver acknowledged (``delivered``).

    ``url`` is the account's webhook: ``poster(payload)`` posts there, and so does ``deliver`` for
    a callback with no URL of its own. A ``Delivery`` that names a ``callback`` URL (Live Video
    Understanding's) is posted there instead, as given. With ``url`` None, only those are posted.

    A delivery fails when the connection is refused or lost, when it times out, or when the answer
    is not 2xx; each failed attempt is recorded in ``failures``. What happens next is up to
    ``redeliver`` (memories.ai does not document its own behaviour, so the simulator offers both):

    * off (the default): the callback is dropped;
    * on: it is kept, in order, and sent again before any newer callback to the same URL, on the
      next post there and by ``flush()``. A service that redelivers this way never reorders: while
      the oldest kept callback for a URL is refused, newer ones for it queue behind it.

    With ``redeliver`` on, one lock covers the queues and the post, so callbacks posted from several
    threads go out one at a time, in the order they were queued. A receiver must then not wait, while
    answering, for a request to this simulator that would post a callback of its own (an early
    callback of a new start): that post would wait for the answer.
    """

    url: str | None
    _: KW_ONLY
    redeliver: bool = False
    timeout: float = 5.0
    failures: list[tuple[Payload, str]] = field(default_factory=list)
    delivered: list[Payload] = field(default_factory=list)
    _pending: dict[str | None, deque[Payload]] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _session: requests.Session = field(default_factory=requests.Session, repr=False)

    def __repr__(self) -> str:
        """Without the URLs: a webhook's last segment is its receiver's token, a callback URL's may
        be its task's secret."""
        webhook = "set" if self.url else "none"
        return (
            f"WebhookPoster(webhook {webhook}, redeliver={self.redeliver}, delivered={len(self.delivered)},"
            f" failed={len(self.failures)})"
        )

    def __call__(self, payload: Payload) -> bool:
        """Post ``payload`` to the webhook (after the kept ones, with ``redeliver``): True if the
        receiver acknowledged it, False if it was dropped or kept for later."""
        if self.url is None:
            raise ValueError("this poster has no webhook URL: give it one, or deliver() addressed callbacks")
        return self._send(None, payload)

    def deliver(self, delivery: Delivery) -> bool:
        """Post ``delivery`` where it goes: its own ``callback`` URL, else the webhook. True if the
        receiver acknowledged it; False if it was dropped, kept for later, or has nowhere to go (no
        URL of its own and no webhook: an in-process sink may take it)."""
        if delivery.callback is None and self.url is None:
            return False
        return self._send(delivery.callback, delivery.payload)

    def _send(self, to: str | None, payload: Payload) -> bool:
        """Post to ``to``, or to the webhook (None: wherever ``url`` points when it is sent)."""
        if not self.redeliver:
            return self._post(to, payload)
        with self._lock:
            self._pending.setdefault(to, deque()).append(payload)
            return self._drain(to) == 0

    @property
    def pending(self) -> list[Payload]:
        """The callbacks kept for redelivery, oldest first for each URL (always empty without
        ``redeliver``)."""
        with self._lock:
            return [payload for kept in self._pending.values() for payload in kept]

    def flush(self) -> int:
        """Send the kept callbacks again, oldest first for each URL, until one fails there; return
        how many are left."""
        with self._lock:
            return sum(self._drain(to) for to in list(self._pending))

    def _drain(self, to: str | None) -> int:
        """Post the callbacks kept for ``to`` in order, stopping at the first that fails; return how
        many are left. Caller holds the lock."""
        kept = self._pending[to]
        while kept:
            if not self._post(to, kept[0]):
                return len(kept)
            kept.popleft()
        del self._pending[to]  # a task's own URL serves its life only: keep no empty queue
        return 0

    def _post(self, to: str | None, payload: Payload) -> bool:
        """One delivery attempt: True if the receiver acknowledged it (2xx)."""
        url = to or self.url
        try:
            if url is None:  # the webhook was unset while this waited
                raise requests.exceptions.MissingSchema("no webhook URL")
            response = self._session.post(url, json=payload, timeout=self.timeout)
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
    """The simulator's two hosts, and the poster of its callbacks (its ``url`` is the webhook's,
    and may be set while serving)."""

    service: SimulatedService
    server: ThreadingHTTPServer  # audio and video (MAVI v2)
    poster: WebhookPoster
    understand_server: ThreadingHTTPServer  # Live Video Understanding

    @property
    def base_url(self) -> str:
        """What to give ``HttpTransport(base_url=...)``."""
        return _url(self.server, API_PREFIX)

    @property
    def understand_url(self) -> str:
        """What to give ``HttpTransport(understand_url=...)``."""
        return _url(self.understand_server, UNDERSTAND_PREFIX)


def _url(server: ThreadingHTTPServer, prefix: str) -> str:
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}{prefix}"


def _handler(
    service: SimulatedService, lost_answer_stall: float, base_url: str
) -> type[BaseHTTPRequestHandler]:
    """The handler of one host: the products whose base URL is ``base_url``."""
    prefix = urlsplit(base_url).path
    products = frozenset(kind for kind, base in BASE_URLS.items() if base == base_url)

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
            relative = path[len(prefix) :] if path.startswith(prefix + "/") else ""
            if path_kind(relative) not in products:  # another host's path is not found here
                self._send(404, {"code": 404, "msg": "Not found", "data": None}, {})
                return
            headers = {"Authorization": self.headers.get("Authorization", "")}
            answer = service.request(relative, headers, body)
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
    understand_port: int = 0,
    webhook_url: str | None = None,
    lost_answer_stall: float = 0.0,
    redeliver: bool = False,
    poster: WebhookPoster | None = None,
) -> Iterator[SimHttpServer]:
    """Serve ``service`` until the block ends: audio and video on ``host:port``, Live Video
    Understanding on ``host:understand_port`` (0 picks a free port).

    A lost start answer closes the connection at once, or after ``lost_answer_stall`` seconds:
    set it above the client's read timeout to make the client time out instead. Callbacks go to
    ``webhook_url`` (the account's webhook) and to the callback URL each understand start names;
    with ``redeliver``, one that fails is sent again, in order (see ``WebhookPoster``). Pass a
    ``poster`` of your own instead of those two to keep it (it is not closed here).
    """
    if poster is not None and (webhook_url is not None or redeliver):
        raise ValueError("give a poster, or webhook_url and redeliver for a new one, not both")
    owned = poster is None
    posting = WebhookPoster(webhook_url, redeliver=redeliver) if poster is None else poster
    with ExitStack() as stack:
        if owned:
            stack.callback(posting.close)  # closed last: a server may post a start's early callback
        servers = [
            _serving(stack, _bound(host, where, _handler(service, lost_answer_stall, base)))
            for where, base in ((port, MAVI_BASE_URL), (understand_port, UNDERSTAND_BASE_URL))
        ]
        service.on_delivery(posting.deliver)
        stack.callback(service.off_delivery, posting.deliver)
        yield SimHttpServer(service, servers[0], posting, servers[1])


def _bound(host: str, port: int, handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """A server listening on ``host:port``; an OSError names the address, one of two."""
    try:
        return _Server((host, port), handler)
    except OSError as error:
        raise OSError(error.errno, error.strerror, f"{host}:{port}") from error


def _serving(stack: ExitStack, server: ThreadingHTTPServer) -> ThreadingHTTPServer:
    """Serve ``server`` from a thread until ``stack`` closes."""
    stack.callback(server.server_close)
    # A short poll interval, because shutdown() waits for one to pass.
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="streamlife-sim-http", daemon=True
    )
    thread.start()
    stack.callback(thread.join, 5)
    stack.callback(server.shutdown)
    return server
