"""HttpTransport against hostile or broken servers, over real loopback sockets.

A server (or whatever sits between) may send a Retry-After that is no number, drip its answer a
byte at a time, send an endless body or a gzip bomb, nest JSON without end, write megabytes of
message, echo the API key back, or redirect the request elsewhere. Each is bounded here: in time,
in memory, in what reaches an error's text, and in where the request goes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from streamlife import StreamKind
from streamlife.errors import (
    RateLimitedError,
)
from streamlife.transport import HttpTransport, RetryPolicy
from streamlife.transport.answers import parse_retry_after

from .conftest import FakeTime
from .scripted_server import ScriptedServer, error, ok, scripted_server

# A key with characters that URL-encoding and JSON-escaping change, so each form differs.
KEY = "sk-mai/SECRET+test=key_0123456789"
PARAMS = {"audio_url": "rtmp://example.invalid/live", "provider": "assemblyai"}


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
