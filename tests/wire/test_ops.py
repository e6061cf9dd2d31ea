"""The application ``serve --server uvicorn`` runs, in-process through ASGI: ``/healthz`` naming what
is wrong, ``/metrics`` without its extra, and the access log's masking of the token."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from streamlife import Fleet
from streamlife._health import Health
from streamlife._ops import MASK, OpsApplication, masked
from streamlife._timer_loop import TimerLoop
from streamlife.sim import SimTransport, SimulatedService
from streamlife.store import MemoryStore
from streamlife.webhook import WebhookReceiver

TOKEN = "ops-token-0123456789abcdef"


class BrokenStore(MemoryStore):
    def find(self, task_id: str) -> Any:
        raise RuntimeError("could not connect to postgres://app:s3cret@db.example/streams")


def get(app: OpsApplication, path: str, method: str = "GET") -> tuple[int, dict[str, Any] | bytes]:
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": [], "query_string": b""}
    asyncio.run(app(scope, receive, send))
    body = b"".join(message.get("body", b"") for message in sent[1:])
    status = sent[0]["status"]
    return status, (json.loads(body) if body.startswith(b"{") else body)


def application(store: MemoryStore, timers: TimerLoop) -> OpsApplication:
    fleet = Fleet(SimTransport(SimulatedService()), store=store)
    return OpsApplication(WebhookReceiver(fleet, token=TOKEN).asgi, Health(store, timers), None)


def test_healthz_is_ok_while_the_store_answers_and_the_timers_run() -> None:
    store = MemoryStore()
    fleet = Fleet(SimTransport(SimulatedService()), store=store)
    with TimerLoop(fleet) as timers:
        app = OpsApplication(WebhookReceiver(fleet, token=TOKEN).asgi, Health(store, timers), None)
        assert get(app, "/healthz") == (200, {"status": "ok", "store": "ok", "timers": "ok"})
        assert get(app, "/healthz", "HEAD")[0] == 200
        assert get(app, "/healthz", "POST")[0] == 405


def test_healthz_names_timers_that_stopped() -> None:
    store = MemoryStore()
    fleet = Fleet(SimTransport(SimulatedService()), store=store)
    timers = TimerLoop(fleet)
    timers.start()
    timers.stop()  # the thread that fires deadlines is gone
    app = OpsApplication(WebhookReceiver(fleet, token=TOKEN).asgi, Health(store, timers), None)
    assert get(app, "/healthz") == (503, {"status": "unavailable", "store": "ok", "timers": "stopped"})


def test_healthz_names_timers_that_stopped_turning() -> None:
    store = MemoryStore()
    fleet = Fleet(SimTransport(SimulatedService()), store=store)
    with TimerLoop(fleet, interval=60) as timers:
        health = Health(store, timers, stale_after=0.0)
        timers.last_turn = 0.0  # (a turn long ago)
        app = OpsApplication(WebhookReceiver(fleet, token=TOKEN).asgi, health, None)
        status, answer = get(app, "/healthz")
    assert status == 503
    assert isinstance(answer, dict)
    assert answer["timers"] == "late"
    assert answer["last_tick_seconds_ago"] > 0


def test_healthz_says_the_store_failed_and_nothing_of_its_error() -> None:
    store = BrokenStore()
    fleet = Fleet(SimTransport(SimulatedService()), store=store)
    with TimerLoop(fleet) as timers:
        app = OpsApplication(WebhookReceiver(fleet, token=TOKEN).asgi, Health(store, timers), None)
        status, answer = get(app, "/healthz")
    assert (status, answer) == (503, {"status": "unavailable", "store": "failed", "timers": "ok"})


def test_metrics_without_the_extra_say_how_to_get_them() -> None:
    store = MemoryStore()
    fleet = Fleet(SimTransport(SimulatedService()), store=store)
    with TimerLoop(fleet) as timers:
        app = OpsApplication(WebhookReceiver(fleet, token=TOKEN).asgi, Health(store, timers), None)
        status, answer = get(app, "/metrics")
    assert status == 404
    assert isinstance(answer, dict)
    assert "streamlife[metrics]" in answer["error"]


segment = st.text(st.characters(exclude_characters="/?#", exclude_categories=["Cs"]), min_size=1)


@given(st.lists(segment, max_size=4), segment, st.booleans())
def test_the_masked_path_never_holds_its_last_segment(head: list[str], last: str, slash: bool) -> None:
    path = "/" + "/".join([*head, last]) + ("/" if slash else "")
    shown = masked(path)
    if path in ("/healthz", "/metrics"):
        assert shown == path
        return
    assert shown.endswith(MASK)
    assert shown.rpartition("/")[2] == MASK
    assert shown.count("/") == path.rstrip("/").count("/")
