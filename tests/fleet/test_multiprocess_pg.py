"""Four Fleet processes on one store, each with its own webhook receiver, taking callbacks for the
same tasks at the same time.

Each process (tests/fleet_worker.py) runs a Fleet on HttpTransport against the simulator's HTTP
face, which runs here, and on one shared store: PostgreSQL (a fresh database per test), or one
SQLite file. Every process starts some of the tasks. The simulator's callbacks are fanned out by
this test: each goes to two or three of the four receivers at once, as a redelivering service
behind a load balancer would send it, so the same callback is applied by whichever process gets
the task's row lock first, and the others find it done. Then:

* each (task_id, segment_index, final) is applied exactly once across the journals (one journal per
  task, in the store), and each copy of a callback answers "applied" at one receiver only;
* every journal holds versions 1..n with no gap and rebuilds to its row;
* every task ends ``stopped`` by its status-14 callback after ``stop_all`` and settling, and the
  simulator bills nothing;
* 50 POSTs of one new final segment at once, over the four receivers: one "applied", 49
  "duplicate", one journal entry.
"""

from __future__ import annotations

import json
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from streamlife import ManualClock
from streamlife._journal import rebuild
from streamlife.lifecycle import TaskState
from streamlife.protocol import Payload
from streamlife.sim import Faults, SimulatedService, serve_http
from streamlife.store import JournalEntry, TaskRow
from tests.fleet.conftest import opened
from tests.fleet_worker import Worker

KEY = "sk-mai-multiprocess"
WORKERS = 4
PARK_TTL = 1.0
SETTLE_WITHIN = 30.0  # real seconds
BURST = 50

Triple = tuple[str, int, bool]  # (task_id, segment_index, final)


@dataclass
class FanOut:
    """The simulator's webhook: each callback POSTed to ``spread`` receivers at once (two or three
    of them, chosen at random), answered by all before the next callback goes."""

    urls: list[str]
    seed: int
    spread: tuple[int, ...] = (2, 3)
    sent: list[tuple[Payload, list[str], list[int]]] = field(default_factory=list)  # payload, outcomes, to
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._dice = random.Random(self.seed)
        self._pool = ThreadPoolExecutor(max(self.spread), thread_name_prefix="fan-out")

    def __call__(self, payload: Payload) -> None:
        with self._lock:
            targets = self._dice.sample(range(len(self.urls)), self._dice.choice(self.spread))
        answers = [self._pool.submit(post, self.urls[n], payload) for n in targets]
        outcomes = [answer.result() for answer in answers]
        with self._lock:
            self.sent.append((payload, outcomes, targets))

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def post(url: str, payload: Payload) -> str:
    """POST one callback; its outcome as the receiver answered it ("http <status>" if not 200)."""
    with requests.Session() as session:
        response = session.post(
            url, data=json.dumps(payload), timeout=30, headers={"Content-Type": "application/json"}
        )
    if response.status_code != 200:
        return f"http {response.status_code}: {response.text}"
    outcome: str = response.json()["outcome"]
    return outcome


@dataclass
class Cluster:
    service: SimulatedService
    workers: list[Worker]
    token: str
    store_url: str

    def hook(self, worker: Worker) -> str:
        return f"{worker.url}/hooks/{self.token}"

    def advance(self, seconds: int) -> None:
        for _ in range(seconds):
            self.service.advance(1)

    def settle(self) -> None:
        """Until the store holds no task that is not terminal, and the simulator bills nothing."""
        give_up_at = time.monotonic() + SETTLE_WITHIN
        with opened(self.store_url) as store:
            while True:
                self.advance(1)
                alive = [(row.key, row.state) for row in store.rows()]
                if not alive and not self.service.billing():
                    return
                assert time.monotonic() < give_up_at, (
                    f"not settled: {alive}, billing {self.service.billing()}"
                )
                time.sleep(0.05)

    def journals(self) -> dict[str, tuple[TaskRow, list[JournalEntry]]]:
        with opened(self.store_url) as store:
            return {row.key: (row, store.journal(row.key)) for row in store.rows(terminal=True)}


@contextmanager
def cluster(tmp_path: Path, store_url: str, faults: Faults) -> Iterator[Cluster]:
    service = SimulatedService(clock=ManualClock(1_700_000_000.0), faults=faults, api_key=KEY)
    token = secrets.token_urlsafe(24)
    with serve_http(service) as face:
        # Every process opens the store (and one makes its tables) at the same time.
        with ThreadPoolExecutor(WORKERS) as pool:
            spawning = [
                pool.submit(
                    Worker.spawn,
                    store=store_url,
                    sim=face.base_url,
                    api_key=KEY,
                    token=token,
                    log_path=tmp_path / f"worker-{n}.log",
                    park_ttl=PARK_TTL,
                    final_callback_wait=10.0,
                )
                for n in range(WORKERS)
            ]
        workers = [spawned.result() for spawned in spawning if spawned.exception() is None]
        try:
            assert len(workers) == WORKERS, [spawned.exception() for spawned in spawning]
            yield Cluster(service, workers, token, store_url)
            for worker in workers:
                worker.quit()
        finally:
            for worker in workers:
                worker.close()


def segment_of(payload: Payload) -> Triple | None:
    data = payload["data"]
    if data.get("transcript") is None:
        return None
    return payload["task_id"], data["segment_index"], data["transcript"]["is_final"]


def effect_of(payload: Payload) -> Triple | str:
    """What a callback does when applied: its segment, or the task_id it stops."""
    triple = segment_of(payload)
    return payload["task_id"] if triple is None else triple


def applied_in(journals: dict[str, tuple[TaskRow, list[JournalEntry]]]) -> Counter[Triple | str]:
    effects: Counter[Triple | str] = Counter()
    for _, entries in journals.values():
        for entry in entries:
            args: Any = entry.args
            if entry.trigger == "segment":
                segment = args["segment"]
                effects[args["on"], segment["index"], segment["final"]] += 1
            elif entry.trigger in ("stopped", "ended", "capacity"):
                effects[args["on"]] += 1
    return effects


def logged_errors(workers: list[Worker]) -> list[str]:
    return [
        line for worker in workers for line in worker.log_text().splitlines() if '"level": "error"' in line
    ]


def test_four_processes_apply_every_callback_once(tmp_path: Path, store_url: str) -> None:
    with cluster(tmp_path, store_url, Faults(seed=7, duplicate=0.2)) as run:
        fan = FanOut([run.hook(worker) for worker in run.workers], seed=7)
        run.service.on_callback(fan)
        try:
            for worker in run.workers:
                assert len(worker.command("start 2")["tasks"]) == 2
            run.advance(21)  # four segments, a partial and a final each, of eight streams

            # 50 copies of one new final, at once, over the four receivers: one effect.
            sample = next(payload for payload, _, _ in reversed(fan.sent) if segment_of(payload))
            burst = json.loads(json.dumps(sample))
            burst["data"].update(segment_index=10_000, message="final")
            burst["data"]["transcript"] = {"text": "one effect", "is_final": True}
            go = threading.Barrier(BURST)

            def deliver(n: int) -> str:
                go.wait()
                return post(run.hook(run.workers[n % WORKERS]), burst)

            with ThreadPoolExecutor(BURST) as pool:
                burst_outcomes = Counter(pool.map(deliver, range(BURST)))
            assert burst_outcomes == {"applied": 1, "duplicate": BURST - 1}

            # One process after another: each sees the stops the ones before sent, in the store.
            for worker in run.workers:
                worker.command("stop_all")
            run.settle()
        finally:
            run.service.off_callback(fan)
            fan.close()
        errors = logged_errors(run.workers)

    journals = run.journals()
    assert len(journals) == 2 * WORKERS
    for row, entries in journals.values():
        assert [entry.version for entry in entries] == list(range(1, row.version + 1))
        rebuilt = rebuild(row, entries, clock=ManualClock())
        assert rebuilt.state is TaskState.STOPPED, f"task {row.key}: {[e.trigger for e in entries]}"
        assert [entry.trigger for entry in entries][-1] == "stopped", "ended by its status-14 callback"
        assert not rebuilt.adopted

    # Every callback applied exactly once, at one receiver: the first copy's deliveries answer one
    # "applied" and the rest "duplicate"; a later copy (a duplicate the simulator sent) none.
    seen: set[Triple | str] = set()
    receivers: Counter[int] = Counter()
    for payload, outcomes, targets in fan.sent:
        effect = effect_of(payload)
        receivers.update(targets)
        if effect in seen:
            assert set(outcomes) <= {"duplicate", "late"}, (effect, outcomes)
        else:
            assert sorted(outcomes) == ["applied"] + ["duplicate"] * (len(outcomes) - 1), (effect, outcomes)
        seen.add(effect)
    assert sorted(receivers) == list(range(WORKERS)), "every process took callbacks"
    burst_effect = effect_of(burst)
    applied = applied_in(journals)
    assert [effect for effect, n in applied.items() if n > 1] == [], "applied twice"
    assert set(applied) == seen | {burst_effect}, "lost, or applied from nowhere"
    assert run.service.billing() == []
    assert errors == []


def test_an_early_callback_taken_by_another_process_is_not_an_orphan(tmp_path: Path, store_url: str) -> None:
    """A stream's first callback can beat its start answer. Here it reaches every process; the one
    that started the stream claims it with the answer, the others park it. Once the answer is
    journaled the store knows whose stream it is: the others must not adopt it as an orphan after
    ``park_ttl`` (and stop it), even when no later callback of the stream reaches them first."""
    with cluster(tmp_path, store_url, Faults(seed=3, early_callback=1.0)) as run:
        fan = FanOut([run.hook(worker) for worker in run.workers], seed=3, spread=(WORKERS,))
        run.service.on_callback(fan)
        try:
            started = run.workers[0].command("start 3")["tasks"]
            assert [task["state"] for task in started] == ["running"] * 3
            time.sleep(PARK_TTL + 1.0)  # the other processes' timers tick past park_ttl
            run.advance(6)  # the streams' next callbacks
            with opened(store_url) as store:
                rows = list(store.rows(terminal=True))
                adopted = [row.task_id for row in rows if store.journal(row.key)[0].trigger == "adopt"]
            billing = run.service.billing()
            for worker in run.workers:
                worker.command("stop_all")
            run.settle()
        finally:
            run.service.off_callback(fan)
            fan.close()
    assert adopted == [], f"{len(adopted)} orphans adopted for streams the store knew: {adopted}"
    assert sorted(billing) == sorted(task["task_id"] for task in started), "a stream was stopped"
    applied = applied_in(run.journals())
    assert [effect for effect, n in applied.items() if n > 1] == [], "applied twice"
