"""Eight threads deliver interleaved callbacks for 500 tasks at once, every callback by every thread.

Each task's callbacks (a partial and a final for each of its segments, then its status-14) are
delivered by all eight threads, each in order. The threads walk the tasks in the same order, a few
tasks at a time, each interleaving those few its own random way: so several threads hold copies
of the same task's callbacks at the same moment, the contention a per-task lock must survive.
Whatever the interleaving: each callback is applied exactly once (the other copies are duplicates,
or late once another thread delivered the end), and a task's callbacks apply in segment_index
order, because a task's events apply one at a time; its hooks see them in that order too, even
when a hook lets go of the GIL.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from streamlife import ManualClock, OutcomeKind, Policy, Segment, Source, StreamTask, TaskState
from streamlife.testing import MemoriesSim

THREADS = 8
TASKS = 500
SEGMENTS = 5
GROUP = 2  # tasks whose callbacks a thread interleaves at once


def callbacks_of(task_id: str) -> list[dict[str, Any]]:
    """What memories.ai sends for one stream, in order: partial i, final i, ..., then status 14."""
    sent = []
    for index in range(SEGMENTS):
        for final in (False, True):
            text = f"{task_id[:8]} says {index}"
            sent.append(
                {
                    "code": 200,
                    "task_id": task_id,
                    "data": {
                        "segment_index": index,
                        "status": 0,
                        "transcript": {"text": text if final else text[:-1], "is_final": final},
                    },
                }
            )
    sent.append({"code": 200, "task_id": task_id, "data": {"status": 14, "transcript": None}})
    return sent


def interleave(per_task: list[list[bytes]], dice: random.Random) -> list[bytes]:
    """One thread's work: the tasks in their given order, GROUP at a time; within a group, the
    tasks' callbacks merged at random, each task's kept in its own order."""
    work: list[bytes] = []
    for first in range(0, len(per_task), GROUP):
        queues = [list(reversed(sequence)) for sequence in per_task[first : first + GROUP]]
        while queues:
            pick = dice.randrange(len(queues))
            work.append(queues[pick].pop())
            if not queues[pick]:
                queues[pick] = queues[-1]
                queues.pop()
    return work


@pytest.fixture
def fine_grained_switching() -> Iterator[None]:
    """Switch threads every 10 µs instead of every 5 ms, so interleavings are many."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(before)


@pytest.mark.usefixtures("fine_grained_switching")
def test_eight_threads_apply_every_callback_of_500_tasks_exactly_once_and_in_order() -> None:
    fleet = MemoriesSim.new(clock=ManualClock()).fleet(Policy(seed=0))
    tasks = [
        fleet.start("audio", audio_url=f"rtmp://sim.invalid/{n}", provider="assemblyai") for n in range(TASKS)
    ]
    heard: dict[int, list[tuple[int | None, bool]]] = {task.ref: [] for task in tasks}

    @fleet.on_segment
    def record(task: StreamTask, segment: Segment) -> None:
        time.sleep(1e-5)  # let go of the GIL, as a hook doing I/O would: other threads run meanwhile
        heard[task.ref].append(segment.key)

    assert all(task.state is TaskState.RUNNING for task in tasks)

    dice = random.Random(2026)
    expected = {
        task.task_id: [json.dumps(p).encode() for p in callbacks_of(str(task.task_id))] for task in tasks
    }
    sequences = list(expected.values())
    dice.shuffle(sequences)
    work = [interleave(sequences, dice) for _ in range(THREADS)]

    outcomes: Counter[OutcomeKind] = Counter()
    errors: list[BaseException] = []
    lock, start_together = threading.Lock(), threading.Barrier(THREADS)

    def deliver(payloads: list[bytes]) -> None:
        seen: Counter[OutcomeKind] = Counter()
        try:
            start_together.wait()
            for payload in payloads:
                seen[fleet.handle_callback(payload).kind] += 1
        except BaseException as error:  # reported below: a thread's exception would be lost
            errors.append(error)
        with lock:
            outcomes.update(seen)

    threads = [threading.Thread(target=deliver, args=(payloads,)) for payloads in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a delivering thread hung"
    assert errors == []

    unique = sum(len(sequence) for sequence in expected.values())
    delivered = sum(len(payloads) for payloads in work)
    assert outcomes[OutcomeKind.APPLIED] == unique
    # A copy is a duplicate, or late if another thread already delivered the task's status-14.
    assert outcomes[OutcomeKind.DUPLICATE] + outcomes[OutcomeKind.LATE] == delivered - unique
    assert set(outcomes) <= {OutcomeKind.APPLIED, OutcomeKind.DUPLICATE, OutcomeKind.LATE}
    for task in tasks:
        assert_applied_once_in_order(task, copies=THREADS)
        assert heard[task.ref] == [(i, final) for i in range(SEGMENTS) for final in (False, True)]


def assert_applied_once_in_order(task: StreamTask, copies: int) -> None:
    from_callbacks = [entry for entry in task.history if entry.source is Source.CALLBACK]
    assert len(from_callbacks) == copies * (2 * SEGMENTS + 1)  # every delivery recorded, once
    applied = [entry for entry in from_callbacks if entry.outcome.kind is OutcomeKind.APPLIED]
    order = [(e.data["index"], e.data["final"]) if e.data and "index" in e.data else "end" for e in applied]
    assert order == [(i, final) for i in range(SEGMENTS) for final in (False, True)] + ["end"]
    assert task.state is TaskState.STOPPED
    assert task.transcript_text() == " ".join(f"{str(task.task_id)[:8]} says {i}" for i in range(SEGMENTS))
