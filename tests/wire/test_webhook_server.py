"""``serve_webhook``'s own HTTP: what it answers to odd requests, a failing sink, and a shutdown.

Raw sockets on loopback, so a test sends exactly the bytes it means and reads exactly what the
server writes back.
"""

from __future__ import annotations

import errno
import json
import resource
import selectors
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from structlog.testing import capture_logs

from streamlife import Outcome
from streamlife._webhook_server import DEFAULT_MAX_CONNECTIONS, MAX_HEAD, WebhookServer
from streamlife.webhook import Response, RunningReceiver, WebhookReceiver, serve_webhook

from .test_webhook import TIMEOUT, TOKEN
from .test_webhook_flood import GatedSink, RecordingSink, callback, post_all

SECRET = "the-sink-leaked-this-secret"


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    raw: bytes

    @property
    def json(self) -> object:
        return json.loads(self.body)


def parse_reply(raw: bytes) -> Reply:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return Reply(int(status_line.split(" ")[1]), headers, body, raw)


def exchange(running: RunningReceiver, *parts: bytes) -> Reply:
    """Send ``parts`` in turn on one connection; read until the server closes it."""
    with socket.create_connection(running.server.server_address, timeout=TIMEOUT) as sock:
        for part in parts:
            sock.sendall(part)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return parse_reply(received)


def post_bytes(body: bytes, *extra_headers: str, target: str = f"/hooks/{TOKEN}") -> bytes:
    head = [f"POST {target} HTTP/1.1", "Host: x", "Content-Type: application/json", *extra_headers]
    if not any(
        header.lower().startswith(("content-length", "transfer-encoding")) for header in extra_headers
    ):
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@contextmanager
def recording() -> Iterator[tuple[RunningReceiver, RecordingSink]]:
    sink = RecordingSink()
    with serve_webhook(WebhookReceiver(sink, token=TOKEN)) as running:
        yield running, sink


# -- requests as they come ---------------------------------------------------------------------------
def test_a_callback_is_answered_200_and_the_connection_closed() -> None:
    with recording() as (running, sink):
        reply = exchange(running, post_bytes(callback(0)))
    assert (reply.status, reply.json) == (200, {"outcome": "applied"})
    assert reply.headers["connection"] == "close"
    assert reply.headers["content-length"] == str(len(reply.body))
    assert reply.headers["content-type"] == "application/json"
    assert sink.taken == [callback(0)]


def test_a_request_sent_a_few_bytes_at_a_time_is_put_together() -> None:
    request = post_bytes(callback(0))
    with recording() as (running, sink):
        reply = exchange(running, *(request[i : i + 7] for i in range(0, len(request), 7)))
    assert reply.status == 200
    assert sink.taken == [callback(0)]


def test_an_absolute_target_carries_the_token_in_its_path() -> None:
    with recording() as (running, sink):
        reply = exchange(running, post_bytes(callback(0), target=f"http://x/hooks/{TOKEN}?via=proxy"))
    assert reply.status == 200
    assert sink.taken == [callback(0)]


def test_expect_100_continue_is_answered_before_the_body() -> None:
    with recording() as (running, sink), socket.create_connection(running.server.server_address) as sock:
        sock.settimeout(TIMEOUT)
        head, _, body = post_bytes(callback(0), "Expect: 100-continue").partition(b"\r\n\r\n")
        sock.sendall(head + b"\r\n\r\n")
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        reply = parse_reply(sock.recv(65536))
    assert reply.status == 200
    assert sink.taken == [callback(0)]


def test_a_head_request_is_405_without_a_body() -> None:
    with recording() as (running, _):
        reply = exchange(running, f"HEAD /hooks/{TOKEN} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert reply.status == 405
    assert reply.headers["allow"] == "POST"
    assert reply.body == b""
    assert int(reply.headers["content-length"]) > 0  # what a GET's body would be


NOT_HTTP = {
    "no version": b"POST /hooks\r\n\r\n",
    "HTTP/2 over cleartext": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "a header without a colon": b"POST /hooks HTTP/1.1\r\nHost x\r\n\r\n",
    "a folded header": b"POST /hooks HTTP/1.1\r\nHost: x\r\n continued\r\n\r\n",
    "two different lengths": b"POST /hooks HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    "a length in words": b"POST /hooks HTTP/1.1\r\nContent-Length: two\r\n\r\n{}",
    "a negative length": b"POST /hooks HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    "a relative target": b"POST hooks HTTP/1.1\r\n\r\n",
    "binary": bytes(range(256)) + b"\r\n\r\n",
    "an absolute target whose host is none": b"POST http://[/hooks HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
    "a bare LF hiding a header": b"POST /hooks HTTP/1.1\r\nX: a\nContent-Length: 99\r\n\r\n",
    "a bare CR in a value": b"POST /hooks HTTP/1.1\r\nX: a\rb\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", NOT_HTTP.values(), ids=NOT_HTTP.keys())
def test_a_head_that_is_not_http_is_400_and_nothing_is_taken(request_bytes: bytes) -> None:
    with recording() as (running, sink):
        reply = exchange(running, request_bytes)
        assert reply.status == 400
        assert isinstance(reply.json, dict)
        assert "error" in reply.json
        assert exchange(running, post_bytes(callback(1))).status == 200  # and the server goes on
    assert sink.taken == [callback(1)]


def test_a_head_over_the_limit_is_431() -> None:
    with recording() as (running, sink):
        reply = exchange(running, post_bytes(callback(0), "X-Padding: " + "p" * MAX_HEAD))
    assert reply.status == 431
    assert sink.taken == []


def test_a_head_that_never_ends_is_431_once_over_the_limit() -> None:
    with recording() as (running, sink):
        reply = exchange(running, b"POST /hooks HTTP/1.1\r\nX-Padding: " + b"p" * (4 * MAX_HEAD))
    assert reply.status == 431
    assert sink.taken == []


def test_a_chunked_body_is_411_and_not_taken() -> None:
    body = callback(0)
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    with recording() as (running, sink):
        reply = exchange(running, post_bytes(chunked, "Transfer-Encoding: chunked"))
    assert reply.status == 411
    assert sink.taken == []


def test_a_refusal_before_the_body_is_read_reaches_the_client() -> None:
    """A 413 for a megabyte: the server reads and drops the rest, so no reset destroys the answer."""
    body = b"[" * 1_000_000
    with recording() as (running, sink):
        reply = exchange(running, post_bytes(body))
    assert reply.status == 413
    assert sink.taken == []


# -- a sink that fails -------------------------------------------------------------------------------
class ExplodingSink:
    def __init__(self) -> None:
        self.calls = 0

    def handle_callback(self, payload: bytes) -> Outcome:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError(f"a bug in the sink, holding {SECRET}")
        return Outcome.APPLIED


def test_a_sink_that_raises_is_answered_500_and_the_server_goes_on() -> None:
    sink = ExplodingSink()
    with serve_webhook(WebhookReceiver(sink, token=TOKEN)) as running, capture_logs() as logs:
        failed = exchange(running, post_bytes(callback(0)))
        assert failed.status == 500
        assert failed.json == {"error": "the callback could not be applied"}
        assert SECRET.encode() not in failed.raw
        again = exchange(running, post_bytes(callback(0)))
        assert (again.status, again.json) == (200, {"outcome": "applied"})
    assert [entry["event"] for entry in logs] == ["streamlife.webhook_failed"]
    assert logs[0]["log_level"] == "error"


class Boom(BaseException):
    """Not an Exception: what a sink that calls sys.exit(), or a stray BaseException, raises."""


@dataclass
class BoomThenTogether:
    """The first ``booms`` callbacks raise ``Boom``; each later one waits until ``together`` are in
    the sink at once, so they are all answered 200 only if that many workers are alive."""

    booms: int
    together: int
    taken: list[bytes] = field(default_factory=list)
    barrier: threading.Barrier = field(init=False)

    def __post_init__(self) -> None:
        self.barrier = threading.Barrier(self.together, timeout=TIMEOUT)

    def handle_callback(self, payload: bytes) -> Outcome:
        if self.booms:
            self.booms -= 1
            raise Boom
        self.barrier.wait()
        self.taken.append(payload)
        return Outcome.APPLIED


def test_a_sink_raising_a_base_exception_is_answered_500_and_no_worker_is_lost() -> None:
    workers = 3
    sink = BoomThenTogether(booms=workers, together=workers)
    with (
        serve_webhook(WebhookReceiver(sink, token=TOKEN), workers=workers) as running,
        capture_logs() as logs,
    ):
        failed = [exchange(running, post_bytes(callback(n))) for n in range(workers)]
        assert [reply.status for reply in failed] == [500] * workers
        with ThreadPoolExecutor(workers) as pool:
            replies = list(pool.map(lambda n: exchange(running, post_bytes(callback(n))), range(workers)))
    assert [reply.status for reply in replies] == [200] * workers
    assert sorted(sink.taken) == sorted(callback(n) for n in range(workers))
    assert [entry["event"] for entry in logs] == ["streamlife.webhook_failed"] * workers


UNRENDERABLE = {
    "a status HTTP does not know": Response(799, b"{}"),
    "a header that is not latin-1": Response(200, b"{}", (("X-Note", "\u2603"),)),
}


class AnswersOnceUnrenderable(WebhookReceiver):
    """A receiver whose first answer cannot be written as HTTP: a fault while answering."""

    def __init__(self, sink: RecordingSink, answer: Response) -> None:
        super().__init__(sink, token=TOKEN)
        self.first: Response | None = answer

    def apply(self, body: bytes, headers: Mapping[str, str], path: str | None = None) -> Response:
        answer = super().apply(body, headers, path)
        first, self.first = self.first, None
        return answer if first is None else first


@pytest.mark.parametrize("answer", UNRENDERABLE.values(), ids=UNRENDERABLE.keys())
def test_an_answer_that_cannot_be_rendered_closes_its_connection(answer: Response) -> None:
    sink = RecordingSink()
    with serve_webhook(AnswersOnceUnrenderable(sink, answer), workers=1) as running, capture_logs() as logs:
        with socket.create_connection(running.server.server_address, timeout=TIMEOUT) as sock:
            sock.sendall(post_bytes(callback(0)))
            assert sock.recv(65536) == b""  # closed, not left open for ever
        assert exchange(running, post_bytes(callback(1))).status == 200
    assert sink.taken == [callback(0), callback(1)]
    assert [entry["event"] for entry in logs] == ["streamlife.webhook_failed"]


# -- limits and shutdown -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("request_timeout", 0),
        ("request_timeout", -1.0),
        ("max_connections", 0),
        ("workers", 0),
        ("workers", 1.5),
    ],
)
def test_the_limits_must_be_positive(option: str, value: object) -> None:
    receiver = WebhookReceiver(RecordingSink(), token=TOKEN)
    with pytest.raises(ValueError, match=option):
        WebhookServer(receiver, **{option: value})  # type: ignore[arg-type]


def test_max_connections_stays_below_half_the_descriptor_limit() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    receiver = WebhookReceiver(RecordingSink(), token=TOKEN)
    with serve_webhook(receiver, max_connections=10 * soft) as running:
        assert running.server.max_connections == soft // 2
    with serve_webhook(receiver) as running:
        assert running.server.max_connections == min(DEFAULT_MAX_CONNECTIONS, soft // 2)


def test_a_callback_with_a_worker_is_answered_before_the_server_closes() -> None:
    sink = GatedSink()
    closing = threading.Event()

    def open_the_gate_while_closing() -> None:
        assert closing.wait(TIMEOUT)
        time.sleep(0.3)  # the server is winding down by now
        sink.gate.set()

    with ThreadPoolExecutor(2) as pool:
        with serve_webhook(WebhookReceiver(sink, token=TOKEN)) as running:
            answer = pool.submit(post_all, f"{running.url}/hooks/{TOKEN}", 1, TIMEOUT)
            assert sink.arrived.acquire(timeout=TIMEOUT)
            gate = pool.submit(open_the_gate_while_closing)
            closing.set()
        assert answer.result() == [200]
        gate.result()
    assert len(sink.taken) == 1


@dataclass
class SlowSink:
    """A sink that takes a while over each callback, and notes when each call began."""

    seconds: float
    began: list[float] = field(default_factory=list)
    arrived: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))

    def handle_callback(self, payload: bytes) -> Outcome:
        self.began.append(time.monotonic())
        self.arrived.release()
        time.sleep(self.seconds)
        return Outcome.APPLIED


def status_or_eof(running: RunningReceiver, request: bytes) -> int | None:
    """The status of the answer to ``request``; None when the server closed without one."""
    with socket.create_connection(running.server.server_address, timeout=TIMEOUT) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return parse_reply(received).status if received else None


def webhook_workers() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name.startswith("streamlife-webhook-worker")}


def test_requests_still_queued_at_shutdown_are_answered_503_and_never_applied() -> None:
    sink = SlowSink(seconds=0.5)
    requests = 8
    workers_before = webhook_workers()
    with ThreadPoolExecutor(requests) as pool:
        with serve_webhook(WebhookReceiver(sink, token=TOKEN), workers=1, request_timeout=2.0) as running:
            replies = [pool.submit(status_or_eof, running, post_bytes(callback(n))) for n in range(requests)]
            assert sink.arrived.acquire(timeout=TIMEOUT)
            time.sleep(0.3)  # the other requests arrive, and wait for the one worker
        returned_at = time.monotonic()
        statuses = [reply.result() for reply in replies]
    time.sleep(1.0)  # a queued callback applied late would be in the sink by now
    assert all(began < returned_at for began in sink.began)
    assert set(statuses) <= {200, 503}
    assert statuses.count(200) == len(sink.began)
    assert statuses.count(503) >= 1
    assert webhook_workers() <= workers_before  # joined


def test_a_503_at_shutdown_says_when_to_deliver_again() -> None:
    sink = SlowSink(seconds=0.5)
    with ThreadPoolExecutor(2) as pool:
        with serve_webhook(WebhookReceiver(sink, token=TOKEN), workers=1) as running:
            first = pool.submit(exchange, running, post_bytes(callback(0)))
            assert sink.arrived.acquire(timeout=TIMEOUT)
            queued = pool.submit(exchange, running, post_bytes(callback(1)))
            time.sleep(0.2)  # it arrives, and waits for the one worker
        assert first.result().status == 200
        reply = queued.result()
    assert (reply.status, reply.headers["retry-after"]) == (503, "1")
    assert isinstance(reply.json, dict)
    assert "error" in reply.json
    assert len(sink.began) == 1


def test_the_server_stops_listening_when_the_block_ends() -> None:
    with recording() as (running, _):
        address = running.server.server_address
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=TIMEOUT).close()


def out_of_descriptors(*_: object, **__: object) -> object:
    raise OSError(errno.EMFILE, "Too many open files")


@pytest.mark.parametrize("failing", ["socketpair", "selector"])
def test_a_server_that_fails_to_start_closes_its_listening_socket(
    monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    made: list[tuple[socket.socket, tuple[str, int]]] = []
    create_server = socket.create_server

    def recorded_create_server(*args: Any, **kwargs: Any) -> socket.socket:
        listener = create_server(*args, **kwargs)
        made.append((listener, listener.getsockname()))
        return listener

    monkeypatch.setattr(socket, "create_server", recorded_create_server)
    if failing == "socketpair":
        monkeypatch.setattr(socket, "socketpair", out_of_descriptors)
    else:
        monkeypatch.setattr(selectors, "DefaultSelector", out_of_descriptors)
    with pytest.raises(OSError, match="Too many open files"):
        WebhookServer(WebhookReceiver(RecordingSink(), token=TOKEN))
    monkeypatch.undo()
    [(listener, address)] = made
    assert listener.fileno() == -1  # closed
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=TIMEOUT).close()


class FaultyScreen(WebhookReceiver):
    """A receiver whose head check fails once: a fault in the loop's own thread."""

    faults = 1

    def screen(
        self, method: str, path: str, headers: Mapping[str, str], content_length: int | None
    ) -> Response | None:
        if self.faults:
            self.faults -= 1
            raise RuntimeError("a bug in the head check")
        return super().screen(method, path, headers, content_length)


def test_a_fault_in_the_loop_closes_that_connection_and_the_server_goes_on() -> None:
    sink = RecordingSink()
    with serve_webhook(FaultyScreen(sink, token=TOKEN)) as running, capture_logs() as logs:
        with socket.create_connection(running.server.server_address, timeout=TIMEOUT) as sock:
            sock.sendall(post_bytes(callback(0)))
            assert sock.recv(65536) == b""  # closed, unanswered
        assert exchange(running, post_bytes(callback(1))).status == 200
    assert sink.taken == [callback(1)]
    assert [entry["event"] for entry in logs] == ["streamlife.webhook_failed"]


def test_refused_clients_that_hold_their_connections_open_cannot_keep_callbacks_out() -> None:
    """Clients send a malformed head and keep the connection open: each is answered 400 and then
    drained, for a while, of what it may still send. Such connections are evicted first when a
    newcomer needs the room, so they cannot fill every slot and leave callbacks in the backlog."""
    sink = RecordingSink()
    stop = threading.Event()
    held: list[socket.socket] = []
    with serve_webhook(WebhookReceiver(sink, token=TOKEN), max_connections=16) as running:

        def bait() -> None:
            while not stop.is_set():
                try:
                    sock = socket.create_connection(running.server.server_address, timeout=1)
                    sock.sendall(b"x\r\n\r\n")
                except OSError:
                    continue
                held.append(sock)

        flooders = [threading.Thread(target=bait, daemon=True) for _ in range(4)]
        for flooder in flooders:
            flooder.start()
        time.sleep(0.5)
        try:
            statuses = post_all(f"{running.url}/hooks/{TOKEN}", 3, timeout=5)
        finally:
            stop.set()
            for flooder in flooders:
                flooder.join(5)
            for sock in held:
                sock.close()
    assert statuses == [200, 200, 200]
