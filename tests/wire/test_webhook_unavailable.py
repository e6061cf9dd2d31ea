"""A callback the sink cannot take now is answered 503 with Retry-After, on every face.

memories.ai documents no retry policy for its webhooks; what a test can assert is the answer: a
503 with ``Retry-After`` is the one that lets a sender deliver again, where a 200 says "taken".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import requests
from structlog.testing import capture_logs

from streamlife import Outcome
from streamlife.errors import ParkingFullError, StoreConflict, StoreError
from streamlife.protocol import segment_callback
from streamlife.webhook import WebhookReceiver

from .test_webhook import FACES, JSON_TYPE, TIMEOUT, TOKEN, plain_session, serving
from .test_webhook_asgi import call_asgi

SECRET = "hunter2-the-database-password"
DSN = f"postgresql://streamlife:{SECRET}@db.internal:5432/streamlife"
BODY = json.dumps(segment_callback("660e8400-e29b-41d4-a716-446655440000", 0)).encode()

FAILURES: dict[str, Callable[[], Exception]] = {
    "store down": lambda: StoreError(f"cannot connect to {DSN}: connection refused"),
    "store conflict": lambda: StoreConflict(f"another writer claimed the task in {DSN}"),
    "parking full": lambda: ParkingFullError("660e8400", f"max_parked=1, {DSN}"),
}


class FailingSink:
    """A sink that raises what it is given for each callback, then, once healed, takes them."""

    def __init__(self, failure: Callable[[], Exception]) -> None:
        self.failure: Callable[[], Exception] | None = failure
        self.taken: list[bytes] = []

    def handle_callback(self, payload: bytes) -> Outcome:
        if self.failure is not None:
            raise self.failure()
        self.taken.append(payload)
        return Outcome.APPLIED


def assert_retryable(status: int, retry_after: str | None, body: bytes, seconds: str = "1") -> None:
    assert status == 503
    assert retry_after == seconds
    answer = json.loads(body)
    assert set(answer) == {"error"}
    assert "again" in answer["error"]
    assert SECRET not in body.decode()
    assert "db.internal" not in body.decode()


@contextmanager
def session() -> Iterator[requests.Session]:
    with plain_session() as opened:
        yield opened


@pytest.mark.parametrize("failure", FAILURES.values(), ids=FAILURES.keys())
def test_handle_answers_503_with_retry_after(failure: Callable[[], Exception]) -> None:
    answer = WebhookReceiver(FailingSink(failure), token=TOKEN).handle(BODY, {"X-Streamlife-Token": TOKEN})
    assert_retryable(answer.status, dict(answer.headers).get("Retry-After"), answer.body)


@pytest.mark.parametrize("failure", FAILURES.values(), ids=FAILURES.keys())
def test_asgi_answers_503_with_retry_after(failure: Callable[[], Exception]) -> None:
    answer = call_asgi(WebhookReceiver(FailingSink(failure), token=TOKEN), [BODY])
    assert_retryable(answer.status, answer.headers[b"retry-after"].decode(), answer.body)
    assert answer.headers[b"content-type"] == b"application/json"


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize("failure", FAILURES.values(), ids=FAILURES.keys())
def test_a_live_server_answers_503_then_takes_the_callback_again(
    face: str, failure: Callable[[], Exception]
) -> None:
    sink = FailingSink(failure)
    with serving(WebhookReceiver(sink, token=TOKEN), face) as url, session() as http:
        refused = http.post(f"{url}/hooks/{TOKEN}", data=BODY, headers=JSON_TYPE, timeout=TIMEOUT)
        assert_retryable(refused.status_code, refused.headers.get("Retry-After"), refused.content)
        assert refused.headers["Content-Type"] == "application/json"
        assert sink.taken == []
        sink.failure = None  # the store is back: the sender's retry is taken
        again = http.post(f"{url}/hooks/{TOKEN}", data=BODY, headers=JSON_TYPE, timeout=TIMEOUT)
        assert (again.status_code, again.json()) == (200, {"outcome": "applied"})
        assert sink.taken == [BODY]


def test_retry_after_is_configurable() -> None:
    receiver = WebhookReceiver(FailingSink(FAILURES["store down"]), token=TOKEN, retry_after=30)
    answer = receiver.handle(BODY, {"X-Streamlife-Token": TOKEN})
    assert_retryable(answer.status, dict(answer.headers).get("Retry-After"), answer.body, seconds="30")


@pytest.mark.parametrize("retry_after", [-1, 1.5, "1", True])
def test_retry_after_must_be_whole_seconds(retry_after: object) -> None:
    with pytest.raises(ValueError, match="retry_after"):
        WebhookReceiver(FailingSink(FAILURES["store down"]), token=TOKEN, retry_after=retry_after)  # type: ignore[arg-type]


def test_a_wrong_token_is_401_before_the_sink_is_asked() -> None:
    sink = FailingSink(FAILURES["store down"])
    answer = WebhookReceiver(sink, token=TOKEN).handle(BODY, {"X-Streamlife-Token": "not-the-token-at-all"})
    assert answer.status == 401


@pytest.mark.parametrize("failure", FAILURES.values(), ids=FAILURES.keys())
def test_a_503_is_logged_by_the_error_type_never_its_text(failure: Callable[[], Exception]) -> None:
    receiver = WebhookReceiver(FailingSink(failure), token=TOKEN)
    with capture_logs() as logs:
        receiver.handle(BODY, {"X-Streamlife-Token": TOKEN})
    assert logs == [
        {"event": "streamlife.webhook_unavailable", "log_level": "warning", "error": type(failure()).__name__}
    ]
