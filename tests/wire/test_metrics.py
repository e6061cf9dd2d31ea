"""``/metrics``' figures of the answers: each request's status and latency, as counted on the loop
and handed to prometheus_client by ``sync`` (and before each scrape), counted once each."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import MutableMapping
from typing import Any

import pytest

from streamlife import Fleet, ManualClock
from streamlife._health import Health
from streamlife._metrics import LATENCY_BUCKETS, Metrics, Source
from streamlife._ops import OpsApplication
from streamlife._timer_loop import TimerLoop
from streamlife.protocol import segment_callback
from streamlife.sim import SimTransport, SimulatedService
from streamlife.store import MemoryStore
from streamlife.webhook import WebhookReceiver

pytest.importorskip("prometheus_client")

TOKEN = "metrics-token-0123456789abcdef"


def sample(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert found is not None, f"{name} not in\n{text}"
    return float(found[1])


def metrics_of(fleet: Fleet) -> Metrics:
    return Metrics(Source(fleet.stats, fleet.store.rows, fleet.clock.now))


def scraped(metrics: Metrics) -> str:
    body, _ = metrics.render()
    return body.decode()


def test_latencies_land_in_their_buckets_once_each_with_their_sum() -> None:
    fleet = Fleet(SimTransport(SimulatedService()))
    metrics = metrics_of(fleet)
    # Below the first bound, on a bound (a bucket holds its bound), between two, past the last.
    observed = [0.0001, LATENCY_BUCKETS[0], 0.003, 0.003, LATENCY_BUCKETS[-1] + 1]
    for seconds in observed:
        metrics.observe(seconds, 200)
    metrics.observe(0.002, 401)
    text = scraped(metrics)
    le = 'streamlife_ingest_seconds_bucket{{le="{}"}}'
    assert sample(text, le.format(LATENCY_BUCKETS[0])) == 2
    assert sample(text, le.format("0.0025")) == 3
    assert sample(text, le.format("0.005")) == 5
    assert sample(text, le.format(float(LATENCY_BUCKETS[-1]))) == 5
    assert sample(text, le.format("+Inf")) == 6
    assert sample(text, "streamlife_ingest_seconds_count") == 6
    assert sample(text, "streamlife_ingest_seconds_sum") == pytest.approx(sum(observed) + 0.002)
    assert sample(text, 'streamlife_http_responses_total{status="200"}') == 5
    assert sample(text, 'streamlife_http_responses_total{status="401"}') == 1
    # Synced again, nothing is counted twice; what came since is added.
    metrics.sync()
    metrics.observe(0.004, 200)
    text = scraped(metrics)
    assert sample(text, "streamlife_ingest_seconds_count") == 7
    assert sample(text, 'streamlife_http_responses_total{status="200"}') == 6
    assert sample(text, "streamlife_ingest_seconds_sum") == pytest.approx(sum(observed) + 0.006)


def call(app: OpsApplication, path: str, body: bytes) -> int:
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "query_string": b"",
             "headers": [(b"content-type", b"application/json")]}  # fmt: skip
    asyncio.run(app(scope, receive, send))
    return int(sent[0]["status"])


def test_each_answer_is_counted_by_the_status_the_receiver_sent() -> None:
    clock = ManualClock()
    store = MemoryStore()
    fleet = Fleet(SimTransport(SimulatedService(clock=clock)), clock=clock, store=store)
    task = fleet.start("audio", audio_url="rtmp://example.invalid/live", provider="assemblyai")
    metrics = metrics_of(fleet)
    with TimerLoop(fleet) as timers:
        app = OpsApplication(WebhookReceiver(fleet, token=TOKEN).asgi, Health(store, timers), metrics)
        good = json.dumps(segment_callback(str(task.task_id), 0)).encode()
        right, wrong = f"/memories/{TOKEN}", "/memories/wrong-token-0123456789"
        statuses = [call(app, right, good), call(app, wrong, good), call(app, right, b"[]")]
        app.close()
    assert statuses == [200, 401, 400]
    text = scraped(metrics)
    for status in statuses:
        assert sample(text, f'streamlife_http_responses_total{{status="{status}"}}') == 1
    assert sample(text, "streamlife_ingest_seconds_count") == 3
    fleet.close()


class Failing:
    """An async sink failing in a way the receiver does not know: the server answers 500."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    async def handle_callback(self, payload: bytes) -> Any:
        raise RuntimeError("boom")


def test_an_answer_the_receiver_never_sent_counts_as_a_500() -> None:
    fleet = Fleet(SimTransport(SimulatedService()))
    metrics = metrics_of(fleet)
    with TimerLoop(fleet) as timers:
        receiver = WebhookReceiver(Failing(fleet), token=TOKEN)
        app = OpsApplication(receiver.asgi, Health(fleet.store, timers), metrics)
        with pytest.raises(RuntimeError, match="boom"):
            call(app, f"/memories/{TOKEN}", b"{}")
        app.close()
    assert sample(scraped(metrics), 'streamlife_http_responses_total{status="500"}') == 1
    fleet.close()
