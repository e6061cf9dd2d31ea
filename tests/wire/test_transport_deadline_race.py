"""A request's deadline never cuts another request that reuses its connection, over real sockets.

urllib3 puts a connection back in the session's shared pool while the last byte of an answer is
read, before the request's own code runs again; another thread may take it from there at once. A
deadline timer firing in that gap, or one that decided to fire just before, must not shut down the
socket under the request that now owns it. Each ordering is forced here by holding one thread at
the step where the race lies, on a connection the server proves was reused.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from urllib3.connectionpool import HTTPConnectionPool

from streamlife import StreamKind
from streamlife.errors import OutcomeUnknownError, TransportError
from streamlife.protocol import PATHS
from streamlife.transport import HttpTransport
from streamlife.transport import _deadline as deadline
from tests.scripted_server import Answer, ScriptedServer, ok, scripted_server

KEY = "sk-mai-SECRET-test-key-0123456789"
PARAMS = {"audio_url": "rtmp://example.invalid/live", "provider": "assemblyai"}
SHORT = 0.3  # the first request's deadline, in seconds
LATE_ANSWER = 1.0  # how long the server takes to answer the request that reuses the connection


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with scripted_server() as running:
        yield running


def late(task_id: str) -> Answer:
    answer = ok(task_id)
    return Answer(answer.status, answer.body, delay=LATE_ANSWER)


def on_return_to_pool(monkeypatch: pytest.MonkeyPatch, then: Callable[[], None]) -> threading.Event:
    """Once this thread's first connection is back in the pool: set the event returned, then
    call ``then`` (still in the middle of urllib3's read, before the request's code runs again)."""
    returned = threading.Event()
    caller = threading.get_ident()
    put_conn = HTTPConnectionPool._put_conn

    def put_conn_and_pause(pool: HTTPConnectionPool, conn: Any) -> None:
        put_conn(pool, conn)
        if threading.get_ident() == caller and not returned.is_set():
            returned.set()
            then()

    monkeypatch.setattr(HTTPConnectionPool, "_put_conn", put_conn_and_pause)
    return returned


def start_once(
    returned: threading.Event, http: HttpTransport, results: dict[str, object]
) -> threading.Thread:
    """A start in another thread, sent as soon as ``returned`` is set: it takes that connection."""

    def start() -> None:
        returned.wait(10)
        try:
            results["second"] = http.start(StreamKind.AUDIO, PARAMS).task_id
        except TransportError as error:
            results["second"] = error

    thread = threading.Thread(target=start, name="second-request", daemon=True)
    thread.start()
    return thread


def test_a_timer_firing_after_the_connection_went_back_cuts_neither_request(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.then(ok("first"), late("second"))
    http = HttpTransport(KEY, base_url=server.url, timeout=(2.0, 5.0))
    # The first request's thread is held, its answer read whole, until its timer has fired.
    returned = on_return_to_pool(monkeypatch, lambda: time.sleep(2 * SHORT))
    results: dict[str, object] = {}
    second = start_once(returned, http, results)
    try:
        results["first"] = http.stop(StreamKind.AUDIO, "first", within=SHORT).task_id
    except TransportError as error:
        results["first"] = error
    second.join(10)
    assert results == {"first": "first", "second": "second"}  # neither fails: both answers came whole
    first, reused = server.requests
    assert reused.peer == first.peer  # the second request did run on the first one's connection
    assert reused.path == PATHS[StreamKind.AUDIO][0]


def test_a_timer_that_fired_before_the_connection_went_back_cuts_only_its_own_request(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first answer comes after its deadline. Its timer fires and is held just before it shuts
    # the socket down, while that answer is read whole and its connection goes back to the pool.
    server.then(Answer(200, ok("first").body, delay=2 * SHORT), late("second"))
    session = requests.Session()
    session.trust_env = False
    hurried = HttpTransport(
        KEY, base_url=server.url, session=session, timeout=(2.0, 5.0), total_timeout=SHORT
    )
    patient = HttpTransport(KEY, base_url=server.url, session=session, timeout=(2.0, 5.0))
    shut_down = deadline._shut_down

    def shut_down_later(sock: object) -> None:
        time.sleep(3 * SHORT)  # until the first answer is in and the second request has begun
        shut_down(sock)

    monkeypatch.setattr(deadline, "_shut_down", shut_down_later)
    returned = on_return_to_pool(monkeypatch, lambda: None)
    results: dict[str, object] = {}
    second = start_once(returned, patient, results)
    with pytest.raises(OutcomeUnknownError, match="deadline"):
        hurried.start(StreamKind.AUDIO, PARAMS)
    second.join(10)
    assert results == {"second": "second"}  # a new connection, not the one shut down under it
    assert len(server.requests) == 2


def test_many_prompt_requests_over_one_pool_all_succeed_and_leave_no_thread(server: ScriptedServer) -> None:
    threads_before = threading.active_count()
    requests_each, senders = 40, 6
    server.then(*[ok("t-1")] * (requests_each * senders))
    http = HttpTransport(KEY, base_url=server.url, timeout=(2.0, 5.0), total_timeout=60.0)
    failures: list[BaseException] = []

    def send_many() -> None:
        for _ in range(requests_each):
            try:
                http.stop(StreamKind.AUDIO, "t-1")
            except TransportError as error:
                failures.append(error)

    workers = [threading.Thread(target=send_many, name=f"sender-{n}") for n in range(senders)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert failures == []
    assert len(server.requests) == requests_each * senders
    http.close()
    # Every deadline's timer thread ends once its request does (the server's threads end as
    # their connections close; threads of earlier tests may end too, hence "at most").
    give_up_at = time.monotonic() + 10
    while threading.active_count() > threads_before and time.monotonic() < give_up_at:
        time.sleep(0.05)
    assert threading.active_count() <= threads_before
