"""`streamlife simulate` through its entry point: the JSON report keeps the promises, in-process and
over loopback HTTP, and bad options are refused with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streamlife.simulate import Run, simulate


def streamlife(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamlife", *args], capture_output=True, text=True, check=False, timeout=300
    )


def assert_promises_kept(report: dict[str, Any], streams: int) -> None:
    assert report["streams_billing_after_settle"] == 0
    assert report["invariant_violations"] == 0
    assert report["violations"] == []
    assert set(report["tasks_by_state"]) <= {"stopped", "ended", "failed"}  # every task terminal
    assert sum(report["tasks_by_state"].values()) == streams + report["orphans_reaped"]


@pytest.mark.parametrize("http", [False, True], ids=["in-process", "over-http"])
def test_simulate_json_keeps_every_promise_with_all_faults_on(http: bool) -> None:
    result = streamlife(
        "simulate", "--streams", "60", "--minutes", "1.5", "--faults", "all", "--seed", "1", "--json",
        *(["--http"] if http else []),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert_promises_kept(report, streams=60)
    assert (report["seed"], report["http"], report["faults"]) == (1, http, "all")
    assert report["orphans_reaped"] > 0  # lost start answers made orphans, and they were reaped
    assert report["callbacks"]["duplicate"] > 0
    assert report["stop_failures"] > 0  # failed stops were retried until they landed


def test_the_same_seed_gives_the_same_run() -> None:
    first, second = (simulate(Run(streams=30, minutes=1, faults="all", seed=7)) for _ in range(2))
    assert first.as_json() | {"wall_seconds": 0} == second.as_json() | {"wall_seconds": 0}


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
    result = streamlife("simulate", "--streams", "5", "--minutes", "0.5", "--speed", "1000")
    assert result.returncode == 0, result.stderr
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
    ],
)
def test_bad_options_are_refused_with_exit_code_2(option: str, value: str, complaint: str) -> None:
    result = streamlife("simulate", option, value)
    assert result.returncode == 2
    assert complaint in result.stderr
