"""Online re-estimation of a worker's capacity mu from the service times it measures while
serving, and drift detection against the calibrated (profile) value.

The estimator takes the *median* service time of each ``window`` observations and smooths those
medians (an exponentially weighted moving average of times), reporting mu = flops / smoothed
service time. The median because calibration and the start-up timing report the median of a
tight loop (``agent.node.capacity.time_engine``), and mu must mean one thing: run times are
skewed to the right (slow runs come in short bursts: on a 2-core x86_64 VM 5-7% of a 46 us
stage's runs in a tight loop were 1.3x slower or more, two in a row on average), so an average
of the same runs reads 4-6% above their median, and a device that has not changed would read
slower than calibrated. A burst shorter than half a window moves nothing; a window's median
above ``outlier_factor`` times the current estimate is clipped to that bound before it enters
the average, unless the window before was beyond the bound too, so a hiccup within one window
cannot make the node look several times slower, while a lasting slow-down (thermal
throttling, a lower power mode) moves the estimate within a few windows (with the defaults: a
20x slower engine reads below a fifth of its old mu after 18 tasks, a 3x slower one within 5%
of its new mu after 45). An engine where a regular minority of runs is much slower (e.g. 15%
of runs 4x slower) reads the mu of its typical run, as calibrate does.

A worker feeds it what ``edge-agent calibrate`` measures, so that a worker serving at its
calibrated speed reads its calibrated mu: the service time of the engine call alone, on the
clock calibrate times it by (``engines.timing``; the exit heads' softmax and the copies around
the call are per-task overhead, not the stage's compute), and only of warm runs, those after at
least ``agent.node.inference.WARM_RUNS`` runs back to back (calibration times a tight loop; a
run after an idle spell, and the next few, are slower). A lightly loaded worker, whose tasks
arrive alone or a few together, thus feeds it nothing and keeps its expected mu; under load
the engine runs its jobs back to back, all but the first few of each streak count, and a
lasting slow-down moves the estimate. An emulated device feeds its padded service time
(``agent.node.inference``).

Drift has hysteresis: ``drifting`` turns on when the estimate leaves the initial value by more
than ``drift_fraction`` and off only once it is back within ``recover_fraction`` (half of it by
default), so an estimate hovering at the threshold does not flip the flag on every task.
"""

from __future__ import annotations

import math
import statistics
from typing import List, Optional


class OnlineCapacityEstimator:
    """Smoothed online mu (FLOP/s) of one stage engine.

    ``flops_per_task``: alpha of the stage. ``initial_capacity_flops``: mu from the profile (or
    from timing the engine at start-up); None starts from the first observation.
    ``window``: observations per median (>= 1; 1 averages every observation).
    ``smoothing``: weight of a window's median in the moving average (0 < smoothing <= 1).
    ``drift_fraction``: ``drifted()`` is True when the estimate differs from the initial value by
    more than this fraction of it. ``outlier_factor``: a window's median is clipped to this many
    times the current smoothed service time, unless the window before was beyond it too.
    ``recover_fraction``: ``drifting`` turns off once the estimate is back within this fraction
    (default ``drift_fraction / 2``).
    """

    def __init__(
        self,
        flops_per_task: float,
        initial_capacity_flops: Optional[float],
        smoothing: float = 0.5,
        drift_fraction: float = 0.2,
        outlier_factor: float = 2.0,
        recover_fraction: Optional[float] = None,
        window: int = 9,
    ) -> None:
        if not (flops_per_task > 0 and math.isfinite(flops_per_task)):
            raise ValueError("flops_per_task must be a positive number, got %r" % (flops_per_task,))
        if initial_capacity_flops is not None and not (
            initial_capacity_flops > 0 and math.isfinite(initial_capacity_flops)
        ):
            raise ValueError("initial_capacity_flops must be positive or None, got %r" % (initial_capacity_flops,))
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError("window must be an integer >= 1, got %r" % (window,))
        if not 0.0 < smoothing <= 1.0:
            raise ValueError("smoothing must be in (0, 1], got %r" % (smoothing,))
        if not drift_fraction > 0.0:
            raise ValueError("drift_fraction must be > 0, got %r" % (drift_fraction,))
        if not outlier_factor > 1.0:
            raise ValueError("outlier_factor must be > 1, got %r" % (outlier_factor,))
        recover = drift_fraction / 2.0 if recover_fraction is None else recover_fraction
        if not 0.0 <= recover < drift_fraction:
            raise ValueError("recover_fraction must be in [0, drift_fraction), got %r" % (recover,))
        self.recover_fraction = float(recover)
        self.drifting = False  # the drift flag, with hysteresis (module docstring)
        self.flops_per_task = float(flops_per_task)
        self.initial_capacity_flops = None if initial_capacity_flops is None else float(initial_capacity_flops)
        self.smoothing = float(smoothing)
        self.drift_fraction = float(drift_fraction)
        self.outlier_factor = float(outlier_factor)
        self.samples = 0  # observations accepted so far
        self.window = window
        self._pending: List[float] = []  # this window's observations so far
        self._beyond = False  # the last window's median was above the outlier bound
        self._service_time_s: Optional[float] = (
            None if initial_capacity_flops is None else self.flops_per_task / float(initial_capacity_flops)
        )

    def observe(self, service_time_s: float) -> None:
        """Add one measured service time (seconds of one task on the engine). Non-positive or
        non-finite values are ignored: a broken clock reading must not corrupt mu."""
        if not (service_time_s > 0 and math.isfinite(service_time_s)):
            return
        self.samples += 1
        if self._service_time_s is None:
            self._service_time_s = float(service_time_s)
            if self.initial_capacity_flops is None:
                self.initial_capacity_flops = self.flops_per_task / self._service_time_s
            return
        self._pending.append(float(service_time_s))
        if len(self._pending) < self.window:
            return
        median = statistics.median(self._pending)
        self._pending = []
        bound = self.outlier_factor * self._service_time_s
        if median > bound and not self._beyond:
            self._beyond, median = True, bound
        else:
            self._beyond = median > bound  # a second window beyond it in a row: a lasting change
        self._service_time_s += self.smoothing * (median - self._service_time_s)
        d = abs(self.drift())
        if self.drifting:
            self.drifting = d > self.recover_fraction
        else:
            self.drifting = d > self.drift_fraction

    def rebase(self, capacity_flops: float) -> None:
        """Start again from ``capacity_flops`` (a new power mode's calibrated mu): it becomes
        the initial value and the estimate, and the drift flag is off."""
        if not (capacity_flops > 0 and math.isfinite(capacity_flops)):
            raise ValueError("capacity_flops must be positive, got %r" % (capacity_flops,))
        self.initial_capacity_flops = float(capacity_flops)
        self._service_time_s = self.flops_per_task / float(capacity_flops)
        self._pending = []  # runs of the mode before are no sample of this one
        self._beyond = False
        self.drifting = False

    @property
    def service_time_s(self) -> Optional[float]:
        """Smoothed service time (seconds), None before any value is known."""
        return self._service_time_s

    @property
    def capacity_flops(self) -> Optional[float]:
        """Current estimate of mu (FLOP/s); None before any value is known."""
        if self._service_time_s is None:
            return None
        return self.flops_per_task / self._service_time_s

    def drift(self) -> float:
        """Relative change of the estimate from the initial value (-0.3 = 30 % slower)."""
        mu = self.capacity_flops
        if mu is None or not self.initial_capacity_flops:
            return 0.0
        return (mu - self.initial_capacity_flops) / self.initial_capacity_flops

    def drifted(self) -> bool:
        """True when the estimate differs from the initial (profile) value by more than
        ``drift_fraction`` of it."""
        return abs(self.drift()) > self.drift_fraction
