"""Policy's fields in their order are public: a caller may pass them positionally."""

from __future__ import annotations

from streamlife import Policy


def test_a_policy_built_positionally_keeps_its_fields_where_they_were() -> None:
    # park_ttl, reap_orphans, uncertain_ttl, final_callback_wait, silence_after, stop_when_stalled,
    # stop_retry_base, stop_retry_cap, max_retry_after, stop_timeout, stop_concurrency
    policy = Policy(60.0, True, 120.0, 30.0, 30.0, False, 1.0, 60.0, 300.0, 10.0, 3)
    assert policy.stop_concurrency == 3
