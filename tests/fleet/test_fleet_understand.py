"""Live Video Understanding through a Fleet on the simulator: its start checked, its results
heard, its stop settled by the answer, its cap and credit refusals, a lost start answer, and a
stream that ends by itself and says nothing. After settling, nothing bills."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streamlife import Fleet, ManualClock, StreamTask, TaskState
from streamlife.lifecycle import StopReason
from streamlife.protocol import UNDERSTAND_MAX_TASKS
from streamlife.sim import Faults
from streamlife.store import SqliteStore
from tests.conftest import POLICY, Rig, rig, state_of

BODY = {
    "url": "rtmp://sim.invalid:1935/live/stream",
    "user_prompt": "Describe what happens",
    "callback": "https://hooks.example.invalid/understand",
}


def start(setup: Rig, **changes: Any) -> StreamTask:
    return setup.fleet.start("understand", **{**BODY, **changes})


def triggers(task: StreamTask) -> list[str]:
    return [entry.trigger for entry in task.history]


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"url": ""}, "url="),
        ({"user_prompt": None}, "user_prompt="),
        ({"user_prompt": "  "}, "user_prompt="),
        ({"callback": None}, "callback="),
        ({"thinking": "no"}, "thinking"),
        ({"system_prompt": 3}, "system_prompt"),
    ],
)
def test_a_start_body_that_lacks_what_it_needs_is_refused_before_anything_is_sent(
    clock: ManualClock, changes: dict[str, Any], words: str
) -> None:
    setup = rig(clock)
    # A Fleet with no callback_urls (the plugin's Fleets have them: a missing callback is filled).
    fleet = Fleet(setup.transport, clock=clock, policy=POLICY)
    body = {key: value for key, value in {**BODY, **changes}.items() if value is not None}
    with pytest.raises(ValueError, match=words):
        fleet.start("understand", **body)
    assert setup.sim.service.start_requests == 0
    assert fleet.tasks() == []
    fleet.close()


def test_results_are_heard_and_the_stop_answer_settles_the_task_at_once(clock: ManualClock) -> None:
    setup = rig(clock)
    task = start(setup, system_prompt="You watch a stream", thinking=False)
    assert task.state is TaskState.RUNNING
    setup.sim.advance(20)
    assert len(task.transcript) == 4  # one result every 5 s
    assert task.gaps == []
    setup.fleet.stop(task)
    assert state_of(task) is TaskState.STOPPED  # no wait for a final callback: none is documented
    assert triggers(task)[-1] == "stop_confirmed"
    assert not task.final_callback_missing
    assert setup.sim.billing() == []


def test_duplicated_and_reordered_results_are_applied_once(clock: ManualClock) -> None:
    setup = rig(clock, Faults(seed=3, duplicate=0.5, reorder=0.5))
    task = start(setup)
    setup.sim.advance(60)
    setup.fleet.stop(task)
    setup.sim.settle()
    sent = {d.payload["data"]["timestamp"] for d in setup.sim.service.deliveries if d.task_id == task.task_id}
    kept = [segment.text for segment in task.transcript]
    assert len(kept) == len(set(kept)) == len(sent)
    assert setup.sim.billing() == []


def test_past_the_services_cap_of_four_a_start_waits_for_room(clock: ManualClock) -> None:
    setup = rig(clock, max_live=None)  # no cap of ours: the service's answers the fifth start
    tasks = [start(setup) for _ in range(UNDERSTAND_MAX_TASKS)]
    assert all(task.state is TaskState.RUNNING for task in tasks)
    fifth = start(setup)
    assert fifth.state is TaskState.PENDING  # 1001: nothing was created, so it is started again later
    assert fifth.last_error is not None
    assert "1001" in fifth.last_error
    setup.fleet.stop(tasks[0])
    setup.sim.advance(60)
    assert state_of(fifth) is TaskState.RUNNING
    setup.fleet.stop_all()
    setup.sim.settle()
    assert setup.sim.billing() == []


def test_a_failed_credit_deduction_fails_the_start(clock: ManualClock) -> None:
    setup = rig(clock, Faults(credit_start=1.0))
    task = start(setup)
    assert task.state is TaskState.FAILED
    assert setup.sim.service.streams == {}


def test_a_stream_that_ends_by_itself_is_found_by_silence_and_settled_by_a_stop(clock: ManualClock) -> None:
    setup = rig(clock, Faults(spontaneous_end=1.0))  # its source ends after the first window
    task = start(setup)
    assert not setup.fleet.policy.stop_when_stalled  # for this product, silence is stopped anyway
    setup.sim.advance(10)
    assert setup.sim.billing() == []  # it ended, and told nobody
    assert task.state is TaskState.RUNNING
    setup.sim.settle()
    assert state_of(task) is TaskState.STOPPED
    assert task.stop_reason is StopReason.STALLED
    assert triggers(task)[-2:] == ["stop", "stop_not_found"]  # -1 "task not found": it cannot bill


def test_a_stream_that_goes_quiet_and_bills_on_is_stopped(clock: ManualClock) -> None:
    setup = rig(clock, Faults(stall=1.0))
    task = start(setup)
    setup.sim.advance(10)
    assert setup.sim.billing() == [task.task_id]  # quiet, and billing
    setup.sim.settle()
    assert state_of(task) is TaskState.STOPPED
    assert triggers(task)[-1] == "stop_confirmed"
    assert setup.sim.billing() == []


def test_a_lost_start_answer_leaves_an_orphan_that_is_adopted_as_understand_and_stopped(
    clock: ManualClock,
) -> None:
    setup = rig(clock)
    setup.sim.service.lose_next_start_answer()
    task = start(setup)
    assert task.state is TaskState.UNCERTAIN
    setup.sim.settle()
    (orphan,) = [t for t in setup.fleet.tasks() if t is not task]
    assert orphan.kind.value == "understand"  # its envelope says so: no guess, one stop path
    assert orphan.state is TaskState.STOPPED
    assert state_of(task) is TaskState.FAILED
    assert setup.sim.billing() == []
    assert all(request.status == 200 for request in setup.sim.service.stop_log)


def test_a_stop_answered_5000_is_retried_until_it_lands(clock: ManualClock) -> None:
    setup = rig(clock, Faults(stop_500=1.0))
    task = start(setup)
    setup.sim.advance(6)
    setup.fleet.stop(task)
    assert task.state is TaskState.STOPPING  # 5000: retried after a backoff
    assert setup.sim.billing() == [task.task_id]
    setup.sim.service.faults = Faults()  # the service recovers
    setup.sim.settle()
    assert state_of(task) is TaskState.STOPPED
    assert "stop_error" in triggers(task)
    assert setup.sim.billing() == []


def test_three_products_side_by_side_settle_with_nothing_billing(clock: ManualClock) -> None:
    setup = rig(clock, Faults.all(seed=7))
    for _ in range(3):
        start(setup)
        setup.fleet.start("audio", audio_url="rtmp://sim.invalid/a", provider="assemblyai")
        setup.fleet.start("video", url="rtmp://sim.invalid/v")
    setup.sim.advance(120)
    setup.fleet.stop_all()
    setup.sim.settle()
    assert setup.sim.billing() == []
    assert all(task.terminal for task in setup.fleet.tasks())


def test_an_understand_task_is_rebuilt_from_a_sqlite_journal_as_it_was(
    clock: ManualClock, tmp_path: Path
) -> None:
    store = SqliteStore(tmp_path / "understand.db")
    setup = rig(clock, Faults(seed=2, duplicate=0.5, reorder=0.5), store=store)
    task = start(setup)
    setup.sim.advance(30)
    setup.fleet.stop(task)
    assert task.task_id is not None
    later = setup.restart()
    rebuilt = later.get(task.task_id)
    assert rebuilt is not None
    assert rebuilt is not task
    assert (rebuilt.kind, rebuilt.state, rebuilt.stop_acknowledged) == (task.kind, TaskState.STOPPED, True)
    assert [s.text for s in rebuilt.transcript] == [s.text for s in task.transcript]
    assert [e.trigger for e in later.journal(rebuilt)][-1] == "stop_confirmed"
    store.close()
