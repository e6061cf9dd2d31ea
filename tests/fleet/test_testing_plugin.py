"""The pytest plugin, as a user meets it: a user's test file run by pytest in a fresh process."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pytest

from streamlife import ManualClock, Policy, StreamKind
from streamlife._events import StartResult, StopResult
from streamlife.sim import Faults
from streamlife.store import MemoryStore
from streamlife.testing import MemoriesSim
from streamlife.transport import Transport
from tests.core.test_docs import REPO, python_blocks


def readme_user_tests() -> str:
    (block,) = [b for b in python_blocks((REPO / "README.md").read_text()) if b.startswith("# test_")]
    return block


def test_the_readme_example_test_file_passes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_my_streams=readme_user_tests())
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_a_broken_promise_in_a_users_code_fails_their_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_forgetful="""
        def test_a_stream_left_running_is_caught(fleet, memories_sim):
            fleet.start("audio", audio_url="rtmp://example.invalid/forgotten", provider="assemblyai")
            memories_sim.advance(60)
            assert memories_sim.billing() == []  # nobody stopped it: this must fail
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)


def test_the_marker_sets_faults_seed_and_policy(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_marked="""
        import pytest
        from streamlife import Policy
        from streamlife.sim import Faults

        @pytest.mark.memories(
            faults=Faults(capacity=1.0), policy=Policy(park_ttl=7, stop_concurrency=0, start_retry_window=0)
        )
        def test_marked(fleet, memories_sim):
            assert fleet.policy.park_ttl == 7
            task = fleet.start("audio", audio_url="rtmp://example.invalid/full", provider="assemblyai")
            assert task.state.value == "failed"  # every start refused: capacity, and no retries

        def test_unmarked_has_no_faults(fleet, memories_sim):
            assert memories_sim.service.faults.capacity == 0.0
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_a_bad_marker_value_is_a_usage_error_naming_the_choices(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_bad="""
        import pytest

        @pytest.mark.memories(faults="sometimes")
        def test_bad(memories_sim):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret != 0
    assert re.search(r"faults=\.\.\.\) takes none, default, all", result.stdout.str() + result.stderr.str())


def test_a_users_restart_test_plays_a_crash_on_a_store_of_their_choice(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_restart="""
        from streamlife import TaskState
        from streamlife.store import SqliteStore

        def test_a_restart_stops_what_the_dead_process_started(memories_sim, tmp_path):
            store = SqliteStore(tmp_path / "tasks.db")
            first = memories_sim.fleet(store=store)
            task = first.start("audio", audio_url="rtmp://example.invalid/1", provider="assemblyai")
            memories_sim.advance(10)
            memories_sim.crash(first)
            memories_sim.advance(10)
            assert len(task.transcript) == 2  # the dead process heard nothing after the crash
            second = memories_sim.fleet(store=store)
            (back,) = second.recover()
            second.stop_all()
            memories_sim.settle()
            assert back.state is TaskState.STOPPED
            assert memories_sim.settled()
            store.close()
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_a_simulator_made_by_hand_takes_faults_a_seed_a_mode_and_a_clock() -> None:
    clock = ManualClock(1_000.0)
    sim = MemoriesSim.new("all", seed=7, max_streams=3, mode="passthrough", clock=clock)
    assert sim.clock is sim.service.clock is clock
    assert sim.service.faults == Faults.all(7)
    assert (sim.service.max_streams, sim.service.mode) == (3, "passthrough")
    own = Faults(drop=1.0, seed=2)
    assert MemoriesSim.new(own).service.faults is own
    assert MemoriesSim.new().clock.now() == 1_700_000_000.0
    with pytest.raises(ValueError, match="none, default, all"):
        MemoriesSim.new("sometimes")


def test_a_fleet_sends_through_the_transport_it_is_given_and_close_closes_every_fleet() -> None:
    sent: list[str] = []

    class Counting:
        def __init__(self, inner: Transport) -> None:
            self.inner = inner

        def start(self, kind: StreamKind, params: Mapping[str, Any]) -> StartResult:
            sent.append("start")
            return self.inner.start(kind, params)

        def stop(self, kind: StreamKind, task_id: str, *, within: float | None = None) -> StopResult:
            sent.append("stop")
            return self.inner.stop(kind, task_id, within=within)

        def close(self) -> None:
            self.inner.close()

    sim = MemoriesSim.new()
    store = MemoryStore()
    fleet = sim.fleet(Policy(stop_concurrency=2), store=store, transport=Counting(sim.transport))
    assert fleet.store is store
    task = fleet.start("audio", audio_url="rtmp://example.invalid/1", provider="assemblyai")
    sim.advance(5)
    assert len(task.transcript) == 1
    assert not sim.settled()  # a task running, a stream billing
    sim.crash(fleet)
    fleet.stop(task)
    sim.close()  # waits for the stop in flight on the crashed Fleet's worker
    assert sent == ["start", "stop"]
    assert sim.fleets == []
    assert sim.billing() == []


def test_the_http_marker_drives_the_three_products_over_loopback_sockets(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_over_http="""
        import pytest
        from streamlife.transport import HttpTransport

        @pytest.mark.memories(http=True, faults="all", seed=2)
        def test_three_products_settle_with_nothing_billing(fleet, memories_sim):
            assert isinstance(fleet.transport, HttpTransport)
            served = memories_sim.served
            assert fleet.transport.understand_url == served.understand_url != served.base_url
            tasks = [
                fleet.start("audio", audio_url="rtmp://example.invalid/a", provider="assemblyai"),
                fleet.start("video", url="rtmp://example.invalid/v"),
            ] + [
                # Two with no callback (each task's own URL, routed), one with the webhook's.
                fleet.start("understand", url="rtmp://example.invalid/u", user_prompt="Describe it"),
                fleet.start("understand", url="rtmp://example.invalid/u", user_prompt="Describe it"),
                fleet.start(
                    "understand",
                    url="rtmp://example.invalid/u",
                    user_prompt="Describe it",
                    callback=memories_sim.callback_url,
                ),
            ]
            memories_sim.advance(30)
            fleet.stop_all()
            memories_sim.settle()
            assert memories_sim.settled() and memories_sim.billing() == []
            assert served.poster.failures == []
            heard = {payload["task_id"] for payload in served.poster.delivered}
            assert any(t.kind.value == "understand" and t.task_id in heard for t in tasks)
            assert any(len(t.transcript) for t in tasks if t.kind.value == "understand")
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_an_http_fleet_hears_results_at_its_receiver_until_it_crashes() -> None:
    sim = MemoriesSim.new()
    try:
        first = sim.http_fleet()
        assert sim.served is not None
        assert sim.callback_url.startswith("http://127.0.0.1:")
        assert sim.served.poster.url == sim.callback_url
        task = first.start(
            "understand", url="rtmp://example.invalid/u", user_prompt="Say", callback=sim.callback_url
        )
        sim.advance(10)
        assert len(task.transcript) == 2  # two windows' results, over the socket
        sim.crash(first)
        sim.advance(10)
        assert len(task.transcript) == 2  # its receiver listens no more
        assert sim.served.poster.failures  # the simulator's posts to it fail, as to a dead process
        assert sim.fleets == []
        second = sim.http_fleet()
        assert sim.served.poster.url == sim.callback_url  # the webhook is the new receiver
        assert second.transport.understand_url == sim.served.understand_url  # type: ignore[attr-defined]
    finally:
        sim.close()
    assert sim.billing() == [task.task_id]  # nobody stopped it: the ledger says so


USERS_UNDERSTAND_TESTS = """
import pytest
from streamlife import TaskState

def named_after_a_lost_answer(fleet, memories_sim):
    memories_sim.service.lose_next_start_answer()
    task = fleet.start("understand", url="rtmp://example.invalid/u", user_prompt="Describe it")
    assert task.state is TaskState.UNCERTAIN and task.task_id is None
    memories_sim.advance(10)
    # Its results came by its own URL, and named it: it runs, with what they said.
    assert task.state is TaskState.RUNNING and task.task_id is not None
    assert len(task.transcript) == 2
    fleet.stop_all()
    memories_sim.settle()
    assert task.state is TaskState.STOPPED
    assert fleet.stats().orphans == 0 and memories_sim.billing() == []
    assert memories_sim.refused == []

def test_in_process(fleet, memories_sim):
    named_after_a_lost_answer(fleet, memories_sim)

@pytest.mark.memories(http=True)
def test_over_http(fleet, memories_sim):
    named_after_a_lost_answer(fleet, memories_sim)
    assert memories_sim.served.poster.failures == []
"""


def test_an_understand_start_needs_no_callback_and_its_results_name_it(pytester: pytest.Pytester) -> None:
    """Left out, the callback is the task's own URL: its results reach it routed by key, and name
    it when its start answer was lost, in-process as over HTTP."""
    pytester.makepyfile(test_understand=USERS_UNDERSTAND_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_a_receiver_of_a_users_own_takes_the_simulators_token(pytester: pytest.Pytester) -> None:
    """A receiver mounted on a Fleet made here must verify its task URLs: with another token it is
    refused, naming the fix; with the marker's token, or ``memories_sim.token``, it is taken."""
    pytester.makepyfile(
        test_receiver="""
        import pytest
        from streamlife.webhook import WebhookReceiver

        MINE = "my-own-webhook-token-0123456789"

        def test_another_token_is_refused(fleet):
            with pytest.raises(ValueError, match="same token"):
                WebhookReceiver(fleet, token=MINE)

        def test_the_simulators_token_is_taken(fleet, memories_sim):
            WebhookReceiver(fleet, token=memories_sim.token)

        @pytest.mark.memories(token=MINE)
        def test_the_marker_gives_mine(fleet, memories_sim):
            assert memories_sim.token == MINE
            WebhookReceiver(fleet, token=MINE)

        @pytest.mark.memories(token="short")
        def test_a_short_token_is_a_usage_error(memories_sim):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*token=...) takes a string of 16 characters or more*"])


def test_a_routed_result_another_fleet_refuses_is_kept_not_raised() -> None:
    """Two Fleets, each on a store of its own, hear every delivery: the one that does not hold the
    task refuses its routed results (its receiver's 403), which ``refused`` keeps."""
    sim = MemoriesSim.new()
    try:
        mine, other = sim.fleet(), sim.fleet(store=MemoryStore())
        task = mine.start("understand", url="rtmp://example.invalid/u", user_prompt="Say")
        sim.advance(10)
        assert len(task.transcript) == 2
        assert other.tasks() == []  # nothing adopted
        assert other.stats().parked == 0
        assert [task_id for task_id, _ in sim.refused] == [task.task_id, task.task_id]
    finally:
        sim.close()
