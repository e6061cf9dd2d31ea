"""`streamlife serve --server uvicorn`, in real processes on loopback: callbacks applied (by one
process, and by two workers sharing a SQLite file or a PostgreSQL database, each callback once),
/healthz and /metrics, the token kept out of every log line, a callback in flight when SIGTERM
comes answered and journaled, and the refusals of options that do not go together."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from streamlife import Fleet, ManualClock, Outcome, Policy
from streamlife.cli import production
from streamlife.protocol import segment_callback
from streamlife.sim import SimTransport, SimulatedService
from streamlife.store import Store, open_store

from .test_cli_commands import Served, environment, streamlife

TOKEN = "serve-token-0123456789abcdef"
KEY = "sk-mai-serve-test"


class Server(Served):
    """`streamlife serve` in a subprocess; everything it prints (stdout and stderr) kept, line by line."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        super().__init__(process, process.stdout)
        self.port = 0

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        return super().wait_for(pattern, timeout)

    def output(self) -> str:
        """Everything printed so far (the whole of it once the process has ended)."""
        self._reader.join(timeout=30)
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.seen.append(line)
        return "".join(self.seen)

    def terminate(self, timeout: float = 60.0) -> int:
        return super().terminate(timeout)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """One request on a connection of its own."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            answer = conn.getresponse()
            return answer.status, answer.read()
        finally:
            conn.close()

    def post(self, payload: Any, path: str = f"/memories/{TOKEN}") -> tuple[int, Any]:
        status, body = self.request(
            "POST", path, json.dumps(payload).encode(), {"Content-Type": "application/json"}
        )
        return status, json.loads(body)

    def wait_refusing(self, timeout: float = 30.0) -> None:
        """Return once a new connection is refused: the server no longer accepts."""
        give_up_at = time.monotonic() + timeout
        while time.monotonic() < give_up_at:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
            except ConnectionRefusedError:
                return
            time.sleep(0.02)
        raise AssertionError("serve went on accepting connections")

    def wait_healthy(self, timeout: float = 60.0) -> None:
        give_up_at = time.monotonic() + timeout
        while time.monotonic() < give_up_at:
            try:
                if self.request("GET", "/healthz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"serve never became healthy; it said:\n{self.output()}")


@contextmanager
def serving(*args: str, cwd: Path, log_level: str = "error") -> Iterator[Server]:
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlife", "--log-level", log_level, "serve", "--server", "uvicorn",
         "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=cwd,
        env=environment(MEMORIES_API_KEY=KEY, STREAMLIFE_WEBHOOK_TOKEN=TOKEN),
        start_new_session=True,  # its workers too are ended at the end, whatever happens
    )  # fmt: skip
    server = Server(process)
    try:
        server.port = int(server.wait_for(r"webhooks at http://127\.0\.0\.1:(\d+)/<token hidden>")[1])
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        server.output()
        assert process.stdout is not None
        process.stdout.close()


def running_tasks(url: str, count: int) -> list[str]:
    """``count`` running audio tasks journaled in the store at ``url``; their task_ids."""
    clock = ManualClock(time.time())
    service = SimulatedService(clock=clock)
    store = open_store(url)
    try:
        with Fleet(
            SimTransport(service), clock=clock, store=store, policy=Policy(stop_concurrency=0)
        ) as fleet:
            tasks = [
                fleet.start("audio", audio_url=f"rtmp://example.invalid/live/{n}", provider="assemblyai")
                for n in range(count)
            ]
            assert all(task.state.value == "running" for task in tasks)
            return [str(task.task_id) for task in tasks]
    finally:
        store.close()


def segments_applied(store: Store) -> Counter[tuple[str, int]]:
    """How many times each (task_id, segment index) was journaled."""
    applied: Counter[tuple[str, int]] = Counter()
    for row in store.rows(terminal=True):
        for entry in store.journal(row.key):
            if entry.trigger == "segment":
                args: Any = entry.args
                applied[args["on"], args["segment"]["index"]] += 1
    return applied


@pytest.fixture(params=["sqlite", "postgres"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return f"postgres:{request.getfixturevalue('pg_store_dsn')}"
    return f"sqlite:{tmp_path / 'tasks.db'}"


def wait_taken_back(server: Server, store_url: str, task_ids: list[str], workers: int = 2) -> None:
    """Wait until the workers have taken the store's tasks back: on SQLite worker 0 all of them; on
    PostgreSQL each worker those whose task_id's CRC-32 falls to it (its share)."""
    if store_url.startswith("sqlite:"):
        server.wait_for(rf"worker 0: .* recovered {len(task_ids)} tasks? from")
        for index in range(1, workers):
            server.wait_for(rf"worker {index}: webhooks at .* taking over what another process leaves")
        return
    shares = Counter(zlib.crc32(task_id.encode()) % workers for task_id in task_ids)
    for index in range(workers):
        server.wait_for(rf"worker {index}: .* recovered {shares[index]} tasks? of its share from")


def metric(text: str, name: str) -> float | None:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return None if found is None else float(found[1])


# -- one process ------------------------------------------------------------------------------------
def test_callbacks_are_applied_and_the_token_never_reaches_a_log_line(tmp_path: Path) -> None:
    url = f"sqlite:{tmp_path / 'tasks.db'}"
    [task_id] = running_tasks(url, 1)
    with serving("--store", url, cwd=tmp_path, log_level="debug") as server:
        server.wait_healthy()
        assert server.post(segment_callback(task_id, 0)) == (200, {"outcome": "applied"})
        assert server.post(segment_callback(task_id, 0)) == (200, {"outcome": "duplicate"})
        # The token by every road it may take: the path, a query string, the header, a bearer.
        assert server.post(segment_callback(task_id, 1), f"/memories/{TOKEN}?token={TOKEN}")[0] == 200
        status, _ = server.request(
            "POST",
            f"/memories?token={TOKEN}",
            json.dumps(segment_callback(task_id, 2)).encode(),
            {"Content-Type": "application/json", "X-Streamlife-Token": TOKEN},
        )
        assert status == 200
        status, _ = server.request(
            "POST",
            "/memories",
            b"{}",
            {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
        )
        assert status == 400  # authenticated, and not a callback
        # A wrong token is refused, and is masked as well: it may be an old right one.
        assert server.post(segment_callback(task_id, 3), f"/memories/{TOKEN[::-1]}")[0] == 401
        assert server.request("GET", f"/memories/{TOKEN}")[0] == 405
        text = server.request("GET", "/metrics")[1].decode()
        assert server.terminate() == 0
        said = server.output()
    assert TOKEN not in said
    assert TOKEN[::-1] not in said
    assert said.count("streamlife.http_request") >= 6, said  # the access lines are there, masked
    assert "path=/memories/***" in said
    assert "leaving 1 unfinished task in" in said  # a durable store's tasks stay, and serve says so
    assert metric(text, 'streamlife_callbacks_total{outcome="applied"}') == 3
    assert metric(text, 'streamlife_callbacks_total{outcome="duplicate"}') == 1
    assert metric(text, 'streamlife_callbacks_total{outcome="malformed"}') == 1
    assert metric(text, 'streamlife_http_responses_total{status="401"}') == 1
    assert metric(text, "streamlife_ingest_seconds_count") == 7  # every request the receiver answered
    assert metric(text, 'streamlife_tasks{state="running"}') == 1
    assert metric(text, "streamlife_stops_sent_total") == 0
    assert (metric(text, "streamlife_billed_seconds_exposed") or 0) >= 5  # one 5-second cycle at least
    store = open_store(url)
    try:
        assert segments_applied(store) == {(task_id, 0): 1, (task_id, 1): 1, (task_id, 2): 1}
    finally:
        store.close()


def test_healthz_answers_503_naming_the_store_once_it_is_unreachable(tmp_path: Path, pg_dsn: str) -> None:
    from tests.pg import fresh_database

    with fresh_database(pg_dsn) as dsn:
        running_tasks(f"postgres:{dsn}", 1)
        with serving("--store", f"postgres:{dsn}", cwd=tmp_path) as server:
            server.wait_healthy()
            status, body = server.request("GET", "/healthz")
            assert (status, json.loads(body)) == (200, {"status": "ok", "store": "ok", "timers": "ok"})
            dbname = str(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"])
            with psycopg.connect(pg_dsn, autocommit=True) as conn:  # the database goes away
                conn.execute(
                    psycopg.sql.SQL("DROP DATABASE {} WITH (FORCE)").format(psycopg.sql.Identifier(dbname))
                )
            status, body = server.request("GET", "/healthz")
            answer = json.loads(body)
            assert status == 503
            assert answer["status"] == "unavailable"
            assert answer["store"] in ("failed", "no answer")
            assert answer["timers"] == "ok"
            assert str(dbname) not in body.decode()  # fixed words: nothing of the DSN
            server.terminate()


def test_a_callback_in_flight_at_sigterm_is_answered_and_journaled(tmp_path: Path, pg_store_dsn: str) -> None:
    url = f"postgres:{pg_store_dsn}"
    [task_id] = running_tasks(url, 1)
    with serving("--store", url, cwd=tmp_path) as server:
        server.wait_healthy()
        with psycopg.connect(pg_store_dsn) as holder, ThreadPoolExecutor(1) as pool:
            # Hold the task's row: the callback's write waits for it, in flight, inside the server.
            holder.execute("SELECT 1 FROM streamlife_tasks WHERE task_id = %s FOR UPDATE", (task_id,))
            answer = pool.submit(server.post, segment_callback(task_id, 0))
            wait_for_lock_waiter(pg_store_dsn)
            server.process.send_signal(signal.SIGTERM)
            server.wait_refusing()  # it stopped accepting, while the callback still waits
            holder.rollback()  # the row is let go: the callback goes on
            assert answer.result(timeout=30) == (200, {"outcome": "applied"})
        assert server.process.wait(timeout=60) == 0
    store = open_store(url)
    try:
        assert segments_applied(store) == {(task_id, 0): 1}
    finally:
        store.close()


def test_past_limit_concurrency_a_request_is_answered_503_at_once(tmp_path: Path, pg_store_dsn: str) -> None:
    url = f"postgres:{pg_store_dsn}"
    [task_id] = running_tasks(url, 1)
    # uvicorn counts connections, idle keep-alive ones too: 2 lets one request in, and no second.
    with serving("--store", url, "--limit-concurrency", "2", cwd=tmp_path) as server:
        server.wait_healthy()
        with psycopg.connect(pg_store_dsn) as holder, ThreadPoolExecutor(1) as pool:
            holder.execute("SELECT 1 FROM streamlife_tasks WHERE task_id = %s FOR UPDATE", (task_id,))
            answer = pool.submit(server.post, segment_callback(task_id, 0))
            wait_for_lock_waiter(pg_store_dsn)  # the one request allowed is in flight
            assert server.request("GET", "/healthz")[0] == 503
            holder.rollback()
            assert answer.result(timeout=30) == (200, {"outcome": "applied"})
        assert server.terminate() == 0


def wait_for_lock_waiter(dsn: str) -> None:
    """Return once a session of the database at ``dsn`` waits for a row lock."""
    with psycopg.connect(dsn, autocommit=True) as watcher:
        waiting = (
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        give_up_at = time.monotonic() + 30
        while watcher.execute(waiting).fetchone() != (1,):
            assert time.monotonic() < give_up_at, "no session ever waited for the row lock"
            time.sleep(0.01)


# -- several workers ----------------------------------------------------------------------------------
def test_two_workers_share_the_store_and_apply_each_callback_once(tmp_path: Path, shared_store: str) -> None:
    task_ids = running_tasks(shared_store, 8)  # (on PostgreSQL, 7 fall to worker 0 and 1 to worker 1)
    callbacks = [segment_callback(task_id, index) for index in range(5) for task_id in task_ids]
    with serving("--store", shared_store, "--workers", "2", cwd=tmp_path) as server:
        wait_taken_back(server, shared_store, task_ids)
        # Each callback twice, at once, each copy on a connection of its own: a redelivery that
        # reaches either worker.
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(server.post, [payload for payload in callbacks for _ in range(2)]))
        assert all(status == 200 for status, _ in answers), answers
        outcomes = Counter(body["outcome"] for _, body in answers)
        assert outcomes == {"applied": len(callbacks), "duplicate": len(callbacks)}
        # The counters of both workers, added up by whichever answers the scrape (each syncs every
        # second, on its own: on SQLite worker 0 applies every callback, and each worker counts the
        # requests it answered).
        give_up_at = time.monotonic() + 30
        while True:
            text = server.request("GET", "/metrics")[1].decode()
            if metric(text, 'streamlife_callbacks_total{outcome="applied"}') == len(callbacks) and (
                metric(text, "streamlife_ingest_seconds_count") == 2 * len(callbacks)
            ):
                break
            assert time.monotonic() < give_up_at, text
            time.sleep(0.2)
        assert metric(text, 'streamlife_callbacks_total{outcome="duplicate"}') == len(callbacks)
        assert metric(text, 'streamlife_tasks{state="running"}') == len(task_ids)
        assert metric(text, "streamlife_ingest_seconds_count") == 2 * len(callbacks)
        assert server.terminate() == 0, server.output()
        pids = {int(pid) for pid in re.findall(r"pid (\d+)", server.output())}
        assert not pids  # no worker died and was started again
    store = open_store(shared_store)
    try:
        applied = segments_applied(store)
    finally:
        store.close()
    assert applied == {(task_id, index): 1 for task_id in task_ids for index in range(5)}


def test_workers_apply_each_task_s_callbacks_in_one_process(tmp_path: Path, shared_store: str) -> None:
    """The workers pass each callback to the one that applies its task's: on SQLite worker 0 applies
    them all; on PostgreSQL each worker a share of the tasks. So no copy of a task is ever behind,
    and none replays what another applied."""
    task_ids = running_tasks(shared_store, 8)  # (on PostgreSQL, 7 fall to worker 0 and 1 to worker 1)
    callbacks = [segment_callback(task_id, index) for index in range(10) for task_id in task_ids]
    with serving("--store", shared_store, "--workers", "2", cwd=tmp_path, log_level="debug") as server:
        if shared_store.startswith("sqlite:"):
            server.wait_for(r"worker 0: applying the callbacks the other workers receive; recovered 8 tasks")
            server.wait_for(r"worker 1: webhooks at .*, passed on to worker 0; taking over what another")
        else:
            for worker in (0, 1):
                server.wait_for(rf"worker {worker}: webhooks at .*, each to its task's worker; recovered")
            wait_taken_back(server, shared_store, task_ids)
        with ThreadPoolExecutor(8) as pool:  # a connection each: the kernel hands them to both
            answers = list(pool.map(server.post, callbacks))
        assert answers == [(200, {"outcome": "applied"})] * len(callbacks)
        assert server.terminate() == 0, server.output()
    assert "streamlife.caught_up" not in server.output()
    store = open_store(shared_store)
    try:
        assert segments_applied(store) == {(task_id, index): 1 for task_id in task_ids for index in range(10)}
    finally:
        store.close()


def test_callbacks_are_applied_while_worker_0_is_dead_and_after_it_is_back(tmp_path: Path) -> None:
    """Worker 0 killed (SIGKILL): the other worker applies the callbacks itself until worker 0 is
    started again, then passes them to it; each is applied once."""
    url = f"sqlite:{tmp_path / 'tasks.db'}"
    task_ids = running_tasks(url, 2)
    with serving("--store", url, "--workers", "2", cwd=tmp_path) as server:
        for worker in (0, 1):
            server.wait_for(rf"worker {worker}: ")
        owner = relay_owner(server.process.pid)
        outcomes = [server.post(segment_callback(task_ids[0], 0))]
        # A worker that dies within STEADY_AFTER of its start is not started again.
        time.sleep(production.STEADY_AFTER + 0.5)
        os.kill(owner, signal.SIGKILL)
        outcomes += [server.post(segment_callback(task_id, 1)) for task_id in task_ids]
        server.wait_for(rf"worker 0 \(pid {owner}\) ended with -9; starting it again")
        server.wait_for(r"worker 0: .* recovered 2 tasks")
        assert relay_owner(server.process.pid) != owner
        outcomes += [server.post(segment_callback(task_id, 2)) for task_id in task_ids]
        assert outcomes == [(200, {"outcome": "applied"})] * 5
        assert server.terminate() == 0, server.output()
    store = open_store(url)
    try:
        applied = segments_applied(store)
    finally:
        store.close()
    assert applied == {(task_ids[0], 0): 1, **{(task_id, n): 1 for task_id in task_ids for n in (1, 2)}}


def test_a_postgres_worker_started_again_takes_back_its_own_share(tmp_path: Path, pg_store_dsn: str) -> None:
    """On PostgreSQL each worker takes back the tasks it owns, and runs their timers: worker 1 killed
    (SIGKILL) and started again takes its share back, and applies its tasks' callbacks once."""
    url = f"postgres:{pg_store_dsn}"
    task_ids = running_tasks(url, 8)
    theirs = [task_id for task_id in task_ids if zlib.crc32(task_id.encode()) % 2 == 1]
    assert 0 < len(theirs) < len(task_ids)  # (the simulator's task_ids are the same each run)
    with serving("--store", url, "--workers", "2", cwd=tmp_path) as server:
        wait_taken_back(server, url, task_ids)
        worker = relay_owner(server.process.pid, 1)
        time.sleep(production.STEADY_AFTER + 0.5)  # (one that dies sooner is not started again)
        os.kill(worker, signal.SIGKILL)
        server.wait_for(rf"worker 1 \(pid {worker}\) ended with -9; starting it again")
        server.wait_for_next(rf"worker 1: .* recovered {len(theirs)} tasks? of its share from", 60)
        outcomes = [server.post(segment_callback(task_id, 0)) for task_id in task_ids]
        assert outcomes == [(200, {"outcome": "applied"})] * len(task_ids)
        assert server.terminate() == 0, server.output()
    store = open_store(url)
    try:
        assert segments_applied(store) == {(task_id, 0): 1 for task_id in task_ids}
    finally:
        store.close()


def test_a_postgres_worker_started_again_takes_back_the_callbacks_it_parked(
    tmp_path: Path, pg_store_dsn: str
) -> None:
    """On PostgreSQL each worker parks the callbacks for the unknown task_ids it owns, and takes
    them back when started again, and only those: one sent again is then known as a repeat.
    (Before, they stayed in the store until worker 0 started again, and nobody adopted the stream
    when due.)"""
    url = f"postgres:{pg_store_dsn}"
    unknown = [f"early-{n}" for n in range(100)]  # task_ids no task holds
    early = next(task_id for task_id in unknown if zlib.crc32(task_id.encode()) % 2 == 1)  # worker 1's
    zeroth = next(task_id for task_id in unknown if zlib.crc32(task_id.encode()) % 2 == 0)
    with serving("--store", url, "--workers", "2", cwd=tmp_path) as server:
        wait_taken_back(server, url, [])
        for task_id in (early, zeroth):
            assert server.post(segment_callback(task_id, 0)) == (200, {"outcome": "parked"})
        worker = relay_owner(server.process.pid, 1)
        time.sleep(production.STEADY_AFTER + 0.5)  # (one that dies sooner is not started again)
        os.kill(worker, signal.SIGKILL)
        server.wait_for(rf"worker 1 \(pid {worker}\) ended with -9; starting it again")
        its_own = r"recovered 0 tasks of its share from .*, and the callbacks parked for 1 task_id$"
        server.wait_for_next(rf"worker 1: .* {its_own}", 60)
        repeat = {"outcome": "duplicate", "reason": "parked already"}
        assert server.post(segment_callback(early, 0)) == (200, repeat)
        assert server.terminate() == 0, server.output()


def relay_owner(supervisor: int, index: int = 0) -> int:
    """The pid of serve's worker that listens on the relay's Unix socket ``index`` (worker 0's on
    SQLite; worker ``index``'s on PostgreSQL)."""
    give_up_at = time.monotonic() + 30
    while time.monotonic() < give_up_at:
        listening = set()
        for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
            fields = line.split()
            # (flags 00010000: listening; the socket's path is the last field)
            if len(fields) == 8 and fields[3] == "00010000" and fields[7].endswith(f"/relay-{index}.sock"):
                listening.add(fields[6])
        for child in Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split():
            with contextlib.suppress(OSError):
                for fd in os.listdir(f"/proc/{child}/fd"):
                    with contextlib.suppress(OSError):
                        if os.readlink(f"/proc/{child}/fd/{fd}")[8:-1] in listening:
                            return int(child)
        time.sleep(0.1)
    raise AssertionError("no worker listens on the relay's socket")


def test_serve_takes_back_the_callbacks_parked_in_its_store(tmp_path: Path) -> None:
    """One process on SQLite takes back every callback a process before it parked, and says so: sent
    again, one is known as a repeat."""
    url = f"sqlite:{tmp_path / 'tasks.db'}"
    store = open_store(url)
    try:
        with Fleet(SimTransport(SimulatedService()), store=store) as before:
            for task_id in ("early-1", "early-2"):
                assert before.handle_callback(segment_callback(task_id, 0)) is Outcome.PARKED
    finally:
        store.close()
    with serving("--store", url, cwd=tmp_path) as server:
        server.wait_for(r"recovered 0 tasks from .*, and the callbacks parked for 2 task_ids$")
        repeat = {"outcome": "duplicate", "reason": "parked already"}
        assert server.post(segment_callback("early-2", 0)) == (200, repeat)
        assert server.terminate() == 0, server.output()


def test_a_joining_process_takes_no_task_back_and_applies_what_reaches_it(tmp_path: Path) -> None:
    """With --join, serve leaves the store's tasks where they are at start (another process serves
    them too, or will): it holds a task once its callback reaches it, and applies that callback."""
    store_url = f"sqlite:{tmp_path / 'tasks.db'}"
    task_ids = running_tasks(store_url, 3)
    with serving("--store", store_url, "--join", cwd=tmp_path) as server:
        server.wait_for(r"webhooks at .*/<token hidden>.*; taking over what another process leaves overdue")
        status, body = server.post(segment_callback(task_ids[0], 0))
        assert (status, body["outcome"]) == (200, "applied")
        assert server.terminate() == 0, server.output()
    assert "recovered" not in server.output()
    store = open_store(store_url)
    try:
        applied = segments_applied(store)
    finally:
        store.close()
    assert applied == {(task_ids[0], 0): 1}


def test_workers_end_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    with serving("--store", f"sqlite:{tmp_path / 'tasks.db'}", "--workers", "2", cwd=tmp_path) as server:
        for worker in (0, 1):
            server.wait_for(rf"worker {worker}: ")
        server.process.kill()  # the supervisor alone: nothing passes a signal on
        server.process.wait(timeout=30)
        server.wait_refusing()  # both workers shut down, and let the port go


# -- refusals -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        (("--server", "uvicorn", "--workers", "0"), "--workers"),
        (("--server", "uvicorn", "--workers", "2", "--store", "memory:"), "memory: store is one process's"),
        (("--server", "uvicorn", "--workers", "2", "--sim"), "--workers with --sim"),
        (("--server", "uvicorn", "--workers", "2", "--store", "sqlite:/no/such/dir/t.db"), "could not open"),
        (("--workers", "2", "--store", "sqlite:x.db"), "--workers: only with --server uvicorn"),
        (("--keep-alive-timeout", "3"), "--keep-alive-timeout: only with --server uvicorn"),
        (("--server", "uvicorn", "--request-timeout", "3"), "--request-timeout: only with --server builtin"),
        (("--server", "uvicorn", "--max-connections", "9"), "--max-connections: only with --server builtin"),
        (("--server", "uvicorn", "--limit-concurrency", "0"), "--limit-concurrency"),
        (("--server", "gunicorn"), "--server"),
        (("--join", "--store", "memory:"), "--join: a memory: store is one process's alone"),
    ],
)
def test_options_that_do_not_go_together_are_bad_usage(
    tmp_path: Path, options: tuple[str, ...], complaint: str
) -> None:
    result = streamlife("serve", *options, cwd=tmp_path, MEMORIES_API_KEY=KEY, STREAMLIFE_WEBHOOK_TOKEN=TOKEN)
    assert result.returncode == 2, result.stderr
    assert complaint in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # refused before a store was made
