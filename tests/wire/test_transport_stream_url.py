"""The stream URL of a start never reaches an error, a log or the store, however a server echoes it.

A stream URL often carries a stream key (in its path, its query or its user info): it is as secret
as the API key. A server that refuses a start may quote it back ("cannot pull rtmp://..."), whole,
percent-encoded, JSON-escaped, or only the part it could not use. Real servers on loopback here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from urllib.parse import quote, quote_plus

import pytest
from structlog.testing import capture_logs

from streamlife import Fleet, ManualClock, StreamKind, TaskState
from streamlife.errors import RejectedError, ServerError, TransportError
from streamlife.transport import HttpTransport, RetryPolicy
from streamlife.transport._answers import stream_url_secrets
from tests.conftest import FakeTime
from tests.scripted_server import Answer, ScriptedServer, scripted_server

KEY = "sk-mai-SECRET-test-key-0123456789"
# Each secret part has characters that URL-encoding or JSON-escaping change, so each form differs.
STREAM_KEY = "live_Str3amK3y+abc=xyz"
TOKEN = "T0ken/Query+value"
PASSWORD = "Pa55:w0rd/long"
URL = (
    f"rtmp://publisher:{quote(PASSWORD, safe='')}@ingest.example.invalid/app/{STREAM_KEY}"
    f"?token={quote(TOKEN, safe='')}&hd=1"
)
SECRET_PARTS = [URL, STREAM_KEY, TOKEN, PASSWORD]


def forms_of(text: str) -> list[str]:
    """``text`` as a server may write it back."""
    percent = quote(text, safe="")
    return [
        text,
        percent,
        re.sub("%[0-9A-F]{2}", lambda hit: hit.group().lower(), percent),
        quote(text, safe="/"),
        quote_plus(text),
        json.dumps(text)[1:-1],
        json.dumps(text)[1:-1].replace("/", "\\/"),
    ]


LEAKS = sorted({form for part in SECRET_PARTS for form in forms_of(part)}, key=len, reverse=True)
ECHOES = {
    "whole": URL,
    "percent-encoded": quote(URL, safe=""),
    "percent-encoded, lower-case hex": forms_of(URL)[2],
    "form-encoded": quote_plus(URL),
    "JSON-escaped": URL.replace("/", "\\/"),
    "the stream key alone": STREAM_KEY,
    "the stream key, percent-encoded": quote(STREAM_KEY, safe=""),
    "the path alone": f"/app/{STREAM_KEY}",
    "the token alone": TOKEN,
    "the token, JSON-escaped": TOKEN.replace("/", "\\/"),
    "the password alone": PASSWORD,
}


def leaks_in(text: str) -> list[str]:
    return [form for form in LEAKS if form in text]


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with scripted_server() as running:
        yield running


def transport(url: str, fake_time: FakeTime) -> HttpTransport:
    return HttpTransport(
        KEY,
        base_url=url,
        timeout=(1.0, 1.0),
        retry=RetryPolicy(attempts=3, base=0.5, deadline=30.0),
        sleep=fake_time.sleep,
        monotonic=fake_time.monotonic,
    )


def refusal(status: int, echo: str) -> Answer:
    return Answer(status, {"code": status, "msg": f"cannot pull {echo} (stream {echo})", "data": None})


@pytest.mark.parametrize(
    ("status", "expected"), [(400, RejectedError), (422, RejectedError), (500, ServerError)]
)
@pytest.mark.parametrize("echo", list(ECHOES.values()), ids=list(ECHOES))
@pytest.mark.parametrize(("kind", "field"), [(StreamKind.AUDIO, "audio_url"), (StreamKind.VIDEO, "url")])
def test_the_stream_url_echoed_by_the_server_is_scrubbed_from_errors_and_logs(
    server: ScriptedServer,
    fake_time: FakeTime,
    status: int,
    expected: type[TransportError],
    echo: str,
    kind: StreamKind,
    field: str,
) -> None:
    server.then(refusal(status, echo))
    params = {field: URL, "provider": "assemblyai"} if kind is StreamKind.AUDIO else {field: URL}
    with capture_logs() as logs, pytest.raises(expected) as raised:
        transport(server.url, fake_time).start(kind, params)
    everything = " ".join([str(raised.value), repr(raised.value), repr(raised.value.args), repr(logs)])
    assert leaks_in(everything) == []
    assert "cannot pull " in str(raised.value)
    assert "<redacted>" in str(raised.value)
    assert server.requests[0].body[field] == URL  # the service itself was sent the URL


def test_the_stream_url_in_the_code_field_is_scrubbed_too(
    server: ScriptedServer, fake_time: FakeTime
) -> None:
    server.then(Answer(422, {"code": STREAM_KEY, "msg": "no"}))
    with pytest.raises(RejectedError) as raised:
        transport(server.url, fake_time).start(StreamKind.VIDEO, {"url": URL})
    assert raised.value.code == "<redacted>"
    assert leaks_in(str(raised.value)) == []


@pytest.mark.parametrize(
    ("status", "state"),
    [
        (400, TaskState.FAILED),
        (422, TaskState.FAILED),
        (500, TaskState.UNCERTAIN),
    ],  # a 5xx may have started one
)
@pytest.mark.parametrize("echo", list(ECHOES.values()), ids=list(ECHOES))
def test_a_fleet_never_records_the_echoed_stream_url(
    server: ScriptedServer, clock: ManualClock, status: int, state: TaskState, echo: str
) -> None:
    server.then(refusal(status, echo))
    fleet = Fleet(HttpTransport(KEY, base_url=server.url), clock=clock)
    with capture_logs() as logs:
        task = fleet.start("audio", audio_url=URL, provider="assemblyai")
    assert task.state is state
    assert task.last_error is not None
    assert "<redacted>" in task.last_error
    recorded = [task.last_error, repr(task), repr(fleet.journal(task)), repr(logs)]
    recorded += [repr(entry.args) for entry in fleet.journal(task)]
    assert leaks_in(" ".join(recorded)) == []


def test_the_api_key_is_still_scrubbed_beside_the_stream_url(
    server: ScriptedServer, fake_time: FakeTime
) -> None:
    server.then(Answer(400, {"code": 400, "msg": f"key {KEY} may not pull {URL}"}))
    with pytest.raises(RejectedError) as raised:
        transport(server.url, fake_time).start(StreamKind.VIDEO, {"url": URL})
    assert str(raised.value).count("<redacted>") == 2
    assert KEY not in str(raised.value)


@pytest.mark.parametrize(
    ("url", "secret", "not_secret"),
    [
        (URL, [STREAM_KEY, TOKEN, PASSWORD], ["app", "1", "publisher", "ingest.example.invalid"]),
        # Parts shorter than 8 characters are words a message needs ("live"), too short for a key.
        ("rtmp://host.invalid/live/abc?x=1", [], ["live", "abc", "1", "x"]),
        ("srt://host.invalid:9000?streamid=publish:Cam3r4-Key-99", ["publish:Cam3r4-Key-99"], ["9000"]),
        ("rtsp://host.invalid/live/Camera01StreamKey/", ["Camera01StreamKey"], ["live"]),
        ("rtmp://host.invalid/live/key%2Bwith%2Fescapes", ["key+with/escapes", "key%2Bwith%2Fescapes"], []),
    ],
)
def test_the_parts_of_a_stream_url_that_may_hold_a_key_are_secrets(
    url: str, secret: list[str], not_secret: list[str]
) -> None:
    secrets = stream_url_secrets(url)
    assert url in secrets
    assert set(secret) <= set(secrets)
    assert not set(not_secret) & set(secrets)
