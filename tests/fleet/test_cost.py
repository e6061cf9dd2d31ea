"""Cost ceilings and the billing estimate: a stream stopped once it has run ``max_duration``, the
reason journaled, the ceiling kept across a restart, and the 5-second rule priced by the rates."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamlife import HistoryEntry, ManualClock, Policy, StreamKind, StreamTask, TaskState
from streamlife._billing import DEFAULT_RATES, Rates
from streamlife.lifecycle import StopReason
from streamlife.sim import Faults
from streamlife.store import SqliteStore
from tests.conftest import URL, rig, state_of

POLICY = Policy(stop_concurrency=0, seed=0, silence_after=600)


def test_a_stream_is_stopped_once_it_has_run_the_policys_max_duration(clock: ManualClock) -> None:
    r = rig(clock, policy=POLICY, max_duration=30)
    seen: list[HistoryEntry] = []
    r.fleet.on_transition(lambda task, entry: seen.append(entry))
    task = r.fleet.start("audio", audio_url=URL, provider="assemblyai")
    r.sim.advance(29)
    assert state_of(task) is TaskState.RUNNING
    r.sim.advance(2)
    assert state_of(task) is TaskState.STOPPED
    assert task.stop_reason is StopReason.MAX_DURATION
    stops = [entry for entry in seen if entry.trigger == "stop"]
    assert [entry.data for entry in stops] == [{"reason": "max_duration"}]  # what on_transition sees
    (journaled,) = [entry for entry in r.fleet.journal(task) if entry.trigger == "stop"]
    assert journaled.args == {"reason": "max_duration"}
    assert r.sim.service.billed_seconds(task.task_id or "") == task.billed_seconds() == 30.0
    assert r.sim.billing() == []


def test_a_starts_own_max_duration_wins_and_is_never_sent(clock: ManualClock) -> None:
    r = rig(clock, policy=POLICY, max_duration=3600)
    short = r.fleet.start("video", url=URL, max_duration=10)
    long = r.fleet.start("video", url=URL)
    assert (short.max_duration, long.max_duration) == (10, None)
    assert "max_duration" not in (short.params or {})
    r.sim.advance(11)
    assert (state_of(short), state_of(long)) == (TaskState.STOPPED, TaskState.RUNNING)


@pytest.mark.parametrize("bad", [0, -5, float("nan"), float("inf")])
def test_a_max_duration_that_is_no_positive_finite_number_is_refused(clock: ManualClock, bad: float) -> None:
    r = rig(clock, policy=POLICY)
    with pytest.raises(ValueError, match="max_duration"):
        r.fleet.start("video", url=URL, max_duration=bad)
    with pytest.raises(ValueError, match="max_duration"):
        Policy(max_duration=bad)
    with pytest.raises(TypeError, match="max_duration"):
        r.fleet.start("video", url=URL, max_duration="60")
    assert (r.fleet.tasks(), r.sim.service.start_requests) == ([], 0)


def test_the_ceiling_holds_across_a_restart_and_fires_when_it_is_past(
    clock: ManualClock, tmp_path: Path
) -> None:
    store = SqliteStore(tmp_path / "tasks.db")
    r = rig(clock, policy=POLICY, store=store)
    task = r.fleet.start("audio", audio_url=URL, provider="elevenlabs", max_duration=20)
    r.sim.advance(5)
    r.sim.crash(r.fleet)  # the process dies (its Fleet is simply dropped)
    clock.advance(60)  # and nobody runs for a minute: the ceiling passed meanwhile
    after = r.sim.fleet(POLICY, store=store)
    (back,) = after.recover()
    assert (back.task_id, back.max_duration, back.started_at) == (task.task_id, 20, task.started_at)
    r.sim.advance(2)
    assert back.stop_reason is StopReason.MAX_DURATION
    assert state_of(back) is TaskState.STOPPED
    store.close()


def test_a_stall_stop_and_an_orphan_reaping_say_why(clock: ManualClock) -> None:
    policy = dataclasses.replace(POLICY, stop_when_stalled=True, silence_after=10)
    r = rig(clock, policy=policy)
    r.sim.service.faults = Faults(stall=1.0)
    stalled = r.fleet.start("audio", audio_url=URL, provider="assemblyai")
    r.sim.advance(16)
    assert stalled.stop_reason is StopReason.STALLED
    r.sim.service.faults = Faults(start_timeout_created=1.0)
    lost = r.fleet.start("audio", audio_url=URL, provider="assemblyai")  # its stream becomes an orphan
    r.sim.advance(int(policy.park_ttl) + 10)
    (orphan,) = [task for task in r.fleet.tasks() if task.adopted]
    assert orphan.stop_reason is StopReason.ORPHAN
    assert lost.stop_reason is None
    assert r.sim.billing() == []


def test_billed_seconds_count_every_5_second_cycle_begun_until_the_end_is_confirmed(
    clock: ManualClock,
) -> None:
    r = rig(clock, policy=POLICY)
    brief = r.fleet.start("audio", audio_url=URL, provider="assemblyai")
    r.fleet.stop(brief)
    task = r.fleet.start("audio", audio_url=URL, provider="assemblyai")
    assert task.billed_seconds() == 5.0  # one cycle is pre-charged at start
    r.sim.advance(12)
    assert task.billed_seconds() == 15.0
    r.fleet.stop(task)
    r.sim.advance(3)
    assert state_of(task) is TaskState.STOPPED
    assert task.billed_seconds() == r.sim.service.billed_seconds(task.task_id or "") == 15.0
    r.sim.advance(60)
    assert task.billed_seconds() == 15.0  # nothing more once the end is confirmed
    assert brief.billed_seconds() == 5.0  # stopped at once: the cycle charged at start
    exposure = r.fleet.exposure()
    assert (exposure.tasks, exposure.live, exposure.billed_seconds) == (2, 0, 20.0)
    assert exposure.dollars == pytest.approx(20.0 * 0.15 / 3600)
    assert exposure.rates_as_of == DEFAULT_RATES.as_of


@pytest.mark.parametrize(
    ("kind", "params", "per_hour"),
    [
        (StreamKind.AUDIO, {"provider": "assemblyai"}, 0.15),
        (StreamKind.AUDIO, {"provider": "elevenlabs"}, 0.39),
        (StreamKind.AUDIO, {}, 1.50),
        (StreamKind.VIDEO, {"enable_content_moderation": True}, 1.50),
        (StreamKind.VIDEO, {"enable_logo_detection": True, "fps": 2}, 2.25),
        (StreamKind.VIDEO, {"enable_content_moderation": True, "enable_logo_detection": True}, 2.00),
        (
            StreamKind.VIDEO,
            {"enable_content_moderation": True, "enable_logo_detection": True, "fps": 2},
            3.00,
        ),
        (StreamKind.VIDEO, {"fps": "fast"}, 1.50),
    ],
)
def test_the_default_rates_are_the_published_prices(
    kind: StreamKind, params: dict[str, object], per_hour: float
) -> None:
    assert DEFAULT_RATES.per_hour(kind, params) == pytest.approx(per_hour)


def test_rates_are_the_users_to_give_and_refuse_nonsense(clock: ManualClock) -> None:
    r = rig(clock, policy=POLICY, rates=Rates(elevenlabs=3.6, as_of="our contract"))
    r.fleet.start("audio", audio_url=URL, provider="elevenlabs")
    r.sim.advance(9)
    assert r.fleet.exposure().dollars == pytest.approx(10 * 3.6 / 3600)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"Rates\.assemblyai"):
            Rates(assemblyai=bad)
    with pytest.raises(TypeError, match=r"Policy\.rates"):
        Policy(rates={"assemblyai": 1.0})  # type: ignore[arg-type]


@given(
    started=st.floats(0, 1e6, allow_nan=False),
    lived=st.floats(0, 1e5, allow_nan=False),
)
def test_the_estimate_is_whole_cycles_at_least_one_and_covers_the_time_lived(
    started: float, lived: float
) -> None:
    task = StreamTask("audio", {"audio_url": URL, "provider": "assemblyai"}, clock=ManualClock(started))
    task.start()
    task.start_ok("t")
    billed = task.billed_seconds(now=started + lived)
    assert billed % 5.0 == 0.0
    assert billed >= max(5.0, lived - 1e-6)
    assert billed < lived + 5.0 + 1e-6
