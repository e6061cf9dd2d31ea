"""The simulator speaks the documented protocol, bills honestly, and bends it only as its faults say."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamlife import (
    DEFAULT_STATUSES,
    PROVIDER_ENDED,
    ManualClock,
    ProviderEvent,
    Segment,
    StatusCallback,
    StreamKind,
    parse_callback,
)
from streamlife.errors import (
    AuthError,
    CapacityError,
    OutcomeUnknownError,
    PaymentError,
    RateLimitedError,
    RejectedError,
    ServerError,
    TaskNotFoundError,
    TransportError,
)
from streamlife.sim import Faults, SimMode, SimTransport, SimulatedService
from streamlife.sim._records import CREDIT_EXHAUSTED, SOURCE_ENDED

AUDIO = {"audio_url": "rtmp://example.invalid/live", "provider": "assemblyai"}
VIDEO = {"url": "rtmp://example.invalid/cam"}
ELEVENLABS = {"audio_url": "rtmp://example.invalid/live", "provider": "elevenlabs"}


def simulated(faults: Faults | None = None, **options: Any) -> tuple[SimulatedService, SimTransport]:
    service = SimulatedService(clock=ManualClock(), faults=faults, **options)
    return service, SimTransport(service)


def statuses(service: SimulatedService, task_id: str) -> list[object]:
    """Each callback for the task, as 'p3'/'f3' (partial/final of segment 3), 'v3' (video segment 3),
    the type of a forwarded provider message, or its status."""
    told: list[object] = []
    for delivery in service.deliveries:
        if delivery.task_id != task_id:
            continue
        data = delivery.payload["data"]
        if "type" in data or "message_type" in data:
            told.append(data.get("type") or data["message_type"])
        elif data.get("data") is not None:
            told.append(f"v{data['data']['segment_index']}")
        elif data.get("transcript") is None:
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


@pytest.mark.parametrize(
    ("options", "body"),
    [
        ({"require_provider": True}, {"audio_url": "rtmp://example.invalid/live"}),
        ({"mode": "passthrough"}, {"audio_url": "rtmp://example.invalid/live"}),
        ({}, {"audio_url": "rtmp://example.invalid/live", "provider": "whisper"}),
        ({"mode": "passthrough"}, {"audio_url": "rtmp://example.invalid/live", "provider": None}),
    ],
    ids=["required", "passthrough-requires", "unknown-provider", "null-provider"],
)
def test_an_audio_start_without_a_valid_provider_answers_400(
    options: dict[str, Any], body: dict[str, Any]
) -> None:
    service, transport = simulated(**options)
    answer = service.request("/audio-stream/start", {"Authorization": "sk-mai-simulated"}, body)
    assert answer.status == 400
    assert answer.body is not None
    assert answer.body["code"] == 400
    assert answer.body["msg"].startswith("Invalid request parameters")
    assert answer.body["data"] is None
    with pytest.raises(RejectedError, match="provider"):
        transport.start(StreamKind.AUDIO, body)
    assert service.streams == {}
    assert service.billing() == []


def test_a_provider_is_required_of_audio_starts_only() -> None:
    service, transport = simulated(require_provider=True)
    transport.start(StreamKind.VIDEO, VIDEO)
    transport.start(StreamKind.AUDIO, ELEVENLABS)
    assert [stream.provider for stream in service.streams.values()] == [None, "elevenlabs"]
    lenient, transport = simulated()  # segments mode takes a start with no provider, as before
    transport.start(StreamKind.AUDIO, {"audio_url": "rtmp://example.invalid/live"})
    assert len(lenient.billing()) == 1


@pytest.mark.parametrize(
    ("kind", "params", "started", "stopped"),
    [
        (StreamKind.AUDIO, AUDIO, "Audio stream transcription started", "Audio stream stopped successfully"),
        (StreamKind.VIDEO, VIDEO, "Stream processing started successfully", "Stream stopped successfully"),
    ],
)
def test_the_answers_say_what_the_docs_say(
    kind: StreamKind, params: dict[str, Any], started: str, stopped: str
) -> None:
    _, transport = simulated()
    start = transport.start(kind, params)
    assert start.raw == {
        "code": 200,
        "message": "success",
        "data": {"task_id": start.task_id, "message": started},
    }
    stop = transport.stop(kind, start.task_id)
    assert stop.raw == {
        "code": 200,
        "message": "success",
        "data": {"task_id": start.task_id, "message": stopped},
    }


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


def run_with_every_fault(seed: int, mode: SimMode = "segments") -> list[tuple[float, str, str]]:
    service, transport = simulated(Faults.all(seed), mode=mode)
    started: list[tuple[StreamKind, str]] = []
    for index in range(30):
        kind = StreamKind.VIDEO if index % 5 == 0 else StreamKind.AUDIO
        params = VIDEO if kind is StreamKind.VIDEO else (AUDIO if index % 2 else ELEVENLABS)
        with contextlib.suppress(TransportError):  # faults make starts fail; the log is what is compared
            started.append((kind, transport.start(kind, {**params, "format_turns": index % 3 == 0}).task_id))
        service.advance(3.0)
        if index % 4 == 3 and started:
            with contextlib.suppress(TransportError):
                transport.stop(*started.pop(0))
    service.advance(120)
    return [(d.at, d.task_id, repr(d.payload)) for d in service.deliveries]


@pytest.mark.parametrize("mode", ["segments", "passthrough"])
def test_the_same_seed_gives_the_same_delivery_log(mode: SimMode) -> None:
    first, again, other = (run_with_every_fault(seed, mode) for seed in (7, 7, 8))
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
    task_id = transport.start(StreamKind.VIDEO, VIDEO).task_id
    service.advance(11)
    transport.stop(StreamKind.VIDEO, task_id)
    service.advance(5)
    assert statuses(service, task_id) == ["v0", "v1", 14]


def test_a_video_segment_callback_has_the_documented_shape() -> None:
    service, transport = simulated()
    task_id = transport.start(StreamKind.VIDEO, {**VIDEO, "fps": 2}).task_id
    service.advance(20)
    fourth = service.deliveries[3].payload
    assert fourth == {
        "code": "200",
        "message": "SUCCESS",
        "task_id": task_id,
        "data": {
            "status": 0,
            "message": "Segment processed",
            "data": {  # the segment's fields are inside data.data
                "segment_index": 3,
                "start_time": "15.0",
                "end_time": "20.0",
                "video_url": f"https://storage.sim.invalid/{task_id}/3.mp4",
                "content_moderation": {"has_unsafe_content": True, "frames_processed": 10},
            },
            "token": {},
        },
    }
    assert service.deliveries[0].payload["data"]["data"]["content_moderation"]["has_unsafe_content"] is False


def test_a_video_stop_callback_has_the_documented_shape() -> None:
    service, transport = simulated()
    task_id = transport.start(StreamKind.VIDEO, VIDEO).task_id
    service.advance(7)
    transport.stop(StreamKind.VIDEO, task_id)
    service.advance(1)
    assert service.deliveries[-1].payload == {
        "code": "200",
        "message": "SUCCESS",
        "task_id": task_id,
        "data": {"status": 14, "message": "Stream stopped by user", "data": None, "token": None},
    }


def test_video_streams_are_the_same_in_both_modes() -> None:
    sent = []
    for mode in ("segments", "passthrough"):
        service, transport = simulated(Faults.all(5), mode=mode)
        for _ in range(4):
            with contextlib.suppress(TransportError):
                transport.start(StreamKind.VIDEO, VIDEO)
        service.advance(60)
        sent.append([(d.at, d.task_id, d.payload) for d in service.deliveries])
    assert sent[0] == sent[1]
    assert len(sent[0]) > 10


@pytest.mark.parametrize("seed", range(3))
def test_every_payload_the_simulator_sends_parses(seed: int) -> None:
    service, transport = simulated(Faults.all(seed))
    started: list[tuple[StreamKind, str]] = []
    for index in range(24):
        kind = StreamKind.VIDEO if index % 3 == 0 else StreamKind.AUDIO
        params = VIDEO if kind is StreamKind.VIDEO else AUDIO
        with contextlib.suppress(TransportError):
            started.append((kind, transport.start(kind, params).task_id))
        service.advance(4.0)
        if index % 3 == 2 and started:
            with contextlib.suppress(TransportError):
                transport.stop(*started.pop(0))
    service.advance(60)
    kinds = {task_id: stream.kind for task_id, stream in service.streams.items()}
    for delivery in service.deliveries:
        if delivery.task_id in service.foreign_ids:
            continue  # another product's: not a stream's callback
        event = parse_callback(json.dumps(delivery.payload).encode())
        assert event.task_id == delivery.task_id
        status = delivery.payload["data"]["status"]
        if isinstance(event, StatusCallback):
            assert event.meaning is DEFAULT_STATUSES.meaning(status)
        else:
            assert isinstance(event, Segment)
            assert event.final or kinds[event.task_id] is StreamKind.AUDIO
            if event.final:
                assert event.index == delivery.final_of


@pytest.mark.parametrize("seed", range(3))
def test_every_forwarded_assemblyai_message_parses(seed: int) -> None:
    service, transport = simulated(Faults.all(seed), mode="passthrough")
    started: list[str] = []
    for index in range(12):
        with contextlib.suppress(TransportError):
            started.append(
                transport.start(StreamKind.AUDIO, {**AUDIO, "format_turns": index % 2 == 0}).task_id
            )
        service.advance(4.0)
        if index % 3 == 2 and started:
            with contextlib.suppress(TransportError):
                transport.stop(StreamKind.AUDIO, started.pop(0))
    service.advance(60)
    seen: set[str] = set()
    for delivery in service.deliveries:
        if delivery.task_id in service.foreign_ids:
            continue
        event = parse_callback(json.dumps(delivery.payload).encode())
        assert event.task_id == delivery.task_id
        message = delivery.payload["data"]
        kind = message.get("type", "status")
        seen.add(kind)
        if kind == "Turn":
            assert isinstance(event, Segment)
            assert (event.index, event.final, event.text) == (
                message["turn_order"],
                message["end_of_turn"],
                message["transcript"],
            )
        elif kind == "Termination":
            assert isinstance(event, StatusCallback)
            assert event.status == PROVIDER_ENDED
        elif kind == "Begin":
            assert isinstance(event, ProviderEvent)
        else:
            assert isinstance(event, StatusCallback)
            assert event.status == message["status"]
    assert seen == {"Begin", "Turn", "Termination", "status"}


# -- the faults of the stream itself ----------------------------------------------------------------


def test_a_silent_segment_is_status_0_with_a_null_transcript_and_the_stream_goes_on() -> None:
    service, transport = simulated(Faults(silent_segment=1.0))
    task_id = transport.start(StreamKind.AUDIO, AUDIO).task_id
    service.advance(16)
    assert [delivery.payload["data"] for delivery in service.deliveries] == [
        {
            "segment_index": index,
            "segment_start_time": f"{5.0 * index:.1f}",
            "segment_end_time": f"{5.0 * index + 5:.1f}",
            "status": 0,
            "message": "No speech detected",
            "transcript": None,
        }
        for index in range(3)
    ]
    assert service.billing() == [task_id]
    assert service.last_final_sent(task_id) is None  # nothing was final: nothing the transcript owes


def test_silent_segments_are_a_segments_mode_fault() -> None:
    service, transport = simulated(Faults(silent_segment=1.0), mode="passthrough")
    task_id = transport.start(StreamKind.AUDIO, AUDIO).task_id
    video = transport.start(StreamKind.VIDEO, VIDEO).task_id
    service.advance(6)
    assert statuses(service, task_id) == ["Begin", "Turn", "Turn"]
    assert statuses(service, video) == ["v0"]


def test_a_stop_of_an_ended_stream_may_answer_200_and_send_no_status_14() -> None:
    service, transport = simulated(Faults(spontaneous_end=1.0, stop_ended_ok=1.0))
    task_id = transport.start(StreamKind.AUDIO, AUDIO).task_id
    service.advance(6)  # one segment, then the service ends it
    assert statuses(service, task_id) == ["p0", "f0", SOURCE_ENDED]
    result = transport.stop(StreamKind.AUDIO, task_id)
    assert result.message == "Audio stream stopped successfully"
    service.advance(60)
    assert statuses(service, task_id) == ["p0", "f0", SOURCE_ENDED]  # no status 14
    assert [stop.status for stop in service.stop_log] == [200]
    assert service.billed_seconds(task_id) == 5.0
    with pytest.raises(TaskNotFoundError):  # an unknown task is still not found
        transport.stop(StreamKind.AUDIO, "no-such-task")
    with pytest.raises(TaskNotFoundError):  # and the other product still knows nothing of it
        transport.stop(StreamKind.VIDEO, task_id)


def test_a_start_without_credit_answers_402_and_creates_nothing() -> None:
    service, transport = simulated(Faults(credit_start=1.0))
    answer = service.request("/stream/start", {"Authorization": "sk-mai-simulated"}, VIDEO)
    assert (answer.status, answer.body) == (402, {"code": 402, "msg": "Insufficient balance", "data": None})
    with pytest.raises(PaymentError):
        transport.start(StreamKind.AUDIO, AUDIO)
    service.advance(30)
    assert service.streams == {}
    assert service.deliveries == []
    assert service.start_requests == 2


@pytest.mark.parametrize(
    ("kind", "params", "mode", "data"),
    [
        (
            StreamKind.AUDIO,
            AUDIO,
            "segments",
            # No segment was sent, so there is no last segment to name.
            {"status": CREDIT_EXHAUSTED, "message": "Insufficient balance", "transcript": None},
        ),
        (
            StreamKind.AUDIO,
            ELEVENLABS,
            "passthrough",
            {"status": CREDIT_EXHAUSTED, "message": "Insufficient balance", "transcript": None},
        ),
        (
            StreamKind.VIDEO,
            VIDEO,
            "segments",
            {"status": CREDIT_EXHAUSTED, "message": "Insufficient balance", "data": None, "token": None},
        ),
    ],
    ids=["audio", "passthrough", "video"],
)
def test_a_stream_out_of_credit_ends_with_a_status_callback_and_stops_billing(
    kind: StreamKind, params: dict[str, Any], mode: SimMode, data: dict[str, Any]
) -> None:
    service, transport = simulated(Faults(credit_end=1.0), mode=mode)
    task_id = transport.start(kind, params).task_id
    service.advance(60)
    ended = service.deliveries[-1]  # the charge for the second cycle failed: no segment was sent
    assert (ended.at, ended.payload["data"]) == (5.0, data)
    assert all(d.payload["data"].get("status", 0) == 0 for d in service.deliveries[:-1])  # Begin, say
    assert service.billing() == []
    assert service.streams[task_id].end_status == CREDIT_EXHAUSTED
    assert service.billed_seconds(task_id) == 5.0  # the cycle charged at the start, and no other
    assert CREDIT_EXHAUSTED not in (SOURCE_ENDED, 14, 16)


def test_a_status_16_callback_leaves_the_stream_running_and_billing() -> None:
    service, transport = simulated(Faults(capacity_callback=1.0))
    task_id = transport.start(StreamKind.AUDIO, AUDIO).task_id
    video = transport.start(StreamKind.VIDEO, VIDEO).task_id
    service.advance(11)
    assert statuses(service, task_id) == ["p0", "f0", 16, "p1", "f1", 16]
    assert statuses(service, video) == ["v0", 16, "v1", 16]
    assert service.deliveries[-1].payload["data"] == {
        "status": 16,
        "message": "Capacity Reached",
        "data": None,
        "token": None,
    }
    assert sorted(service.billing()) == sorted([task_id, video])
    assert service.billed_seconds(task_id) == 15.0


def test_the_providers_end_of_session_while_running_leaves_the_stream_running_and_billing() -> None:
    service, transport = simulated(Faults(provider_termination=1.0), mode="passthrough")
    task_id = transport.start(StreamKind.AUDIO, AUDIO).task_id
    other = transport.start(StreamKind.AUDIO, ELEVENLABS).task_id
    service.advance(11)
    assert statuses(service, task_id) == [
        "Begin",
        "Turn",
        "Turn",
        "Termination",
        "Turn",
        "Turn",
        "Termination",
    ]
    # ElevenLabs says it with an error message, before it closes its socket.
    assert statuses(service, other).count("session_time_limit_exceeded") == 2
    assert "Termination" not in statuses(service, other)
    assert sorted(service.billing()) == sorted([task_id, other])
    assert service.billed_seconds(task_id) == 15.0
    segments, transport = simulated(Faults(provider_termination=1.0))  # no provider talks in segments mode
    transport.start(StreamKind.AUDIO, AUDIO)
    segments.advance(11)
    assert all(delivery.payload["data"].get("type") is None for delivery in segments.deliveries)


def test_another_products_callbacks_come_to_the_same_webhook_under_ids_that_are_no_streams() -> None:
    service, transport = simulated(Faults(seed=2, foreign=1.0))
    started = {
        transport.start(StreamKind.AUDIO, AUDIO).task_id,
        transport.start(StreamKind.VIDEO, VIDEO).task_id,
    }
    service.advance(60)
    foreign = [d for d in service.deliveries if d.task_id not in started]
    assert len(foreign) == len(service.foreign_ids) == 2 * 12  # one per segment of each stream
    assert {d.task_id for d in foreign} == service.foreign_ids
    assert not service.foreign_ids & set(service.streams)
    for delivery in foreign:
        payload = delivery.payload
        assert set(payload) == {"code", "message", "data", "task_id"}
        assert (payload["code"], payload["message"], payload["task_id"]) == (200, "SUCCESS", delivery.task_id)
        assert len(delivery.task_id) == 32  # the webhooks guide's style of id: 32 hex digits
        assert int(delivery.task_id, 16) >= 0
        assert delivery.final_of is None
    without_status = [d for d in foreign if "status" not in d.payload["data"]]
    with_status = [d for d in foreign if "status" in d.payload["data"]]
    assert without_status
    assert with_status
    for delivery in with_status:
        data = delivery.payload["data"]
        assert type(data["status"]) is int
        assert set(data) - {"status", "message"}  # keys of the product's own
    assert sorted(service.billing()) == sorted(started)


@given(seed=st.integers(0, 2**32 - 1), mode=st.sampled_from(["segments", "passthrough"]))
def test_foreign_ids_are_never_streams_and_a_stream_bills_until_it_ended(seed: int, mode: SimMode) -> None:
    service, transport = simulated(Faults.all(seed), mode=mode)
    for index in range(8):
        kind = StreamKind.VIDEO if index % 3 == 0 else StreamKind.AUDIO
        params = VIDEO if kind is StreamKind.VIDEO else (AUDIO if index % 2 else ELEVENLABS)
        with contextlib.suppress(TransportError):
            task_id = transport.start(kind, params).task_id
            if index % 2:
                service.advance(7.0)
                with contextlib.suppress(TransportError):
                    transport.stop(kind, task_id)
        service.advance(6.0)
    assert not service.foreign_ids & set(service.streams)
    assert {d.task_id for d in service.deliveries} <= set(service.streams) | service.foreign_ids
    now = service.clock.now()
    for task_id, stream in service.streams.items():
        end = stream.ended_at if stream.ended_at is not None else now
        assert service.billed_seconds(task_id) == max(1, -(-(end - stream.started_at) // 5.0)) * 5.0
        assert (task_id in service.billing()) is (stream.ended_at is None)


# -- pass-through: the provider's own messages ------------------------------------------------------


def forwarded(service: SimulatedService, task_id: str) -> list[dict[str, Any]]:
    """The task's callbacks' ``data``, after checking each is in the webhook envelope."""
    messages = []
    for delivery in service.deliveries:
        if delivery.task_id == task_id:
            payload = delivery.payload
            assert {k: v for k, v in payload.items() if k != "data"} == {
                "code": "200",
                "message": "SUCCESS",
                "task_id": task_id,
            }
            messages.append(payload["data"])
    return messages


@pytest.mark.parametrize("format_turns", [True, False])
def test_assemblyai_messages_are_forwarded_begin_turns_then_termination_before_14(format_turns: bool) -> None:
    service, transport = simulated(mode="passthrough")
    task_id = transport.start(StreamKind.AUDIO, {**AUDIO, "format_turns": format_turns}).task_id
    service.advance(6)
    transport.stop(StreamKind.AUDIO, task_id)
    service.advance(60)
    begin, partial, final, *rest = forwarded(service, task_id)
    assert set(begin) == {"type", "id", "expires_at"}
    assert begin["type"] == "Begin"
    spoken = f"segment 0 of {task_id[:8]}"
    assert {k: v for k, v in partial.items() if k != "words"} == {
        "type": "Turn",
        "turn_order": 0,
        "turn_is_formatted": False,
        "end_of_turn": False,
        "transcript": "segment 0",
        "end_of_turn_confidence": 0.1,
    }
    assert [word["text"] for word in partial["words"]] == ["segment", "0"]
    assert [word["word_is_final"] for word in partial["words"]] == [True, False]
    assert {k: v for k, v in final.items() if k != "words"} == {
        "type": "Turn",
        "turn_order": 0,
        "turn_is_formatted": False,
        "end_of_turn": True,
        "transcript": spoken,
        "end_of_turn_confidence": 0.95,
    }
    for word in final["words"]:
        assert set(word) == {"text", "start", "end", "confidence", "word_is_final"}
        assert 0 <= word["start"] < word["end"] <= 5000
    if format_turns:
        formatted, *rest = rest
        assert formatted["end_of_turn"] is formatted["turn_is_formatted"] is True
        assert formatted["turn_order"] == 0
        assert formatted["transcript"] == f"Segment 0 of {task_id[:8]}."
    termination, stopped = rest
    assert termination == {"type": "Termination", "audio_duration_seconds": 6, "session_duration_seconds": 6}
    # There are no memories-side segments: the stop callback names none.
    assert stopped == {"status": 14, "message": "Stream stopped by user", "transcript": None}
    assert service.last_final_sent(task_id) == 0


def test_elevenlabs_messages_are_forwarded_with_no_index_of_any_kind() -> None:
    service, transport = simulated(mode="passthrough")
    task_id = transport.start(StreamKind.AUDIO, ELEVENLABS).task_id
    service.advance(11)
    transport.stop(StreamKind.AUDIO, task_id)
    service.advance(60)
    messages = forwarded(service, task_id)
    assert [m.get("message_type", m.get("status")) for m in messages] == [
        "session_started",
        "partial_transcript",
        "committed_transcript",
        "partial_transcript",
        "committed_transcript",
        14,
    ]
    assert set(messages[0]) == {"message_type", "session_id", "config"}
    assert messages[1:3] == [
        {"message_type": "partial_transcript", "text": "segment 0"},
        {"message_type": "committed_transcript", "text": f"segment 0 of {task_id[:8]}"},
    ]
    assert not any("index" in key or "order" in key for d in service.deliveries for key in keys(d.payload))
    assert service.last_final_sent(task_id) is None


def keys(value: object) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {key for item in value.values() for key in keys(item)}
    if isinstance(value, list):
        return {key for item in value for key in keys(item)}
    return set()


def test_an_early_callback_in_passthrough_is_the_providers_first_message() -> None:
    service, transport = simulated(Faults(early_callback=1.0), mode="passthrough")
    seen: list[dict[str, Any]] = []
    service.on_callback(seen.append)
    task_id = transport.start(StreamKind.AUDIO, AUDIO).task_id
    assert [payload["data"]["type"] for payload in seen] == ["Begin"]
    service.advance(6)
    assert statuses(service, task_id) == ["Begin", "Turn", "Turn"]  # the Begin only once


def test_a_late_final_in_passthrough_is_the_last_turn_again() -> None:
    service, transport = simulated(Faults(late_final=1.0), mode="passthrough")
    task_id = transport.start(StreamKind.AUDIO, {**AUDIO, "format_turns": True}).task_id
    service.advance(11)
    transport.stop(StreamKind.AUDIO, task_id)
    service.advance(10)
    *_, stopped, late = forwarded(service, task_id)
    assert stopped["status"] == 14
    assert (late["type"], late["turn_order"], late["turn_is_formatted"]) == ("Turn", 1, True)


# -- what the transcript owes --------------------------------------------------------------------


def test_the_last_final_sent_counts_finals_delivered_while_the_stream_lived() -> None:
    service, transport = simulated()
    task_id = transport.start(StreamKind.AUDIO, AUDIO).task_id
    assert service.last_final_sent(task_id) is None
    service.advance(11)
    assert service.last_final_sent(task_id) == 1
    video = transport.start(StreamKind.VIDEO, VIDEO).task_id
    service.advance(5)
    assert service.last_final_sent(video) == 0
    delayed, transport = simulated(Faults(seed=3, delay=1.0, max_delay=100.0))
    task_id = transport.start(StreamKind.AUDIO, AUDIO).task_id
    delayed.advance(5.5)
    transport.stop(StreamKind.AUDIO, task_id)
    delayed.advance(200)
    finals = [d for d in delayed.deliveries if d.final_of is not None]
    assert finals
    assert all(d.at > 5.5 for d in finals)  # each came after the stream had ended
    assert delayed.last_final_sent(task_id) is None


@pytest.mark.parametrize("seconds", [0.25, 1.5, 2.0, 3_600.0, 1e6, 1e12])
def test_a_simulated_retry_after_reads_back_as_the_seconds_it_was_given(seconds: float) -> None:
    """Written as delay-seconds, never with an exponent: a strict reader takes "1e+06" for no
    Retry-After at all."""
    _, transport = simulated(Faults(stop_429=1.0, retry_after=seconds))
    task_id = transport.start(StreamKind.AUDIO, AUDIO).task_id
    with pytest.raises(RateLimitedError) as raised:
        transport.stop(StreamKind.AUDIO, task_id)
    assert raised.value.retry_after == seconds
