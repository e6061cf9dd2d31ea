"""Policy.max_live per product, over the simulator: understand held at its documented cap of 4 by
default, a mapping whose keys count products together, an int for every product, and the checks
that refuse a cap that cannot be meant."""

from __future__ import annotations

import re
from typing import Any

import pytest

from streamlife import LiveCapError, ManualClock, Policy, StreamKind, StreamTask, TaskState
from streamlife.protocol import UNDERSTAND_MAX_TASKS
from tests.conftest import Rig, rig, state_of

UNDERSTAND = {
    "url": "rtmp://sim.invalid:1935/live/stream",
    "user_prompt": "Describe what happens",
    "callback": "https://hooks.example.invalid/understand",
}


def start(setup: Rig, kind: str) -> StreamTask:
    if kind == "understand":
        return setup.fleet.start(kind, **UNDERSTAND)
    if kind == "audio":
        return setup.fleet.start(kind, audio_url="rtmp://sim.invalid/a", provider="assemblyai")
    return setup.fleet.start(kind, url="rtmp://sim.invalid/v")


def states(tasks: list[StreamTask]) -> list[TaskState]:
    return [state_of(task) for task in tasks]


def error_of(task: StreamTask) -> str:
    assert task.last_error is not None, f"{task!r} has no last_error"
    return task.last_error


R, P = TaskState.RUNNING, TaskState.PENDING


def test_by_default_understand_is_held_at_four_and_a_pending_start_goes_once_one_stops(
    clock: ManualClock,
) -> None:
    setup = rig(clock)
    assert setup.fleet.policy.max_live == {"understand": UNDERSTAND_MAX_TASKS}
    tasks = [start(setup, "understand") for _ in range(6)]
    assert states(tasks) == [R, R, R, R, P, P]
    assert error_of(tasks[4]) == "LiveCapError: 4 understand streams are live already (Policy.max_live)"
    assert setup.sim.service.start_requests == 4  # held back here: never sent to be refused with 1001
    setup.fleet.stop(tasks[0])
    setup.sim.advance(5)  # the pending starts come due on a tick
    assert states(tasks)[:4] == [TaskState.STOPPED, R, R, R]
    assert sorted(states(tasks)[4:]) == [
        P,
        R,
    ]  # one of the two took the room (the backoff's jitter says which)
    assert setup.sim.service.start_requests == 5
    assert setup.sim.service.live_count() == 4
    setup.fleet.stop_all()
    setup.sim.settle()
    assert setup.sim.billing() == []


def test_by_default_audio_and_video_have_no_cap_of_ours(clock: ManualClock) -> None:
    setup = rig(clock)
    tasks = [start(setup, kind) for kind in ("audio", "video") * 4]
    assert states(tasks) == [R] * 8


def test_a_pending_start_past_its_window_fails_with_the_product_and_its_cap(clock: ManualClock) -> None:
    setup = rig(clock, start_retry_window=0)
    tasks = [start(setup, "understand") for _ in range(5)]
    assert state_of(tasks[4]) is TaskState.FAILED
    assert error_of(tasks[4]).startswith("LiveCapError: 4 understand streams")


def test_a_mapping_caps_each_key_and_a_tuple_counts_its_products_together(clock: ManualClock) -> None:
    setup = rig(clock, max_live={("audio", "video"): 2, StreamKind.UNDERSTAND: 1})
    audio, video, third = start(setup, "audio"), start(setup, "video"), start(setup, "audio")
    first, second = start(setup, "understand"), start(setup, "understand")
    assert states([audio, video, third, first, second]) == [R, R, P, R, P]
    assert error_of(third) == (
        "LiveCapError: 2 streams of audio and video together are live already (Policy.max_live)"
    )
    assert error_of(second) == "LiveCapError: 1 understand streams are live already (Policy.max_live)"
    setup.fleet.stop(video)  # room for an audio stream: audio and video share the cap
    setup.sim.advance(5)
    assert states([third, second]) == [R, P]


def test_a_start_fits_under_every_key_that_names_its_product(clock: ManualClock) -> None:
    setup = rig(clock, max_live={("audio", "video"): 3, "audio": 1})
    tasks = [start(setup, kind) for kind in ("audio", "audio", "video", "video")]
    assert states(tasks) == [R, P, R, R]
    assert error_of(tasks[1]).startswith("LiveCapError: 1 audio streams")
    assert state_of(start(setup, "video")) is P  # three of audio and video together
    assert state_of(start(setup, "understand")) is R  # named by no key: no cap of ours


def test_a_product_left_out_of_the_mapping_is_capped_by_the_service_alone(clock: ManualClock) -> None:
    setup = rig(clock, max_live={"audio": 1})
    tasks = [start(setup, "understand") for _ in range(5)]
    assert states(tasks) == [R, R, R, R, P]
    assert "1001" in error_of(tasks[4])  # the service's refusal: sent, and refused


def test_an_int_caps_every_product_together(clock: ManualClock) -> None:
    setup = rig(clock, max_live=3)
    tasks = [start(setup, kind) for kind in ("understand", "audio", "video", "understand", "audio")]
    assert states(tasks) == [R, R, R, P, P]
    error = error_of(tasks[3])
    assert error == (
        "LiveCapError: 3 streams of audio, video and understand together are live already (Policy.max_live)"
    )
    setup.fleet.stop(tasks[1])
    setup.sim.advance(5)
    assert states(tasks)[3:].count(R) == 1  # one of the two waiting starts took the room


def test_none_caps_nothing(clock: ManualClock) -> None:
    setup = rig(clock, max_live=None)
    tasks = [start(setup, kind) for kind in ("understand", "audio", "video") * 3]
    assert states(tasks) == [R] * 9


def test_the_live_error_carries_its_cap_and_products() -> None:
    error = LiveCapError(2, (StreamKind.AUDIO, StreamKind.VIDEO))
    assert (error.cap, error.products) == (2, ("audio", "video"))


@pytest.mark.parametrize(
    ("max_live", "same_as"),
    [
        ({"understand": 4}, {StreamKind.UNDERSTAND: 4}),
        ({("video", "audio"): 2}, {("audio", "video"): 2}),  # a tuple's order does not matter
        ({("audio",): 2}, {"audio": 2}),  # nor does a tuple of one
        ({"audio": 2, "video": None}, {"audio": 2}),  # None: no cap of ours, as if left out
    ],
)
def test_a_mapping_is_kept_in_one_form(max_live: Any, same_as: Any) -> None:
    assert Policy(max_live=max_live) == Policy(max_live=same_as)
    assert hash(Policy(max_live=max_live)) == hash(Policy(max_live=same_as))


@pytest.mark.parametrize(
    ("max_live", "error", "words"),
    [
        (0, ValueError, "at least 1, got 0"),
        (True, TypeError, "an int, a mapping of products to ints, or None"),
        (2.0, TypeError, "an int, a mapping of products to ints, or None"),
        ("understand", TypeError, "an int, a mapping of products to ints, or None"),
        ({"audi": 2}, ValueError, "unknown product 'audi' (known: audio, video, understand)"),
        ({1: 2}, TypeError, "a key is a product or a tuple of products, got 1"),
        ({(): 2}, ValueError, "a tuple key names no product"),
        ({("audio", "audio"): 2}, ValueError, "names a product twice"),
        ({("audio", "video"): 2, ("video", "audio"): 3}, ValueError, "names audio and video twice"),
        ({"audio": 0}, ValueError, "max_live['audio'] must be at least 1, got 0"),
        ({"audio": "4"}, TypeError, "max_live['audio'] must be an int or None, got '4'"),
        ({"audio": False}, TypeError, "must be an int or None, got False"),
    ],
)
def test_a_cap_that_cannot_be_meant_is_refused(max_live: Any, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=re.escape(words)):
        Policy(max_live=max_live)
