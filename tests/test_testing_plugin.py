"""The pytest plugin, as a user meets it: a user's test file run by pytest in a fresh process."""

from __future__ import annotations

import re

import pytest

from .test_docs import REPO, python_blocks


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
