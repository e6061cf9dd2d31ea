"""RealTime: the public driver that moves a simulator's clock with the wall clock, from a thread."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from structlog.testing import capture_logs

from streamlife import ManualClock, StreamKind
from streamlife.protocol import Payload
from streamlife.sim import RealTime, SimTransport, SimulatedService

AUDIO = {"audio_url": "rtmp://example.invalid/live", "provider": "assemblyai"}
WAIT = 30.0  # a bound on waiting for the driver's thread, never an expectation of speed


class Inbox:
    """A callback sink that wakes a waiting test when a payload matching it arrives."""

    def __init__(self) -> None:
        self.payloads: list[Payload] = []
        self._seen = threading.Condition()

    def __call__(self, payload: Payload) -> None:
        with self._seen:
            self.payloads.append(payload)
            self._seen.notify_all()

    def wait_for(self, status: int) -> list[Payload]:
        def came() -> bool:
            return any(payload["data"].get("status") == status for payload in self.payloads)

        with self._seen:
            assert self._seen.wait_for(came, timeout=WAIT), self.payloads
            return list(self.payloads)


def test_it_moves_the_clock_and_sends_the_callbacks_as_they_fall_due() -> None:
    clock = ManualClock(1_700_000_000.0)
    service = SimulatedService(clock=clock)
    inbox = Inbox()
    service.on_callback(inbox)
    transport = SimTransport(service)
    task_id = transport.start(StreamKind.AUDIO, AUDIO).task_id
    driver = RealTime(service, speed=200.0)
    assert not driver.running
    with driver:
        assert "running" in repr(driver)
        inbox.wait_for(0)  # a segment: 5 virtual seconds passed without anyone advancing the clock
        transport.stop(StreamKind.AUDIO, task_id)
        payloads = inbox.wait_for(14)
    assert "idle" in repr(driver)
    indexes = [payload["data"]["segment_index"] for payload in payloads if "transcript" in payload["data"]]
    assert indexes == sorted(indexes)
    assert service.billing() == []
    assert clock.now() > 1_700_000_005.0
    after = clock.now()
    driver.close()  # again: nothing happens
    assert clock.now() == after  # closed: the clock stands still


def test_a_sink_that_raises_is_logged_and_the_clock_goes_on() -> None:
    service = SimulatedService(clock=ManualClock(0.0))
    broken = threading.Event()

    def refuse(_payload: Payload) -> None:
        broken.set()
        raise RuntimeError("the receiver fell over")

    inbox = Inbox()
    service.on_callback(refuse)
    service.on_callback(inbox)
    transport = SimTransport(service)
    with capture_logs() as logs, RealTime(service, speed=500.0):
        transport.start(StreamKind.AUDIO, AUDIO)
        assert broken.wait(WAIT)
        service.off_callback(refuse)
        count = len(inbox.payloads)
        with inbox._seen:
            assert inbox._seen.wait_for(lambda: len(inbox.payloads) > count, timeout=WAIT)
    failures = [log for log in logs if log["event"] == "streamlife.sim_failed"]
    assert failures
    assert failures[0]["log_level"] == "error"


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan"), "fast"])
def test_a_speed_or_tick_that_is_not_a_positive_number_is_refused(bad: Any) -> None:
    service = SimulatedService()
    with pytest.raises(ValueError, match="speed"):
        RealTime(service, speed=bad)
    with pytest.raises(ValueError, match="tick"):
        RealTime(service, tick=bad)


def test_it_starts_once() -> None:
    driver = RealTime(SimulatedService()).start()
    try:
        with pytest.raises(RuntimeError):
            driver.start()
    finally:
        driver.close()
    assert "speed=1" in repr(driver)
