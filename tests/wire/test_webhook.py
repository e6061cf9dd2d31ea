"""The webhook receiver: in a real WSGI server on loopback, fuzzed and raced (ASGI: test_webhook_asgi).

Each live test runs ``serve_webhook(receiver)`` over a Fleet on the simulator and POSTs with
``requests``. What a test asserts is what a sender (memories.ai, or a stranger) sees, the status
and the JSON answer, and what the Fleet shows afterwards: a refused request changes no task.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import socket
import socketserver
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlife import Fleet, FleetStats, HistoryEntry, Outcome, OutcomeKind, Policy, StreamTask, TaskState
from streamlife.protocol import segment_callback, status_callback
from streamlife.sim import SimTransport, SimulatedService
from streamlife.webhook import WebhookReceiver, serve_webhook

TOKEN = "hook-token-0123456789abcdef"
URL = "rtmp://sim.invalid/live"
MAX_BODY = 1024
TIMEOUT = 10.0  # real seconds: a hung server fails the test instead of hanging it
JSON_TYPE = {"Content-Type": "application/json"}
ANSWERS = {200, 400, 413, 415}  # every answer a POST with the token may get
OUTCOMES = {kind.value for kind in OutcomeKind}
DELIVERIES = 50
MORE_EXAMPLES = settings(max_examples=2 * (settings.default.max_examples if settings.default else 100))


# -- callbacks, as memories.ai sends them ------------------------------------------------------------


def encoded(payload: object) -> bytes:
    return json.dumps(payload).encode()


def padded_segment(task_id: str, size: int) -> bytes:
    """A valid segment callback of exactly ``size`` bytes (its text padded)."""
    bare = len(encoded(segment_callback(task_id, 0, "")))
    body = encoded(segment_callback(task_id, 0, "x" * (size - bare)))
    assert len(body) == size
    return body


def tid(task: StreamTask) -> str:
    assert task.task_id is not None, f"{task!r} has no task_id"
    return task.task_id


# -- what a refused request must leave alone ---------------------------------------------------------
TaskView = tuple[int, str | None, TaskState, tuple[HistoryEntry, ...], str, int | None]


@dataclass(frozen=True)
class Snapshot:
    """Every task's state, history and transcript, and the Fleet's counters but ``malformed``."""

    tasks: tuple[TaskView, ...]
    stats: FleetStats
    malformed: int


def snapshot(fleet: Fleet) -> Snapshot:
    views = tuple(
        (
            task.ref,
            task.task_id,
            task.state,
            tuple(task.history),
            task.transcript_text(include_partials=True),
            task.end_status,
        )
        for task in fleet.tasks()
    )
    stats = fleet.stats()
    return Snapshot(views, dataclasses.replace(stats, malformed=0), stats.malformed)


def assert_untouched(before: Snapshot, after: Snapshot, *, malformed: int = 0) -> None:
    """Nothing changed but, for a 400, the count of malformed payloads."""
    assert after.tasks == before.tasks
    assert after.stats == before.stats
    assert after.malformed == before.malformed + malformed


def check_answer(status: int, answer: Mapping[str, Any]) -> None:
    """The JSON a POST with the token gets: an outcome, or an error (and, for a 400, its field)."""
    assert status in ANSWERS
    if status == 200:
        assert answer["outcome"] in OUTCOMES
        return
    assert isinstance(answer["error"], str)
    assert answer["error"]
    if status == 400:
        assert "field" in answer
        assert answer["field"] is None or isinstance(answer["field"], str)


# -- rigs --------------------------------------------------------------------------------------------
@dataclass
class Bench:
    """A Fleet on the simulator, and a receiver for it."""

    sim: SimulatedService
    fleet: Fleet
    receiver: WebhookReceiver

    def start(self) -> StreamTask:
        task = self.fleet.start("audio", audio_url=URL, provider="assemblyai")
        assert task.state is TaskState.RUNNING
        return task

    def running_task(self) -> StreamTask:
        """A running task: the newest, or a new one when callbacks have ended them all."""
        running = self.fleet.tasks(TaskState.RUNNING)
        return running[-1] if running else self.start()

    def newest_task(self) -> StreamTask:
        tasks = self.fleet.tasks()
        return tasks[-1] if tasks else self.start()


def bench(policy: Policy | None = None, **receiver_options: Any) -> Bench:
    sim = SimulatedService()
    fleet = Fleet(SimTransport(sim), policy=policy or Policy(stop_concurrency=0, seed=0))
    options = {"token": TOKEN, "max_body": MAX_BODY, **receiver_options}
    return Bench(sim, fleet, WebhookReceiver(fleet, **options))


@dataclass
class Live(Bench):
    """A bench whose receiver runs in a real WSGI server on loopback."""

    url: str
    session: requests.Session

    @property
    def hook_url(self) -> str:
        return f"{self.url}/hooks/{TOKEN}"

    def post(self, body: bytes, headers: Mapping[str, str] = JSON_TYPE) -> requests.Response:
        return self.session.post(self.hook_url, data=body, headers=dict(headers), timeout=TIMEOUT)

    def deliver(self, payload: object) -> str:
        """POST a callback with the token; return the outcome of its 200 answer."""
        answer = self.post(encoded(payload))
        assert answer.status_code == 200, answer.text
        outcome = answer.json()["outcome"]
        assert isinstance(outcome, str)
        return outcome


class _ThreadingWsgiServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = socket.SOMAXCONN  # the concurrency test's burst must not meet a full backlog


class _QuietWsgiHandler(WSGIRequestHandler):
    def get_environ(self) -> dict[str, Any]:
        environ = dict(super().get_environ())
        if self.headers.get("Content-Type") is None:
            environ.pop("CONTENT_TYPE", None)  # wsgiref makes up "text/plain"; none was sent
        return environ

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not the test's output."""


@contextmanager
def serve_wsgi(app: WebhookReceiver) -> Iterator[str]:
    """``app`` as a WSGI application in the standard library's WSGI server; yields its URL."""
    server = make_server(
        "127.0.0.1", 0, app, server_class=_ThreadingWsgiServer, handler_class=_QuietWsgiHandler
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextmanager
def serving(receiver: WebhookReceiver, face: str) -> Iterator[str]:
    """``receiver`` on loopback, through ``face``: "serve_webhook" (the library's server) or "wsgi"."""
    if face == "wsgi":
        with serve_wsgi(receiver) as url:
            yield url
        return
    with serve_webhook(receiver) as server:
        yield server.url


FACES = ["serve_webhook", "wsgi"]


def plain_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxy from the environment between us and loopback
    return session


@contextmanager
def live_rig(
    policy: Policy | None = None, face: str = "serve_webhook", **receiver_options: Any
) -> Iterator[Live]:
    base = bench(policy, **receiver_options)
    with serving(base.receiver, face) as url, plain_session() as session:
        yield Live(base.sim, base.fleet, base.receiver, url, session)


@pytest.fixture(scope="module", params=FACES)
def live(request: pytest.FixtureRequest) -> Iterator[Live]:
    """One server a face for the module: each test starts its own task, and compares before with after."""
    with live_rig(face=request.param) as rig:
        yield rig


@pytest.fixture(params=FACES)
def fresh(request: pytest.FixtureRequest) -> Iterator[Live]:
    """A server over a Fleet of its own, for a test that counts everything."""
    with live_rig(face=request.param) as rig:
        yield rig


@pytest.fixture(scope="module")
def shared_bench() -> Bench:
    return bench()


# -- authentication fails closed ---------------------------------------------------------------------
def test_a_receiver_without_a_token_refuses_to_exist() -> None:
    fleet = bench().fleet
    with pytest.raises(ValueError, match="needs a token"):
        WebhookReceiver(fleet)


@pytest.mark.parametrize("token", ["", "short", "x" * 15])
def test_a_short_token_is_refused(token: str) -> None:
    with pytest.raises(ValueError, match="16 characters"):
        WebhookReceiver(bench().fleet, token=token)


def test_a_token_of_sixteen_characters_is_enough() -> None:
    WebhookReceiver(bench().fleet, token="x" * 16)


def test_max_body_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_body"):
        WebhookReceiver(bench().fleet, token=TOKEN, max_body=0)


def test_allow_unauthenticated_takes_posts_without_a_token() -> None:
    with live_rig(token=None, allow_unauthenticated=True) as rig:
        task = rig.start()
        answer = rig.session.post(
            rig.url, data=encoded(segment_callback(tid(task), 0)), headers=JSON_TYPE, timeout=TIMEOUT
        )
        assert answer.status_code == 200
        assert answer.json() == {"outcome": "applied"}
        assert task.transcript_text() == "hello there"


def test_allow_unauthenticated_does_not_switch_off_a_given_token() -> None:
    with live_rig(allow_unauthenticated=True) as rig:
        answer = rig.session.post(
            rig.url, data=encoded(segment_callback(tid(rig.start()), 0)), headers=JSON_TYPE, timeout=TIMEOUT
        )
        assert answer.status_code == 401


WRONG_CREDENTIALS: dict[str, tuple[str, dict[str, str]]] = {
    "none": ("/hooks", {}),
    "none, trailing slash": ("/hooks/", {}),
    "wrong path token": ("/hooks/" + TOKEN[:-1] + "X", {}),
    "token prefix in the path": ("/hooks/" + TOKEN[:-1], {}),
    "token with more in the path": ("/hooks/" + TOKEN + "X", {}),
    "token not the last segment": (f"/hooks/{TOKEN}/more", {}),
    "wrong header": ("/hooks", {"X-Streamlife-Token": TOKEN.upper()}),
    "empty header": ("/hooks", {"X-Streamlife-Token": ""}),
    "wrong bearer": ("/hooks", {"Authorization": "Bearer " + TOKEN[::-1]}),
    "token without Bearer": ("/hooks", {"Authorization": TOKEN}),
    "basic, not bearer": ("/hooks", {"Authorization": "Basic " + TOKEN}),
}


@pytest.mark.parametrize(("path", "headers"), WRONG_CREDENTIALS.values(), ids=WRONG_CREDENTIALS.keys())
def test_a_missing_or_wrong_token_is_401_and_the_body_is_never_applied(
    live: Live, path: str, headers: dict[str, str]
) -> None:
    task = live.start()
    before = snapshot(live.fleet)
    answer = live.session.post(
        live.url + path,
        data=encoded(segment_callback(tid(task), 0)),
        headers={**JSON_TYPE, **headers},
        timeout=TIMEOUT,
    )
    assert answer.status_code == 401
    assert answer.json() == {"error": "a valid token is required"}
    assert TOKEN not in answer.text
    assert_untouched(before, snapshot(live.fleet))


GOOD_CREDENTIALS: dict[str, tuple[str, dict[str, str]]] = {
    "path": (f"/hooks/{TOKEN}", {}),
    "header": ("/hooks", {"X-Streamlife-Token": TOKEN}),
    "bearer": ("/hooks", {"Authorization": f"Bearer {TOKEN}"}),
    "bearer, lower case": ("/hooks", {"Authorization": f"bearer {TOKEN}"}),
}


@pytest.mark.parametrize(("path", "headers"), GOOD_CREDENTIALS.values(), ids=GOOD_CREDENTIALS.keys())
def test_the_token_opens_the_door_from_the_path_the_header_or_a_bearer(
    live: Live, path: str, headers: dict[str, str]
) -> None:
    task = live.start()
    answer = live.session.post(
        live.url + path,
        data=encoded(segment_callback(tid(task), 0)),
        headers={**JSON_TYPE, **headers},
        timeout=TIMEOUT,
    )
    assert answer.status_code == 200
    assert answer.json() == {"outcome": "applied"}
    assert task.transcript_text() == "hello there"


# -- what is not a callback ------------------------------------------------------------------------
def test_a_body_over_max_body_is_413_and_not_applied(live: Live) -> None:
    task = live.start()
    before = snapshot(live.fleet)
    answer = live.post(padded_segment(tid(task), MAX_BODY + 1))
    assert answer.status_code == 413
    assert "1024" in answer.json()["error"]
    assert_untouched(before, snapshot(live.fleet))


def test_a_huge_body_is_413_not_a_dropped_connection(live: Live) -> None:
    before = snapshot(live.fleet)
    answer = live.post(b"[" * 1_000_000)
    assert answer.status_code == 413
    assert_untouched(before, snapshot(live.fleet))


def test_a_body_of_exactly_max_body_is_taken(live: Live) -> None:
    task = live.start()
    answer = live.post(padded_segment(tid(task), MAX_BODY))
    assert answer.status_code == 200
    assert answer.json() == {"outcome": "applied"}


def test_a_text_body_is_415_and_not_applied(live: Live) -> None:
    task = live.start()
    before = snapshot(live.fleet)
    answer = live.post(encoded(segment_callback(tid(task), 0)), {"Content-Type": "text/plain"})
    assert answer.status_code == 415
    assert "application/json" in answer.json()["error"]
    assert_untouched(before, snapshot(live.fleet))


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/x+json"],
)
def test_every_json_content_type_is_taken(live: Live, content_type: str) -> None:
    task = live.start()
    answer = live.post(encoded(segment_callback(tid(task), 0)), {"Content-Type": content_type})
    assert answer.status_code == 200


def test_a_body_without_a_content_type_is_read_as_json(live: Live) -> None:
    """As ``handle`` and ``asgi`` read it (below): no Content-Type is no wrong Content-Type."""
    task = live.start()
    answer = live.session.post(live.hook_url, data=encoded(segment_callback(tid(task), 0)), timeout=TIMEOUT)
    assert answer.status_code == 200
    assert answer.json() == {"outcome": "applied"}


def test_handle_reads_a_body_without_a_content_type_as_json() -> None:
    rig = bench()
    task = rig.start()
    answer = rig.receiver.handle(encoded(segment_callback(tid(task), 0)), {"X-Streamlife-Token": TOKEN})
    assert answer.status == 200
    assert answer.json == {"outcome": "applied"}


def test_a_chunked_body_without_content_length_is_411(live: Live) -> None:
    task = live.start()
    before = snapshot(live.fleet)
    chunks = iter([encoded(segment_callback(tid(task), 0))])
    answer = live.session.post(live.hook_url, data=chunks, headers=JSON_TYPE, timeout=TIMEOUT)
    assert answer.status_code == 411
    assert_untouched(before, snapshot(live.fleet))


def _without_task_id(task_id: str) -> bytes:
    payload = segment_callback(task_id, 0)
    del payload["task_id"]
    return encoded(payload)


def _index_in_words(task_id: str) -> bytes:
    payload = segment_callback(task_id, 0)
    payload["data"]["segment_index"] = "three"
    return encoded(payload)


MALFORMED: dict[str, tuple[Callable[[str], bytes], str | None, str]] = {
    "not JSON": (lambda _: b"{this is not json", None, "not JSON"),
    "not UTF-8": (lambda _: b'{"task_id": "\xff"}', None, "not UTF-8"),
    "not an object": (lambda task_id: encoded([task_id]), None, "not an object"),
    "no task_id": (_without_task_id, "task_id", "missing"),
    "segment_index in words": (_index_in_words, "data.segment_index", "must be an integer"),
}


@pytest.mark.parametrize(("make_body", "field", "problem"), MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_callback_is_400_naming_the_field_and_changes_nothing(
    live: Live, make_body: Callable[[str], bytes], field: str | None, problem: str
) -> None:
    task = live.start()
    before = snapshot(live.fleet)
    answer = live.post(make_body(tid(task)))
    assert answer.status_code == 400
    body = answer.json()
    assert body["field"] == field
    assert problem in body["error"]
    assert_untouched(before, snapshot(live.fleet), malformed=1)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_anything_but_post_is_405_with_allow_post(live: Live, method: str) -> None:
    before = snapshot(live.fleet)
    answer = live.session.request(method, live.hook_url, timeout=TIMEOUT)
    assert answer.status_code == 405
    assert answer.headers["Allow"] == "POST"
    assert answer.json() == {"error": "callbacks are POSTed"}
    assert_untouched(before, snapshot(live.fleet))


# -- what became of a callback -------------------------------------------------------------------
def test_each_outcome_is_answered_200(fresh: Live) -> None:
    task = fresh.start()
    assert fresh.deliver(segment_callback(tid(task), 0)) == "applied"
    assert fresh.deliver(segment_callback(tid(task), 0)) == "duplicate"
    assert fresh.deliver(status_callback(tid(task), 14)) == "applied"
    assert task.state is TaskState.STOPPED
    assert fresh.deliver(segment_callback(tid(task), 1, final=False)) == "late"
    assert fresh.deliver(segment_callback("660e8400-e29b-41d4-a716-44665544ffff", 0)) == "parked"
    clip = {"code": 200, "task_id": "1e8ae1075e054e8abb58e7598c53cbf1", "data": {"video_url": "u"}}
    assert fresh.deliver(clip) == "foreign"  # another product's result, on the account's one URL
    assert fresh.fleet.stats().callbacks == {
        "applied": 2,
        "duplicate": 1,
        "late": 1,
        "parked": 1,
        "rejected": 0,
        "foreign": 1,
    }
    assert fresh.fleet.stats().parked == 1


@pytest.mark.parametrize("face", FACES)
def test_a_callback_with_no_room_to_park_is_answered_503_and_parked_when_delivered_again(face: str) -> None:
    """A full parking lot must not answer 200 "rejected": the sender would never send it again."""
    with live_rig(Policy(stop_concurrency=0, seed=0, max_parked=1), face) as rig:
        assert rig.deliver(segment_callback("unknown-task-one", 0)) == "parked"
        answer = rig.post(encoded(segment_callback("unknown-task-two", 0)))
        assert answer.status_code == 503
        assert answer.headers["Retry-After"] == "1"
        assert rig.fleet.store.parked("unknown-task-two") == []  # nothing of it kept
        rig.fleet.stop_all()  # the parked task_id is adopted and stopped: its room is free again
        assert rig.deliver(segment_callback("unknown-task-two", 0)) == "parked"


class Rejects:
    """A sink that refuses every callback as impossible, as a task does an event its state forbids."""

    def handle_callback(self, payload: bytes) -> Outcome:
        return Outcome.rejected("segment is impossible while pending")


def test_a_rejected_callback_is_answered_200_with_its_reason() -> None:
    answer = WebhookReceiver(Rejects(), token=TOKEN).handle(b"{}", {"X-Streamlife-Token": TOKEN})
    assert answer.status == 200
    assert answer.json == {"outcome": "rejected", "reason": "segment is impossible while pending"}


def test_the_simulator_drives_a_task_through_the_live_receiver(fresh: Live) -> None:
    outcomes: list[str] = []
    fresh.sim.on_callback(lambda payload: outcomes.append(fresh.deliver(payload)))
    task = fresh.start()
    fresh.sim.advance(10.0)  # two segments, each a partial then its final
    assert outcomes == ["applied"] * 4
    assert task.transcript_text() == " ".join(f"segment {i} of {tid(task)[:8]}" for i in range(2))
    fresh.fleet.stop(task)
    fresh.sim.advance(1.0)  # the status-14 callback
    assert outcomes[4:] == ["applied"]
    assert task.state is TaskState.STOPPED
    assert fresh.sim.billing() == []


# -- fuzzing ---------------------------------------------------------------------------------------
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)
ODD_VALUES = st.one_of(
    st.integers(),
    st.integers().map(str),
    st.text(max_size=8),
    st.floats(),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
)
SMALL_INTS = st.integers(-1, 20) | st.sampled_from([14, 16])  # valid indexes, and the ending statuses
FIELD_VALUES = st.booleans().flatmap(lambda fair: SMALL_INTS if fair else ODD_VALUES)  # half well formed
TRANSCRIPT_KEYS = st.sampled_from(["text", "is_final", "final", "type", "message_type"])
TRANSCRIPTS = st.one_of(
    st.text(max_size=20),
    st.none(),
    st.fixed_dictionaries({"text": st.text(max_size=20)}, optional={"is_final": st.booleans()}),
    st.dictionaries(
        TRANSCRIPT_KEYS, ODD_VALUES | st.sampled_from(["partial", "final", "Partial_Transcript"])
    ),
)
CALLBACK_DATA = st.fixed_dictionaries(
    {"segment_index": FIELD_VALUES, "status": FIELD_VALUES},
    optional={
        "transcript": TRANSCRIPTS,
        "segment_start_time": FIELD_VALUES,
        "segment_end_time": FIELD_VALUES,
    },
)


class Addressee(enum.Enum):
    """A task_id known only when posting: the fuzzing starts and ends tasks as it goes."""

    RUNNING = "the running task"
    NEWEST = "the newest task, whatever its state"


CallbackShape = tuple[Addressee | str, dict[str, Any]]
CALLBACK_SHAPES = st.tuples(st.sampled_from(Addressee) | st.text(max_size=40), CALLBACK_DATA)


def shaped(bench: Bench, shape: CallbackShape) -> bytes:
    """A callback-shaped body: the drawn task_id (or a task's) and the fuzzed data."""
    addressee, data = shape
    if addressee is Addressee.RUNNING:
        task_id = tid(bench.running_task())
    elif addressee is Addressee.NEWEST:
        task_id = tid(bench.newest_task())
    else:
        task_id = addressee
    return encoded({"code": "200", "message": "SUCCESS", "task_id": task_id, "data": data})


def post_and_check(live: Live, body: bytes) -> None:
    before = snapshot(live.fleet)
    answer = live.post(body)
    check_answer(answer.status_code, answer.json())
    if answer.status_code != 200:
        assert_untouched(before, snapshot(live.fleet), malformed=int(answer.status_code == 400))


def handle_and_check(bench: Bench, body: bytes) -> None:
    before = snapshot(bench.fleet)
    answer = bench.receiver.handle(body, {**JSON_TYPE, "X-Streamlife-Token": TOKEN})
    check_answer(answer.status, answer.json)
    if answer.status != 200:
        assert_untouched(before, snapshot(bench.fleet), malformed=int(answer.status == 400))


Deliver = Callable[[object], str]  # a callback in, the outcome of its 200 answer out


def assert_still_works(bench: Bench, deliver: Deliver) -> None:
    """After the fuzzing, a fresh task's first segment is applied."""
    task = bench.start()
    assert deliver(segment_callback(tid(task), 0, "still here")) == "applied"
    assert task.transcript_text() == "still here"


def deliver_directly(bench: Bench) -> Deliver:
    def deliver(payload: object) -> str:
        answer = bench.receiver.handle(encoded(payload), {"Authorization": f"Bearer {TOKEN}"})
        assert answer.status == 200
        return str(answer.json["outcome"])

    return deliver


@given(body=st.binary(max_size=2 * MAX_BODY))
def test_fuzz_live_with_arbitrary_bytes(live: Live, body: bytes) -> None:
    post_and_check(live, body)


@given(value=JSON_VALUES)
def test_fuzz_live_with_arbitrary_json(live: Live, value: object) -> None:
    post_and_check(live, encoded(value))


@given(shape=CALLBACK_SHAPES)
def test_fuzz_live_with_callback_shapes(live: Live, shape: CallbackShape) -> None:
    post_and_check(live, shaped(live, shape))


def test_the_live_server_still_works_after_the_fuzzing(live: Live) -> None:
    assert_still_works(live, live.deliver)


@MORE_EXAMPLES
@given(body=st.binary(max_size=2 * MAX_BODY))
def test_fuzz_handle_with_arbitrary_bytes(shared_bench: Bench, body: bytes) -> None:
    handle_and_check(shared_bench, body)


@MORE_EXAMPLES
@given(value=JSON_VALUES)
def test_fuzz_handle_with_arbitrary_json(shared_bench: Bench, value: object) -> None:
    handle_and_check(shared_bench, encoded(value))


@MORE_EXAMPLES
@given(shape=CALLBACK_SHAPES)
def test_fuzz_handle_with_callback_shapes(shared_bench: Bench, shape: CallbackShape) -> None:
    handle_and_check(shared_bench, shaped(shared_bench, shape))


def test_handle_still_works_after_the_fuzzing(shared_bench: Bench) -> None:
    assert_still_works(shared_bench, deliver_directly(shared_bench))


# -- concurrency -----------------------------------------------------------------------------------
def test_fifty_concurrent_duplicate_deliveries_have_one_effect(fresh: Live) -> None:
    task = fresh.start()
    body = encoded(segment_callback(tid(task), 3))
    barrier = threading.Barrier(DELIVERIES)

    def deliver(_: int) -> str:
        """One delivery's outcome, or "dropped" when the server let the connection go unanswered."""
        with plain_session() as session:
            barrier.wait(timeout=TIMEOUT)
            try:
                answer = session.post(fresh.hook_url, data=body, headers=JSON_TYPE, timeout=TIMEOUT)
            except requests.ConnectionError:
                return "dropped"
        assert answer.status_code == 200
        return str(answer.json()["outcome"])

    with ThreadPoolExecutor(DELIVERIES) as pool:
        outcomes = Counter(pool.map(deliver, range(DELIVERIES)))
    entries = [entry for entry in task.history if entry.trigger == "segment"]
    assert all(entry.data == {"index": 3, "final": True} for entry in entries)
    kinds = Counter(entry.outcome.kind for entry in entries)
    assert kinds[OutcomeKind.APPLIED] == 1  # one effect, whatever else happened
    assert task.transcript_text() == "hello there"
    assert outcomes == {"applied": 1, "duplicate": DELIVERIES - 1}  # and every delivery answered
    assert kinds == {OutcomeKind.APPLIED: 1, OutcomeKind.DUPLICATE: DELIVERIES - 1}


# -- the token stays secret ----------------------------------------------------------------------
def test_the_repr_never_shows_the_token() -> None:
    receiver = bench().receiver
    assert TOKEN not in repr(receiver)
    assert TOKEN not in str(receiver)
    assert "token=<redacted>" in repr(receiver)


def test_the_repr_of_an_open_receiver_says_so() -> None:
    receiver = WebhookReceiver(bench().fleet, allow_unauthenticated=True)
    assert "unauthenticated" in repr(receiver)


def test_another_products_result_is_answered_200_foreign(fresh: Live) -> None:
    result = {"code": 200, "message": "SUCCESS", "task_id": "f" * 32, "data": {"clips": ["a.mp4"]}}
    answer = fresh.post(encoded(result))
    assert (answer.status_code, answer.json()) == (200, {"outcome": "foreign"})
    assert (fresh.fleet.stats().parked, fresh.fleet.tasks()) == (0, [])
