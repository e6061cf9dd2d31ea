"""HttpTransport against the simulator's HTTP face, over real loopback sockets."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor

import pytest
from structlog.testing import capture_logs

from streamlife import ManualClock, StreamKind
from streamlife.errors import (
    AuthError,
    CapacityError,
    OutcomeUnknownError,
    PaymentError,
    RejectedError,
    TaskNotFoundError,
)
from streamlife.sim import Faults, SimulatedService, serve_http
from streamlife.sim.http import WebhookPoster
from streamlife.transport import HttpTransport, RetryPolicy
from tests.conftest import FakeTime
from tests.scripted_server import Answer, Drop, scripted_server

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


def test_a_start_without_credit_answers_402_over_http(fake_time: FakeTime) -> None:
    service = SimulatedService(api_key=KEY, faults=Faults(credit_start=1.0))
    with serve_http(service) as face:
        http = client(face.base_url, fake_time)
        with pytest.raises(PaymentError) as raised:
            http.start(StreamKind.AUDIO, AUDIO)
        http.close()
    assert raised.value.status == 402
    assert service.streams == {}
    assert fake_time.sleeps == []  # no credit: nothing to retry


def test_a_passthrough_start_without_a_provider_answers_400_over_http(fake_time: FakeTime) -> None:
    service = SimulatedService(api_key=KEY, mode="passthrough")
    with serve_http(service) as face:
        http = client(face.base_url, fake_time)
        with pytest.raises(RejectedError, match="Invalid request parameters") as raised:
            http.start(StreamKind.AUDIO, {"audio_url": "rtmp://example.invalid/live"})
        http.close()
    assert raised.value.status == 400
    assert service.streams == {}


def test_forwarded_provider_messages_are_posted_to_the_webhook(fake_time: FakeTime) -> None:
    service = SimulatedService(clock=ManualClock(), api_key=KEY, mode="passthrough")
    with scripted_server() as receiver:
        receiver.then(*[Answer(200, {"ok": True})] * 10)
        with serve_http(service, webhook_url=receiver.url + "/hook") as face:
            http = client(face.base_url, fake_time)
            task_id = http.start(StreamKind.AUDIO, {**AUDIO, "format_turns": True}).task_id
            service.advance(6)
            http.stop(StreamKind.AUDIO, task_id)
            service.advance(1)
            http.close()
    bodies = [seen.body for seen in receiver.requests]
    assert {body["task_id"] for body in bodies} == {task_id}
    assert [body["data"].get("type", body["data"].get("status")) for body in bodies] == [
        "Begin",
        "Turn",
        "Turn",
        "Turn",
        "Termination",
        14,
    ]
    assert [body["data"].get("turn_is_formatted") for body in bodies[1:4]] == [False, False, True]


def test_a_webhook_that_fails_is_recorded(service: SimulatedService, fake_time: FakeTime) -> None:
    with scripted_server() as receiver:
        receiver.then(Answer(503, {"busy": True}))
        with serve_http(service, webhook_url=receiver.url) as face:
            client(face.base_url, fake_time).start(StreamKind.AUDIO, AUDIO)
            service.advance(5)
            assert face.poster is not None
            assert [reason for _, reason in face.poster.failures] == ["HTTP 503", "HTTP 500"]


# -- redelivery: a service that sends a refused webhook again, in order ---------------------------


def test_a_refused_webhook_is_redelivered_in_order_once_the_receiver_accepts(
    service: SimulatedService, fake_time: FakeTime
) -> None:
    with scripted_server() as receiver:
        receiver.then(Answer(503, {"busy": True}), Drop(), *[Answer(200, {"ok": True})] * 10)
        with serve_http(service, webhook_url=receiver.url, redeliver=True) as face:
            poster = face.poster
            assert poster is not None
            http = client(face.base_url, fake_time)
            task_id = http.start(StreamKind.AUDIO, AUDIO).task_id
            # A partial (refused: 503), then its final: the partial goes first again, and its
            # connection is dropped unanswered, so the final waits behind it.
            service.advance(5)
            partial, final = (delivery.payload for delivery in service.deliveries)
            assert poster.pending == [partial, final]
            assert poster.delivered == []
            assert poster.flush() == 0  # both go, oldest first
            assert poster.pending == []
            http.stop(StreamKind.AUDIO, task_id)
            service.advance(1)  # the status-14 callback: nothing is queued, so it goes at once
            stopped = service.deliveries[-1].payload
    assert [seen.body for seen in receiver.requests] == [partial, partial, partial, final, stopped]
    assert poster.delivered == [partial, final, stopped]  # each once, in order
    assert [reason for _, reason in poster.failures] == ["HTTP 503", "ConnectionError"]


def test_callbacks_wait_while_no_receiver_listens_and_go_when_one_does() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    poster = WebhookPoster(f"http://127.0.0.1:{port}/hook", redeliver=True, timeout=2.0)
    try:
        payloads = [{"task_id": "t", "n": n} for n in range(3)]
        for payload in payloads:
            assert poster(payload) is False  # kept, to send again
        assert poster.pending == payloads
        assert poster.flush() == 3
        assert [reason for _, reason in poster.failures] == ["ConnectionError"] * 4  # the oldest, each time
        with scripted_server() as receiver:
            receiver.then(*[Answer(200, {"ok": True})] * 3)
            poster.url = receiver.url + "/hook"  # the receiver is back (here: at a new address)
            assert poster.flush() == 0
        assert [seen.body for seen in receiver.requests] == payloads
        assert poster.delivered == payloads
    finally:
        poster.close()


def test_without_redelivery_a_failed_webhook_is_dropped() -> None:
    with scripted_server() as receiver:
        receiver.then(Answer(503, {"busy": True}), Answer(200, {"ok": True}))
        poster = WebhookPoster(receiver.url)
        try:
            assert poster({"n": 1}) is False  # refused, and dropped
            assert poster({"n": 2}) is True
            assert poster.flush() == 0
        finally:
            poster.close()
    assert [seen.body for seen in receiver.requests] == [{"n": 1}, {"n": 2}]
    assert poster.delivered == [{"n": 2}]
    assert poster.pending == []
    assert poster.failures == [({"n": 1}, "HTTP 503")]


def test_redelivery_from_many_threads_delivers_each_callback_once_in_each_threads_order() -> None:
    threads, each = 6, 15
    with scripted_server() as receiver:
        receiver.then(Answer(503, {"busy": True}), *[Answer(200, {"ok": True})] * (threads * each))
        poster = WebhookPoster(receiver.url, redeliver=True)
        try:

            def send(sender: int) -> None:
                for n in range(each):
                    poster({"from": sender, "n": n})

            with ThreadPoolExecutor(threads) as pool:
                for sent in [pool.submit(send, sender) for sender in range(threads)]:
                    sent.result()
            assert poster.flush() == 0
        finally:
            poster.close()
    delivered = poster.delivered
    assert len(delivered) == threads * each
    for sender in range(threads):
        assert [p["n"] for p in delivered if p["from"] == sender] == list(range(each))
    # The receiver saw each once, plus the one refused first, again.
    assert [seen.body for seen in receiver.requests][1:] == delivered
