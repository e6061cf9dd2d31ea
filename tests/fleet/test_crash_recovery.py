"""A Fleet process SIGKILLed mid-stream, again and again, and recovered from its SQLite journal.

The simulator's HTTP face runs here, on a clock this test drives, with redelivery on: a webhook
that finds no receiver is kept and sent again, in order. Its webhook URL is a child process's
receiver on a fixed port, so a restarted child answers at the same URL. The child (tests/
fleet_worker.py) runs the Fleet on HttpTransport and a SQLite file, on the system clock, and is
killed at points each seed picks:

* ``idle``: between two commands;
* ``mid-advance``: at a random instant while the simulator posts callbacks to it;
* ``mid-callback``: right after a callback is applied and journaled, before the webhook is answered
  (the simulator sees the connection die, and redelivers what was in fact applied);
* ``mid-start``: at a random instant while it starts three streams;
* ``mid-stop_all``: at a random instant while it stops them all;
* and, in every seed, between a start's response and its journal write: the stream exists and
  bills, and the journal knows the task only as ``starting``.

Each restart is checked against the journal: every task the journal knew is back in the state
it was in (``starting`` comes back ``uncertain``). The new child takes the callbacks the simulator
kept first, then its timers start. At the end, after ``stop_all`` and settling:

* 0 lost, 0 doubled: the (task_id, segment_index, final) of every segment callback the children
  acknowledged is applied in the journals, and exactly once; nothing is applied that was never
  acknowledged (one applied and then killed before its answer was redelivered, and acknowledged
  as a duplicate); each acknowledged status 14 is one ``stopped`` entry;
* every journal rebuilds to its row; every task is terminal; nothing is parked;
* the task caught between its start response and its journal write ended ``failed`` (by way of
  ``uncertain``), and its stream was adopted as an orphan and stopped;
* the simulator bills no stream.
"""

from __future__ import annotations

import random
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from streamlife import ManualClock
from streamlife._journal import rebuild
from streamlife.lifecycle import TERMINAL, TaskState
from streamlife.protocol import Payload
from streamlife.sim import Faults, SimulatedService, serve_http
from streamlife.sim.http import SimHttpServer, WebhookPoster
from streamlife.store import JournalEntry, SqliteStore, TaskRow
from tests.fleet_worker import Worker, WorkerDied

KEY = "sk-mai-crash-recovery"
# (seed, the first crash, the last crash): every kind of crash, in more than one seed. The seed
# picks the rest: how many streams, how long between crashes, the instant of a timed kill.
CASES = [
    (1, "mid-callback", "mid-stop_all"),
    (2, "mid-start", "mid-callback"),
    (3, "mid-advance", "mid-advance"),
    (4, "idle", "mid-stop_all"),
    (5, "mid-start", "mid-callback"),
    (6, "mid-callback", "mid-advance"),
]
# The child's policy, on its (system) clock: short, so that a seed runs in seconds.
PARK_TTL = 1.0  # well above a start answer's round trip on loopback
UNCERTAIN_TTL = 1.0
FINAL_CALLBACK_WAIT = 10.0  # the status-14 callback comes at the test's next advance: milliseconds
SETTLE_WITHIN = 30.0  # real seconds

Triple = tuple[str, int, bool]  # (task_id, segment_index, final)


def fixed_port() -> int:
    """A free port below the kernel's ephemeral range. A restarted child binds it again once its
    predecessor died; a port in that range may meanwhile be taken as the local end of an outgoing
    connection (a keep-alive one holds it for as long as it lives)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # (Linux's default)
    for port in random.sample(range(max(1024, low - 10_000), low), 100):
        with closing(socket.socket()) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below the ephemeral range")


@dataclass
class Rig:
    """The simulator behind HTTP in this process, and the one child that runs the Fleet."""

    tmp_path: Path
    rng: random.Random
    service: SimulatedService
    face: SimHttpServer
    poster: WebhookPoster
    port: int
    token: str
    worker: Worker | None = None
    spawned: list[Worker] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)

    @property
    def db(self) -> Path:
        return self.tmp_path / "fleet.db"

    # -- the child ------------------------------------------------------------------------------
    def spawn(self) -> Worker:
        """Start a child on the fixed port, with its timers held until ``resume``."""
        assert self.worker is None or not self.worker.alive
        worker = Worker.spawn(
            store=f"sqlite:{self.db}",
            sim=self.face.base_url,
            api_key=KEY,
            token=self.token,
            port=self.port,
            hold=True,
            log_path=self.tmp_path / f"worker-{len(self.spawned)}.log",
            park_ttl=PARK_TTL,
            uncertain_ttl=UNCERTAIN_TTL,
            final_callback_wait=FINAL_CALLBACK_WAIT,
        )
        self.spawned.append(worker)
        self.worker = worker
        return worker

    def resume(self) -> None:
        """Deliver what the simulator kept for the child (and what fell due meanwhile), then let
        its timers run: the recovered Fleet hears the news before it resends anything."""
        self.service.advance(0)
        assert self.poster.flush() == 0, f"{len(self.poster.pending)} callbacks still refused"
        assert self.live.command("go") == {"timers": True}

    @property
    def live(self) -> Worker:
        assert self.worker is not None, "no child was spawned"
        assert self.worker.alive, "the child is dead"
        return self.worker

    def restart(self) -> Worker:
        """A new child recovers from the journal: every task it knew is back, ``starting`` as
        ``uncertain``, an orphan adopted but not yet stopped as ``stopping`` (the reaper's stop was
        lost with the process), nothing else; then it takes what was missed, and runs."""
        assert self.worker is not None
        self.worker.close()  # reaped
        journals = self.journals(parked_ok=True)
        rows = [row for row, _ in journals.values()]
        adopted = {key for key, (_, journal) in journals.items() if journal[0].trigger == "adopt"}
        worker = self.spawn()
        held = {task["key"]: task["state"] for task in worker.command("status")["tasks"]}
        comes_back = {
            TaskState.STARTING.value: TaskState.UNCERTAIN.value,
            TaskState.RUNNING.value: TaskState.STOPPING.value,  # for an adopted orphan only
        }
        expected = {
            row.key: comes_back[row.state]
            if row.state == TaskState.STARTING.value or (row.key in adopted and row.state in comes_back)
            else row.state
            for row in rows
            if not row.terminal
        }
        assert held == expected, f"after crash {self.crashes[-1]!r}: held {held}, journal {expected}"
        self.resume()
        return worker

    def crash(self, how: str) -> None:
        """Kill the child ``how``; return once it is dead."""
        self.crashes.append(how)
        worker, rng = self.live, self.rng
        if how == "idle":
            worker.kill()
        elif how == "mid-callback":
            worker.command(f"die_after_callbacks {rng.randint(1, 8)}")
            for _ in range(120):
                if not worker.alive:
                    break
                self.advance(1.0)
                time.sleep(0.01)  # the callback's handler runs on in the child after the post failed
        elif how == "mid-advance":
            with self.killing(worker, rng.uniform(0.0, 0.05)):  # ~5 ms a second of callbacks
                self.advance(rng.uniform(8.0, 15.0))
        elif how == "mid-start":
            with self.killing(worker, rng.uniform(0.0, 0.012)):  # three starts take ~6 ms
                self.send_or_die(worker, "start 3")
        elif how == "mid-stop_all":
            with self.killing(worker, rng.uniform(0.0, 0.012)):  # a few stops take ~10 ms
                self.send_or_die(worker, "stop_all")
        else:
            raise AssertionError(f"no such crash: {how}")
        worker.wait_dead()

    @contextmanager
    def killing(self, worker: Worker, after: float) -> Iterator[None]:
        """SIGKILL ``worker`` ``after`` seconds into the block, whatever it is doing by then."""
        timer = threading.Timer(after, worker.kill)
        timer.start()
        try:
            yield
        finally:
            timer.join()

    @staticmethod
    def send_or_die(worker: Worker, command: str) -> None:
        """Send ``command`` and read its answer, unless the child dies first (and it should)."""
        try:
            worker.command(command)
        except WorkerDied:
            return

    def start_then_die(self) -> str:
        """The child starts one stream and is killed after the start returned, before the Fleet
        journals its answer. Returns the stream's task_id (as the simulator gave it)."""
        self.crashes.append("start_then_die")
        worker = self.live
        answer = worker.command("start_then_die")
        worker.wait_dead()
        task_id: str = answer["dying"]
        assert task_id in self.service.billing(), "the stream exists, and bills"
        return task_id

    # -- the simulator --------------------------------------------------------------------------
    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of the simulator's time pass, a second at a time: callbacks go out."""
        left = seconds
        while left > 0:
            step = min(1.0, left)
            self.service.advance(step)
            left -= step

    def settle(self) -> None:
        """Until every task is terminal, nothing is parked or kept for redelivery, and nothing bills."""
        give_up_at = time.monotonic() + SETTLE_WITHIN
        while True:
            self.advance(1.0)
            self.poster.flush()
            status = self.live.command("status")
            alive = [task for task in status["tasks"] if TaskState(task["state"]) not in TERMINAL]
            if not alive and status["parked"] == 0 and not self.service.billing() and not self.poster.pending:
                return
            assert time.monotonic() < give_up_at, (
                f"not settled after {SETTLE_WITHIN} s: alive {alive}, parked {status['parked']}, "
                f"billing {self.service.billing()}, kept {len(self.poster.pending)}"
            )
            time.sleep(0.05)

    # -- the journal ----------------------------------------------------------------------------
    def journals(self, *, parked_ok: bool = False) -> dict[str, tuple[TaskRow, list[JournalEntry]]]:
        store = SqliteStore(self.db)
        try:
            assert parked_ok or store.parked() == [], "callbacks left parked in the store"
            return {row.key: (row, store.journal(row.key)) for row in store.rows(terminal=True)}
        finally:
            store.close()


@contextmanager
def rig(tmp_path: Path, seed: int) -> Iterator[Rig]:
    service = SimulatedService(
        clock=ManualClock(1_700_000_000.0),
        faults=Faults(seed=seed, duplicate=0.1, early_callback=0.3),
        api_key=KEY,
    )
    port, token = fixed_port(), secrets.token_urlsafe(24)
    url = f"http://127.0.0.1:{port}/hooks/{token}"
    with serve_http(service, webhook_url=url, redeliver=True) as face:
        assert face.poster is not None
        # A short timeout: a child killed mid-request must not hold the test up for long.
        face.poster.timeout = 3.0
        setup = Rig(tmp_path, random.Random(seed), service, face, face.poster, port, token)
        try:
            yield setup
        finally:
            for worker in setup.spawned:
                worker.close()


def segment_of(payload: Payload) -> Triple | None:
    data = payload["data"]
    if data.get("transcript") is None:
        return None
    return payload["task_id"], data["segment_index"], data["transcript"]["is_final"]


def stopped_by_user(payload: Payload) -> bool:
    data = payload["data"]
    return data.get("transcript") is None and data.get("status") == 14


def applied_in(journals: Sequence[list[JournalEntry]]) -> tuple[Counter[Triple], Counter[str]]:
    """What the journals applied: each segment as (task_id, index, final), each status-14 by task_id."""
    segments: Counter[Triple] = Counter()
    stops: Counter[str] = Counter()
    for entries in journals:
        for entry in entries:
            args: Any = entry.args
            if entry.trigger == "segment":
                segment = args["segment"]
                segments[args["on"], segment["index"], segment["final"]] += 1
            elif entry.trigger == "stopped":
                assert args["status"]["status"] == 14
                stops[args["on"]] += 1
    return segments, stops


@pytest.mark.parametrize(("seed", "first_crash", "last_crash"), CASES)
def test_a_fleet_killed_mid_stream_loses_nothing_doubles_nothing_and_leaves_nothing_billing(
    tmp_path: Path, seed: int, first_crash: str, last_crash: str
) -> None:
    with rig(tmp_path, seed) as run:
        rng = run.rng
        run.spawn()
        run.resume()
        run.live.command(f"start {rng.randint(2, 4)}")
        run.advance(rng.uniform(6.0, 16.0))

        run.crash(first_crash)
        run.advance(rng.uniform(1.0, 6.0))  # nobody answers: the simulator keeps these
        run.restart()
        run.advance(rng.uniform(2.0, 6.0))

        doomed = run.start_then_die()
        doomed_rows = [row for row, _ in run.journals(parked_ok=True).values() if row.state == "starting"]
        assert len(doomed_rows) == 1, "the journal knows the task as starting, and no more"
        (doomed_row,) = doomed_rows
        run.advance(rng.uniform(3.0, 8.0))
        run.restart()
        run.live.command(f"start {rng.randint(1, 2)}")
        run.advance(rng.uniform(5.0, 12.0))

        run.crash(last_crash)
        run.advance(rng.uniform(1.0, 4.0))
        run.restart()
        run.live.command("stop_all")
        run.settle()
        held = run.live.command("status")["tasks"]
        run.live.quit()

        # -- the verdict, from the journal file and the simulator's delivery log --------------
        journals = run.journals()
        for row, entries in journals.values():
            assert row.terminal, f"task {row.key} is {row.state}"
            rebuild(row, entries, clock=ManualClock())  # versions 1..n, replaying to the row

        applied, stops = applied_in([entries for _, entries in journals.values()])
        delivered = run.poster.delivered
        acknowledged = {triple for payload in delivered if (triple := segment_of(payload)) is not None}
        sent = {triple for d in run.service.deliveries if (triple := segment_of(d.payload)) is not None}
        crashes = run.crashes
        assert acknowledged == sent, f"{crashes}: a callback the simulator sent was never taken"
        assert sorted(set(applied) - acknowledged) == [], f"{crashes}: applied, never acknowledged"
        assert sorted(acknowledged - set(applied)) == [], f"{crashes}: acknowledged, then lost"
        assert [triple for triple, n in applied.items() if n > 1] == [], f"{crashes}: applied twice"
        stopped_ids = {payload["task_id"] for payload in delivered if stopped_by_user(payload)}
        assert set(stops) == stopped_ids, f"{crashes}: status-14 callbacks lost"
        assert [task_id for task_id, n in stops.items() if n > 1] == [], f"{crashes}: stopped twice"

        # The task caught between its start response and its journal write: uncertain, then
        # failed; its stream, adopted as an orphan and stopped.
        row, entries = journals[doomed_row.key]
        triggers = [entry.trigger for entry in entries]
        assert triggers[:2] == ["start", "start_unknown"], triggers
        assert triggers[-1] == "uncertain_deadline", triggers
        assert (row.state, row.task_id) == (TaskState.FAILED.value, None)
        # (The last child holds what it recovered: the orphan, unless it was stopped before.)
        assert all(task["adopted"] for task in held if task["task_id"] == doomed)
        (orphan,) = [(row, entries) for row, entries in journals.values() if row.task_id == doomed]
        orphan_row, orphan_entries = orphan
        assert orphan_entries[0].trigger == "adopt"
        assert orphan_row.state == TaskState.STOPPED.value
        assert "stop" in [entry.trigger for entry in orphan_entries]
        assert doomed in stops, "the orphan's stop was confirmed by its status-14 callback"

        assert run.service.billing() == []
        assert run.service.streams[doomed].ended_at is not None
        for worker in run.spawned:
            errors = [line for line in worker.log_text().splitlines() if '"level": "error"' in line]
            assert errors == [], f"{worker.log_path.name} logged errors"
