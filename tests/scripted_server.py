"""A real HTTP server on 127.0.0.1 that answers from a script: for transport tests over loopback.

Each request takes the next step of the script: an answer (status, JSON body, headers; at once or
after a delay), a dropped connection after the request was read, a stall longer than the client's
read timeout, or raw bytes (written in pieces, with a pause between pieces: a server that drips its
answer). Every request is recorded (path, headers, JSON body, the client's address) so tests can
count what reached the server, and on which connection."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from streamlife.protocol import error_answer, success_answer


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait, once the request is read, before answering


@dataclass(frozen=True)
class Drop:
    """Read the request, then close the connection without a word."""


@dataclass(frozen=True)
class Stall:
    seconds: float


@dataclass(frozen=True)
class Raw:
    """Write these pieces as they are (status line and headers included), ``pause`` seconds apart,
    then close. Stops early, quietly, when the client has gone."""

    pieces: Iterable[bytes]
    pause: float = 0.0


def drip(answer: bytes, every: float) -> Raw:
    """The whole answer, one byte every ``every`` seconds."""
    return Raw((answer[n : n + 1] for n in range(len(answer))), every)


def raw_head(status: int, **headers: str) -> bytes:
    """A status line and headers, as sent; ``Content_Type="..."`` is sent as ``Content-Type``."""
    lines = [
        f"HTTP/1.1 {status} Whatever",
        *(f"{name.replace('_', '-')}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


Step = Answer | Drop | Stall | Raw


@dataclass(frozen=True)
class Seen:
    path: str
    headers: Mapping[str, str]
    body: Any
    peer: tuple[str, int] = ("", 0)  # the client's address: one per connection


class ScriptedServer:
    def __init__(self, server: ThreadingHTTPServer) -> None:
        self._server = server
        self.script: deque[Step] = deque()
        self.requests: list[Seen] = []
        host, port = server.server_address[:2]
        self.url = f"http://{host!s}:{port}"

    def then(self, *steps: Step) -> ScriptedServer:
        self.script.extend(steps)
        return self


def ok(task_id: str = "660e8400-e29b-41d4-a716-446655440001", message: str = "started") -> Answer:
    return Answer(200, success_answer(task_id, message))


def error(status: int, msg: str = "error", **headers: str) -> Answer:
    return Answer(status, error_answer(status, msg), headers)


def write_raw(handler: BaseHTTPRequestHandler, step: Raw) -> None:
    try:
        for piece in step.pieces:
            handler.wfile.write(piece)
            handler.wfile.flush()
            if step.pause:
                time.sleep(step.pause)
    except OSError:
        pass  # the client hung up: what these steps are for


@contextmanager
def scripted_server() -> Iterator[ScriptedServer]:
    holder: list[ScriptedServer] = []

    class Handler(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True  # one answer, two writes: no 40 ms wait for a delayed ACK
        # Keep-alive, as HTTP/1.1 servers do: a client's pool reuses a connection for the next request.
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            scripted = holder[0]
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            seen = Seen(self.path, dict(self.headers), json.loads(raw or b"null"), self.client_address[:2])
            scripted.requests.append(seen)
            step = scripted.script.popleft() if scripted.script else Answer(500, {"code": 500})
            if isinstance(step, Drop):
                self.close_connection = True
                self.connection.close()
                return
            if isinstance(step, Stall):
                time.sleep(step.seconds)
                return
            if isinstance(step, Raw):
                self.close_connection = True
                write_raw(self, step)
                return
            time.sleep(step.delay)
            payload = json.dumps(step.body).encode() if step.body is not None else b""
            self.send_response(step.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in step.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST  # a redirected POST may come back as a GET: recorded all the same

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    holder.append(ScriptedServer(server))
    # A short poll interval: shutdown() waits for one, and every test stops a server.
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), name="scripted-server", daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
