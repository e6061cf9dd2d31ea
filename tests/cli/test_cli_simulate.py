"""`streamlife simulate` through its entry point: the JSON report keeps the promises, in-process and
over loopback HTTP, and bad options are refused with exit code 2. The run's own checks catch what
they claim to."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import pytest

from streamlife import Fleet, ManualClock, Policy, StreamKind
from streamlife._simulate import Run, _Driver, _Handed, simulate
from streamlife.sim import SimMode, SimTransport, SimulatedService


def streamlife(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamlife", *args], capture_output=True, text=True, check=False, timeout=300
    )


def assert_nothing_left_running(report: dict[str, Any], streams: int) -> None:
    assert report["streams_billing_after_settle"] == 0
    assert set(report["tasks_by_state"]) <= {"stopped", "ended", "failed"}  # every task terminal
    assert sum(report["tasks_by_state"].values()) == streams + report["orphans_reaped"]


def assert_promises_kept(report: dict[str, Any], streams: int) -> None:
    assert_nothing_left_running(report, streams)
    assert report["invariant_violations"] == 0
    assert report["violations"] == []


@pytest.mark.parametrize("http", [False, True], ids=["in-process", "over-http"])
def test_a_run_keeps_every_promise_with_all_faults_on(http: bool) -> None:
    report = simulate(Run(streams=60, minutes=1.5, faults="all", seed=1, http=http)).as_json()
    assert_promises_kept(report, streams=60)
    assert (report["seed"], report["http"], report["mode"], report["faults"]) == (1, http, "segments", "all")
    assert report["orphans_reaped"] > 0  # lost start answers made orphans, and they were reaped
    assert report["callbacks"]["duplicate"] > 0
    assert report["stop_failures"] > 0  # failed stops were retried until they landed


@pytest.mark.parametrize("http", [False, True], ids=["in-process", "over-http"])
def test_a_passthrough_run_keeps_every_promise_with_all_faults_on(http: bool) -> None:
    report = simulate(Run(streams=40, minutes=1, faults="all", seed=2, http=http, mode="passthrough"))
    assert_promises_kept(report.as_json(), streams=40)
    assert report.mode == "passthrough"
    assert report.orphans_reaped > 0


@pytest.mark.parametrize("mode", ["segments", "passthrough"])
@pytest.mark.parametrize("seed", range(3, 9))
def test_every_seed_keeps_every_promise(mode: SimMode, seed: int) -> None:
    """Nothing billing after settle and no invariant broken, whatever the seed: each one rolls the
    faults anew (silent segments, status 16 and Termination on live streams, stops of ended
    streams answered 200, credit running out, other products' callbacks on the webhook)."""
    report = simulate(Run(streams=40, minutes=1, faults="all", seed=seed, mode=mode))
    assert_promises_kept(report.as_json(), streams=40)


@pytest.mark.parametrize("mode", ["segments", "passthrough"])
def test_simulate_json_reports_the_run_and_exits_1_when_a_promise_is_broken(mode: SimMode) -> None:
    result = streamlife(
        "simulate", "--streams", "30", "--minutes", "1", "--faults", "all", "--seed", "1", "--json",
        "--mode", mode,
    )  # fmt: skip
    report = json.loads(result.stdout)
    assert (report["seed"], report["http"], report["faults"], report["mode"]) == (1, False, "all", mode)
    assert result.returncode == 0, result.stderr
    assert_promises_kept(report, streams=30)


@pytest.mark.parametrize("mode", ["segments", "passthrough"])
def test_the_same_seed_gives_the_same_run(mode: SimMode) -> None:
    first, second = (simulate(Run(streams=30, minutes=1, faults="all", seed=7, mode=mode)) for _ in range(2))
    assert first.as_json() | {"wall_seconds": 0} == second.as_json() | {"wall_seconds": 0}
    other = simulate(Run(streams=30, minutes=1, faults="all", seed=8, mode=mode))
    assert first.as_json() | {"wall_seconds": 0, "seed": 8} != other.as_json() | {"wall_seconds": 0}


def test_a_run_journals_in_the_store_it_is_given_and_plays_out_the_same(tmp_path: Path) -> None:
    url = f"sqlite:{tmp_path / 'run.db'}"
    kept = simulate(Run(streams=30, minutes=1, faults="all", seed=5, store=url))
    assert kept.ok
    assert kept.store == url
    assert kept.tasks_in_store == kept.tasks_by_state  # read back from the file
    in_memory = simulate(Run(streams=30, minutes=1, faults="all", seed=5))
    assert in_memory.store == "memory:"
    unstored = {"wall_seconds": 0, "store": ""}
    assert kept.as_json() | unstored == in_memory.as_json() | unstored
    with pytest.raises(ValueError, match="already holds tasks"):  # its task_ids would meet the old ones
        simulate(Run(streams=5, store=url))


def test_the_live_display_ends_with_a_summary_and_a_verdict() -> None:
    result = streamlife(
        "simulate", "--streams", "6", "--minutes", "0.5", "--speed", "1000", "--faults", "none",
        "--kinds", "audio,video,understand",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert re.search(r"tasks by product +│ +audio \d+, understand \d+", result.stdout)
    assert "streams billing after settle" in result.stdout
    assert "every task terminal, nothing billing, no invariant broken" in result.stdout
    assert "tasks in store" in result.stdout


@pytest.mark.parametrize(
    ("option", "value", "complaint"),
    [
        ("--streams", "0", "must be at least 1"),
        ("--streams", "many", "not a whole number"),
        ("--minutes", "-1", "must be a positive number"),
        ("--minutes", "inf", "must be a positive number"),
        ("--faults", "some", "invalid choice"),
        ("--speed", "0", "must be a positive number"),
        ("--mode", "relay", "invalid choice"),
    ],
)
def test_bad_options_are_refused_with_exit_code_2(option: str, value: str, complaint: str) -> None:
    result = streamlife("simulate", option, value)
    assert result.returncode == 2
    assert complaint in result.stderr


def test_a_run_refuses_a_mode_it_does_not_know() -> None:
    with pytest.raises(ValueError, match="mode must be one of segments, passthrough"):
        Run(mode="relay")  # type: ignore[arg-type]


# -- the run's own checks, each shown to catch what it claims to -----------------------------------

KEY: Final = "sk-mai-checks"


@dataclasses.dataclass
class Rig:
    clock: ManualClock
    service: SimulatedService
    fleet: Fleet
    handed: _Handed

    def run_for(self, seconds: float) -> None:
        for _ in range(int(seconds)):
            self.service.advance(1.0)
            self.fleet.tick()

    def violations(self) -> list[str]:
        """Stop everything, let it settle, and run the checks a simulated run ends with."""
        self.fleet.stop_all()
        self.run_for(60)
        driver = _Driver(Run(streams=1), self.clock, self.service, self.fleet, self.handed, None)
        driver._check_final()
        return driver.violations


def rig(mode: SimMode = "segments", keep: Any = None) -> Rig:
    """A Fleet on the simulator, its callbacks handed over as a simulated run hands them (``keep``,
    if given, says which payloads reach it)."""
    clock = ManualClock(0.0)
    service = SimulatedService(clock=clock, api_key=KEY, mode=mode)
    fleet = Fleet(SimTransport(service, KEY), clock=clock, policy=Policy(park_ttl=10.0, stop_concurrency=0))
    handed = _Handed()
    handed.fleet = fleet
    service.on_callback(lambda payload: handed.take(payload) if keep is None or keep(payload) else None)
    return Rig(clock, service, fleet, handed)


def segment_for(task_id: str) -> dict[str, Any]:
    return {"task_id": task_id, "data": {"segment_index": 0, "status": 0, "transcript": {"text": "hi"}}}


def test_an_orphan_adopted_under_an_id_that_is_no_stream_is_a_violation() -> None:
    setup = rig()
    foreign, unheard = "f" * 32, "no-such-stream"
    setup.service.foreign_ids.add(foreign)
    setup.handed.take(segment_for(foreign))
    setup.handed.take(segment_for(unheard))
    setup.run_for(12)  # past the parking TTL: both are adopted as orphans
    assert sorted(task.task_id or "" for task in setup.fleet.tasks() if task.adopted) == [foreign, unheard]
    assert setup.violations() == [
        f"task 1 adopted {foreign}, which is another product's task",
        f"task 2 adopted {unheard}, which is not a stream",
    ]


def test_a_final_the_transcript_does_not_account_for_is_a_violation() -> None:
    def lost(*indexes: int, stop_callback: bool = False) -> Any:
        def keep(payload: dict[str, Any]) -> bool:
            data = payload["data"]
            if data.get("status") == 14:
                return not stop_callback
            final = data.get("transcript") is not None and data["transcript"]["is_final"]
            return not (final and data["segment_index"] in indexes)

        return keep

    unaccounted = (
        "task 1: the service sent finals up to segment 3, and segments 2, 3 are neither finals in its"
        " transcript nor in its gaps"
    )
    for keep, expected in [
        (lost(1), []),  # segment 1 is a gap: the transcript knows it is missing
        (lost(2, 3), []),  # the stop callback names segment 3 as the last: 2 and 3 are a gap
        (lost(2, 3, stop_callback=True), [unaccounted]),  # nothing says segments came after 1
    ]:
        setup = rig(keep=keep)
        setup.fleet.start(StreamKind.AUDIO, audio_url="rtmp://sim.invalid/live", provider="assemblyai")
        setup.run_for(21)  # four segments, 0 to 3
        assert setup.service.last_final_sent(setup.fleet.tasks()[0].task_id or "") == 3
        assert setup.violations() == expected


def test_a_refused_callback_is_a_violation_and_the_run_goes_on() -> None:
    setup = rig()
    setup.handed.take({"task_id": "t-1", "data": "not an object"})
    setup.fleet.start(StreamKind.AUDIO, audio_url="rtmp://sim.invalid/live", provider="assemblyai")
    setup.run_for(11)
    assert setup.violations() == ["a callback for t-1 was refused: data: must be an object, got a string"]


def test_forwarded_provider_messages_in_no_history_are_not_counted_as_lost() -> None:
    setup = rig(mode="passthrough")
    setup.fleet.start(StreamKind.AUDIO, audio_url="rtmp://sim.invalid/live", provider="assemblyai")
    setup.run_for(11)  # a Begin, which no history records, then turns
    assert setup.violations() == []


def test_a_run_of_all_three_products_keeps_every_promise() -> None:
    """`--kinds` puts Live Video Understanding beside audio and video: every task of every kind
    ends, and nothing bills in any product."""
    result = streamlife(
        "simulate", "--streams", "30", "--minutes", "1", "--faults", "all", "--seed", "3", "--json",
        "--kinds", "audio,video,understand",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert_promises_kept(report, 30)
    assert set(report["tasks_by_kind"]) == {"audio", "video", "understand"}
    assert sum(report["tasks_by_kind"].values()) == sum(report["tasks_by_state"].values())


def test_a_run_of_all_three_products_over_loopback_http_keeps_every_promise() -> None:
    """Over real sockets too: the simulator's two hosts, and one receiver that takes the webhook's
    callbacks and the understand results posted to each start's callback URL."""
    result = streamlife(
        "simulate", "--streams", "20", "--minutes", "1", "--faults", "all", "--seed", "5", "--json",
        "--kinds", "audio,video,understand", "--http",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["http"] is True
    assert_promises_kept(report, 20)
    assert set(report["tasks_by_kind"]) == {"audio", "video", "understand"}


@pytest.mark.parametrize(
    ("given", "said"),
    [
        (["--kinds", "audio,radio"], "radio"),
        (["--kinds", "audio,audio"], "audio"),
        (["--kinds", ""], "--kinds"),
    ],
)
def test_kinds_that_cannot_be_run_are_bad_usage(given: list[str], said: str) -> None:
    result = streamlife("simulate", "--streams", "2", "--json", *given)
    assert result.returncode == 2
    assert said in result.stderr
    assert "Traceback" not in result.stderr
