"""One strict rule for a Content-Length, in the WSGI receiver and in ``serve_webhook``.

``int()`` would take "-1", " 5", "+5", "1_0" and other scripts' digits; a WSGI input read with -1
reads until the client closes. A length that is not plain ASCII digits is refused with 400 before a
byte of the body is read, and the sink is never asked.
"""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from streamlife.webhook import WebhookReceiver

from .test_webhook import FACES, TIMEOUT, TOKEN, serving
from .test_webhook_flood import RecordingSink, callback

BAD_LENGTHS = {
    "negative": "-1",
    "leading space": " 5",
    "plus sign": "+5",
    "underscore": "1_0",
    "Arabic-Indic digit": "\u0663",
    "nineteen digits": "1" * 19,
}
# Each is also malformed after a server strips the header's surrounding whitespace.
BAD_ON_THE_WIRE = {name: value for name, value in BAD_LENGTHS.items() if value == value.strip()}


class GuardedInput(io.BytesIO):
    """A wsgi.input that records every read: a refused request must not be read at all."""

    def __init__(self, body: bytes) -> None:
        super().__init__(body)
        self.reads: list[int | None] = []

    def read(self, size: int | None = -1, /) -> bytes:
        self.reads.append(size)
        return super().read(size)


def call_wsgi(receiver: WebhookReceiver, content_length: str, body: bytes) -> tuple[int, Any, GuardedInput]:
    wsgi_input = GuardedInput(body)
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": f"/hooks/{TOKEN}",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": content_length,
        "wsgi.input": wsgi_input,
    }
    statuses: list[str] = []
    chunks = receiver(environ, lambda status, headers: statuses.append(status))
    return int(statuses[0].split(" ")[0]), json.loads(b"".join(chunks)), wsgi_input


@pytest.mark.parametrize("content_length", BAD_LENGTHS.values(), ids=BAD_LENGTHS.keys())
def test_a_malformed_content_length_in_wsgi_is_400_and_nothing_is_read(content_length: str) -> None:
    sink = RecordingSink()
    status, answer, wsgi_input = call_wsgi(WebhookReceiver(sink, token=TOKEN), content_length, callback(0))
    assert status == 400
    assert "error" in answer
    assert wsgi_input.reads == []
    assert sink.taken == []


def test_a_body_over_max_body_in_wsgi_is_413_and_never_read() -> None:
    sink = RecordingSink()
    receiver = WebhookReceiver(sink, token=TOKEN, max_body=100)
    status, _, wsgi_input = call_wsgi(receiver, "10000", b"[" * 10_000)
    assert status == 413
    assert wsgi_input.reads == []
    assert sink.taken == []


def test_a_zero_length_in_wsgi_reads_nothing() -> None:
    sink = RecordingSink()
    status, _, wsgi_input = call_wsgi(WebhookReceiver(sink, token=TOKEN), "0", callback(0))
    assert status == 200  # the sink's to judge; the recording sink takes anything
    assert wsgi_input.reads == []
    assert sink.taken == [b""]


def test_an_empty_content_length_in_wsgi_is_411() -> None:
    sink = RecordingSink()
    status, _, wsgi_input = call_wsgi(WebhookReceiver(sink, token=TOKEN), "", callback(0))
    assert status == 411
    assert wsgi_input.reads == []
    assert sink.taken == []


@contextmanager
def raw_connection(url: str) -> Iterator[socket.socket]:
    host, _, port = url.removeprefix("http://").rpartition(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        yield sock


def read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize("content_length", BAD_ON_THE_WIRE.values(), ids=BAD_ON_THE_WIRE.keys())
def test_a_malformed_content_length_on_the_wire_is_answered_400_at_once(
    face: str, content_length: str
) -> None:
    """The client keeps its connection open and sends no body: a server that read "until the end"
    would wait for it for ever (the socket's timeout fails the test)."""
    sink = RecordingSink()
    head = (
        f"POST /hooks/{TOKEN} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {content_length}\r\n\r\n"
    )
    with serving(WebhookReceiver(sink, token=TOKEN), face) as url, raw_connection(url) as sock:
        sock.sendall(head.encode())
        reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1."), reply[:200]
    assert reply.split(b" ")[1] == b"400", reply[:200]
    assert sink.taken == []
