"""A restart takes a policy's tuned thresholds back from its saved state, never a fixed policy's
thresholds over its config: a cf/bf/fixed node whose config's thresholds changed serves the new
ones (the saved ones can only be an earlier config's)."""

from __future__ import annotations

from agent.policies.registry import make_policy


def test_a_fixed_threshold_policy_keeps_its_configured_thresholds_over_saved_ones():
    """cf, bf, fixed: thresholds {1: 0.9} in the config, a saved {1: 0.8}: 0.9."""
    for name in ("cf", "bf", "fixed"):
        policy = make_policy(name, {1: 0.9}, {})
        policy.restore({"policy": name, "thresholds": {"1": 0.8}})
        assert policy.thresholds()[1] == 0.9, name


def test_dtoee_takes_back_the_thresholds_it_had_tuned():
    """DTO-EE tunes its thresholds (Alg. 3): a restart serves with the saved ones."""
    policy = make_policy("dtoee", {1: 0.9}, {})
    policy.restore({"policy": "dtoee", "thresholds": {"1": 0.8}})
    assert policy.thresholds()[1] == 0.8
