"""PostgresStore when the database misbehaves: every wait is bounded and ends in StoreError.

A process frozen while it holds a task's row lock, a server that goes away, connections the server
closed while they sat in the pool: each is made for real (a subprocess and SIGSTOP, a TCP relay on
loopback that is cut, pg_terminate_backend) against the test server of tests/pg.py.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from typing import Any

import psycopg
import psycopg.conninfo
import pytest

from streamlife.errors import StoreError
from streamlife.store.postgres import LOCK_TIMEOUT, POOL_TIMEOUT, PostgresStore

from .test_store_contract import advance, make

# What a bounded wait may take beyond its limit on a slow machine: generous, for "not for ever".
SLACK = 5.0

# Locks a task's row through the store's own lock(), says so, and keeps it.
HOLD_THE_ROW = """
import sys, time
from streamlife.store.postgres import PostgresStore
store = PostgresStore(sys.argv[1])
with store.lock(sys.argv[2]):
    print("locked", flush=True)
    time.sleep(600)
"""


def timed(call: Callable[[], Any], limit: float) -> tuple[BaseException | None, float]:
    """Run ``call`` on a thread; what it raised (None if nothing) and how long it took. A call
    still running after ``limit`` seconds fails the test (it is left to finish on its own)."""
    raised: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # handed to the test
            raised.append(exc)
        else:
            raised.append(None)

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    elapsed = time.monotonic() - started
    assert raised, f"still waiting after {limit:.0f} s"
    return raised[0], elapsed


@pytest.fixture
def closing(pg_store_dsn: str) -> Iterator[Callable[[PostgresStore], PostgresStore]]:
    """Closes the stores handed to it after the test, passed or failed (before its database goes)."""
    stores: list[PostgresStore] = []

    def keep(store: PostgresStore) -> PostgresStore:
        stores.append(store)
        return store

    yield keep
    for store in stores:
        store.close()


@pytest.fixture
def frozen_holder(pg_store_dsn: str) -> Iterator[Callable[[str], subprocess.Popen[str]]]:
    """Starts a process that locks a task's row and freezes it (SIGSTOP); ends it after the test."""
    children: list[subprocess.Popen[str]] = []

    def hold(key: str) -> subprocess.Popen[str]:
        child = subprocess.Popen(
            [sys.executable, "-c", HOLD_THE_ROW, pg_store_dsn, key], stdout=subprocess.PIPE, text=True
        )
        children.append(child)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "locked"
        os.kill(child.pid, signal.SIGSTOP)
        return child

    yield hold
    for child in children:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
            child.wait(10)
        assert child.stdout is not None
        child.stdout.close()


def test_a_frozen_process_holding_a_tasks_row_holds_its_writes_up_for_lock_timeout_only(
    pg_store_dsn: str,
    frozen_holder: Callable[[str], subprocess.Popen[str]],
    closing: Callable[[PostgresStore], PostgresStore],
) -> None:
    store = closing(PostgresStore(pg_store_dsn))
    make(store, "k")
    make(store, "other")
    child = frozen_holder("k")

    error, elapsed = timed(lambda: advance(store, "k"), LOCK_TIMEOUT + 30)
    assert isinstance(error, StoreError)
    assert "lock_timeout" in str(error)
    assert elapsed < LOCK_TIMEOUT + SLACK
    advance(store, "other")  # other tasks are not held up

    child.kill()  # its connection goes, and its lock with it
    child.wait(10)
    advance(store, "k")
    assert [e.version for e in store.journal("k")] == [1, 2]


def test_a_shorter_lock_timeout_is_kept(
    pg_store_dsn: str,
    frozen_holder: Callable[[str], subprocess.Popen[str]],
    closing: Callable[[PostgresStore], PostgresStore],
) -> None:
    store = closing(PostgresStore(pg_store_dsn, lock_timeout=0.5))
    make(store, "k")
    frozen_holder("k")
    error, elapsed = timed(lambda: advance(store, "k"), 30)
    assert isinstance(error, StoreError)
    assert elapsed < LOCK_TIMEOUT  # the store's own limit, not the default


class Relay:
    """A TCP relay on loopback to the server: cutting it is the server going away (connections
    dropped, new ones refused); restoring it brings the server back on the same port."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.port = 0
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._guard = threading.Lock()
        self.restore()

    def restore(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))  # (SO_REUSEADDR: the same port again)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._guard:
            every = [self._listener, *self._sockets] if self._listener else list(self._sockets)
            self._listener, self._sockets = None, []
        for sock in every:
            with suppress(OSError):  # (a listener, or a socket the other side closed)
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            server = socket.create_connection(self.upstream)
            with self._guard:
                self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass  # cut
        finally:
            with suppress(OSError):
                sink.shutdown(socket.SHUT_WR)


@pytest.fixture
def relayed_dsn(pg_store_dsn: str) -> Iterator[tuple[str, Relay]]:
    params = psycopg.conninfo.conninfo_to_dict(pg_store_dsn)
    relay = Relay(str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432))
    yield psycopg.conninfo.make_conninfo(pg_store_dsn, host="127.0.0.1", port=str(relay.port)), relay
    relay.cut()


def test_a_server_gone_away_is_a_store_error_within_the_pool_timeout_and_the_store_recovers(
    relayed_dsn: tuple[str, Relay], closing: Callable[[PostgresStore], PostgresStore]
) -> None:
    dsn, relay = relayed_dsn
    store = closing(PostgresStore(dsn))
    make(store, "k")
    relay.cut()

    for call in (lambda: store.row("k"), lambda: advance(store, "k"), lambda: make(store, "j")):
        error, elapsed = timed(call, 60)
        assert isinstance(error, StoreError)
        assert elapsed < POOL_TIMEOUT + SLACK

    relay.restore()
    deadline = time.monotonic() + 30
    while True:  # the pool reconnects in the background, backing off
        try:
            advance(store, "k")
            break
        except StoreError:
            assert time.monotonic() < deadline, "the store did not recover once the server was back"
    assert [e.version for e in store.journal("k")] == [1, 2]


def test_pooled_connections_the_server_closed_are_replaced_before_use(
    pg_store_dsn: str, closing: Callable[[PostgresStore], PostgresStore]
) -> None:
    store = closing(PostgresStore(pg_store_dsn, min_size=2))
    make(store, "k")
    with psycopg.connect(pg_store_dsn, autocommit=True) as admin:
        ended = admin.execute(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()) AS ended"
        ).fetchone()
    assert ended is not None
    assert ended[0] >= 1
    time.sleep(0.2)  # (pg_terminate_backend signals the backend; it is gone a moment later)

    row = store.row("k")
    assert row is not None
    advance(store, "k")
    assert [e.version for e in store.journal("k")] == [1, 2]


@pytest.mark.parametrize("name", ["timeout", "lock_timeout", "statement_timeout"])
@pytest.mark.parametrize("value", [0, -1, math.nan, math.inf, True, "5"])
def test_a_limit_that_is_not_a_positive_number_of_seconds_is_refused(name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=f"{name} is a number of seconds above 0"):
        PostgresStore("host=127.0.0.1 dbname=never_reached", **{name: value})
