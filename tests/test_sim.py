"""The simulator speaks the documented protocol, bills honestly, and bends it only as its faults say."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest

from streamlife import ManualClock, Segment, StatusCallback, StatusMeaning, StreamKind, parse_callback
from streamlife.errors import (
    AuthError,
    CapacityError,
    OutcomeUnknownError,
    RateLimitedError,
    RejectedError,
    ServerError,
    TaskNotFoundError,
    TransportError,
)
from streamlife.sim import Faults, SimTransport, SimulatedService

AUDIO = {"audio_url": "rtmp://example.invalid/live"}


def simulated(faults: Faults | None = None, **options: Any) -> tuple[SimulatedService, SimTransport]:
    service = SimulatedService(clock=ManualClock(), faults=faults, **options)
    return service, SimTransport(service)


def statuses(service: SimulatedService, task_id: str) -> list[object]:
    """Each callback for the task, as 'p3'/'f3' (partial/final of segment 3) or its status."""
    told: list[object] = []
    for delivery in service.deliveries:
        if delivery.task_id != task_id:
            continue
        data = delivery.payload["data"]
        if "transcript" not in data:
            told.append(f"v{data['segment_index']}" if data.get("data") else data["status"])
        elif data["transcript"] is None:
            told.append(data["status"])
        else:
            told.append(("f" if data["transcript"]["is_final"] else "p") + str(data["segment_index"]))
    return told


def test_a_stream_sends_a_partial_then_a_final_every_five_seconds() -> None:
    service, transport = simulated()
    task_id = transport.start(StreamKind.AUDIO, AUDIO).task_id
    service.advance(14.9)
    assert statuses(service, task_id) == ["p0", "f0", "p1", "f1"]
    assert [d.at for d in service.deliveries] == [5.0, 5.0, 10.0, 10.0]


def test_stop_answers_then_one_status_14_callback_then_nothing() -> None:
    service, transport = simulated()
    task_id = transport.start(StreamKind.AUDIO, AUDIO).task_id
    service.advance(11)
    result = transport.stop(StreamKind.AUDIO, task_id)
    assert (result.task_id, result.message) == (task_id, "Audio stream stopped successfully")
    service.advance(600)
    assert statuses(service, task_id) == ["p0", "f0", "p1", "f1", 14]
    stop_callback = service.deliveries[-1].payload
    assert stop_callback["data"]["message"] == "Stream stopped by user"
    assert service.billing() == []


def test_the_ledger_bills_every_started_five_second_cycle() -> None:
    service, transport = simulated()
    first = transport.start(StreamKind.AUDIO, AUDIO).task_id
    assert service.billed_seconds(first) == 5.0  # one cycle is charged at the start
    service.advance(12)
    assert service.billed_seconds(first) == 15.0
    second = transport.start(StreamKind.AUDIO, AUDIO).task_id
    service.advance(3)
    transport.stop(StreamKind.AUDIO, first)  # at 15 s: exactly three cycles
    service.advance(100)
    assert service.billed_seconds(first) == 15.0  # nothing after the stop
    assert service.billed_seconds(second) == 105.0  # 103 s live: 21 cycles, still billing
    assert service.billing() == [second]


def test_unknown_or_ended_tasks_answer_not_found() -> None:
    _, transport = simulated()
    with pytest.raises(TaskNotFoundError):
        transport.stop(StreamKind.AUDIO, "no-such-task")
    task_id = transport.start(StreamKind.AUDIO, AUDIO).task_id
    transport.stop(StreamKind.AUDIO, task_id)
    with pytest.raises(TaskNotFoundError):
        transport.stop(StreamKind.AUDIO, task_id)


def test_the_key_is_checked() -> None:
    service = SimulatedService(api_key="sk-mai-right")
    with pytest.raises(AuthError):
        SimTransport(service, api_key="sk-mai-wrong").start(StreamKind.AUDIO, AUDIO)
    assert service.start_requests == 0


def test_a_start_without_its_url_is_rejected() -> None:
    _, transport = simulated()
    with pytest.raises(RejectedError, match="audio_url"):
        transport.start(StreamKind.AUDIO, {"provider": "assemblyai"})
    with pytest.raises(RejectedError, match="url"):
        transport.start(StreamKind.VIDEO, AUDIO)


def test_past_the_stream_limit_a_start_answers_capacity() -> None:
    service, transport = simulated(max_streams=2)
    transport.start(StreamKind.AUDIO, AUDIO)
    transport.start(StreamKind.VIDEO, {"url": "rtmp://example.invalid/cam"})  # audio and video count together
    with pytest.raises(CapacityError):
        transport.start(StreamKind.AUDIO, AUDIO)
    assert len(service.billing()) == 2


def test_a_stream_that_ends_frees_its_place_under_the_limit() -> None:
    service, transport = simulated(max_streams=2, faults=Faults(spontaneous_end=1.0))
    first = transport.start(StreamKind.AUDIO, AUDIO).task_id
    transport.start(StreamKind.AUDIO, AUDIO)
    transport.stop(StreamKind.AUDIO, first)
    assert service.live_count() == 1
    transport.start(StreamKind.AUDIO, AUDIO)  # the stopped stream's place
    with pytest.raises(CapacityError):
        transport.start(StreamKind.AUDIO, AUDIO)
    service.advance(3600)  # every stream ends by itself, and is not counted twice when stopped after
    for task_id in list(service.streams):
        with contextlib.suppress(Exception):
            transport.stop(StreamKind.AUDIO, task_id)
    assert service.live_count() == len(service.billing()) == 0


def test_a_lost_start_answer_leaves_a_stream_billing() -> None:
    service, transport = simulated(Faults(start_timeout_created=1.0))
    with pytest.raises(OutcomeUnknownError):
        transport.start(StreamKind.AUDIO, AUDIO)
    (orphan,) = service.billing()
    service.advance(30)
    assert service.billed_seconds(orphan) == 30.0
    assert statuses(service, orphan)[:2] == ["p0", "f0"]  # its callbacks name a task nobody knows


@pytest.mark.parametrize(
    ("faults", "error", "still_billing"),
    [
        (Faults(stop_500=1.0), ServerError, True),
        (Faults(stop_429=1.0), RateLimitedError, True),
        (Faults(stop_not_found=1.0), TaskNotFoundError, False),
    ],
)
def test_stop_faults(faults: Faults, error: type[Exception], still_billing: bool) -> None:
    service, transport = simulated(faults)
    task_id = transport.start(StreamKind.AUDIO, AUDIO).task_id
    with pytest.raises(error) as raised:
        transport.stop(StreamKind.AUDIO, task_id)
    if isinstance(raised.value, RateLimitedError):
        assert raised.value.retry_after == Faults().retry_after
    assert (service.billing() == [task_id]) is still_billing
    service.advance(60)
    assert STOPPED not in statuses(service, task_id)  # no stop was applied: no status 14


STOPPED = 14


def test_an_early_callback_arrives_before_the_start_answer() -> None:
    service, transport = simulated(Faults(early_callback=1.0))
    seen_during_start: list[str] = []
    service.on_callback(lambda payload: seen_during_start.append(payload["task_id"]))
    task_id = transport.start(StreamKind.AUDIO, AUDIO).task_id
    assert seen_during_start == [task_id]


def test_a_late_final_follows_the_status_14_callback() -> None:
    service, transport = simulated(Faults(late_final=1.0))
    task_id = transport.start(StreamKind.AUDIO, AUDIO).task_id
    service.advance(11)
    transport.stop(StreamKind.AUDIO, task_id)
    service.advance(10)
    assert statuses(service, task_id)[-2:] == [14, "f1"]


def test_dropped_and_duplicated_callbacks() -> None:
    dropping, transport = simulated(Faults(drop=1.0))
    transport.start(StreamKind.AUDIO, AUDIO)
    dropping.advance(60)
    assert dropping.deliveries == []
    doubling, transport = simulated(Faults(duplicate=1.0))
    task_id = transport.start(StreamKind.AUDIO, AUDIO).task_id
    doubling.advance(7)
    assert sorted(map(str, statuses(doubling, task_id))) == ["f0", "f0", "p0", "p0"]


def test_a_spontaneous_end_sends_a_status_other_than_14_and_stops_billing() -> None:
    service, transport = simulated(Faults(spontaneous_end=1.0))
    task_id = transport.start(StreamKind.AUDIO, AUDIO).task_id
    service.advance(60)
    assert statuses(service, task_id) == ["p0", "f0", 12]
    assert service.billing() == []
    assert service.billed_seconds(task_id) == 5.0


def run_with_every_fault(seed: int) -> list[tuple[float, str, str]]:
    service, transport = simulated(Faults.all(seed))
    started: list[str] = []
    for index in range(30):
        with contextlib.suppress(TransportError):  # faults make starts fail; the log is what is compared
            started.append(transport.start(StreamKind.AUDIO, AUDIO).task_id)
        service.advance(3.0)
        if index % 4 == 3 and started:
            with contextlib.suppress(TransportError):
                transport.stop(StreamKind.AUDIO, started.pop(0))
    service.advance(120)
    return [(d.at, d.task_id, repr(d.payload)) for d in service.deliveries]


def test_the_same_seed_gives_the_same_delivery_log() -> None:
    first, again, other = run_with_every_fault(7), run_with_every_fault(7), run_with_every_fault(8)
    assert first == again
    assert first != other
    assert len(first) > 100


def test_a_sink_may_call_back_into_the_service() -> None:
    service, transport = simulated()
    task_id = transport.start(StreamKind.AUDIO, AUDIO).task_id

    def stop_on_first_final(payload: dict[str, Any]) -> None:
        transcript = payload["data"]["transcript"]
        if transcript and transcript["is_final"] and service.billing():
            transport.stop(StreamKind.AUDIO, payload["task_id"])

    service.on_callback(stop_on_first_final)
    service.advance(30)
    assert statuses(service, task_id) == ["p0", "f0", 14]


def test_faults_are_probabilities() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        Faults(duplicate=1.5)


def test_video_streams_send_one_moderation_result_per_segment() -> None:
    service, transport = simulated()
    task_id = transport.start(StreamKind.VIDEO, {"url": "rtmp://example.invalid/cam"}).task_id
    service.advance(11)
    transport.stop(StreamKind.VIDEO, task_id)
    service.advance(5)
    assert statuses(service, task_id) == ["v0", "v1", 14]


@pytest.mark.parametrize("seed", range(3))
def test_every_payload_the_simulator_sends_parses(seed: int) -> None:
    service, transport = simulated(Faults.all(seed))
    started: list[tuple[StreamKind, str]] = []
    for index in range(24):
        kind = StreamKind.VIDEO if index % 3 == 0 else StreamKind.AUDIO
        params = {"url": "rtmp://x.invalid/cam"} if kind is StreamKind.VIDEO else AUDIO
        with contextlib.suppress(TransportError):
            started.append((kind, transport.start(kind, params).task_id))
        service.advance(4.0)
        if index % 3 == 2 and started:
            with contextlib.suppress(TransportError):
                transport.stop(*started.pop(0))
    service.advance(60)
    kinds = {task_id: stream.kind for task_id, stream in service.streams.items()}
    for delivery in service.deliveries:
        event = parse_callback(json.dumps(delivery.payload).encode())
        assert event.task_id == delivery.task_id
        status = delivery.payload["data"]["status"]
        if isinstance(event, StatusCallback):
            expected = {14: StatusMeaning.STOPPED, 16: StatusMeaning.CAPACITY}.get(
                status, StatusMeaning.UNKNOWN
            )
            assert event.meaning is expected
        else:
            assert isinstance(event, Segment)
            assert event.final or kinds[event.task_id] is StreamKind.AUDIO
