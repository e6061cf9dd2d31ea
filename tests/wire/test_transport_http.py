"""HttpTransport over real loopback sockets: every error mapping, the retries, and the key kept secret."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from email.utils import formatdate

import pytest
from structlog.testing import capture_logs

from streamlife import StreamKind
from streamlife.errors import (
    AuthError,
    CapacityError,
    NotSentError,
    OutcomeUnknownError,
    PaymentError,
    RateLimitedError,
    RejectedError,
    ServerError,
    TaskNotFoundError,
    TransportError,
)
from streamlife.transport import HttpTransport, RetryPolicy
from tests.conftest import FakeTime
from tests.scripted_server import Answer, Drop, ScriptedServer, Stall, error, ok, scripted_server

KEY = "sk-mai-SECRET-test-key-0123456789"
PARAMS = {"audio_url": "rtmp://example.invalid/live", "provider": "assemblyai"}


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with scripted_server() as running:
        yield running


def transport(url: str, fake_time: FakeTime, **overrides: object) -> HttpTransport:
    options: dict[str, object] = {
        "base_url": url,
        "timeout": (1.0, 0.5),
        "retry": RetryPolicy(attempts=5, base=0.5, cap=4.0, deadline=30.0),
        "sleep": fake_time.sleep,
        "monotonic": fake_time.monotonic,
        "jitter": lambda: 1.0,  # the top of the jitter range, so waits are predictable
    }
    options.update(overrides)
    return HttpTransport(KEY, **options)  # type: ignore[arg-type]


def test_start_posts_the_params_with_the_raw_key(server: ScriptedServer, fake_time: FakeTime) -> None:
    server.then(ok("tid-1", "Audio stream transcription started"))
    result = transport(server.url, fake_time).start(StreamKind.AUDIO, PARAMS)
    assert (result.task_id, result.message) == ("tid-1", "Audio stream transcription started")
    (seen,) = server.requests
    assert seen.path == "/audio-stream/start"
    assert seen.headers["Authorization"] == KEY  # no "Bearer "
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.body == PARAMS


def test_video_uses_the_stream_paths(server: ScriptedServer, fake_time: FakeTime) -> None:
    server.then(ok("v-1"), ok("v-1"))
    http = transport(server.url, fake_time)
    http.start(StreamKind.VIDEO, {"url": "rtmp://x.invalid/live"})
    assert http.stop(StreamKind.VIDEO, "v-1").task_id == "v-1"
    assert [r.path for r in server.requests] == ["/stream/start", "/stream/stop"]
    assert server.requests[1].body == {"task_id": "v-1"}


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (error(400, "Invalid request parameters"), RejectedError),
        (error(401, "Unauthorized"), AuthError),
        (error(403, "User not authorized for stream processing"), AuthError),
        (error(402, "Insufficient balance"), PaymentError),
        (error(409, "Request conflict"), RejectedError),
        (error(429, "Rate limit exceeded", **{"Retry-After": "3"}), RateLimitedError),
        (error(500, "Internal server error"), ServerError),
        (error(503, "unavailable"), ServerError),
        (Answer(200, {"code": 16, "msg": "Capacity Reached", "data": None}), CapacityError),
        (Answer(200, {"code": "200", "message": "ok", "data": {"status": 16}}), CapacityError),
        (Answer(200, {"code": "0409", "msg": "duplicate not allowed"}), RejectedError),
        (Answer(200, {"code": 200, "message": "success", "data": {}}), OutcomeUnknownError),
        (Answer(200, None), OutcomeUnknownError),
    ],
)
def test_every_start_answer_maps_to_its_error_and_is_sent_once(
    server: ScriptedServer, fake_time: FakeTime, answer: Answer, expected: type[TransportError]
) -> None:
    server.then(answer, ok())  # a second request would succeed: it must never be made
    with pytest.raises(expected) as raised:
        transport(server.url, fake_time).start(StreamKind.AUDIO, PARAMS)
    assert len(server.requests) == 1
    assert fake_time.sleeps == []
    assert raised.value.operation == "audio.start"
    if isinstance(raised.value, RateLimitedError):
        assert raised.value.retry_after == 3.0


def test_a_start_that_times_out_after_sending_is_unknown_and_never_posted_twice(
    server: ScriptedServer, fake_time: FakeTime
) -> None:
    server.then(Stall(1.5), ok())
    with pytest.raises(OutcomeUnknownError, match="read timeout"):
        transport(server.url, fake_time).start(StreamKind.AUDIO, PARAMS)
    assert len(server.requests) == 1


def test_a_start_whose_connection_drops_after_sending_is_unknown(
    server: ScriptedServer, fake_time: FakeTime
) -> None:
    server.then(Drop(), ok())
    with pytest.raises(OutcomeUnknownError, match="connection lost"):
        transport(server.url, fake_time).start(StreamKind.AUDIO, PARAMS)
    assert len(server.requests) == 1


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed when the block ends: nobody listens


def test_a_start_that_never_left_is_retried_then_reported_as_not_sent(fake_time: FakeTime) -> None:
    http = transport(f"http://127.0.0.1:{closed_port()}", fake_time)
    with pytest.raises(NotSentError, match="could not connect"):
        http.start(StreamKind.AUDIO, PARAMS)
    assert fake_time.sleeps == [0.5, 1.0, 2.0, 4.0]  # attempts=5: four waits, doubling to the cap


def test_stop_is_retried_through_server_errors(server: ScriptedServer, fake_time: FakeTime) -> None:
    server.then(error(500), error(502), Drop(), ok("tid-9", "Audio stream stopped successfully"))
    result = transport(server.url, fake_time).stop(StreamKind.AUDIO, "tid-9")
    assert (result.task_id, result.message) == ("tid-9", "Audio stream stopped successfully")
    assert len(server.requests) == 4
    assert fake_time.sleeps == [0.5, 1.0, 2.0]


def test_stop_honours_retry_after_in_seconds_and_as_a_date(
    server: ScriptedServer, fake_time: FakeTime
) -> None:
    in_a_while = formatdate(timeval=__import__("time").time() + 6, usegmt=True)
    server.then(error(429, **{"Retry-After": "3"}), error(429, **{"Retry-After": in_a_while}), ok())
    transport(server.url, fake_time).stop(StreamKind.AUDIO, "tid-1")
    first, second = fake_time.sleeps
    assert first == 3.0  # longer than the backoff of 0.5
    assert 4.0 < second <= 6.0  # the date, a second or so later than when it was written


def test_stop_of_an_unknown_task_is_not_found_and_not_retried(
    server: ScriptedServer, fake_time: FakeTime
) -> None:
    server.then(error(400, "Invalid task_id or task not found"), ok())
    with pytest.raises(TaskNotFoundError):
        transport(server.url, fake_time).stop(StreamKind.AUDIO, "gone")
    assert len(server.requests) == 1


def test_stop_gives_up_at_its_deadline(server: ScriptedServer, fake_time: FakeTime) -> None:
    server.then(*[error(500)] * 10)
    http = transport(server.url, fake_time, retry=RetryPolicy(attempts=10, base=1.0, cap=4.0, deadline=6.0))
    with pytest.raises(ServerError):
        http.stop(StreamKind.AUDIO, "tid-1")
    assert fake_time.sleeps == [1.0, 2.0]  # the next wait (4.0) would end past the 6 s deadline
    assert len(server.requests) == 3


def test_a_stop_within_a_budget_gives_up_before_the_policy_deadline(
    server: ScriptedServer, fake_time: FakeTime
) -> None:
    server.then(*[error(500)] * 10)
    http = transport(server.url, fake_time, retry=RetryPolicy(attempts=10, base=1.0, cap=4.0, deadline=60.0))
    with pytest.raises(ServerError):
        http.stop(StreamKind.AUDIO, "tid-1", within=2.5)
    assert fake_time.sleeps == [1.0]  # the next wait (2.0) would end past the 2.5 s budget
    with pytest.raises(ValueError, match="within"):
        http.stop(StreamKind.AUDIO, "tid-1", within=0)


def test_a_stop_within_a_budget_cuts_the_read_timeout_to_fit(server: ScriptedServer) -> None:
    server.then(Stall(1.0))
    http = HttpTransport(KEY, base_url=server.url, timeout=(1.0, 10.0))
    began = time.monotonic()
    with pytest.raises(OutcomeUnknownError):
        http.stop(StreamKind.AUDIO, "tid-1", within=0.3)
    assert time.monotonic() - began < 0.9  # uncut, the 10 s read timeout would wait out the 1 s stall


def test_a_rate_limit_longer_than_the_deadline_is_raised_at_once(
    server: ScriptedServer, fake_time: FakeTime
) -> None:
    server.then(error(429, **{"Retry-After": "120"}), ok())
    with pytest.raises(RateLimitedError) as raised:
        transport(server.url, fake_time).stop(StreamKind.AUDIO, "tid-1")
    assert raised.value.retry_after == 120.0
    assert fake_time.sleeps == []


def test_the_key_never_shows_in_a_repr_an_error_or_a_log_line(
    server: ScriptedServer, fake_time: FakeTime
) -> None:
    server.then(error(500), error(401, f"bad key {KEY[:6]}"))
    http = transport(server.url, fake_time)
    with capture_logs() as logs, pytest.raises(AuthError) as raised:
        http.stop(StreamKind.AUDIO, "tid-1")
    with capture_logs() as more_logs, pytest.raises(NotSentError) as not_sent:
        transport(f"http://127.0.0.1:{closed_port()}", fake_time).stop(StreamKind.AUDIO, "tid-1")
    seen = " ".join(
        [repr(http), str(raised.value), repr(raised.value), str(not_sent.value), repr(logs), repr(more_logs)]
    )
    assert KEY not in seen
    assert "streamlife.http_retry" in repr(logs)  # the retry was logged, without the key


@pytest.mark.parametrize("bad", ["", "   "])
def test_an_empty_key_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="API key"):
        HttpTransport(bad)


def test_bad_timeouts_and_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="timeout"):
        HttpTransport(KEY, timeout=(0, 5))
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
