"""HttpTransport against the simulator's HTTP face, over real loopback sockets."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from streamlife import ManualClock, StreamKind
from streamlife.errors import AuthError, CapacityError, OutcomeUnknownError, TaskNotFoundError
from streamlife.sim import Faults, SimulatedService, serve_http
from streamlife.transport import HttpTransport, RetryPolicy

from .conftest import FakeTime
from .scripted_server import Answer, scripted_server

KEY = "sk-mai-SIMULATED-secret-key"
AUDIO = {"audio_url": "rtmp://example.invalid/live", "provider": "assemblyai"}


def client(base_url: str, fake_time: FakeTime, key: str = KEY) -> HttpTransport:
    return HttpTransport(
        key,
        base_url=base_url,
        timeout=(2.0, 2.0),
        retry=RetryPolicy(attempts=8, base=0.25, cap=2.0, deadline=60.0),
        sleep=fake_time.sleep,
        monotonic=fake_time.monotonic,
    )


@pytest.fixture
def service() -> SimulatedService:
    return SimulatedService(clock=ManualClock(), api_key=KEY)


def test_start_and_stop_over_http(service: SimulatedService, fake_time: FakeTime) -> None:
    with serve_http(service) as face:
        http = client(face.base_url, fake_time)
        task_id = http.start(StreamKind.AUDIO, AUDIO).task_id
        assert service.billing() == [task_id]
        assert http.stop(StreamKind.AUDIO, task_id).message == "Audio stream stopped successfully"
        assert service.billing() == []
        with pytest.raises(TaskNotFoundError):
            http.stop(StreamKind.AUDIO, task_id)
        http.close()


def test_the_real_auth_check(service: SimulatedService, fake_time: FakeTime) -> None:
    with serve_http(service) as face, pytest.raises(AuthError):
        client(face.base_url, fake_time, key="sk-mai-wrong").start(StreamKind.AUDIO, AUDIO)
    assert service.start_requests == 0


def test_capacity_over_http(fake_time: FakeTime) -> None:
    service = SimulatedService(api_key=KEY, max_streams=1)
    with serve_http(service) as face:
        http = client(face.base_url, fake_time)
        http.start(StreamKind.AUDIO, AUDIO)
        with pytest.raises(CapacityError):
            http.start(StreamKind.AUDIO, AUDIO)


@pytest.mark.parametrize(("stall", "symptom"), [(0.0, "connection lost"), (1.0, "read timeout")])
def test_a_lost_start_answer_is_unknown_and_the_start_is_never_posted_twice(
    fake_time: FakeTime, stall: float, symptom: str
) -> None:
    service = SimulatedService(api_key=KEY, faults=Faults(start_timeout_created=1.0))
    with serve_http(service, lost_answer_stall=stall) as face:
        http = HttpTransport(
            KEY,
            base_url=face.base_url,
            timeout=(2.0, 0.3),
            sleep=fake_time.sleep,
            monotonic=fake_time.monotonic,
        )
        with pytest.raises(OutcomeUnknownError, match=symptom):
            http.start(StreamKind.AUDIO, AUDIO)
    assert service.start_requests == 1
    assert len(service.billing()) == 1  # the stream it made bills on: the reaper's job
    assert fake_time.sleeps == []


def test_stop_is_retried_through_500s_and_429s_until_it_lands(fake_time: FakeTime) -> None:
    faults = Faults(seed=1, stop_500=0.4, stop_429=0.4, retry_after=1.5)
    service = SimulatedService(api_key=KEY, faults=faults)
    with serve_http(service) as face:
        http = client(face.base_url, fake_time)
        task_ids = [http.start(StreamKind.AUDIO, AUDIO).task_id for _ in range(5)]
        with capture_logs() as logs:
            for task_id in task_ids:
                http.stop(StreamKind.AUDIO, task_id)
    assert service.billing() == []
    assert service.stop_requests > len(task_ids)  # some stops needed more than one request
    assert 1.5 in fake_time.sleeps  # a Retry-After was honoured
    retries = [entry for entry in logs if entry["event"] == "streamlife.http_retry"]
    assert {entry["error"] for entry in retries} == {"ServerError", "RateLimitedError"}
    assert KEY not in repr(logs)


def test_callbacks_are_posted_to_the_webhook(service: SimulatedService, fake_time: FakeTime) -> None:
    with scripted_server() as receiver:
        receiver.then(*[Answer(200, {"ok": True})] * 10)
        with serve_http(service, webhook_url=receiver.url + "/hook") as face:
            http = client(face.base_url, fake_time)
            task_id = http.start(StreamKind.AUDIO, AUDIO).task_id
            service.advance(6)
            http.stop(StreamKind.AUDIO, task_id)
            service.advance(1)
            assert face.poster is not None
            assert face.poster.failures == []
    assert [seen.path for seen in receiver.requests] == ["/hook"] * 3
    partial, final, stopped = (seen.body for seen in receiver.requests)
    assert (partial["data"]["transcript"]["is_final"], final["data"]["transcript"]["is_final"]) == (
        False,
        True,
    )
    assert stopped["data"]["status"] == 14
    assert stopped["task_id"] == task_id


def test_a_webhook_that_fails_is_recorded(service: SimulatedService, fake_time: FakeTime) -> None:
    with scripted_server() as receiver:
        receiver.then(Answer(503, {"busy": True}))
        with serve_http(service, webhook_url=receiver.url) as face:
            client(face.base_url, fake_time).start(StreamKind.AUDIO, AUDIO)
            service.advance(5)
            assert face.poster is not None
            assert [reason for _, reason in face.poster.failures] == ["HTTP 503", "HTTP 500"]
