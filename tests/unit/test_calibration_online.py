"""Online capacity estimator: smoothed mu from window medians of service times, drift detection,
robustness."""

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
    est = OnlineCapacityEstimator(1e6, 1e9, drift_fraction=0.2)
    for _ in range(100):
        est.observe(3e-3)
    assert est.capacity_flops == pytest.approx(1e9 / 3, rel=0.01)
    assert est.drifted()
    assert est.drift() == pytest.approx(-2 / 3, rel=0.02)


def test_a_lasting_20x_slow_down_is_followed_within_two_windows():
    """A window beyond the outlier bound right after another is a lasting change and counts in
    full: a 20x slower engine reads below a fifth of its old mu after two windows."""
    est = OnlineCapacityEstimator(1e6, 1e9, smoothing=0.5, window=9)
    for _ in range(9):
        est.observe(20e-3)
    assert est.service_time_s == pytest.approx(1.5e-3)  # the first window: clipped to 2x
    for _ in range(9):
        est.observe(20e-3)
    assert est.service_time_s == pytest.approx(1.5e-3 + 0.5 * (20e-3 - 1.5e-3))
    assert est.capacity_flops < 1e9 / 5 and est.drifted()


def test_slow_runs_in_fewer_than_half_a_window_move_nothing():
    """The estimate takes each window's median: one 10 s hiccup, or four slow runs of nine,
    leave mu where it was, as calibrate's median of the same runs would."""
    est = OnlineCapacityEstimator(1e6, 1e9, window=9)
    est.observe(10.0)  # a 10 s hiccup against a 1 ms engine
    for _ in range(8):
        est.observe(1e-3)
    assert est.capacity_flops == pytest.approx(1e9) and est.samples == 9
    for t in [1e-3, 1.5e-3, 1e-3, 1.4e-3, 1e-3, 1.6e-3, 1e-3, 1.3e-3, 1e-3]:
        est.observe(t)
    assert est.capacity_flops == pytest.approx(1e9) and not est.drifted()


def test_the_estimate_is_the_median_of_skewed_runs_not_their_mean():
    """Runs 1 ms with one in eight 1.5 ms (mean 1.0625 ms): the estimate stays at the median,
    the statistic calibrate and the start-up timing report; an average of every run (window 1)
    reads the device slower than it is."""
    runs = ([1e-3] * 7 + [1.5e-3]) * 100
    median_est = OnlineCapacityEstimator(1e6, 1e9)
    mean_est = OnlineCapacityEstimator(1e6, 1e9, smoothing=0.1, window=1)
    for t in runs:
        median_est.observe(t)
        mean_est.observe(t)
    assert median_est.capacity_flops == pytest.approx(1e9)
    assert mean_est.capacity_flops < 0.97e9


def test_a_window_beyond_the_outlier_bound_alone_is_clipped():
    """One window whose median is far above the estimate moves it by at most the clipped amount,
    and a normal window after it is no lasting change."""
    est = OnlineCapacityEstimator(1e6, 1e9, smoothing=0.5, outlier_factor=2.0, window=3)
    for t in [10.0, 10.0, 1e-3]:
        est.observe(t)
    assert est.service_time_s == pytest.approx(1e-3 + 0.5 * (2e-3 - 1e-3))
    for _ in range(3):
        est.observe(1e-3)
    assert est.service_time_s == pytest.approx(1.25e-3)
    for t in [10.0, 10.0, 1e-3]:
        est.observe(t)
    assert est.service_time_s == pytest.approx(1.25e-3 + 0.5 * (2.5e-3 - 1.25e-3))


def test_rebase_drops_the_runs_of_the_mode_before():
    """After a power mode change the window starts empty: runs of the old mode are no sample of
    the new one."""
    est = OnlineCapacityEstimator(1e6, 1e9, window=3)
    est.observe(5e-3)
    est.observe(5e-3)
    est.rebase(5e8)
    est.observe(2e-3)
    assert est.capacity_flops == pytest.approx(5e8)
    est.observe(2e-3)
    est.observe(2e-3)
    assert est.capacity_flops == pytest.approx(5e8) and not est.drifting


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
    for window in (0, 2.5, True):
        with pytest.raises(ValueError, match="window"):
            OnlineCapacityEstimator(1e6, 1e9, window=window)
    assert math.isfinite(OnlineCapacityEstimator(1e6, 1e9).drift())
