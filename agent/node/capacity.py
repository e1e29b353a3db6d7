"""Capacity of this worker (mu, FLOP/s): how it is measured at start-up, and its one owner.

At start-up a worker either reads mu from its calibration profile
(``calibration.profile.lookup_capacity``) or times its own engine: a few warm-up runs, then the
median service time of ``timing_runs`` runs, mu = flops / median. With
``emulate_capacity_flops`` the engine still runs for real and the service time is padded (by the
inference thread) to flops / emulated mu, so the reported capacity is the emulated one; its
start-up timing runs the engine unpadded (only the real engine's time is needed, and padded runs
of a slow emulated device would take seconds). While
serving, ``calibration.online.OnlineCapacityEstimator`` keeps a smoothed mu from observed
service times. ``Capacity`` owns all of it: the start-up report, the estimator, and the
current mu and service time it writes into the policies' ``NodeView``.

Service times, at start-up and while serving, are the inference thread's (``Done.service_time_s``:
no waits for the interpreter lock, see ``agent.node.inference``), so the two are comparable.
A drift of mu from its start-up value is logged when the estimator's flag (with hysteresis)
turns on, at most once per ``DRIFT_WARNING_INTERVAL_S``; flips within that time are counted and
reported with the next line.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from agent.ops.files import FileFault, check_regular_file
from agent.ops.throttle import Throttle, more_since
from calibration.profile import lookup_capacity
from engines.bundle import check_measurable

log = logging.getLogger(__name__)

DRIFT_WARNING_INTERVAL_S = 60.0  # at most one drift log line per this many seconds


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
                timing_runs: int, clock: Callable[[], float] = time.perf_counter,
                measured: Optional[Callable[[Any], float]] = None) -> float:
    """Median service time (s) of ``run(x)`` over ``timing_runs`` runs after ``warmup_runs``:
    ``clock`` around each run, or ``measured(result)`` (the run's own measurement) if given."""
    for _ in range(warmup_runs):
        run(x)
    times = []
    for _ in range(max(1, timing_runs)):
        t0 = clock()
        got = run(x)
        times.append(measured(got) if measured is not None else clock() - t0)
    return statistics.median(times)


def startup_capacity(flops: float, run: Callable[[np.ndarray], Any], x: np.ndarray,
                     warmup_runs: int, timing_runs: int, emulate_capacity_flops: float = 0.0,
                     profile_capacity_flops: Optional[float] = None,
                     measured: Optional[Callable[[Any], float]] = None) -> CapacityReport:
    """mu at start-up: emulated, from the profile, or timed (``time_engine``, with
    ``measured``); see the module docstring."""
    if profile_capacity_flops and emulate_capacity_flops <= 0:
        return CapacityReport(profile_capacity_flops, flops / profile_capacity_flops, 0.0, "profile")
    median = time_engine(run, x, warmup_runs, timing_runs, measured=measured)
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


def require_profile_file(path: str) -> None:
    """A worker's ``capacity_profile`` must be a regular file (``run`` exits 78 otherwise); a
    missing one (a device not yet calibrated) says how it is made."""
    try:
        check_regular_file(path, "capacity_profile")
    except FileFault as exc:
        if os.path.lexists(path):
            raise
        raise FileFault("%s; calibrate this device first (`edge-agent doctor --config CONFIG` "
                        "prints the command), or set capacity_profile = \"\" to time the engine "
                        "at start" % exc) from None


def worker_capacity(cfg: Any, specs: Dict[int, Any], engines: Dict[int, Any],
                    run_stage: Callable[[np.ndarray, int], Any]) -> CapacityReport:
    """Start-up mu of a worker: per stage from its calibration profile or by timing
    ``run_stage(x, stage, pad=False)`` (the inference thread's ``run_one``: its
    ``Done.service_time_s``, on the clock the thread measures with while serving; with emulation
    the real engine's ``engine_time_s`` of an unpadded run, the emulated time being known),
    merged."""
    measured = _engine_time if cfg.emulate_capacity_flops > 0 else _service_time
    check_measurable(list(specs.values()))
    reports = []
    for h, spec in specs.items():
        engine = engines[h]
        profile_mu: Optional[float] = None
        if cfg.capacity_profile:
            used = ("tensorrt" if "tensorrt" in str(engine.info.get("backend", "")).lower()
                    else "onnxruntime")
            # the precision the engine runs, as calibrate stores it (fp16 asked of an
            # onnxruntime without TensorRT runs, and was measured, as fp32)
            precision = str(engine.info.get("precision") or cfg.precision)
            profile_mu = lookup_capacity(cfg.capacity_profile, spec, used, precision,
                                         cfg.power_mode or None)
            if profile_mu is None:
                # entries are keyed by backend and precision: say which, so a profile made
                # with other ones is seen for what it is
                log.warning("no current entry for stage %d (%s, %s, this mode) in %s; timing "
                            "the engine instead (calibrate --backend %s --precision %s)",
                            spec.index, used, precision, cfg.capacity_profile, used, precision)
        x = np.zeros(spec.input_shape, dtype=spec.input_dtype)
        report = startup_capacity(float(spec.flops), lambda a, h=h: run_stage(a, h, pad=False), x,
                                  cfg.warmup_runs, cfg.timing_runs, cfg.emulate_capacity_flops,
                                  profile_mu, measured=measured)
        log.info("stage %d on %s: %s", h, engine.info.get("backend", "?"), report.describe())
        reports.append(report)
    return merge_reports(reports, float(sum(s.flops for s in specs.values())),
                         cfg.emulate_capacity_flops > 0)


def _engine_time(done: Any) -> float:
    return float(done.engine_time_s)


def _service_time(done: Any) -> float:
    return float(done.service_time_s)


class Capacity:
    """The one owner of this node's mu: start-up report, online estimator, current values.

    A source has no report (mu 0). With an estimator (``calibration.online``), observed service
    times update mu; without one, mu stays the start-up value.
    """

    def __init__(self, report: Optional[CapacityReport] = None, estimator: Any = None,
                 clock: Callable[[], float] = time.monotonic):
        self.report = report
        self.estimator = estimator
        self.startup_capacity_flops = report.capacity_flops if report is not None else 0.0
        self.startup_service_time_s = report.service_time_s if report is not None else 0.0
        self._last_drift = False
        self.drift_changes = 0  # times the drift flag turned on or off
        self._drift_log = Throttle(DRIFT_WARNING_INTERVAL_S, clock)

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
        """One task's service time; logs when mu drifts from its start-up value and when it
        comes back (the estimator's flag, with hysteresis), at most once per
        ``DRIFT_WARNING_INTERVAL_S``."""
        if self.estimator is None:
            return
        self.estimator.observe(service_time_s)
        drifted = bool(getattr(self.estimator, "drifting", False))
        if drifted == self._last_drift:
            return
        self._last_drift = drifted
        self.drift_changes += 1
        left = self._drift_log.due()
        if left is None:
            return
        also = more_since(left, "more changes")
        mu = self.estimator.capacity_flops or 0.0
        if drifted:
            log.warning("capacity drifted: start-up %.3g FLOP/s, now %.3g FLOP/s%s",
                        self.startup_capacity_flops, mu, also)
        else:
            log.info("capacity back near its start-up value: %.3g FLOP/s (start-up %.3g)%s",
                     mu, self.startup_capacity_flops, also)

    def refresh(self, view: Any) -> None:
        """Write the current mu and service time into the policies' ``NodeView``."""
        view.capacity_flops = self.capacity_flops
        view.service_time_s = self.service_time_s
