"""The three products side by side over loopback HTTP, faults on: one Fleet, one SQLite file, one
receiver on a real socket, and the simulator's two hosts. After every stream is stopped and the run
settles, nothing bills in any product and every task's journal is whole."""

from __future__ import annotations

import secrets
from collections import Counter
from pathlib import Path

import pytest

from streamlife import Fleet, ManualClock, Policy, StreamKind, StreamTask
from streamlife.sim import Faults, SimulatedService, serve_http
from streamlife.store import SqliteStore
from streamlife.transport import HttpTransport, RetryPolicy
from streamlife.webhook import WebhookReceiver, serve_webhook

KEY = "sk-mai-three-products-key"
STARTS = {StreamKind.AUDIO: 10, StreamKind.VIDEO: 6, StreamKind.UNDERSTAND: 6}


def params(kind: StreamKind, n: int, callback: str) -> dict[str, object]:
    if kind is StreamKind.AUDIO:
        return {"audio_url": f"rtmp://sim.invalid/a/{n}", "provider": "assemblyai"}
    if kind is StreamKind.VIDEO:
        return {"url": f"rtmp://sim.invalid/v/{n}"}
    return {"url": f"rtmp://sim.invalid/u/{n}", "user_prompt": "Describe what happens", "callback": callback}


@pytest.mark.parametrize("seed", [0, 1])
def test_three_products_over_loopback_http_settle_with_nothing_billing(tmp_path: Path, seed: int) -> None:
    clock = ManualClock(1_700_000_000.0)
    service = SimulatedService(clock=clock, faults=Faults.all(seed), api_key=KEY)
    store = SqliteStore(tmp_path / "tasks.sqlite")
    token = secrets.token_urlsafe(24)
    # The simulator first: the Fleet's transport needs its URLs, and the receiver needs the Fleet;
    # the webhook is set on the simulator once the receiver listens.
    with serve_http(service) as face:
        transport = HttpTransport(
            KEY,
            base_url=face.base_url,
            understand_url=face.understand_url,
            timeout=(2.0, 5.0),
            retry=RetryPolicy(attempts=1, deadline=10.0),  # the Fleet retries, on virtual time
        )
        fleet = Fleet(transport, clock=clock, policy=Policy(seed=seed, stop_concurrency=0), store=store)
        with serve_webhook(WebhookReceiver(fleet, token=token)) as hook:
            face.poster.url = f"{hook.url}/{token}"
            # Where understand results go: for now the receiver's account-wide token URL.
            callback = f"{hook.url}/{token}"
            tasks: list[StreamTask] = []
            for n in range(max(STARTS.values())):
                for kind, count in STARTS.items():
                    if n < count:
                        tasks.append(fleet.start(kind, **params(kind, n, callback)))
                step(service, fleet, 2)
            step(service, fleet, 60)
            fleet.stop_all()
            for _ in range(900):
                if settled(service, fleet):
                    break
                step(service, fleet, 1)
        fleet.close()
        transport.close()
    try:
        assert service.billing() == []  # nothing bills, in any product
        assert face.poster.failures == []  # every callback the simulator posted was taken
        assert not [task for task in fleet.tasks() if not task.terminal]
        assert Counter(task.kind for task in fleet.tasks()) >= Counter(STARTS)
        # Results crossed the socket to the receiver and reached their tasks, for every product.
        posted = {payload.get("task_id") for payload in face.poster.delivered}
        for kind in STARTS:
            heard = [task for task in tasks if task.kind is kind and task.task_id in posted]
            assert any(len(task.transcript) for task in heard), kind
        # Every task's journal holds versions 1..n, with no gap, and ends where the task ended.
        rows = list(store.rows(terminal=True))
        assert len(rows) == len(fleet.tasks())
        for row in rows:
            entries = store.journal(row.key)
            assert [entry.version for entry in entries] == list(range(1, row.version + 1)), row.key
            assert entries[-1].to_state == row.state
    finally:
        store.close()


def step(service: SimulatedService, fleet: Fleet, seconds: int) -> None:
    """Let ``seconds`` of virtual time pass, a second at a time: callbacks cross, then the tick."""
    for _ in range(seconds):
        service.advance(1.0)
        fleet.tick()


def settled(service: SimulatedService, fleet: Fleet) -> bool:
    stats = fleet.stats()
    return not stats.parked and all(task.terminal for task in fleet.tasks()) and not service.billing()
