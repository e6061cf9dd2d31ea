"""Idle sockets, slow clients and a process out of descriptors do not stop ``serve_webhook``.

The receiver runs in a child process (``python -m tests.wire.test_webhook_flood``) whose soft
RLIMIT_NOFILE is low; this process opens more idle sockets than that limit, then posts real
callbacks, and reads the child's CPU time from /proc while the flood sits there. The slow-client
tests run the server in this process and drip bytes at it over loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import structlog

from streamlife import Outcome
from streamlife.webhook import WebhookReceiver, serve_webhook

from .test_webhook import JSON_TYPE, TOKEN, plain_session

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads CPU time from /proc")

ROOT = Path(__file__).resolve().parents[2]
CHILD_NOFILE = 256  # the child's soft descriptor limit; this machine's own is far higher
IDLE_SOCKETS = 400  # more than the child may open
CALLBACKS = 20
ANSWERED_WITHIN = 20.0  # real seconds for all the callbacks: "does not hang", not a speed test
QUIET_CPU = 0.5  # CPU seconds the child may burn in one wall second of an idle flood
REQUEST_TIMEOUT = 2.0
SLACK = 3.0


def callback(n: int) -> bytes:
    return json.dumps({"code": "200", "task_id": f"task-{n}", "data": {"segment_index": 0}}).encode()


# -- the child: a receiver over a sink that records what it is given ---------------------------------
@dataclass
class RecordingSink:
    taken: list[bytes] = field(default_factory=list)

    def handle_callback(self, payload: bytes) -> Outcome:
        self.taken.append(payload)
        return Outcome.APPLIED


def child(nofile: int) -> None:
    """Serve until stdin closes; ``exhaust`` on stdin opens files until none can be, ``release``
    closes them. Prints the port, then, at the end, how many callbacks the sink took."""
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))
    sink = RecordingSink()
    held: list[int] = []
    with serve_webhook(WebhookReceiver(sink, token=TOKEN)) as running:
        print(running.server.server_address[1], flush=True)
        for line in sys.stdin:
            if line.strip() == "exhaust":
                held.extend(_every_free_descriptor())
            elif line.strip() == "release":
                while held:
                    os.close(held.pop())
            print("done", flush=True)
    print(len(sink.taken), flush=True)


def _every_free_descriptor() -> Iterator[int]:
    while True:
        try:
            yield os.open(os.devnull, os.O_RDONLY)
        except OSError:
            return


@dataclass
class Child:
    process: subprocess.Popen[str]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{TOKEN}"

    def tell(self, command: str) -> None:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "done"

    def cpu_seconds(self) -> float:
        """utime + stime of the child, from /proc/<pid>/stat."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def finish(self) -> int:
        """Close its stdin; the number of callbacks its sink took."""
        out, _ = self.process.communicate(timeout=30)
        return int(out.split()[-1])


@contextmanager
def child_receiver(nofile: int = CHILD_NOFILE) -> Iterator[Child]:
    command = [sys.executable, "-m", "tests.wire.test_webhook_flood", "--nofile", str(nofile)]
    with subprocess.Popen(
        command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            yield Child(process, int(process.stdout.readline()))
        finally:
            if process.poll() is None:
                process.kill()


@contextmanager
def idle_sockets(port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections to ``port`` that send nothing."""
    with ExitStack() as stack:
        opened = []
        for _ in range(count):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
            opened.append(sock)
        yield opened


def cpu_over_a_quiet_second(receiver: Child) -> float:
    before = receiver.cpu_seconds()
    time.sleep(1.0)
    return receiver.cpu_seconds() - before


def post_all(url: str, count: int, timeout: float) -> list[int]:
    """POST ``count`` callbacks one after the other; each one's status, or 0 when it got no answer.

    One at a time, as a callback arrives among the flood: concurrent clients in this process
    could stall each other between connecting and sending for longer than a real sender does."""
    statuses = []
    with plain_session() as session:
        for n in range(count):
            try:
                answer = session.post(url, data=callback(n), headers=JSON_TYPE, timeout=timeout)
            except requests.RequestException:
                statuses.append(0)
            else:
                statuses.append(answer.status_code)
    return statuses


# -- a flood of idle sockets ---------------------------------------------------------------------
def test_idle_sockets_beyond_the_descriptor_limit_do_not_stop_callbacks() -> None:
    with child_receiver() as receiver:
        with idle_sockets(receiver.port, IDLE_SOCKETS):
            time.sleep(0.5)  # the child takes in the flood
            assert cpu_over_a_quiet_second(receiver) < QUIET_CPU
            started = time.monotonic()
            statuses = post_all(receiver.url, CALLBACKS, timeout=ANSWERED_WITHIN)
            assert statuses == [200] * CALLBACKS
            assert time.monotonic() - started < ANSWERED_WITHIN
        assert receiver.finish() == CALLBACKS


def test_a_process_out_of_descriptors_backs_off_and_recovers() -> None:
    with child_receiver() as receiver:
        receiver.tell("exhaust")  # every accept now fails with EMFILE
        with idle_sockets(receiver.port, 50):  # waiting in the backlog: the listener stays readable
            time.sleep(0.5)
            assert cpu_over_a_quiet_second(receiver) < QUIET_CPU
            receiver.tell("release")
            statuses = post_all(receiver.url, CALLBACKS, timeout=ANSWERED_WITHIN)
            assert statuses == [200] * CALLBACKS
        assert receiver.finish() == CALLBACKS


# -- the cap, in this process ----------------------------------------------------------------------
def evicted(sockets: list[socket.socket]) -> int:
    """How many of ``sockets`` the server has closed (each reads as end of file)."""
    readable, _, _ = select.select(sockets, [], [], 0.5)
    return sum(1 for sock in readable if sock.recv(1) == b"")


def test_the_oldest_idle_connections_are_evicted_for_callbacks_over_the_cap() -> None:
    sink = RecordingSink()
    cap = 8
    with (
        serve_webhook(WebhookReceiver(sink, token=TOKEN), max_connections=cap) as running,
        idle_sockets(running.server.server_address[1], 50) as idle,
    ):
        statuses = post_all(f"{running.url}/hooks/{TOKEN}", CALLBACKS, timeout=ANSWERED_WITHIN)
        assert statuses == [200] * CALLBACKS
        assert evicted(idle) >= len(idle) - cap
    assert len(sink.taken) == CALLBACKS


@dataclass
class GatedSink:
    """A sink whose callbacks wait at a gate: the workers stay busy until it opens."""

    gate: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    taken: list[bytes] = field(default_factory=list)

    def handle_callback(self, payload: bytes) -> Outcome:
        self.arrived.release()
        assert self.gate.wait(30)
        self.taken.append(payload)
        return Outcome.APPLIED


def test_when_every_slot_holds_a_callback_newcomers_wait_and_are_answered() -> None:
    sink = GatedSink()
    receiver = WebhookReceiver(sink, token=TOKEN)
    with serve_webhook(receiver, max_connections=2, workers=2) as running, ThreadPoolExecutor(3) as pool:
        url = f"{running.url}/hooks/{TOKEN}"
        first = [pool.submit(post_all, url, 1, ANSWERED_WITHIN) for _ in range(2)]
        for _ in range(2):
            assert sink.arrived.acquire(timeout=10)
        third = pool.submit(post_all, url, 1, ANSWERED_WITHIN)
        time.sleep(0.5)
        assert not third.done()  # it waits in the backlog: no slot holds anything to evict
        sink.gate.set()
        assert [future.result() for future in [*first, third]] == [[200]] * 3
    assert len(sink.taken) == 3


# -- slow clients --------------------------------------------------------------------------------
def request_bytes(body: bytes) -> bytes:
    head = f"POST /hooks/{TOKEN} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def drip(sock: socket.socket, data: bytes, interval: float, stop: threading.Event) -> None:
    """Send ``data`` a byte every ``interval`` seconds until the server closes or ``stop`` is set."""
    for byte in data:
        if stop.wait(interval):
            return
        try:
            sock.send(bytes([byte]))
        except OSError:
            return


SLOW_PARTS = {"head": 0, "body": len(request_bytes(callback(0))) - 10}  # 10 bytes: 5 s, over the deadline


@pytest.mark.parametrize("sent_at_once", SLOW_PARTS.values(), ids=SLOW_PARTS.keys())
def test_a_client_dripping_a_byte_at_a_time_is_cut_off_at_the_request_timeout(sent_at_once: int) -> None:
    """The deadline is for the whole request, not each read: a byte every half second does not
    keep the connection open, whether it drips the head or the body."""
    sink = RecordingSink()
    request = request_bytes(callback(0))
    stop = threading.Event()
    with (
        serve_webhook(WebhookReceiver(sink, token=TOKEN), request_timeout=REQUEST_TIMEOUT) as running,
        socket.create_connection(running.server.server_address, timeout=REQUEST_TIMEOUT + SLACK) as slow,
    ):
        opened = time.monotonic()
        slow.sendall(request[:sent_at_once])
        dripper = threading.Thread(target=drip, args=(slow, request[sent_at_once:], 0.5, stop))
        dripper.start()
        try:
            statuses = post_all(f"{running.url}/hooks/{TOKEN}", 5, timeout=REQUEST_TIMEOUT)
            assert statuses == [200] * 5  # answered while the slow client drips
            answer = slow.recv(4096)
            cut_off_after = time.monotonic() - opened
        finally:
            stop.set()
            dripper.join()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert cut_off_after < REQUEST_TIMEOUT + SLACK
    assert len(sink.taken) == 5


def test_a_connection_that_sends_nothing_is_answered_408_and_closed() -> None:
    with (
        serve_webhook(
            WebhookReceiver(RecordingSink(), token=TOKEN), request_timeout=REQUEST_TIMEOUT
        ) as running,
        socket.create_connection(running.server.server_address, timeout=REQUEST_TIMEOUT + SLACK) as idle,
    ):
        opened = time.monotonic()
        answer = idle.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert b"Connection: close" in answer
        idle.shutdown(socket.SHUT_WR)
        assert idle.recv(4096) == b""  # and closed
        assert time.monotonic() - opened < REQUEST_TIMEOUT + SLACK


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="serve a webhook receiver with a low descriptor limit")
    parser.add_argument("--nofile", type=int, required=True)
    child(parser.parse_args().nofile)
