"""The receiver's ASGI face: one request at a time through ``receiver.asgi``, as an ASGI server
would make it, and what the sender and the Fleet see afterwards."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from streamlife.webhook import WebhookReceiver

from .payloads import segment_callback
from .test_webhook import MAX_BODY, TOKEN, assert_untouched, bench, encoded, padded_segment, snapshot, tid


@dataclass(frozen=True)
class AsgiAnswer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def call_asgi(
    receiver: WebhookReceiver,
    chunks: Sequence[bytes] = (b"",),
    *,
    method: str = "POST",
    path: str = f"/hooks/{TOKEN}",
    headers: Sequence[tuple[str, str]] = (("Content-Type", "application/json"),),
) -> AsgiAnswer:
    """Run one request through ``receiver.asgi``, the body in ``chunks`` (one http.request each)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers],
    }
    incoming = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    asyncio.run(receiver.asgi(scope, receive, send))
    start, body = sent
    assert start["type"] == "http.response.start"
    assert body["type"] == "http.response.body"
    assert not body.get("more_body", False)
    return AsgiAnswer(start["status"], dict(start["headers"]), body["body"])


def test_asgi_applies_a_valid_post() -> None:
    rig = bench()
    task = rig.start()
    answer = call_asgi(rig.receiver, [encoded(segment_callback(tid(task), 0))])
    assert answer.status == 200
    assert answer.json == {"outcome": "applied"}
    assert answer.headers[b"content-type"] == b"application/json"
    assert task.transcript_text() == "hello there"


def test_asgi_joins_a_body_sent_in_parts() -> None:
    rig = bench()
    task = rig.start()
    body = encoded(segment_callback(tid(task), 0))
    answer = call_asgi(rig.receiver, [body[:10], body[10:]])
    assert answer.status == 200
    assert answer.json == {"outcome": "applied"}
    assert task.transcript_text() == "hello there"


def test_asgi_joins_a_body_whose_last_part_is_empty() -> None:
    rig = bench()
    task = rig.start()
    body = encoded(segment_callback(tid(task), 0))
    assert call_asgi(rig.receiver, [body[:1], body[1:], b""]).json == {"outcome": "applied"}


def test_asgi_refuses_a_body_over_max_body_even_in_parts() -> None:
    rig = bench()
    body = padded_segment(tid(rig.start()), MAX_BODY + 1)
    before = snapshot(rig.fleet)
    for chunks in ([body], [body[:600], body[600:]]):
        answer = call_asgi(rig.receiver, chunks)
        assert answer.status == 413
        assert_untouched(before, snapshot(rig.fleet))


def test_asgi_takes_a_body_of_exactly_max_body_in_parts() -> None:
    rig = bench()
    body = padded_segment(tid(rig.start()), MAX_BODY)
    assert call_asgi(rig.receiver, [body[:600], body[600:]]).json == {"outcome": "applied"}


def test_asgi_answers_405_to_a_get() -> None:
    answer = call_asgi(bench().receiver, method="GET")
    assert answer.status == 405
    assert answer.headers[b"allow"] == b"POST"


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/hooks/not-the-token-at-all", (("Content-Type", "application/json"),)),
        ("/hooks", (("Authorization", "Bearer not-the-token-at-all"),)),
    ],
)
def test_asgi_answers_401_to_a_wrong_token(path: str, headers: tuple[tuple[str, str], ...]) -> None:
    rig = bench()
    task = rig.start()
    before = snapshot(rig.fleet)
    answer = call_asgi(rig.receiver, [encoded(segment_callback(tid(task), 0))], path=path, headers=headers)
    assert answer.status == 401
    assert_untouched(before, snapshot(rig.fleet))


def test_asgi_reads_the_token_from_a_header() -> None:
    rig = bench()
    task = rig.start()
    headers = (("Content-Type", "application/json"), ("X-Streamlife-Token", TOKEN))
    answer = call_asgi(rig.receiver, [encoded(segment_callback(tid(task), 0))], path="/", headers=headers)
    assert answer.json == {"outcome": "applied"}


def test_asgi_reads_a_body_without_a_content_type_as_json() -> None:
    rig = bench()
    task = rig.start()
    answer = call_asgi(rig.receiver, [encoded(segment_callback(tid(task), 0))], headers=())
    assert answer.json == {"outcome": "applied"}


def test_asgi_answers_415_and_400_as_wsgi_does() -> None:
    rig = bench()
    task = rig.start()
    before = snapshot(rig.fleet)
    text = call_asgi(
        rig.receiver, [encoded(segment_callback(tid(task), 0))], headers=(("Content-Type", "text/plain"),)
    )
    assert text.status == 415
    assert_untouched(before, snapshot(rig.fleet))
    broken = call_asgi(rig.receiver, [b"{"])
    assert broken.status == 400
    assert broken.json["field"] is None
    assert_untouched(before, snapshot(rig.fleet), malformed=1)


@pytest.mark.parametrize("scope_type", ["websocket", "lifespan"])
def test_asgi_refuses_a_scope_that_is_not_http(scope_type: str) -> None:
    receiver = bench().receiver
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": f"{scope_type}.connect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    with pytest.raises(ValueError, match=scope_type):
        asyncio.run(receiver.asgi({"type": scope_type}, receive, send))
    assert sent == []
