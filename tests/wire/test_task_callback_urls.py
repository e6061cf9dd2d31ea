"""Each Live Video Understanding task's own callback URL, end to end on loopback: the Fleet fills
``callback=`` with it, ``serve_webhook`` (and uvicorn, for the ASGI face) verifies it and routes what
comes by it to that task, never parked. A result names the stream when the start answer has not:
a lost answer no longer strands it. A URL opens its own task only.

The service is a transport of the test's own: its start posts a result to the start body's
``callback`` over HTTP (before it answers, or instead of answering), as memories.ai would.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from structlog.testing import capture_logs

from streamlife import (
    CallbackUrls,
    Fleet,
    ManualClock,
    MisroutedCallbackError,
    Outcome,
    OutcomeKind,
    Policy,
    StreamKind,
    StreamTask,
    TaskState,
)
from streamlife._events import StartResult, StopResult
from streamlife.aio import AsyncFleet
from streamlife.errors import OutcomeUnknownError, ServerError
from streamlife.protocol import understand_result
from streamlife.store import SqliteStore, Store
from streamlife.transport._answers import read_answer, start_secrets
from streamlife.webhook import WebhookReceiver, serve_webhook
from tests.aio.under_uvicorn import uvicorn_on
from tests.conftest import state_of

TOKEN = "task-url-token-0123456789abcdef"
TIMEOUT = 10.0
STAMP = "2026-12-05T19:00:05Z"
POLICY = Policy(stop_concurrency=0, seed=0)


def body(url: str = "rtmp://sim.invalid:1935/live/stream-key-0123456789") -> dict[str, Any]:
    return {"url": url, "user_prompt": "Describe what happens"}


def result(task_id: str, text: str = "a person walks in", stamp: str = STAMP) -> dict[str, Any]:
    return understand_result(task_id, text, stamp)


def post(url: str, payload: Mapping[str, Any], **headers: str) -> requests.Response:
    return requests.post(
        url,
        data=json.dumps(payload),
        headers={"Content-Type": "application/json", **headers},
        timeout=TIMEOUT,
    )


class Service:
    """Live Video Understanding as the test scripts it. ``start`` makes a stream ``u-N``, runs
    ``before_answer(params, task_id)`` (a result posted to the callback URL, say), then answers,
    or loses the answer (``lose``), or waits for ``release`` and answers ``answer_as`` if set."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.streams: list[str] = []
        self.stops: list[str] = []
        self.before_answer: Callable[[Mapping[str, Any], str], None] = lambda params, task_id: None
        self.lose = False
        self.release: threading.Event | None = None
        self.answer_as: str | None = None

    def start(self, kind: StreamKind, params: Mapping[str, Any]) -> StartResult:
        assert kind is StreamKind.UNDERSTAND
        self.bodies.append(dict(params))
        task_id = f"u-{len(self.streams) + 1}"
        self.streams.append(task_id)
        self.before_answer(params, task_id)
        if self.release is not None:
            assert self.release.wait(TIMEOUT)
        if self.lose:
            raise OutcomeUnknownError("no answer within the read timeout", operation="understand.start")
        return StartResult(self.answer_as or task_id)

    def stop(self, kind: StreamKind, task_id: str, *, within: float | None = None) -> StopResult:
        self.stops.append(task_id)
        return StopResult(task_id, final=True)  # status 14 in the answer: the stop is final

    def close(self) -> None:
        pass


@contextmanager
def served(
    store: Store | None = None, service: Service | None = None, clock: ManualClock | None = None
) -> Iterator[tuple[Fleet, Service, str]]:
    """A Fleet with task URLs under a ``serve_webhook`` on loopback: (fleet, service, base URL)."""
    service = service or Service()
    holder: list[Fleet] = []
    receiver_box: list[WebhookReceiver] = []

    class Late:  # the receiver needs the Fleet, the Fleet the receiver's URL: bound once both exist
        def handle_callback(self, payload: bytes, *, key: str | None = None) -> Outcome:
            return holder[0].handle_callback(payload, key=key)

    receiver_box.append(WebhookReceiver(Late(), token=TOKEN))
    with serve_webhook(receiver_box[0]) as live:
        base = f"{live.url}/memories"
        urls = CallbackUrls(base, token=TOKEN)
        fleet = Fleet(service, policy=POLICY, store=store, clock=clock, callback_urls=urls)
        holder.append(fleet)
        yield fleet, service, base


def task_url(fleet: Fleet, task: StreamTask) -> str:
    assert fleet.callback_urls is not None
    assert task.key is not None
    return fleet.callback_urls.url_for(task.key)


def posting_first(text: str = "first") -> Callable[[Mapping[str, Any], str], None]:
    """A start that posts a result to its callback URL before it answers."""

    def before(params: Mapping[str, Any], task_id: str) -> None:
        answer = post(params["callback"], result(task_id, text))
        assert answer.status_code == 200, answer.text

    return before


# -- the URL in the start body ---------------------------------------------------------------------------


def test_a_start_without_callback_is_given_its_tasks_own_url_and_an_explicit_one_is_kept() -> None:
    with served() as (fleet, service, base):
        task = fleet.start("understand", **body())
        mine = fleet.start("understand", **body(), callback="https://mine.example.invalid/results")
    assert service.bodies[0]["callback"] == task_url(fleet, task)
    assert service.bodies[0]["callback"].startswith(f"{base}/task/{task.key}/")
    assert service.bodies[1]["callback"] == "https://mine.example.invalid/results"
    assert (task.state, mine.state) == (TaskState.RUNNING, TaskState.RUNNING)


def test_without_callback_or_callback_urls_the_start_is_refused_naming_the_option() -> None:
    fleet = Fleet(Service(), policy=POLICY)
    with pytest.raises(ValueError, match="callback_urls=CallbackUrls"):
        fleet.start("understand", **body())
    assert fleet.tasks() == []


def test_the_task_url_shows_in_no_log_line_repr_error_or_store_row(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "streams.db")
    service = Service()
    service.before_answer = posting_first()
    with capture_logs() as logs, served(store, service) as (fleet, _, _):
        task = fleet.start("understand", **body())
        fleet.stop(task)
    url = service.bodies[0]["callback"]
    sig = url.rsplit("/", 1)[1]
    assert task.state is TaskState.STOPPED
    shown = [repr(task), repr(fleet), repr(fleet.callback_urls), repr(store.row(task.key or ""))]
    shown += [repr(entry) for entry in store.journal(task.key or "")]
    shown += [repr(line) for line in logs]
    assert not [text for text in shown if sig in text or TOKEN in text]
    # A server that quotes the body back has the URL and its signature scrubbed from its words.
    params = service.bodies[0]
    with pytest.raises(ServerError) as quoted:
        read_answer(
            "understand.start",
            500,
            {"status": 5000, "text": f"cannot post to {url} (callback {sig})"},
            None,
            secrets=start_secrets(StreamKind.UNDERSTAND, params),
        )
    assert sig not in str(quoted.value)


# -- routed, never parked ---------------------------------------------------------------------------------


def test_a_result_before_the_start_answer_names_the_task_and_is_applied_without_parking() -> None:
    service = Service()
    service.before_answer = posting_first()
    with served(service=service) as (fleet, _, _):
        task = fleet.start("understand", **body())
        stats = fleet.stats()
    assert (task.state, task.task_id) == (TaskState.RUNNING, "u-1")
    assert [segment.text for segment in task.transcript] == ["first"]
    triggers = [(entry.trigger, entry.outcome.kind) for entry in task.history]
    assert triggers[:3] == [
        ("start", OutcomeKind.APPLIED),
        ("named", OutcomeKind.APPLIED),
        ("segment", OutcomeKind.APPLIED),
    ]
    assert triggers[3] == ("start_ok", OutcomeKind.DUPLICATE)  # the answer came after, and repeats it
    assert stats.parked == 0
    assert stats.callbacks["parked"] == 0


def test_a_lost_start_answer_is_named_by_a_result_and_a_stop_asked_meanwhile_settles_it() -> None:
    service = Service()
    service.lose = True
    with served(service=service) as (fleet, _, _):
        task = fleet.start("understand", **body())
        assert task.state is TaskState.UNCERTAIN
        fleet.stop(task)  # remembered: no task_id to stop yet
        assert service.stops == []
        answer = post(task_url(fleet, task), result("u-1"))
        assert answer.json() == {"outcome": "applied"}
    assert service.stops == ["u-1"]  # the stop went out once the result named the stream
    assert (task.state, task.task_id) == (TaskState.STOPPED, "u-1")
    assert [entry.trigger for entry in task.history][-4:] == ["named", "segment", "stop", "stop_confirmed"]
    assert fleet.stats().parked == 0


def test_a_start_answer_after_the_name_and_the_stop_changes_nothing() -> None:
    service = Service()
    service.release = threading.Event()
    with served(service=service) as (fleet, _, _):
        started: list[StreamTask] = []
        thread = threading.Thread(target=lambda: started.append(fleet.start("understand", **body())))
        thread.start()
        while not service.streams:
            threading.Event().wait(0.01)
        (task,) = fleet.tasks()
        assert task.state is TaskState.STARTING
        assert post(task_url(fleet, task), result("u-1")).json() == {"outcome": "applied"}
        fleet.stop(task)
        assert state_of(task) is TaskState.STOPPED
        service.release.set()  # now the start answer comes
        thread.join(TIMEOUT)
    assert started == [task]
    assert (task.state, task.task_id) == (TaskState.STOPPED, "u-1")
    assert task.history[-1].trigger == "start_ok"
    assert task.history[-1].outcome is Outcome.LATE
    assert service.stops == ["u-1"]


def named_then_answered_as(fleet: Fleet, service: Service, other: str) -> StreamTask:
    """Start an understand task whose result names ``u-1`` before its start answer names ``other``."""
    service.release = threading.Event()
    service.answer_as = other
    thread = threading.Thread(target=lambda: fleet.start("understand", **body()))
    thread.start()
    while not service.streams:
        threading.Event().wait(0.01)
    (task,) = fleet.tasks()
    assert post(task_url(fleet, task), result("u-1")).status_code == 200
    service.release.set()
    thread.join(TIMEOUT)
    return task


def test_a_start_answer_naming_another_stream_is_refused_and_that_stream_adopted_and_stopped() -> None:
    service = Service()
    with served(service=service) as (fleet, _, _):
        task = named_then_answered_as(fleet, service, "u-other")
        adopted = fleet.get("u-other")
        assert adopted is not None
        assert adopted is not task
        assert [entry.trigger for entry in fleet.journal(adopted)][:2] == ["adopt", "stop"]
    assert (task.state, task.task_id) == (TaskState.RUNNING, "u-1")
    assert task.history[-1].outcome.kind is OutcomeKind.REJECTED
    assert adopted.state is TaskState.STOPPED
    assert service.stops == ["u-other"]  # ours by the start answer, held by no task: stopped


class FailingFirstStop(Service):
    """A service whose first stop of each stream fails as a 500 would."""

    def stop(self, kind: StreamKind, task_id: str, *, within: float | None = None) -> StopResult:
        if task_id not in self.stops:
            self.stops.append(task_id)
            raise ServerError("internal error", operation="understand.stop", status=500, code=None)
        return super().stop(kind, task_id, within=within)


def test_another_streams_failed_stop_is_retried_until_it_lands(tmp_path: Path) -> None:
    service, clock = FailingFirstStop(), ManualClock()
    with served(SqliteStore(tmp_path / "s.db"), service, clock) as (fleet, _, _):
        named_then_answered_as(fleet, service, "u-other")
        adopted = fleet.get("u-other")
        assert adopted is not None
        assert adopted.state is TaskState.STOPPING
        assert service.stops == ["u-other"]  # the first stop failed: before, nothing tried again
        clock.advance(POLICY.stop_retry_cap)
        fleet.tick()
        assert state_of(adopted) is TaskState.STOPPED
        assert service.stops.count("u-other") == 2


# -- a URL opens its own task only -------------------------------------------------------------------------


def test_a_wrong_signature_is_refused_401_and_changes_nothing() -> None:
    service = Service()
    service.lose = True
    with served(service=service) as (fleet, _, base):
        task = fleet.start("understand", **body())
        good = task_url(fleet, task)
        wrong = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
        answers = [
            post(wrong, result("u-1")).status_code,
            post(f"{base}/task/{task.key}/", result("u-1")).status_code,
            post(f"{base}/task/{task.key}", result("u-1")).status_code,
        ]
    assert answers == [401, 401, 401]
    assert (task.state, task.task_id, len(task.history)) == (TaskState.UNCERTAIN, None, 2)


def test_the_url_of_task_k_cannot_inject_into_task_j() -> None:
    service = Service()
    with served(service=service) as (fleet, _, base):
        k = fleet.start("understand", **body())
        j = fleet.start("understand", **body())
        before = (list(k.history), list(j.history))
        answers = [
            post(task_url(fleet, k), result("u-2")),  # J's stream, by K's URL
            post(task_url(fleet, k), result("u-unknown")),
        ]
        unknown_key = fleet.callback_urls.url_for("f" * 32) if fleet.callback_urls else ""
        answers.append(post(unknown_key, result("u-1")))
        # The account-wide token path still takes J's result.
        answers.append(post(f"{base}/{TOKEN}", result("u-2", "by the token")))
    assert [answer.status_code for answer in answers] == [403, 403, 403, 200]
    assert answers[0].json()["field"] == "task_id"
    assert (list(k.history), list(j.history)[:-1]) == before
    assert [segment.text for segment in j.transcript] == ["by the token"]
    assert fleet.stats().parked == 0


def test_a_task_not_yet_named_cannot_be_named_as_a_stream_another_task_holds() -> None:
    service = Service()
    with served(service=service) as (fleet, _, _):
        j = fleet.start("understand", **body())  # holds u-1
        service.lose = True
        k = fleet.start("understand", **body())  # u-2 made, its answer lost
        answer = post(task_url(fleet, k), result("u-1"))
        assert answer.status_code == 403
        assert (k.state, k.task_id) == (TaskState.UNCERTAIN, None)
        assert post(task_url(fleet, k), result("u-2")).status_code == 200
    assert (k.state, k.task_id, j.task_id) == (TaskState.RUNNING, "u-2", "u-1")


def test_a_signature_never_opens_the_account_wide_path() -> None:
    with served() as (fleet, _, base):
        task = fleet.start("understand", **body())
        sig = task_url(fleet, task).rsplit("/", 1)[1]
        answers = [
            post(f"{base}/{sig}", result("u-1")).status_code,
            post(f"{base}/hooks", result("u-1"), **{"X-Streamlife-Token": sig}).status_code,
            post(f"{base}/hooks", result("u-1"), Authorization=f"Bearer {sig}").status_code,
        ]
    assert answers == [401, 401, 401]
    assert len(task.transcript) == 0


class NoTaskUrls(WebhookReceiver):
    """A receiver that turns task URLs off in its own ``route``."""

    def route(self, path: str | None) -> str | None:
        return None


def test_a_receiver_whose_route_turns_task_urls_off_refuses_them_on_every_face() -> None:
    service = Service()
    service.lose = True
    fleet = Fleet(service, policy=POLICY, callback_urls=CallbackUrls("http://h.invalid/m", token=TOKEN))
    task = fleet.start("understand", **body())
    receiver = NoTaskUrls(fleet, token=TOKEN)
    path = task_url(fleet, task).removeprefix("http://h.invalid")
    payload = json.dumps(result("u-1")).encode()
    handled = receiver.handle(payload, {"Content-Type": "application/json"}, path)
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": payload, "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "root_path": "", "headers": []}
    asyncio.run(receiver.asgi(scope, receive, send))
    assert (handled.status, sent[0]["status"]) == (401, 401)
    assert (task.state, task.task_id, fleet.stats().parked) == (TaskState.UNCERTAIN, None, 0)


def test_a_sink_that_cannot_be_told_the_task_takes_no_task_url_but_the_token_path_works() -> None:
    urls = CallbackUrls("http://127.0.0.1/memories", token=TOKEN)
    seen: list[bytes] = []

    class OldSink:
        def handle_callback(self, payload: bytes) -> Outcome:
            seen.append(payload)
            return Outcome.APPLIED

    with serve_webhook(WebhookReceiver(OldSink(), token=TOKEN)) as live:
        routed = post(live.url + urls.url_for("abc").removeprefix("http://127.0.0.1"), result("u-1"))
        plain = post(f"{live.url}/memories/{TOKEN}", result("u-1"))
    assert (routed.status_code, plain.status_code) == (401, 200)
    assert len(seen) == 1


def test_a_receiver_that_cannot_verify_the_fleets_urls_is_refused() -> None:
    fleet = Fleet(Service(), callback_urls=CallbackUrls("https://x.example.invalid/m", token=TOKEN))
    with pytest.raises(ValueError, match="another token"):
        WebhookReceiver(fleet, token=TOKEN + "-rotated")
    with pytest.raises(ValueError, match="another token"):
        WebhookReceiver(fleet, allow_unauthenticated=True)
    with pytest.raises(MisroutedCallbackError):
        fleet.handle_callback(json.dumps(result("u-1")), key="no-such-key")


# -- batches, the other faces, and a journal read back -------------------------------------------------------


def test_routed_and_plain_requests_in_one_batch_are_answered_as_each_alone() -> None:
    service = Service()
    with served(service=service) as (fleet, _, _):
        service.lose = True
        lost = fleet.start("understand", **body())  # u-1, its answer lost
        service.lose = False
        running = fleet.start("understand", **body())  # u-2
        receiver = WebhookReceiver(fleet, token=TOKEN)
        path_of = {
            task.ref: "/memories" + task_url(fleet, task).split("/memories", 1)[1] for task in (lost, running)
        }
        headers = {"content-type": "application/json"}
        requests_ = [
            (json.dumps(result("u-1", "named")).encode(), headers, path_of[lost.ref]),
            (
                json.dumps(result("u-2", "routed", "2026-12-05T19:00:10Z")).encode(),
                headers,
                path_of[running.ref],
            ),
            (
                json.dumps(result("u-2", "plain", "2026-12-05T19:00:15Z")).encode(),
                headers,
                f"/memories/{TOKEN}",
            ),
            (json.dumps(result("u-2", "injected")).encode(), headers, path_of[lost.ref]),
        ]
        answers = receiver.apply_many(requests_)
    assert [answer.status for answer in answers] == [200, 200, 200, 403]
    assert (lost.state, lost.task_id) == (TaskState.RUNNING, "u-1")
    assert [segment.text for segment in lost.transcript] == ["named"]
    assert [segment.text for segment in running.transcript] == ["routed", "plain"]


def test_the_wsgi_face_routes_by_the_task_url() -> None:
    service = Service()
    service.lose = True
    fleet = Fleet(service, policy=POLICY, callback_urls=CallbackUrls("http://h.invalid/m", token=TOKEN))
    task = fleet.start("understand", **body())
    receiver = WebhookReceiver(fleet, token=TOKEN)
    payload = json.dumps(result("u-1")).encode()
    statuses: list[str] = []
    environ = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "/m",
        "PATH_INFO": task_url(fleet, task).removeprefix("http://h.invalid/m"),
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(payload)),
        "wsgi.input": io.BytesIO(payload),
    }
    answer = b"".join(receiver(environ, lambda status, headers: statuses.append(status)))
    assert statuses == ["200 OK"], answer
    assert (task.state, task.task_id) == (TaskState.RUNNING, "u-1")


def test_a_named_task_is_read_back_from_sqlite_by_a_new_fleet_as_it_was(tmp_path: Path) -> None:
    service = Service()
    service.lose = True
    with served(SqliteStore(tmp_path / "streams.db"), service) as (fleet, _, _):
        task = fleet.start("understand", **body())
        post(task_url(fleet, task), result("u-1", "one"))
        post(task_url(fleet, task), result("u-1", "two", "2026-12-05T19:00:10Z"))
    again = Fleet(Service(), policy=POLICY, store=SqliteStore(tmp_path / "streams.db"))
    (back,) = again.recover()
    assert (back.key, back.state, back.task_id) == (task.key, TaskState.RUNNING, "u-1")
    assert [segment.text for segment in back.transcript] == ["one", "two"]
    assert [entry.trigger for entry in again.journal(back)] == [
        "start",
        "start_unknown",
        "named",
        "segment",
        "segment",
    ]
    assert back.started_at == task.started_at


# -- the ASGI face under uvicorn ---------------------------------------------------------------------------


@pytest.mark.parametrize("front", ["fleet", "async fleet"])
def test_under_uvicorn_a_result_before_the_start_answer_names_the_task(front: str) -> None:
    """The ASGI face awaits an AsyncFleet, or applies in its own threads for a Fleet."""
    service = Service()
    service.before_answer = posting_first("through uvicorn")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    urls = CallbackUrls(f"http://127.0.0.1:{sock.getsockname()[1]}/memories", token=TOKEN)

    async def run() -> tuple[StreamTask, int]:
        fleet = AsyncFleet(service, policy=POLICY, callback_urls=urls)
        receiver = WebhookReceiver(fleet if front == "async fleet" else fleet.fleet, token=TOKEN)
        async with uvicorn_on(receiver.asgi, sock), fleet:
            task = await fleet.start("understand", **body())
            parked = fleet.stats().parked
        return task, parked

    task, parked = asyncio.run(run())
    assert AsyncFleet.from_fleet(Fleet(service, callback_urls=urls)).callback_urls is urls
    assert (task.state, task.task_id, parked) == (TaskState.RUNNING, "u-1", 0)
    assert [segment.text for segment in task.transcript] == ["through uvicorn"]
    assert [entry.trigger for entry in task.history][:3] == ["start", "named", "segment"]


def test_another_products_result_by_a_task_url_is_refused_and_reaches_no_hook() -> None:
    with served() as (fleet, _, _):
        task = fleet.start("understand", **body())
        heard: list[object] = []
        fleet.on_foreign(heard.append)
        other = {"code": 200, "message": "SUCCESS", "task_id": "clip-1", "data": {"clips": ["x"]}}
        routed = post(task_url(fleet, task), other)
        plain = post(task_url(fleet, task).rsplit("/task/", 1)[0] + f"/{TOKEN}", other)
    assert (routed.status_code, plain.status_code) == (403, 200)
    assert len(heard) == 1  # the one that came by the account-wide path


def test_an_async_fleets_routed_callbacks_queued_together_are_each_applied_to_their_task() -> None:
    """One callback thread: the calls queue up, and go to ``handle_callbacks`` together, keys too."""
    service = Service()
    service.lose = True
    urls = CallbackUrls("https://hooks.example.invalid/memories", token=TOKEN)

    async def run() -> tuple[list[StreamTask], list[Outcome | BaseException]]:
        async with AsyncFleet(service, policy=POLICY, callback_urls=urls, callback_threads=1) as fleet:
            tasks = [await fleet.start("understand", **body()) for _ in range(3)]
            calls = [
                fleet.handle_callback(json.dumps(result(f"u-{n + 1}", f"r{n}-{i}", f"s{i}")), key=task.key)
                for i in range(4)
                for n, task in enumerate(tasks)
            ]
            calls.append(fleet.handle_callback(json.dumps(result("u-1", "injected")), key=tasks[1].key))
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
        return tasks, outcomes

    tasks, outcomes = asyncio.run(run())
    assert [(task.state, task.task_id) for task in tasks] == [
        (TaskState.RUNNING, f"u-{n + 1}") for n in range(3)
    ]
    for n, task in enumerate(tasks):
        assert [segment.text for segment in task.transcript] == [f"r{n}-{i}" for i in range(4)]
    assert all(outcome is Outcome.APPLIED for outcome in outcomes[:-1])
    assert isinstance(outcomes[-1], MisroutedCallbackError)
