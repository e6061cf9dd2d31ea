"""Live Video Understanding over HttpTransport, against a real server on loopback: its own host,
its paths, and its ``{status, task_id, text}`` answers read by status, whatever the HTTP status."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from streamlife import StreamKind
from streamlife.errors import (
    CapacityError,
    MalformedAnswerError,
    OutcomeUnknownError,
    PaymentError,
    RejectedError,
    ServerError,
    TaskNotFoundError,
    TransportError,
)
from streamlife.protocol import understand_answer
from streamlife.transport import HttpTransport, RetryPolicy
from tests.conftest import FakeTime
from tests.scripted_server import Answer, ScriptedServer, ok, scripted_server

KEY = "sk-mavi-SECRET-test-key-0123456789"
PARAMS = {
    "url": "rtmp://example.invalid:1935/live/stream",
    "user_prompt": "Describe what happens",
    "system_prompt": "You watch a live stream",
    "callback": "https://hooks.example.invalid/understand",
    "thinking": False,
}


@pytest.fixture
def mavi() -> Iterator[ScriptedServer]:
    with scripted_server() as running:
        yield running


@pytest.fixture
def understand() -> Iterator[ScriptedServer]:
    with scripted_server() as running:
        yield running


def transport(mavi_url: str, understand_url: str, fake_time: FakeTime) -> HttpTransport:
    return HttpTransport(
        KEY,
        base_url=mavi_url,
        understand_url=understand_url,
        timeout=(1.0, 0.5),
        retry=RetryPolicy(attempts=3, base=0.5, cap=4.0, deadline=30.0),
        sleep=fake_time.sleep,
        monotonic=fake_time.monotonic,
        jitter=lambda: 1.0,
    )


def test_each_product_goes_to_its_own_host(
    mavi: ScriptedServer, understand: ScriptedServer, fake_time: FakeTime
) -> None:
    understand.then(Answer(200, understand_answer(0, "u-1")))
    mavi.then(ok("a-1"))
    http = transport(mavi.url, understand.url, fake_time)
    assert http.start(StreamKind.UNDERSTAND, PARAMS).task_id == "u-1"
    assert (
        http.start(StreamKind.AUDIO, {"audio_url": "rtmp://x.invalid/a", "provider": "assemblyai"}).task_id
        == "a-1"
    )
    (seen,) = understand.requests
    assert seen.path == "/v1/understand/streamConnect"
    assert seen.body == PARAMS
    assert seen.headers["Authorization"] == KEY  # no "Bearer ", as for the other products
    assert [r.path for r in mavi.requests] == ["/audio-stream/start"]
    assert "understand_url=" in repr(http)
    assert KEY not in repr(http)


def test_the_stop_names_the_task_in_its_path_sends_no_body_and_its_14_is_final(
    mavi: ScriptedServer, understand: ScriptedServer, fake_time: FakeTime
) -> None:
    understand.then(Answer(200, {"status": 14, "task_id": "u/1 x"}))
    result = transport(mavi.url, understand.url, fake_time).stop(StreamKind.UNDERSTAND, "u/1 x")
    assert result.final
    assert result.task_id == "u/1 x"
    (seen,) = understand.requests
    assert seen.path == "/v1/understand/stop/u%2F1%20x"  # quoted: the id cannot leave its segment
    assert seen.body is None
    assert mavi.requests == []


def test_a_stop_answered_0_only_acknowledges(
    mavi: ScriptedServer, understand: ScriptedServer, fake_time: FakeTime
) -> None:
    understand.then(Answer(200, {"status": 0, "task_id": "u-1"}))
    assert not transport(mavi.url, understand.url, fake_time).stop(StreamKind.UNDERSTAND, "u-1").final


@pytest.mark.parametrize("kind", [StreamKind.UNDERSTAND, StreamKind.AUDIO, StreamKind.VIDEO])
def test_status_minus_1_on_http_200_is_not_a_successful_stop(
    mavi: ScriptedServer, understand: ScriptedServer, fake_time: FakeTime, kind: StreamKind
) -> None:
    answer = Answer(200, {"status": -1, "task_id": "t-1", "text": "task not found"})
    (understand if kind is StreamKind.UNDERSTAND else mavi).then(answer, answer)
    with pytest.raises(TaskNotFoundError) as raised:
        transport(mavi.url, understand.url, fake_time).stop(kind, "t-1")
    assert raised.value.code == "-1"
    assert len(understand.requests) + len(mavi.requests) == 1  # not found is an answer: never retried


def test_a_stop_answered_5000_is_retried(
    mavi: ScriptedServer, understand: ScriptedServer, fake_time: FakeTime
) -> None:
    understand.then(
        Answer(200, understand_answer(5000, text="Internal server error")), Answer(200, {"status": 14})
    )
    result = transport(mavi.url, understand.url, fake_time).stop(StreamKind.UNDERSTAND, "u-1")
    assert result.final
    assert result.task_id == "u-1"
    assert len(understand.requests) == 2


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (Answer(200, understand_answer(-1, text="invalid request")), RejectedError),
        (Answer(200, understand_answer(5000, text="Internal server error")), ServerError),
        (Answer(200, understand_answer(1001, text="Maximum concurrent streams reached")), CapacityError),
        (Answer(200, understand_answer(2001, text="Credit deduction failed")), PaymentError),
        (Answer(500, understand_answer(0, "u-1")), ServerError),
        (Answer(200, understand_answer(14, "u-1")), OutcomeUnknownError),  # a start answered "stopped"
        (Answer(200, understand_answer(77, "u-1")), OutcomeUnknownError),  # a status nobody documents
        (Answer(200, understand_answer(0)), OutcomeUnknownError),  # started, but with no task_id
        # The older page's answer: success, and no task_id. A stream may exist that nobody can name.
        (
            Answer(200, {"code": "0000", "msg": "success", "data": {}, "success": True, "failed": False}),
            OutcomeUnknownError,
        ),
        (Answer(200, {"status": True, "task_id": "u-1"}), MalformedAnswerError),  # a bool is no status
    ],
)
def test_every_start_answer_maps_to_its_error_and_is_sent_once(
    mavi: ScriptedServer,
    understand: ScriptedServer,
    fake_time: FakeTime,
    answer: Answer,
    expected: type[TransportError],
) -> None:
    understand.then(answer, Answer(200, understand_answer(0, "u-2")))
    with pytest.raises(expected) as raised:
        transport(mavi.url, understand.url, fake_time).start(StreamKind.UNDERSTAND, PARAMS)
    assert type(raised.value) is expected
    assert len(understand.requests) == 1
    assert raised.value.operation == "understand.start"


def test_the_stream_url_never_shows_in_an_error(
    mavi: ScriptedServer, understand: ScriptedServer, fake_time: FakeTime
) -> None:
    url = "rtmp://example.invalid:1935/live/streamkey-0123456789"
    understand.then(Answer(200, understand_answer(-1, text=f"cannot pull {url}")))
    with pytest.raises(RejectedError) as raised:
        transport(mavi.url, understand.url, fake_time).start(StreamKind.UNDERSTAND, {**PARAMS, "url": url})
    assert "streamkey-0123456789" not in str(raised.value)
