"""The receiver's ASGI face: one request at a time through ``receiver.asgi``, as an ASGI server
would make it, and what the sender and the Fleet see afterwards."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from streamlife import Fleet, Outcome, Policy, webhook
from streamlife.protocol import segment_callback
from streamlife.sim import SimTransport, SimulatedService
from streamlife.store.base import NO_DUE, Due, JournalEntry, TaskRow
from streamlife.store.memory import MemoryStore, _Txn
from streamlife.webhook import ASGI_THREADS, WebhookReceiver

from .test_webhook import (
    MAX_BODY,
    TIMEOUT,
    TOKEN,
    URL,
    assert_untouched,
    bench,
    encoded,
    padded_segment,
    snapshot,
    tid,
)

JSON_HEADERS = (("Content-Type", "application/json"),)


@dataclass(frozen=True)
class AsgiAnswer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def call_asgi(receiver: WebhookReceiver, chunks: Sequence[bytes] = (b"",), **request: Any) -> AsgiAnswer:
    """``exchange``, in an event loop of its own."""
    return asyncio.run(exchange(receiver, chunks, **request))


async def exchange(
    receiver: WebhookReceiver,
    chunks: Sequence[bytes] = (b"",),
    *,
    method: str = "POST",
    path: str = f"/hooks/{TOKEN}",
    headers: Sequence[tuple[str, str]] = JSON_HEADERS,
    raw_headers: Sequence[tuple[bytes, bytes]] = (),
) -> AsgiAnswer:
    """One request through ``receiver.asgi``, the body in ``chunks`` (one http.request each);
    ``raw_headers`` are sent as they are, after ``headers``."""
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
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers] + list(raw_headers),
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

    await receiver.asgi(scope, receive, send)
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


@pytest.mark.parametrize(
    "headers",
    [
        (("Authorization", f"Bearer {TOKEN}"),),
        (("AUTHORIZATION", f"bEaReR {TOKEN}"),),
        (("X-STREAMLIFE-TOKEN", TOKEN), ("Content-Type", "application/json")),
        (("X-Streamlife-Token", "not-the-token-at-all"), ("Authorization", f"Bearer {TOKEN}")),
    ],
)
def test_asgi_reads_the_token_from_any_header_in_any_case(headers: tuple[tuple[str, str], ...]) -> None:
    rig = bench()
    task = rig.start()
    answer = call_asgi(rig.receiver, [encoded(segment_callback(tid(task), 0))], path="/", headers=headers)
    assert answer.json == {"outcome": "applied"}


def test_asgi_refuses_a_bearer_that_is_not_the_token_given_beside_other_headers() -> None:
    rig = bench()
    task = rig.start()
    before = snapshot(rig.fleet)
    headers = (("X-Other", TOKEN), ("Authorization", f"Basic {TOKEN}"), ("Content-Type", "application/json"))
    answer = call_asgi(rig.receiver, [encoded(segment_callback(tid(task), 0))], path="/", headers=headers)
    assert answer.status == 401
    assert_untouched(before, snapshot(rig.fleet))


def test_asgi_reads_a_non_ascii_token_as_the_other_faces_do() -> None:
    token = "t\u00f6ken-t\u00f6ken-0123456789abcdef"
    rig = bench(token=token)
    task = rig.start()
    sent = token.encode("latin-1")  # what requests and http.client send for a str value
    asgi = call_asgi(
        rig.receiver,
        [encoded(segment_callback(tid(task), 0))],
        path="/",
        raw_headers=[(b"x-streamlife-token", sent)],
    )
    handled = rig.receiver.handle(
        encoded(segment_callback(tid(task), 1)), {"X-Streamlife-Token": sent.decode("latin-1")}, "/"
    )
    assert (asgi.status, handled.status) == (200, 200)
    refused = call_asgi(
        rig.receiver,
        [encoded(segment_callback(tid(task), 2))],
        path="/",
        raw_headers=[(b"authorization", b"Bearer " + token.encode())],  # UTF-8: not what WSGI takes
    )
    assert refused.status == 401


class Closed(WebhookReceiver):
    """A receiver that turns every request away in its own ``authorized``."""

    def authorized(self, path: str, headers: Mapping[str, str]) -> bool:
        return False


def test_asgi_asks_a_subclass_its_own_authorized() -> None:
    rig = bench()
    task = rig.start()
    receiver = Closed(rig.fleet, token=TOKEN, max_body=MAX_BODY)
    before = snapshot(rig.fleet)
    answer = call_asgi(receiver, [encoded(segment_callback(tid(task), 0))])
    assert answer.status == 401
    assert (
        receiver.handle(encoded(segment_callback(tid(task), 0)), dict(JSON_HEADERS), f"/hooks/{TOKEN}").status
        == 401
    )
    assert_untouched(before, snapshot(rig.fleet))


class Seeing(WebhookReceiver):
    """A receiver that notes the headers its ``apply`` is given."""

    seen: list[dict[str, str]]

    def apply(self, body: bytes, headers: Mapping[str, str], path: str | None = None) -> webhook.Response:
        self.seen.append(dict(headers))
        return super().apply(body, headers, path)


def test_asgi_gives_apply_every_header_of_the_request() -> None:
    rig = bench()
    task = rig.start()
    receiver = Seeing(rig.fleet, token=TOKEN, max_body=MAX_BODY)
    receiver.seen = []
    headers = (*JSON_HEADERS, ("X-Request-Id", "req-7"))
    answer = call_asgi(receiver, [encoded(segment_callback(tid(task), 0))], headers=headers)
    assert answer.json == {"outcome": "applied"}
    assert receiver.seen == [{"content-type": "application/json", "x-request-id": "req-7"}]


BYTES_WARNING_SCRIPT = """
import asyncio
from streamlife import Fleet, Policy
from streamlife.sim import SimTransport, SimulatedService
from streamlife.webhook import WebhookReceiver

token = "bytes-warning-token-0123456789"
receiver = WebhookReceiver(Fleet(SimTransport(SimulatedService()), policy=Policy(seed=0)), token=token)

async def post() -> int:
    scope = {"type": "http", "method": "POST", "path": "/" + token, "root_path": "",
             "headers": [(b"content-type", b"application/json")]}
    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}
    sent = []
    async def send(message):
        sent.append(message)
    await receiver.asgi(scope, receive, send)
    return sent[0]["status"]

print(asyncio.run(post()), receiver.handle(b"{}", {"Content-Type": "application/json"}, "/" + token).status)
"""


def test_a_content_type_seen_by_both_faces_raises_no_bytes_warning() -> None:
    # python -bb makes comparing bytes with str an error: the faces keep str and bytes apart.
    done = subprocess.run(
        [sys.executable, "-bb", "-c", BYTES_WARNING_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["400", "400"]


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


def test_asgi_answers_each_content_type_and_header_alike_however_many_clients_invent() -> None:
    # The ASGI face remembers what it worked out of a Content-Type: a stream of new ones (and of
    # new header names) must neither grow that without bound nor change an answer.
    rig = bench()
    task = rig.start()
    for n in range(400):
        json_type, other = f"application/x-{n}+json; charset=utf-8", f"text/x-{n}"
        headers = ((f"X-Header-{n}", "1"), ("Content-Type", json_type if n % 2 else other))
        answer = call_asgi(rig.receiver, [encoded(segment_callback(tid(task), n))], headers=headers)
        assert answer.status == (200 if n % 2 else 415), n
    assert len(webhook._JSON_TYPES) <= webhook._JSON_TYPES_KEPT
    again = call_asgi(rig.receiver, [b"{}"], headers=(("Content-Type", "text/x-0"),))
    assert again.status == 415


def test_asgi_reads_header_names_in_any_case() -> None:
    # ASGI servers lower-case header names; one that does not is read the same.
    rig = bench()
    task = rig.start()
    body = encoded(segment_callback(tid(task), 0))

    async def once(headers: list[tuple[bytes, bytes]]) -> int:
        scope = {"type": "http", "method": "POST", "path": f"/hooks/{TOKEN}", "headers": headers}
        sent: list[MutableMapping[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        await rig.receiver.asgi(scope, receive, send)
        return int(sent[0]["status"])

    assert asyncio.run(once([(b"Content-Type", b"text/plain")])) == 415
    assert asyncio.run(once([(b"CONTENT-TYPE", b"Application/JSON")])) == 200


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


# -- the event loop is never blocked -----------------------------------------------------------------
STALL = 2.0  # real seconds a stalled write waits to be released before it goes on regardless
BEAT = 0.01  # seconds between the heartbeat's beats


class StallingStore(MemoryStore):
    """A MemoryStore whose journal writes, once ``stalling``, wait for ``release``: a database that
    takes its time (a PostgreSQL round trip, SQLite waiting for its lock)."""

    def __init__(self) -> None:
        super().__init__()
        self.stalling = False
        self.writing = threading.Event()
        self.release = threading.Event()
        self.released_in_time: bool | None = None

    def lock(self, key: str) -> _Txn:
        return _StallingTxn(self, key)


class _StallingTxn(_Txn):
    def write(self, entries: Sequence[JournalEntry], row: TaskRow | None, due: Due = NO_DUE) -> None:
        store = self.store
        assert isinstance(store, StallingStore)
        if store.stalling:
            store.writing.set()
            store.released_in_time = store.release.wait(STALL)
        super().write(entries, row, due)


async def until(condition: Callable[[], bool]) -> None:
    """Sleep on the event loop until ``condition`` holds (``TIMEOUT`` at most)."""
    async with asyncio.timeout(TIMEOUT):
        while not condition():
            await asyncio.sleep(BEAT)


async def beats_while_the_write_stalls(receiver: WebhookReceiver, body: bytes, store: StallingStore) -> int:
    """Serve one callback while a heartbeat runs on the same loop. Once the callback's write has
    stalled, wait for three more beats, then release the write: only a loop the write does not
    block can do that. Returns the beats counted while the write stalled."""
    beats = 0

    async def heartbeat() -> None:
        nonlocal beats
        while True:
            await asyncio.sleep(BEAT)
            beats += 1

    beating = asyncio.create_task(heartbeat())
    request = asyncio.create_task(exchange(receiver, [body]))
    await until(store.writing.is_set)
    stalled_at = beats
    await until(lambda: beats >= stalled_at + 3)
    store.release.set()
    answer = await request
    beating.cancel()
    assert answer.json == {"outcome": "applied"}
    return beats - stalled_at


def test_asgi_applies_a_callback_in_a_thread_while_the_event_loop_runs_on() -> None:
    store = StallingStore()
    fleet = Fleet(SimTransport(SimulatedService()), policy=Policy(stop_concurrency=0, seed=0), store=store)
    receiver = WebhookReceiver(fleet, token=TOKEN)
    task = fleet.start("audio", audio_url=URL, provider="assemblyai")
    store.stalling = True
    beats = asyncio.run(
        beats_while_the_write_stalls(receiver, encoded(segment_callback(tid(task), 0)), store)
    )
    assert store.released_in_time  # the loop released the write: the write did not hold the loop
    assert beats >= 3
    assert task.transcript_text() == "hello there"


class GatedSink:
    """A sink whose callbacks wait at a gate; it counts how many wait there at once."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.inside = 0
        self.most_inside = 0
        self._lock = threading.Lock()

    def handle_callback(self, payload: bytes) -> Outcome:
        with self._lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        self.gate.wait(STALL)
        with self._lock:
            self.inside -= 1
        return Outcome.APPLIED


def test_asgi_applies_at_most_asgi_threads_callbacks_at_once() -> None:
    sink = GatedSink()
    receiver = WebhookReceiver(sink, token=TOKEN)
    requests = ASGI_THREADS + 4

    async def flood() -> list[AsgiAnswer]:
        answers = [asyncio.create_task(exchange(receiver, [b"{}"])) for _ in range(requests)]
        await until(lambda: sink.inside == ASGI_THREADS)
        await asyncio.sleep(10 * BEAT)  # room for one too many, were the bound missing
        sink.gate.set()
        return list(await asyncio.gather(*answers))

    answers = asyncio.run(flood())
    assert [answer.json for answer in answers] == [{"outcome": "applied"}] * requests
    assert sink.most_inside == ASGI_THREADS


REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("REQUEST_ID", default="none")


class ContextReadingSink:
    """A sink that notes the request id its caller set, as a log line bound to it would show it."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def handle_callback(self, payload: bytes) -> Outcome:
        self.seen.append(REQUEST_ID.get())
        return Outcome.APPLIED


def test_asgi_applies_a_callback_in_the_context_of_its_request() -> None:
    sink = ContextReadingSink()
    receiver = WebhookReceiver(sink, token=TOKEN)

    async def one_request() -> AsgiAnswer:
        REQUEST_ID.set("request-7")
        return await exchange(receiver, [b"{}"])

    assert asyncio.run(one_request()).json == {"outcome": "applied"}
    assert sink.seen == ["request-7"]


# -- recognised as ASGI 3 ----------------------------------------------------------------------------
def uvicorn_sees_asgi3(app: object) -> bool:
    """How uvicorn tells an ASGI 3 application from an ASGI 2 one when its ``interface`` is "auto":
    ``uvicorn.config.Config.load``, copied here because uvicorn is not installed. An application it
    takes for ASGI 2 is called with the scope alone, and every request is answered 500."""
    if inspect.isclass(app):
        return hasattr(app, "__await__")
    if inspect.isfunction(app):
        return inspect.iscoroutinefunction(app)
    call = getattr(app, "__call__", None)  # noqa: B004 (uvicorn's own test, as it is)
    return inspect.iscoroutinefunction(call)


def test_uvicorn_recognises_the_asgi_face_as_asgi3() -> None:
    assert uvicorn_sees_asgi3(bench().receiver.asgi)


def test_uvicorn_does_not_take_the_asgi_face_for_a_factory() -> None:
    """Loading an application from a string, uvicorn calls it with no arguments to see whether it is
    a factory; a TypeError tells it that it is not."""
    with pytest.raises(TypeError):
        _ = bench().receiver.asgi()  # type: ignore[call-arg]
