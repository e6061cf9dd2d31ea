"""The simulator's Live Video Understanding, in-process: its answers, its cap, its faults, and a
whole faulty run of the three products side by side that settles with nothing billing."""

from __future__ import annotations

import pytest
import requests

from streamlife import Fleet, ManualClock, Policy, StreamKind
from streamlife._simulate import Run, simulate
from streamlife.errors import CapacityError, PaymentError, TaskNotFoundError
from streamlife.protocol import UNDERSTAND_MAX_TASKS
from streamlife.sim import Faults, SimTransport, SimulatedService
from streamlife.webhook import WebhookReceiver, serve_webhook

BODY = {"url": "rtmp://sim.invalid/live", "user_prompt": "Describe it", "callback": "https://h.invalid/u"}
KEY = "sk-mai-simulated"


def service(faults: Faults | None = None) -> SimulatedService:
    return SimulatedService(clock=ManualClock(1_700_000_000.0), faults=faults)


def test_a_task_sends_one_stamped_result_every_5_s_and_its_stop_sends_nothing_after() -> None:
    sim = service()
    heard: list[dict[str, object]] = []
    sim.on_callback(heard.append)
    task_id = SimTransport(sim).start(StreamKind.UNDERSTAND, BODY).task_id
    assert sim.streams[task_id].callback == BODY["callback"]
    sim.advance(15)
    assert [p["data"]["timestamp"] for p in heard] == [  # type: ignore[index]
        "2023-11-14T22:13:25Z",
        "2023-11-14T22:13:30Z",
        "2023-11-14T22:13:35Z",
    ]
    assert SimTransport(sim).stop(StreamKind.UNDERSTAND, task_id).final
    sim.advance(30)
    assert len(heard) == 3  # nothing follows the stop's answer
    assert sim.billing() == []
    (request,) = sim.stop_log
    assert (request.status, request.body_status) == (200, 14)


def test_an_unknown_task_and_another_products_task_are_not_found() -> None:
    sim = service()
    transport = SimTransport(sim)
    audio = transport.start(StreamKind.AUDIO, {"audio_url": "rtmp://sim.invalid/a"}).task_id
    for task_id in ("nobody", audio):
        with pytest.raises(TaskNotFoundError):
            transport.stop(StreamKind.UNDERSTAND, task_id)
    assert sim.billing() == [audio]


def test_a_fifth_live_task_is_refused_with_1001_and_an_ended_one_makes_room() -> None:
    sim = service()
    transport = SimTransport(sim)
    ids = [transport.start(StreamKind.UNDERSTAND, BODY).task_id for _ in range(UNDERSTAND_MAX_TASKS)]
    with pytest.raises(CapacityError) as raised:
        transport.start(StreamKind.UNDERSTAND, BODY)
    assert raised.value.code == "1001"
    transport.start(StreamKind.AUDIO, {"audio_url": "rtmp://sim.invalid/a"})  # another product's cap
    transport.stop(StreamKind.UNDERSTAND, ids[0])
    assert transport.start(StreamKind.UNDERSTAND, BODY).task_id not in ids


def test_a_failed_credit_deduction_answers_2001_and_creates_nothing() -> None:
    sim = service(Faults(credit_start=1.0))
    with pytest.raises(PaymentError) as raised:
        SimTransport(sim).start(StreamKind.UNDERSTAND, BODY)
    assert raised.value.code == "2001"
    assert sim.streams == {}


def test_a_source_that_ends_by_itself_says_nothing() -> None:
    sim = service(Faults(spontaneous_end=1.0))
    heard: list[dict[str, object]] = []
    sim.on_callback(heard.append)
    task_id = SimTransport(sim).start(StreamKind.UNDERSTAND, BODY).task_id
    sim.advance(30)
    assert len(heard) == 1  # its one window's result, and no word of its end
    assert sim.billing() == []
    with pytest.raises(TaskNotFoundError):
        SimTransport(sim).stop(StreamKind.UNDERSTAND, task_id)


@pytest.mark.parametrize(
    ("seed", "http"), [(0, False), (1, False), (2, False), (3, False), (0, True), (1, True)]
)
def test_a_faulty_run_of_the_three_products_settles_with_nothing_billing(seed: int, http: bool) -> None:
    report = simulate(
        Run(streams=40, minutes=1.5, faults="all", seed=seed, kinds=tuple(StreamKind), http=http)
    )
    assert report.violations == []
    assert report.streams_billing_after_settle == 0
    assert report.tasks_by_kind.get("understand", 0) > 0
    assert report.ok


def test_a_run_needs_a_kind() -> None:
    with pytest.raises(ValueError, match="kinds"):
        Run(kinds=())


def test_results_posted_to_the_receivers_token_url_reach_their_task_over_loopback() -> None:
    """Until the receiver gives each task a URL of its own, a start's ``callback`` can be the
    receiver's token URL: the results cross a real socket and are applied to their task."""
    sim = service()
    fleet = Fleet(SimTransport(sim), clock=sim.clock, policy=Policy(seed=0, stop_concurrency=0))
    token = "understand-token-0123456789"
    with serve_webhook(WebhookReceiver(fleet, token=token)) as server, requests.Session() as http:
        sim.on_callback(lambda payload: http.post(f"{server.url}/{token}", json=payload, timeout=5))
        task = fleet.start("understand", **{**BODY, "callback": f"{server.url}/{token}"})
        sim.advance(10)
        duplicate = sim.deliveries[-1].payload
        answer = http.post(f"{server.url}/{token}", json=duplicate, timeout=5)
    assert answer.json() == {"outcome": "duplicate"}
    assert [segment.text for segment in task.transcript] == [
        d.payload["data"]["text"] for d in sim.deliveries
    ]
    fleet.close()
