"""HttpTransport against hostile or broken servers, over real loopback sockets.

A server (or whatever sits between) may send a non-numeric Retry-After, drip its answer a
byte at a time, send an endless body or a gzip bomb, nest JSON without end, write megabytes of
message, echo the API key back, or redirect the request elsewhere. Each is bounded here: in time,
in memory, in what reaches an error's text, and in where the request goes.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import socket
import ssl
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
import requests
from structlog.testing import capture_logs

from streamlife import Fleet, ManualClock, StreamKind, TaskState
from streamlife.errors import (
    AuthError,
    MalformedAnswerError,
    OutcomeUnknownError,
    RateLimitedError,
    RedirectError,
    ServerError,
    TaskNotFoundError,
    TransportError,
)
from streamlife.transport import HttpTransport, RetryPolicy
from streamlife.transport._answers import MAX_MESSAGE, parse_retry_after
from tests.conftest import FakeTime
from tests.scripted_server import Answer, Raw, ScriptedServer, drip, error, ok, raw_head, scripted_server

# A key with characters that URL-encoding and JSON-escaping change, so each form differs.
KEY = "sk-mai/SECRET+test=key_0123456789"
PARAMS = {"audio_url": "rtmp://example.invalid/live", "provider": "assemblyai"}
MiB = 1024 * 1024
TLS = Path(__file__).resolve().parents[1] / "tls"  # a self-signed certificate for 127.0.0.1, for tests only
OK_BODY = json.dumps(
    {"code": 200, "message": "success", "data": {"task_id": "t-1", "message": "ok"}}
).encode()


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with scripted_server() as running:
        yield running


def transport(url: str, fake_time: FakeTime, **overrides: object) -> HttpTransport:
    options: dict[str, object] = {
        "base_url": url,
        "timeout": (1.0, 1.0),
        "retry": RetryPolicy(attempts=3, base=0.5, cap=4.0, deadline=30.0),
        "sleep": fake_time.sleep,
        "monotonic": fake_time.monotonic,
        "jitter": lambda: 1.0,
    }
    options.update(overrides)
    return HttpTransport(KEY, **options)  # type: ignore[arg-type]


def send(http: HttpTransport, operation: str) -> object:
    """A start or a stop (of task ``t-1``), as ``operation`` says."""
    if operation == "start":
        return http.start(StreamKind.AUDIO, PARAMS)
    return http.stop(StreamKind.AUDIO, "t-1")


def answer_bytes(status: int, body: bytes, **headers: str) -> bytes:
    return raw_head(status, Content_Type="application/json", Content_Length=str(len(body)), **headers) + body


# -- Retry-After -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("3", 3.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),  # not RFC 9110's grammar, but meant, and harmless to honour
        ("1000000000000", 1e12),  # finite: the real seconds (the Fleet caps it, the transport's deadline too)
        ("inf", None),
        ("Infinity", None),
        ("nan", None),
        ("-5", None),
        ("1e12", None),  # an exponent is no delay-seconds
        ("+5", None),
        ("5_000", None),
        ("0x10", None),
        ("9" * 400, None),  # float() of it is inf
        ("soon", None),
        ("", None),
    ],
)
def test_retry_after_is_only_a_finite_non_negative_number_or_a_date(
    server: ScriptedServer, fake_time: FakeTime, header: str, seconds: float | None
) -> None:
    server.then(error(429, "slow down", **{"Retry-After": header}))
    with pytest.raises(RateLimitedError) as raised:
        transport(server.url, fake_time).start(StreamKind.AUDIO, PARAMS)
    assert raised.value.retry_after == seconds


def test_retry_after_refuses_digits_that_are_not_ascii() -> None:
    assert parse_retry_after("\u0663") is None  # ARABIC-INDIC DIGIT THREE: float() would read it
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT") == 0.0  # a date gone by: no wait


def test_an_infinite_retry_after_does_not_stop_a_stop_from_being_retried(
    server: ScriptedServer, fake_time: FakeTime
) -> None:
    server.then(error(429, **{"Retry-After": "inf"}), ok("t-1"))
    assert transport(server.url, fake_time).stop(StreamKind.AUDIO, "t-1").task_id == "t-1"
    assert fake_time.sleeps == [0.5]  # the backoff: the garbage header counted for nothing


@pytest.mark.parametrize("header", ["1000000000000", "29.5", "25"])
def test_the_transport_never_sleeps_past_its_deadline_for_a_retry_after(
    server: ScriptedServer, fake_time: FakeTime, header: str
) -> None:
    server.then(*[error(429, **{"Retry-After": header})] * 5)
    http = transport(server.url, fake_time, retry=RetryPolicy(attempts=5, base=0.5, deadline=30.0))
    with pytest.raises(RateLimitedError):
        http.stop(StreamKind.AUDIO, "t-1")
    assert sum(fake_time.sleeps) < 30.0


# -- a deadline for the whole request ----------------------------------------------------------------
def dripping(where: str) -> Raw:
    """An answer sent one byte every 0.2 s (its headers too, or only its body): about 30 s."""
    whole = answer_bytes(200, OK_BODY)
    if where == "headers":
        return drip(whole, 0.2)
    head = whole[: -len(OK_BODY)]
    return Raw([head, *(OK_BODY[n : n + 1] for n in range(len(OK_BODY)))], 0.2)


@pytest.mark.parametrize("where", ["headers", "body"])
@pytest.mark.parametrize("operation", ["start", "stop"])
def test_a_dripping_server_cannot_hold_a_request_past_its_deadline(
    server: ScriptedServer, where: str, operation: str
) -> None:
    server.then(dripping(where), dripping(where))
    http = HttpTransport(
        KEY, base_url=server.url, timeout=(1.0, 1.0), retry=RetryPolicy(attempts=3, base=0.01, deadline=2.0)
    )
    began = time.monotonic()
    with pytest.raises(OutcomeUnknownError, match="deadline"):
        send(http, operation)
    assert time.monotonic() - began < 2.0 + 2.0  # each read came within the 1 s read timeout
    assert len(server.requests) == 1  # a start is never sent twice; a stop had no time left


@contextmanager
def tls_server_that_drips() -> Iterator[str]:
    """An HTTPS server that reads one request, then drips a whole answer a byte every 0.2 s."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(TLS / "cert.pem", TLS / "key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    answer = answer_bytes(200, OK_BODY)

    def serve() -> None:
        raw, _ = listener.accept()
        with contextlib.suppress(OSError), context.wrap_socket(raw, server_side=True) as conn:
            conn.recv(65536)
            for n in range(len(answer)):
                conn.sendall(answer[n : n + 1])
                time.sleep(0.2)

    thread = threading.Thread(target=serve, name="tls-drip-server", daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()
        thread.join(timeout=10)


def test_a_dripping_server_cannot_hold_a_request_past_its_deadline_over_tls() -> None:
    session = requests.Session()
    session.trust_env = False
    session.verify = str(TLS / "cert.pem")
    with tls_server_that_drips() as url:
        http = HttpTransport(
            KEY, base_url=url, session=session, retry=RetryPolicy(attempts=3, base=0.01, deadline=2.0)
        )
        began = time.monotonic()
        with pytest.raises(OutcomeUnknownError, match="deadline"):
            http.start(StreamKind.AUDIO, PARAMS)
        assert time.monotonic() - began < 2.0 + 2.0


def test_total_timeout_bounds_each_request_within_a_longer_deadline(server: ScriptedServer) -> None:
    server.then(dripping("body"), dripping("body"))
    http = HttpTransport(
        KEY,
        base_url=server.url,
        timeout=(1.0, 1.0),
        total_timeout=1.0,
        retry=RetryPolicy(attempts=2, base=0.01, deadline=60.0),
    )
    began = time.monotonic()
    with pytest.raises(OutcomeUnknownError, match="deadline"):
        http.stop(StreamKind.AUDIO, "t-1")
    assert time.monotonic() - began < 2 * 1.0 + 2.0
    assert len(server.requests) == 2  # the stop was tried again, as any lost answer is


def test_a_prompt_answer_is_not_cut_by_the_deadline(server: ScriptedServer) -> None:
    server.then(*[ok("t-1")] * 20)
    http = HttpTransport(KEY, base_url=server.url, total_timeout=0.5)
    for _ in range(20):  # a reused connection is not shut down by an earlier request's timer
        assert http.stop(StreamKind.AUDIO, "t-1").task_id == "t-1"
        time.sleep(0.03)


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan")])
def test_a_bad_total_timeout_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="total_timeout"):
        HttpTransport(KEY, total_timeout=bad)


# -- answers read within a size limit ----------------------------------------------------------------
def endless_body() -> Raw:
    """64 MiB of JSON-looking bytes with no length: the server closes when it is done."""
    piece = b"[" + b"0," * (32 * 1024 - 1) + b"0"
    return Raw([raw_head(200, Content_Type="application/json"), *[piece] * 1024])


@cache
def gzip_bomb() -> bytes:
    """128 MiB of spaces, gzipped to well under 1 MiB."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    spaces = b" " * MiB
    return b"".join([*(packer.compress(spaces) for _ in range(128)), packer.flush()])


def peak_memory_of(call: object) -> int:
    """The peak of Python's allocations while ``call()`` runs (it is expected to raise)."""
    tracemalloc.start()
    try:
        with pytest.raises(MalformedAnswerError, match="max_answer") as raised:
            call()  # type: ignore[operator]
        assert raised.value.operation == "audio.start"
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_an_endless_body_is_cut_at_max_answer_in_little_memory(
    server: ScriptedServer, fake_time: FakeTime
) -> None:
    server.then(endless_body(), ok())
    http = transport(server.url, fake_time)
    assert peak_memory_of(lambda: http.start(StreamKind.AUDIO, PARAMS)) < 16 * MiB
    assert len(server.requests) == 1  # a start that may exist is never sent again


def test_a_gzip_bomb_is_cut_at_max_answer_in_little_memory(
    server: ScriptedServer, fake_time: FakeTime
) -> None:
    bomb = gzip_bomb()
    server.then(Raw([answer_bytes(200, bomb, Content_Encoding="gzip")]))
    http = transport(server.url, fake_time)
    assert len(bomb) < MiB
    assert peak_memory_of(lambda: http.start(StreamKind.AUDIO, PARAMS)) < 16 * MiB


def test_max_answer_is_the_size_after_decompression(server: ScriptedServer, fake_time: FakeTime) -> None:
    padded = json.dumps({"code": 200, "data": {"task_id": "t-1"}, "pad": " " * 5000}).encode()
    server.then(Raw([answer_bytes(200, gzip.compress(padded), Content_Encoding="gzip")]))
    server.then(Raw([answer_bytes(200, zlib.compress(padded), Content_Encoding="deflate")]))
    server.then(Raw([answer_bytes(200, gzip.compress(padded), Content_Encoding="gzip")]))
    assert (
        transport(server.url, fake_time, max_answer=len(padded)).start(StreamKind.AUDIO, PARAMS).task_id
        == "t-1"
    )
    assert (
        transport(server.url, fake_time, max_answer=len(padded)).start(StreamKind.AUDIO, PARAMS).task_id
        == "t-1"
    )
    with pytest.raises(MalformedAnswerError, match="max_answer"):
        transport(server.url, fake_time, max_answer=len(padded) - 1).start(StreamKind.AUDIO, PARAMS)
    assert server.requests[0].headers["Accept-Encoding"] == "gzip, deflate"


@pytest.mark.parametrize(
    ("body", "headers", "problem"),
    [
        (b"\x1f\x8b\x08\x00garbage, not a deflate stream", {"Content_Encoding": "gzip"}, "corrupt"),
        (gzip.compress(OK_BODY)[:-12], {"Content_Encoding": "gzip"}, "cut short"),
        (gzip.compress(OK_BODY) + b"trailing", {"Content_Encoding": "gzip"}, "after its end"),
        (OK_BODY, {"Content_Encoding": "br"}, "not asked for"),
        (b"[" * 100_000 + b"]" * 100_000, {}, "not a JSON object"),
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, {}, "not a JSON object"),
        (b'{"code": 200, "data": {"task_id": "\xff\xfe"}}', {}, "not a JSON object"),  # not UTF-8
        (b'{"code": 200, "data": {"task_id": "\\ud800"}}', {}, "not a JSON object"),  # a lone surrogate
    ],
)
def test_every_malformed_answer_to_a_start_is_a_typed_unknown_outcome(
    server: ScriptedServer, fake_time: FakeTime, body: bytes, headers: dict[str, str], problem: str
) -> None:
    server.then(Raw([answer_bytes(200, body, **headers)]), ok())
    with pytest.raises(MalformedAnswerError, match=problem) as raised:
        transport(server.url, fake_time).start(StreamKind.AUDIO, PARAMS)
    assert isinstance(raised.value, OutcomeUnknownError)  # a stream may exist
    assert raised.value.status == 200
    assert len(server.requests) == 1


def test_a_malformed_answer_to_a_stop_is_retried(server: ScriptedServer, fake_time: FakeTime) -> None:
    bomb = gzip_bomb()
    server.then(
        endless_body(),
        Raw([answer_bytes(400, bomb, Content_Encoding="gzip")]),  # a 400 not read whole is no "not found"
        Raw([answer_bytes(200, b"[" * 100_000)]),
        ok("t-1", "stopped"),
    )
    # One attempt to spare: the scripted server closes each connection after a raw answer, and the
    # client may take the closed one from its pool before it sees the close (a lost connection,
    # retried like any), which reaches no server.
    result = transport(server.url, fake_time, retry=RetryPolicy(attempts=5, base=0.5)).stop(
        StreamKind.AUDIO, "t-1"
    )
    assert result.message == "stopped"
    assert len(server.requests) == 4


def test_an_error_whose_body_is_no_json_is_still_read_by_its_status(
    server: ScriptedServer, fake_time: FakeTime
) -> None:
    server.then(Raw([answer_bytes(502, b"[" * 100_000)]))
    with pytest.raises(ServerError):  # a proxy's page, or worse: the status says what happened
        transport(server.url, fake_time).start(StreamKind.AUDIO, PARAMS)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "1024"])
def test_a_bad_max_answer_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="max_answer"):
        HttpTransport(KEY, max_answer=bad)  # type: ignore[arg-type]


# -- the server's words, capped and scrubbed ---------------------------------------------------------
def test_a_huge_server_message_is_cut_and_marked(server: ScriptedServer, fake_time: FakeTime) -> None:
    server.then(*[error(500, "x" * 900_000)] * 3)  # within the default max_answer
    http = transport(server.url, fake_time)
    with capture_logs() as logs, pytest.raises(ServerError) as raised:
        http.stop(StreamKind.AUDIO, "t-1")
    text = str(raised.value)
    assert "x" * MAX_MESSAGE in text
    assert len(text) < MAX_MESSAGE + 200
    assert f"{900_000 - MAX_MESSAGE} more characters cut" in text
    assert len(repr(logs)) < 10_000  # the retries were logged without the message


def test_a_huge_code_is_cut_and_control_characters_are_kept(
    server: ScriptedServer, fake_time: FakeTime
) -> None:
    server.then(Answer(418, {"code": "7" * 5000, "msg": "bell\x07 escape\x1b[31m nul\x00"}))
    with pytest.raises(TransportError) as raised:
        transport(server.url, fake_time).start(StreamKind.AUDIO, PARAMS)
    assert "bell\x07 escape\x1b[31m nul\x00" in str(raised.value)  # the CLI escapes on display
    assert getattr(raised.value, "code", "").startswith("7" * MAX_MESSAGE + "…")
    assert len(str(raised.value)) < 2 * MAX_MESSAGE + 200


ECHOES = [
    KEY,
    quote(KEY, safe=""),
    re.sub("%[0-9A-F]{2}", lambda hit: hit.group().lower(), quote(KEY, safe="")),  # lower-case hex
    quote_plus(KEY),
    KEY.replace("/", "\\/"),  # JSON-escaped, as some encoders write "/"
]


def key_forms_in(text: str) -> list[str]:
    return [form for form in ECHOES if form in text]


@pytest.mark.parametrize(
    ("operation", "status", "expected"),
    [
        ("start", 401, AuthError),
        ("start", 429, RateLimitedError),
        ("stop", 500, ServerError),
        ("stop", 400, TaskNotFoundError),
    ],
)
@pytest.mark.parametrize("echo", ECHOES)
def test_the_key_echoed_by_the_server_is_scrubbed_from_errors_and_logs(
    server: ScriptedServer,
    fake_time: FakeTime,
    operation: str,
    status: int,
    expected: type[TransportError],
    echo: str,
) -> None:
    echoed = Answer(status, {"code": status, "msg": f"invalid api key: {echo} (was {echo})", "data": None})
    server.then(*[echoed] * 3)
    http = transport(server.url, fake_time)
    with capture_logs() as logs, pytest.raises(expected) as raised:
        send(http, operation)
    error_text = " ".join([str(raised.value), repr(raised.value), repr(raised.value.args), repr(logs)])
    assert key_forms_in(error_text) == []
    assert "invalid api key: <redacted> (was <redacted>)" in str(raised.value)


def test_the_key_in_the_code_field_is_scrubbed_too(server: ScriptedServer, fake_time: FakeTime) -> None:
    server.then(Answer(401, {"code": KEY, "msg": "no"}))
    with pytest.raises(AuthError) as raised:
        transport(server.url, fake_time).start(StreamKind.AUDIO, PARAMS)
    assert raised.value.code == "<redacted>"
    assert KEY not in str(raised.value)


def test_a_key_echoed_past_the_cut_leaves_no_part_of_it(server: ScriptedServer, fake_time: FakeTime) -> None:
    server.then(error(401, "y" * (MAX_MESSAGE - 5) + KEY))
    with pytest.raises(AuthError) as raised:
        transport(server.url, fake_time).start(StreamKind.AUDIO, PARAMS)
    assert KEY[:5] not in str(raised.value)


def test_a_fleet_never_records_the_echoed_key(server: ScriptedServer, clock: ManualClock) -> None:
    server.then(error(401, f"invalid api key: {KEY}"))
    http = HttpTransport(KEY, base_url=server.url)
    task = Fleet(http, clock=clock).start("audio", audio_url=PARAMS["audio_url"], provider="assemblyai")
    assert task.last_error is not None
    assert key_forms_in(task.last_error) == []
    assert "<redacted>" in task.last_error


# -- redirects are never followed --------------------------------------------------------------------
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirected_start_is_not_followed_and_may_have_made_a_stream(
    server: ScriptedServer, fake_time: FakeTime, status: int
) -> None:
    with scripted_server() as elsewhere:
        elsewhere.then(ok("elsewhere"), ok("elsewhere"))
        server.then(Answer(status, None, {"Location": elsewhere.url + "/audio-stream/start"}), ok())
        with pytest.raises(RedirectError) as raised:
            transport(server.url, fake_time).start(StreamKind.AUDIO, PARAMS)
        assert elsewhere.requests == []  # neither the body (its stream URL) nor a GET went there
    assert isinstance(raised.value, OutcomeUnknownError)
    assert raised.value.status == status
    assert len(server.requests) == 1


def test_a_redirected_stop_did_not_land_and_is_retried(server: ScriptedServer, fake_time: FakeTime) -> None:
    with scripted_server() as elsewhere:
        elsewhere.then(ok("elsewhere"))
        server.then(
            Answer(307, None, {"Location": elsewhere.url + "/audio-stream/stop"}), ok("t-1", "stopped")
        )
        result = transport(server.url, fake_time).stop(StreamKind.AUDIO, "t-1")
        assert elsewhere.requests == []
    assert result.message == "stopped"
    assert len(server.requests) == 2
    assert not issubclass(RedirectError, TaskNotFoundError)


def test_a_fleet_treats_a_redirected_start_as_uncertain(server: ScriptedServer, clock: ManualClock) -> None:
    with scripted_server() as elsewhere:
        server.then(Answer(307, None, {"Location": elsewhere.url + "/audio-stream/start"}))
        http = HttpTransport(KEY, base_url=server.url)
        task = Fleet(http, clock=clock).start("audio", audio_url=PARAMS["audio_url"], provider="assemblyai")
        assert elsewhere.requests == []
    assert task.state is TaskState.UNCERTAIN  # not FAILED: a stream may exist, and is looked for
    assert task.last_error is not None
    assert task.last_error.startswith("RedirectError")
    assert len(server.requests) == 1


# -- answers that put the connection out of step, or nest where a code belongs ------------------------
@pytest.mark.parametrize("where", ["code", "data.status"])
@pytest.mark.parametrize("operation", ["start", "stop"])
def test_a_code_nested_a_thousand_deep_is_no_code_not_a_recursion_error(
    server: ScriptedServer, fake_time: FakeTime, where: str, operation: str
) -> None:
    nested = "[" * 1000 + "]" * 1000
    body = f'{{"code":{nested}}}' if where == "code" else f'{{"data":{{"status":{nested}}}}}'
    server.then(Raw([answer_bytes(500, body.encode())]))
    with pytest.raises(TransportError):
        send(transport(server.url, fake_time, retry=RetryPolicy(attempts=1)), operation)


@contextmanager
def answers_early_hints_first() -> Iterator[str]:
    """A keep-alive server that answers its first request with a 103 and, a moment later, the real
    200 (task A); every later request, on whatever connection, with task B."""
    listener = socket.create_server(("127.0.0.1", 0))
    served = 0

    def body(task_id: str) -> bytes:
        return json.dumps({"code": 200, "data": {"task_id": task_id, "message": "ok"}}).encode()

    def read_request(conn: socket.socket) -> bool:
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            request += chunk
        head, _, rest = request.partition(b"\r\n\r\n")
        found = re.search(rb"(?i)content-length: *(\d+)", head)
        while found is not None and len(rest) < int(found.group(1)):
            rest += conn.recv(65536)
        return True

    def handle(conn: socket.socket) -> None:
        nonlocal served
        with conn, contextlib.suppress(OSError):
            while read_request(conn):
                served += 1
                if served == 1:
                    conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n")
                    time.sleep(0.3)
                    conn.sendall(answer_bytes(200, body("A-from-start")))
                else:
                    conn.sendall(answer_bytes(200, body("B")))

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def test_an_interim_answer_is_refused_and_its_connection_never_reused(fake_time: FakeTime) -> None:
    """http.client takes a 103 for the final answer. Its connection must not go back to the pool:
    the next request on it would read the real answer to this one as its own."""
    with answers_early_hints_first() as url:
        http = transport(url, fake_time, retry=RetryPolicy(attempts=1))
        with pytest.raises(MalformedAnswerError):
            http.start(StreamKind.AUDIO, PARAMS)
        # At once: the real answer to the start is still on its way, on the old connection.
        assert http.stop(StreamKind.AUDIO, "B").task_id == "B"
