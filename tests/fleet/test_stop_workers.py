"""A peer that answers some stops slowly cannot starve the stop workers.

The stops of a few streams go to a server that drips its answer a byte at a time (or sends
nothing); the others are answered at once. Each stop holds a worker for at most
``Policy.stop_timeout``, so the stops of the healthy streams go out, and land, within a
``stop_all(wait=...)`` however many slow ones were queued before them.
"""

from __future__ import annotations

import json
import socketserver
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest

from streamlife import Fleet, ManualClock, Policy, StreamKind, TaskState
from streamlife._events import StartResult, StopResult
from streamlife.sim import SimTransport, SimulatedService
from streamlife.transport.http import HttpTransport, RetryPolicy

URL = "rtmp://sim.invalid/live"
SLOW_STREAMS = 6
WORKERS = 2


class _StopServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, slow: set[str], how: str) -> None:
        super().__init__(("127.0.0.1", 0), _StopHandler)
        self.slow, self.how = slow, how
        self.answered: list[str] = []
        self.closing = threading.Event()


class _StopHandler(socketserver.StreamRequestHandler):
    server: _StopServer

    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            head += chunk
        headers, _, body = head.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in headers.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            body += self.request.recv(4096)
        task_id = json.loads(body)["task_id"]
        if task_id in self.server.slow:
            self._stall()
            return
        answer = json.dumps(
            {"code": 200, "message": "success", "data": {"task_id": task_id, "message": "stopped"}}
        )
        self.request.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            + f"Content-Length: {len(answer)}\r\n\r\n{answer}".encode()
        )
        self.server.answered.append(task_id)

    def _stall(self) -> None:
        """Drip the status line and endless headers a byte every 0.2 s, or send nothing, until the
        client goes (a send then fails) or the test ends."""
        drip = iter(b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"a" * 100_000)
        while not self.server.closing.wait(0.2):
            if self.server.how == "silent":
                continue
            try:
                self.request.sendall(bytes([next(drip)]))
            except OSError:
                return


@contextmanager
def stop_server(slow: set[str], how: str) -> Iterator[_StopServer]:
    server = _StopServer(slow, how)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.closing.set()
        server.shutdown()
        server.server_close()


class StartsHereStopsThere:
    """Starts on the simulator (which names the streams), stops over HTTP to a real server."""

    def __init__(self, sim: SimTransport, http: HttpTransport) -> None:
        self.sim, self.http = sim, http

    def start(self, kind: StreamKind, params: Mapping[str, Any]) -> StartResult:
        return self.sim.start(kind, params)

    def stop(self, kind: StreamKind, task_id: str, *, within: float | None = None) -> StopResult:
        return self.http.stop(kind, task_id, within=within)

    def close(self) -> None:
        self.http.close()


@pytest.mark.parametrize("how", ["silent", "dripping"])
def test_slow_answers_for_some_streams_do_not_hold_back_the_stops_of_the_others(how: str) -> None:
    clock = ManualClock(1_000.0)
    service = SimulatedService(clock=clock)
    slow: set[str] = set()
    with stop_server(slow, how) as server:
        http = HttpTransport(
            "sk-test", base_url=f"http://127.0.0.1:{server.server_address[1]}", retry=RetryPolicy(attempts=1)
        )
        fleet = Fleet(
            StartsHereStopsThere(SimTransport(service), http),
            clock=clock,
            policy=Policy(stop_concurrency=WORKERS, stop_timeout=1.0, seed=0),
        )
        try:
            tasks = [
                fleet.start("audio", audio_url=URL, provider="assemblyai") for _ in range(SLOW_STREAMS + 4)
            ]
            slow.update(str(task.task_id) for task in tasks[:SLOW_STREAMS])  # queued first
            began = time.monotonic()
            fleet.stop_all(wait=8.0)
            took = time.monotonic() - began
            healthy = tasks[SLOW_STREAMS:]
            assert sorted(server.answered) == sorted(str(task.task_id) for task in healthy), took
            assert all(task.stop_acknowledged for task in healthy)
            assert {task.state for task in tasks[:SLOW_STREAMS]} == {TaskState.STOPPING}
        finally:
            fleet.close()
            http.close()


def test_stop_timeout_must_be_positive_seconds() -> None:
    with pytest.raises(ValueError, match="stop_timeout"):
        Policy(stop_timeout=0)
    with pytest.raises(TypeError, match="stop_timeout"):
        Policy(stop_timeout="10")  # type: ignore[arg-type]
