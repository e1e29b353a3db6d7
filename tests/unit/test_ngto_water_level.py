"""NGTO's best response finds its split for any size of marginal delay (agent.policies.baselines)."""

from __future__ import annotations

import numpy as np

from agent.policies.baselines.plans import best_response


def test_best_response_ends_when_the_lowest_marginal_delay_is_beyond_float_steps_of_one():
    """Hop delays of 1e16 s (lo + 1.0 == lo in float64) still give a split summing to 1: the
    bisection's bracket grows from a step the size of the delay, not from 1 s."""
    x = best_response(1.0, 1e9, np.array([1e9, 1e9]), np.array([1e16, 1e16]))
    assert np.all(np.isfinite(x)) and abs(x.sum() - 1.0) < 1e-9
    assert abs(x[0] - 0.5) < 1e-6  # two equal receivers share equally


def test_best_response_unchanged_for_ordinary_delays():
    """At ordinary hop delays the faster receiver takes more, and the split sums to 1."""
    x = best_response(2.0, 1e9, np.array([4e9, 2e9]), np.array([0.01, 0.01]))
    assert abs(x.sum() - 1.0) < 1e-9 and x[0] > x[1] > 0
