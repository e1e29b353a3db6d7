"""Capacity of this worker (mu, FLOP/s): how it is measured at start-up, and its one owner.

At start-up a worker either reads mu from its calibration profile
(``calibration.profile.lookup_capacity``) or times its own engine: a few warm-up runs, then the
median service time of ``timing_runs`` runs, mu = flops / median. With
``emulate_capacity_flops`` the engine still runs for real and the service time is padded (by the
inference thread) to flops / emulated mu, so the reported capacity is the emulated one. While
serving, ``calibration.online.OnlineCapacityEstimator`` keeps a smoothed mu from observed
service times. ``Capacity`` owns all of it: the start-up report, the estimator, and the
current mu and service time it writes into the policies' ``NodeView``.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from calibration.profile import lookup_capacity

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


def merge_reports(reports: List[CapacityReport], total_flops: float,
                  emulated: bool) -> CapacityReport:
    """One report for a worker holding several stages: mu = total flops / total median service
    time over its stages; the service time is the mean per stage."""
    if len(reports) == 1:
        return reports[0]
    total_s = sum(r.service_time_s for r in reports)
    measured = sum(r.measured_capacity_flops for r in reports) / len(reports)
    origin = "emulated" if emulated else reports[0].origin
    return CapacityReport(total_flops / total_s, total_s / len(reports), measured, origin)


def worker_capacity(cfg: Any, specs: Dict[int, Any], engines: Dict[int, Any],
                    run_stage: Callable[[np.ndarray, int], Any]) -> CapacityReport:
    """Start-up mu of a worker: per stage from its calibration profile or by timing
    ``run_stage(x, stage)`` (the inference thread's ``run_one``, padding included), merged."""
    reports = []
    for h, spec in specs.items():
        engine = engines[h]
        profile_mu: Optional[float] = None
        if cfg.capacity_profile:
            used = ("tensorrt" if "tensorrt" in str(engine.info.get("backend", "")).lower()
                    else "onnxruntime")
            profile_mu = lookup_capacity(cfg.capacity_profile, spec, used, cfg.precision,
                                         cfg.power_mode or None)
            if profile_mu is None:
                log.warning("no current entry for stage %d in %s; timing the engine instead",
                            spec.index, cfg.capacity_profile)
        x = np.zeros(spec.input_shape, dtype=spec.input_dtype)
        report = startup_capacity(float(spec.flops), lambda a, h=h: run_stage(a, h), x,
                                  cfg.warmup_runs, cfg.timing_runs, cfg.emulate_capacity_flops,
                                  profile_mu)
        log.info("stage %d on %s: %s", h, engine.info.get("backend", "?"), report.describe())
        reports.append(report)
    return merge_reports(reports, float(sum(s.flops for s in specs.values())),
                         cfg.emulate_capacity_flops > 0)


class Capacity:
    """The one owner of this node's mu: start-up report, online estimator, current values.

    A source has no report (mu 0). With an estimator (``calibration.online``), observed service
    times update mu; without one, mu stays the start-up value.
    """

    def __init__(self, report: Optional[CapacityReport] = None, estimator: Any = None):
        self.report = report
        self.estimator = estimator
        self.startup_capacity_flops = report.capacity_flops if report is not None else 0.0
        self.startup_service_time_s = report.service_time_s if report is not None else 0.0
        self._last_drift = False

    @property
    def capacity_flops(self) -> float:
        """mu now, FLOP/s."""
        if self.estimator is not None and self.estimator.capacity_flops:
            return float(self.estimator.capacity_flops)
        return self.startup_capacity_flops

    @property
    def service_time_s(self) -> float:
        """Service time per task that ``capacity_flops`` corresponds to."""
        if self.estimator is not None and self.estimator.capacity_flops:
            return float(self.estimator.service_time_s or self.startup_service_time_s)
        return self.startup_service_time_s

    def observe(self, service_time_s: float) -> None:
        """One task's service time; logs once each time mu drifts from its start-up value."""
        if self.estimator is None:
            return
        self.estimator.observe(service_time_s)
        drifted = self.estimator.drifted()
        if drifted and not self._last_drift:
            log.warning("capacity drifted: start-up %.3g FLOP/s, now %.3g FLOP/s",
                        self.startup_capacity_flops, self.estimator.capacity_flops or 0.0)
        self._last_drift = drifted

    def refresh(self, view: Any) -> None:
        """Write the current mu and service time into the policies' ``NodeView``."""
        view.capacity_flops = self.capacity_flops
        view.service_time_s = self.service_time_s
