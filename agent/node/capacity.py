"""Capacity of this worker (mu, FLOP/s).

At start-up a worker either reads mu from its calibration profile
(``calibration.profile.lookup_capacity``) or times its own engine: a few warm-up runs, then the
median service time of ``timing_runs`` runs, mu = flops / median. With
``emulate_capacity_flops`` the engine still runs for real and the service time is padded (by the
inference thread) to flops / emulated mu, so the reported capacity is the emulated one. While
serving, ``calibration.online.OnlineCapacityEstimator`` keeps a smoothed mu from observed
service times.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CapacityReport:
    """How this worker's mu was obtained; every report and log line says what is emulated."""

    capacity_flops: float  # mu used by the policies, FLOP/s
    service_time_s: float  # service time per task that mu corresponds to
    measured_capacity_flops: float  # mu of the real engine on this machine (0 if not timed)
    origin: str  # "profile", "timed" or "emulated"

    def describe(self) -> str:
        """One line for logs and status."""
        if self.origin == "emulated":
            return ("capacity %.3g FLOP/s EMULATED (engine measured %.3g FLOP/s, padded to %.2f ms)"
                    % (self.capacity_flops, self.measured_capacity_flops, self.service_time_s * 1e3))
        return "capacity %.3g FLOP/s (%s, %.2f ms per task)" % (
            self.capacity_flops, self.origin, self.service_time_s * 1e3)


def time_engine(run: Callable[[np.ndarray], Any], x: np.ndarray, warmup_runs: int,
                timing_runs: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """Median service time (s) of ``run(x)`` over ``timing_runs`` runs after ``warmup_runs``."""
    for _ in range(warmup_runs):
        run(x)
    times = []
    for _ in range(max(1, timing_runs)):
        t0 = clock()
        run(x)
        times.append(clock() - t0)
    return statistics.median(times)


def startup_capacity(flops: float, run: Callable[[np.ndarray], Any], x: np.ndarray,
                     warmup_runs: int, timing_runs: int, emulate_capacity_flops: float = 0.0,
                     profile_capacity_flops: Optional[float] = None) -> CapacityReport:
    """mu at start-up: emulated, from the profile, or timed; see the module docstring."""
    if profile_capacity_flops and emulate_capacity_flops <= 0:
        return CapacityReport(profile_capacity_flops, flops / profile_capacity_flops, 0.0, "profile")
    median = time_engine(run, x, warmup_runs, timing_runs)
    measured = flops / median if median > 0 else float("inf")
    if emulate_capacity_flops > 0:
        if emulate_capacity_flops > measured:
            log.warning("emulate_capacity_flops %.3g is above this machine's measured %.3g FLOP/s; "
                        "the emulated speed cannot be reached", emulate_capacity_flops, measured)
        return CapacityReport(emulate_capacity_flops, flops / emulate_capacity_flops, measured,
                              "emulated")
    return CapacityReport(measured, median, measured, "timed")
