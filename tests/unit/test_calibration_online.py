"""Online capacity estimator: smoothed mu from service times, drift detection, robustness."""

from __future__ import annotations

import math

import pytest

from calibration.online import OnlineCapacityEstimator


def test_starts_at_the_profile_value_and_does_not_drift_on_matching_times():
    """Service times matching the profile keep mu at the profile value; no drift."""
    est = OnlineCapacityEstimator(flops_per_task=1e6, initial_capacity_flops=1e9)
    assert est.capacity_flops == pytest.approx(1e9)
    for _ in range(200):
        est.observe(1e-3)
    assert est.capacity_flops == pytest.approx(1e9)
    assert not est.drifted()


def test_follows_a_lasting_slow_down_and_reports_drift():
    """A lasting 3x slower engine moves mu to a third of the profile value and flags drift."""
    est = OnlineCapacityEstimator(1e6, 1e9, smoothing=0.1, drift_fraction=0.2)
    for _ in range(100):
        est.observe(3e-3)
    assert est.capacity_flops == pytest.approx(1e9 / 3, rel=0.01)
    assert est.drifted()
    assert est.drift() == pytest.approx(-2 / 3, rel=0.02)


def test_single_outlier_is_clipped():
    """One very slow run cannot move mu by more than the clipped amount."""
    est = OnlineCapacityEstimator(1e6, 1e9, smoothing=0.1, outlier_factor=2.0, drift_fraction=0.2)
    est.observe(10.0)  # a 10 s hiccup against a 1 ms engine
    assert est.service_time_s == pytest.approx(1e-3 + 0.1 * (2e-3 - 1e-3))
    assert not est.drifted()


def test_without_initial_value_first_observation_sets_it():
    """With no profile value, the first observation is the reference for drift."""
    est = OnlineCapacityEstimator(2e6, None)
    assert est.capacity_flops is None and not est.drifted()
    est.observe(2e-3)
    assert est.initial_capacity_flops == pytest.approx(1e9)
    assert est.capacity_flops == pytest.approx(1e9)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_observations_are_ignored(bad):
    """Non-positive or non-finite service times do not corrupt the estimate."""
    est = OnlineCapacityEstimator(1e6, 1e9)
    est.observe(bad)
    assert est.samples == 0 and est.capacity_flops == pytest.approx(1e9)


def test_invalid_parameters_are_rejected():
    """Nonsense parameters raise ValueError naming the parameter."""
    with pytest.raises(ValueError, match="flops_per_task"):
        OnlineCapacityEstimator(0, 1e9)
    with pytest.raises(ValueError, match="initial_capacity_flops"):
        OnlineCapacityEstimator(1e6, -5.0)
    with pytest.raises(ValueError, match="smoothing"):
        OnlineCapacityEstimator(1e6, 1e9, smoothing=0.0)
    with pytest.raises(ValueError, match="drift_fraction"):
        OnlineCapacityEstimator(1e6, 1e9, drift_fraction=0.0)
    assert math.isfinite(OnlineCapacityEstimator(1e6, 1e9).drift())
