"""The three products side by side over loopback HTTP, faults on: one Fleet, one SQLite file, one
receiver on a real socket, and the simulator's two hosts. After every stream is stopped and the run
settles, nothing bills in any product and every task's journal is whole.

Understand starts give no callback: the Fleet gives each task its own signed URL at the receiver,
which routes each result to its task by key. Some of those starts lose their answer, and their
results name them: they run, and are stopped, where they used to be left to the orphan reaper.
The same runs in-process, through the pytest plugin's simulator, routed by the same keys."""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from streamlife import CallbackUrls, Fleet, ManualClock, Outcome, Policy, StreamKind, StreamTask, TaskState
from streamlife._task_urls import task_route
from streamlife.errors import CallbackError
from streamlife.sim import Faults, SimulatedService, serve_http
from streamlife.store import SqliteStore
from streamlife.testing import MemoriesSim
from streamlife.transport import HttpTransport, RetryPolicy
from streamlife.webhook import WebhookReceiver, serve_webhook

KEY = "sk-mai-three-products-key"
STARTS = {StreamKind.AUDIO: 10, StreamKind.VIDEO: 6, StreamKind.UNDERSTAND: 6}


def params(kind: StreamKind, n: int) -> dict[str, object]:
    if kind is StreamKind.AUDIO:
        return {"audio_url": f"rtmp://sim.invalid/a/{n}", "provider": "assemblyai"}
    if kind is StreamKind.VIDEO:
        return {"url": f"rtmp://sim.invalid/v/{n}"}
    return {"url": f"rtmp://sim.invalid/u/{n}", "user_prompt": "Describe what happens"}  # no callback


class Later:
    """The receiver's sink, given the Fleet once the receiver listens: the Fleet's task URLs need
    the receiver's address, which a test learns only then (a deployment knows its public URL)."""

    fleet: Fleet | None = None

    def handle_callback(self, payload: bytes | str | Mapping[str, Any], *, key: str | None = None) -> Outcome:
        assert self.fleet is not None
        return self.fleet.handle_callback(payload, key=key)

    def handle_callbacks(
        self, payloads: Iterable[bytes | str | Mapping[str, Any]], *, keys: Sequence[str | None] | None = None
    ) -> list[Outcome | CallbackError]:
        assert self.fleet is not None
        return self.fleet.handle_callbacks(payloads, keys=keys)


@pytest.mark.parametrize("seed", [0, 1])
def test_three_products_over_loopback_http_settle_with_nothing_billing(tmp_path: Path, seed: int) -> None:
    clock = ManualClock(1_700_000_000.0)
    service = SimulatedService(clock=clock, faults=Faults.all(seed), api_key=KEY)
    store = SqliteStore(tmp_path / "tasks.sqlite")
    token = secrets.token_urlsafe(24)
    # The simulator first: the Fleet's transport needs its URLs; then the receiver, whose address
    # the Fleet's task URLs need; the webhook is set on the simulator once the receiver listens.
    later = Later()
    with serve_http(service) as face, serve_webhook(WebhookReceiver(later, token=token)) as hook:
        transport = HttpTransport(
            KEY,
            base_url=face.base_url,
            understand_url=face.understand_url,
            timeout=(2.0, 5.0),
            retry=RetryPolicy(attempts=1, deadline=10.0),  # the Fleet retries, on virtual time
        )
        fleet = later.fleet = Fleet(
            transport,
            clock=clock,
            policy=Policy(seed=seed, stop_concurrency=0),
            store=store,
            callback_urls=CallbackUrls(f"{hook.url}/hooks", token=token),
        )
        face.poster.url = f"{hook.url}/hooks/{token}"
        tasks = start_all(service, fleet)
        fleet.close()
        transport.close()
    try:
        assert face.poster.failures == []  # every callback the simulator posted was taken
        # Results crossed the socket to the receiver and reached their tasks, for every product.
        posted = {payload.get("task_id") for payload in face.poster.delivered}
        for kind in STARTS:
            heard = [task for task in tasks if task.kind is kind and task.task_id in posted]
            assert any(len(task.transcript) for task in heard), kind
        assert_settled(service, fleet)
        # Every task's journal holds versions 1..n, with no gap, and ends where the task ended.
        rows = list(store.rows(terminal=True))
        assert len(rows) == len(fleet.tasks())
        for row in rows:
            entries = store.journal(row.key)
            assert [entry.version for entry in entries] == list(range(1, row.version + 1)), row.key
            assert entries[-1].to_state == row.state
    finally:
        store.close()


@pytest.mark.parametrize("seed", [0, 1])
def test_three_products_in_process_route_by_task_url_and_settle(tmp_path: Path, seed: int) -> None:
    sim = MemoriesSim.new(Faults.all(seed))
    store = SqliteStore(tmp_path / "tasks.sqlite")
    try:
        fleet = sim.fleet(Policy(seed=seed, stop_concurrency=0), store=store)
        sim.fleets.remove(fleet)  # ticked here, as over HTTP
        start_all(sim.service, fleet)
        assert sim.refused == []
        assert_settled(sim.service, fleet)
    finally:
        sim.close()
        store.close()


def start_all(service: SimulatedService, fleet: Fleet) -> list[StreamTask]:
    """Start every product's streams, every other understand start losing its answer; let them
    run, stop them all and let the run settle."""
    tasks: list[StreamTask] = []
    for n in range(max(STARTS.values())):
        for kind, count in STARTS.items():
            if n < count:
                if kind is StreamKind.UNDERSTAND and n % 2 == 0:
                    service.lose_next_start_answer()  # (the next start that creates a stream)
                tasks.append(fleet.start(kind, **params(kind, n)))
        step(service, fleet, 2)
    step(service, fleet, 60)
    fleet.stop_all()
    for _ in range(900):
        if settled(service, fleet):
            break
        step(service, fleet, 1)
    return tasks


def assert_settled(service: SimulatedService, fleet: Fleet) -> None:
    assert service.billing() == []  # nothing bills, in any product
    assert not [task for task in fleet.tasks() if not task.terminal]
    assert Counter(task.kind for task in fleet.tasks()) >= Counter(STARTS)
    # Each understand stream whose start answer was lost was named by its results, on its task's
    # own URL: the task ran, then was stopped; no orphan was adopted in its place.
    by_key = {task.key: task for task in fleet.tasks()}
    lost = [s for s in service.streams.values() if s.kind is StreamKind.UNDERSTAND and not s.named]
    assert lost, "no understand start lost its answer"
    for stream in lost:
        route = task_route(urlsplit(stream.callback or "").path)
        assert route is not None, "an understand start was given no task URL"
        task = by_key[route[0]]
        assert task.task_id == stream.task_id
        named = [entry for entry in task.history if entry.trigger == "named"]
        assert [entry.to_state for entry in named] == [TaskState.RUNNING], task.history
        assert task.state is TaskState.STOPPED
    assert not [task for task in fleet.tasks() if task.adopted and task.kind is StreamKind.UNDERSTAND]


def step(service: SimulatedService, fleet: Fleet, seconds: int) -> None:
    """Let ``seconds`` of virtual time pass, a second at a time: callbacks cross, then the tick."""
    for _ in range(seconds):
        service.advance(1.0)
        fleet.tick()


def settled(service: SimulatedService, fleet: Fleet) -> bool:
    stats = fleet.stats()
    return not stats.parked and all(task.terminal for task in fleet.tasks()) and not service.billing()
