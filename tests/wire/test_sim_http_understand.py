"""The simulator's Live Video Understanding over real loopback HTTP: its own port, its documented
paths and answers, the same key check, and its results posted to each start's own callback URL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from streamlife import ManualClock, StreamKind
from streamlife.errors import (
    AuthError,
    CapacityError,
    OutcomeUnknownError,
    PaymentError,
    ServerError,
    TaskNotFoundError,
)
from streamlife.protocol import UNDERSTAND_MAX_TASKS
from streamlife.sim import Faults, SimHttpServer, SimulatedService, serve_http
from streamlife.transport import HttpTransport, RetryPolicy
from tests.conftest import FakeTime
from tests.scripted_server import Answer, ScriptedServer, scripted_server

KEY = "sk-mai-SIMULATED-understand-key"
AUDIO = {"audio_url": "rtmp://example.invalid/live", "provider": "assemblyai"}


def body(callback: str = "https://hooks.example.invalid/u") -> dict[str, object]:
    return {"url": "rtmp://example.invalid/live", "user_prompt": "Describe it", "callback": callback}


def simulator(faults: Faults | None = None) -> SimulatedService:
    return SimulatedService(clock=ManualClock(1_700_000_000.0), faults=faults, api_key=KEY)


def client(face: SimHttpServer, fake_time: FakeTime, key: str = KEY) -> HttpTransport:
    return HttpTransport(
        key,
        base_url=face.base_url,
        understand_url=face.understand_url,
        timeout=(2.0, 2.0),
        retry=RetryPolicy(attempts=1, deadline=10.0),
        sleep=fake_time.sleep,
        monotonic=fake_time.monotonic,
    )


@pytest.fixture
def hooks() -> Iterator[ScriptedServer]:
    with scripted_server() as running:
        yield running


def post(url: str, payload: object = None, key: str = KEY) -> requests.Response:
    return requests.post(url, json=payload, headers={"Authorization": key}, timeout=5)


def test_each_product_is_served_on_its_own_port_with_the_documented_shapes() -> None:
    service = simulator()
    with serve_http(service) as face:
        assert face.understand_url != face.base_url
        assert face.understand_url.count("/") == 2  # the host's root: the paths begin at /v1
        started = post(face.understand_url + "/v1/understand/streamConnect", body())
        assert started.status_code == 200
        task_id = started.json()["task_id"]
        assert started.json() == {"status": 0, "task_id": task_id, "text": ""}
        stopped = requests.post(
            f"{face.understand_url}/v1/understand/stop/{task_id}", headers={"Authorization": KEY}, timeout=5
        )
        assert stopped.request.body is None  # no body: the task_id is in the path
        assert stopped.json() == {"status": 14, "task_id": task_id}
        again = post(f"{face.understand_url}/v1/understand/stop/{task_id}")
        assert (again.status_code, again.json()["status"]) == (200, -1)
        # Each host serves its own products only.
        assert post(face.base_url + "/v1/understand/streamConnect", body()).status_code == 404
        assert post(face.understand_url + "/serve/api/v2/audio-stream/start", AUDIO).status_code == 404
        assert post(face.understand_url + "/audio-stream/start", AUDIO).status_code == 404
    assert service.billing() == []
    assert len(service.streams) == 1


def test_the_understand_host_checks_the_key_as_the_other_does(fake_time: FakeTime) -> None:
    service = simulator()
    with serve_http(service) as face:
        for kind, params in ((StreamKind.UNDERSTAND, body()), (StreamKind.AUDIO, AUDIO)):
            wrong = client(face, fake_time, key="sk-mai-wrong")
            with pytest.raises(AuthError):
                wrong.start(kind, params)
            wrong.close()
        assert post(face.understand_url + "/v1/understand/stop/x", key="").status_code == 401
    assert service.streams == {}


def test_http_transport_meets_the_products_answers_over_loopback(fake_time: FakeTime) -> None:
    service = simulator()
    with serve_http(service) as face:
        http = client(face, fake_time)
        ids = [http.start(StreamKind.UNDERSTAND, body()).task_id for _ in range(UNDERSTAND_MAX_TASKS)]
        audio = http.start(StreamKind.AUDIO, AUDIO).task_id  # its own cap: still room
        with pytest.raises(CapacityError) as capped:
            http.start(StreamKind.UNDERSTAND, body())
        assert capped.value.code == "1001"
        with pytest.raises(TaskNotFoundError):
            http.stop(StreamKind.UNDERSTAND, "no-such-task")
        with pytest.raises(TaskNotFoundError):
            http.stop(StreamKind.UNDERSTAND, audio)  # another product's task
        assert http.stop(StreamKind.UNDERSTAND, ids[0]).final
        assert http.stop(StreamKind.AUDIO, audio).message == "Audio stream stopped successfully"
        http.close()
    assert sorted(service.billing()) == sorted(ids[1:])


@pytest.mark.parametrize(
    ("faults", "error", "code"),
    [
        (Faults(credit_start=1.0), PaymentError, "2001"),
        (Faults(capacity=1.0), CapacityError, "1001"),
    ],
)
def test_a_refused_start_creates_nothing(
    faults: Faults, error: type[Exception], code: str, fake_time: FakeTime
) -> None:
    service = simulator(faults)
    with serve_http(service) as face, pytest.raises(error) as refused:
        client(face, fake_time).start(StreamKind.UNDERSTAND, body())
    assert getattr(refused.value, "code", None) == code
    assert service.streams == {}


def test_a_stop_answered_5000_leaves_the_task_running(fake_time: FakeTime) -> None:
    service = simulator(Faults(stop_500=1.0))
    with serve_http(service) as face:
        http = client(face, fake_time)
        task_id = http.start(StreamKind.UNDERSTAND, body()).task_id
        with pytest.raises(ServerError):
            http.stop(StreamKind.UNDERSTAND, task_id)
        raw = post(f"{face.understand_url}/v1/understand/stop/{task_id}")
        assert (raw.status_code, raw.json()["status"]) == (200, 5000)
        http.close()
    assert service.billing() == [task_id]


def test_a_lost_start_answer_is_an_unknown_outcome_and_the_task_runs(fake_time: FakeTime) -> None:
    service = simulator()
    with serve_http(service) as face:
        service.lose_next_start_answer()
        with pytest.raises(OutcomeUnknownError):
            client(face, fake_time).start(StreamKind.UNDERSTAND, body())
    (task_id,) = service.billing()
    assert not service.streams[task_id].named


def test_results_go_to_each_starts_own_callback_url_as_given_and_nothing_to_the_webhook(
    hooks: ScriptedServer, fake_time: FakeTime
) -> None:
    service = simulator()
    hooks.then(*[Answer(200, {"ok": True})] * 20)
    webhook = hooks.url + "/account/TOKEN"
    with serve_http(service, webhook_url=webhook) as face:
        http = client(face, fake_time)
        first = http.start(StreamKind.UNDERSTAND, body(hooks.url + "/task/k1/sig-1?x=1")).task_id
        second = http.start(StreamKind.UNDERSTAND, body(hooks.url + "/task/k2/sig-2")).task_id
        audio = http.start(StreamKind.AUDIO, AUDIO).task_id
        service.advance(10)
        http.close()
        assert face.poster.failures == []
    paths: dict[str, set[str]] = {}
    for seen in hooks.requests:
        paths.setdefault(seen.body["task_id"], set()).add(seen.path)
    assert paths == {first: {"/task/k1/sig-1?x=1"}, second: {"/task/k2/sig-2"}, audio: {"/account/TOKEN"}}
    understood = [seen.body for seen in hooks.requests if seen.body["task_id"] == first]
    assert [result["data"]["timestamp"] for result in understood] == [
        "2023-11-14T22:13:25Z",
        "2023-11-14T22:13:30Z",
    ]


def test_results_are_posted_without_a_webhook_too(hooks: ScriptedServer, fake_time: FakeTime) -> None:
    service = simulator()
    hooks.then(*[Answer(200, {"ok": True})] * 5)
    with serve_http(service) as face:
        http = client(face, fake_time)
        task_id = http.start(StreamKind.UNDERSTAND, body(hooks.url + "/cb")).task_id
        http.start(StreamKind.AUDIO, AUDIO)  # no webhook: its callbacks are posted nowhere
        service.advance(5)
        http.close()
        assert face.poster.failures == []
    assert [(seen.path, seen.body["task_id"]) for seen in hooks.requests] == [("/cb", task_id)]


def test_duplicated_and_reordered_results_cross_the_socket(
    hooks: ScriptedServer, fake_time: FakeTime
) -> None:
    service = simulator(Faults(seed=3, duplicate=1.0, reorder=0.5))
    hooks.then(*[Answer(200, {"ok": True})] * 40)
    with serve_http(service) as face:
        http = client(face, fake_time)
        http.start(StreamKind.UNDERSTAND, body(hooks.url + "/cb"))
        service.advance(40)
        http.close()
    assert [seen.body for seen in hooks.requests] == [sent.payload for sent in service.deliveries]
    stamps = [seen.body["data"]["timestamp"] for seen in hooks.requests]
    assert len(stamps) >= 2 * len(set(stamps)) - 1 > 0  # each result twice (the last one's may be due)
    assert stamps != sorted(stamps)  # and not in the order they were made


def test_a_refused_result_is_redelivered_in_order_to_its_own_url(
    hooks: ScriptedServer, fake_time: FakeTime
) -> None:
    service = simulator()
    hooks.then(Answer(503, {"busy": True}), *[Answer(200, {"ok": True})] * 10)
    with serve_http(service, redeliver=True) as face:
        http = client(face, fake_time)
        http.start(StreamKind.UNDERSTAND, body(hooks.url + "/cb"))
        service.advance(5)
        assert len(face.poster.pending) == 1  # refused, kept
        service.advance(5)
        assert face.poster.pending == []
        http.close()
    stamps = [seen.body["data"]["timestamp"] for seen in hooks.requests]
    assert stamps == ["2023-11-14T22:13:25Z", "2023-11-14T22:13:25Z", "2023-11-14T22:13:30Z"]
    assert [reason for _, reason in face.poster.failures] == ["HTTP 503"]


def test_the_poster_shows_no_url_in_its_repr(hooks: ScriptedServer) -> None:
    with serve_http(simulator(), webhook_url=hooks.url + "/hooks/SECRET-TOKEN") as face:
        shown = repr(face.poster)
    assert "SECRET-TOKEN" not in shown
    assert hooks.url not in shown
    assert shown == "WebhookPoster(webhook set, redeliver=False, delivered=0, failed=0)"
