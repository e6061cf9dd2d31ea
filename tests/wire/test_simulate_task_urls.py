"""A simulated run routes understand results by each task's own callback URL, in-process and over
loopback HTTP: a start whose answer was lost is named by its results, runs, and is stopped, where
it used to be left to the orphan reaper; the run's invariants count routed callbacks, and say so
when a lost answer's stream is not named."""

from __future__ import annotations

import pytest

from streamlife import StreamKind
from streamlife._simulate import Run, _Handed, simulate
from streamlife.sim import Faults


def lost_answers(seed: int, http: bool) -> Run:
    """Understand streams only, half their start answers lost."""
    faults = Faults(seed=seed, start_timeout_created=0.5)
    return Run(streams=8, minutes=1.0, faults=faults, seed=seed, kinds=(StreamKind.UNDERSTAND,), http=http)


@pytest.mark.parametrize(("seed", "http"), [(0, False), (1, False), (2, False), (0, True), (1, True)])
def test_a_start_whose_answer_was_lost_is_named_by_its_results_and_stopped(seed: int, http: bool) -> None:
    report = simulate(lost_answers(seed, http))
    assert report.violations == []
    assert report.tasks_named > 0  # results on their task's URL named the streams
    assert report.orphans_reaped == 0  # none was left unnamed, to be adopted as an orphan
    assert report.tasks_by_state == {"stopped": 8}
    assert report.callbacks["parked"] == 0  # routed callbacks are never parked
    assert report.streams_billing_after_settle == 0
    assert report.ok


def test_the_run_says_so_when_a_lost_answers_results_do_not_name_its_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The check itself: a sink that drops the key (the account-wide URL's way) leaves a stream
    whose answer was lost to the reaper, and the run reports it."""
    handle = _Handed.handle_callback
    monkeypatch.setattr(_Handed, "handle_callback", lambda self, payload, *, key=None: handle(self, payload))
    report = simulate(lost_answers(1, False))
    assert not report.ok
    assert any("did not name it" in violation for violation in report.violations), report.violations
    assert any("adopted as an orphan" in violation for violation in report.violations), report.violations


def test_the_three_products_report_the_tasks_their_urls_named() -> None:
    report = simulate(Run(streams=30, minutes=2.0, faults="all", seed=1, kinds=tuple(StreamKind)))
    assert report.ok, report.violations
    assert report.tasks_named > 0
    assert report.as_json()["tasks_named"] == report.tasks_named
