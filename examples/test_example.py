"""Testing your own code against a simulated memories.ai, with streamlife's pytest plugin.

Installing streamlife installs the plugin: its fixtures ``memories_sim`` (the simulated service on
a virtual clock: ``advance(seconds)``, ``settle()``, ``billing()``) and ``fleet`` (a Fleet wired
to it) are in every test, with no conftest. ``@pytest.mark.memories(faults=..., seed=...,
policy=...)`` turns on the simulator's faults (a preset, ``"default"`` or ``"all"``, or a
``Faults`` of your own) and sets the Fleet's timeouts. Virtual time makes minutes of streaming
pass in a moment, and a seed makes a bad day repeat exactly.

The code under test here is ``Captions``: it keeps one audio stream per room and collects each
room's final transcript. Run the tests with::

    pytest examples/test_example.py
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from streamlife import Fleet, Policy, Segment, StreamTask, TaskState
from streamlife.sim import Faults
from streamlife.store import SqliteStore
from streamlife.testing import MemoriesSim


class Captions:
    """Your code: a caption service that opens a stream per room and keeps what was said."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.rooms: dict[str, StreamTask] = {}
        self.lines: defaultdict[str, list[str]] = defaultdict(list)
        fleet.on_segment(self._heard)

    def open(self, room: str) -> StreamTask:
        task = self.fleet.start(
            "audio", audio_url=f"rtmp://example.invalid/rooms/{room}", provider="assemblyai"
        )
        self.rooms[room] = task
        return task

    def close(self, room: str) -> None:
        self.fleet.stop(self.rooms[room])

    def _heard(self, task: StreamTask, segment: Segment) -> None:
        if segment.final and segment.text:
            room = next(room for room, opened in self.rooms.items() if opened.key == task.key)
            self.lines[room].append(segment.text)


def test_a_room_is_captioned_until_it_closes(fleet: Fleet, memories_sim: MemoriesSim) -> None:
    captions = Captions(fleet)
    hall = captions.open("hall")
    memories_sim.advance(30)  # virtual seconds: six 5-second segments
    assert hall.state is TaskState.RUNNING
    assert len(captions.lines["hall"]) == 6
    captions.close("hall")
    memories_sim.settle()  # the status-14 callback arrives
    assert fleet.tasks(TaskState.STOPPED) == [hall]
    assert memories_sim.billing() == []  # nothing left running on the account


@pytest.mark.memories(faults=Faults(seed=4, duplicate=0.5, reorder=0.3))
def test_a_redelivered_callback_is_captioned_once(fleet: Fleet, memories_sim: MemoriesSim) -> None:
    captions = Captions(fleet)
    captions.open("hall")
    memories_sim.advance(60)
    duplicates = fleet.stats().callbacks["duplicate"]
    assert duplicates > 0  # the simulator did deliver callbacks twice...
    assert len(captions.lines["hall"]) == len(set(captions.lines["hall"]))  # ...and each line came once


@pytest.mark.memories(faults="all", seed=3)
def test_no_room_is_left_billing_after_a_bad_day(fleet: Fleet, memories_sim: MemoriesSim) -> None:
    captions = Captions(fleet)
    for n in range(10):
        captions.open(f"room-{n}")
    memories_sim.advance(120)
    for room in captions.rooms:
        captions.close(room)
    memories_sim.settle()
    assert all(task.terminal for task in fleet.tasks())  # orphans of lost start answers included
    assert memories_sim.billing() == []


@pytest.mark.memories(policy=Policy(max_duration=300, stop_concurrency=0))
def test_a_room_left_open_is_stopped_at_the_cost_ceiling(fleet: Fleet, memories_sim: MemoriesSim) -> None:
    hall = Captions(fleet).open("hall")
    memories_sim.advance(301)
    assert hall.state is TaskState.STOPPED
    assert hall.stop_reason is not None
    assert hall.stop_reason.value == "max_duration"


def test_a_restart_loses_no_room(memories_sim: MemoriesSim, tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "captions.db")
    first = memories_sim.fleet(store=store)
    hall = Captions(first).open("hall")
    memories_sim.advance(10)
    memories_sim.crash(first)  # the process dies: nothing stopped, the stream bills on
    again = memories_sim.fleet(store=store)
    [back] = again.recover()
    assert back.task_id == hall.task_id
    assert back.state is TaskState.RUNNING
    again.stop(back)
    memories_sim.settle()
    assert again.tasks(TaskState.STOPPED) == [back]
    assert memories_sim.billing() == []
    store.close()
