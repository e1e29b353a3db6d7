"""Capacity of this worker (mu, FLOP/s): how it is measured at start-up, and its one owner.

At start-up a worker either reads mu from its calibration profile
(``calibration.profile.lookup_capacity``) or times its own engine: a few warm-up runs, then the
median service time of ``timing_runs`` runs, mu = flops / median. With a profile entry the
engine makes as many runs, untimed: a fresh engine's first runs are slower (memory arenas,
lazy set-up, caches: the first one several times, runs 1-10 of the demo stages 1.2-1.6x on a
2-core x86_64 VM), and the first tasks it serves feed the online estimate as a timed worker's
do. With
``emulate_capacity_flops`` the engine still runs for real and the service time is padded (by the
inference thread) to flops / emulated mu, so the reported capacity is the emulated one; its
start-up timing runs the engine unpadded (only the real engine's time is needed, and padded runs
of a slow emulated device would take seconds). While
serving, ``calibration.online.OnlineCapacityEstimator`` keeps a smoothed mu from observed
service times. ``Capacity`` owns all of it: the start-up report, the estimator, and the
current mu and service time it writes into the policies' ``NodeView``.

mu means one thing wherever it is measured: flops over the service time of one engine call, as
``engines.timing`` times it (the engine call alone, on the stage's timing input, by the calling
thread's CPU clock when the engine computes on it, else the wall clock). ``edge-agent
calibrate`` times it so (``calibration.measure``), and so does the start-up timing
(``time_engine``: the engine's calls back to back, as calibrate's loop makes them; a run of
the inference thread between calls would add the softmax's and copies' cache traffic, which
read a 9 us stage ~25% slower); the online estimate takes the inference thread's
``Done.engine_time_s`` of each warm run (``Done.capacity_sample_s``: a run after
``WARM_RUNS`` back to back; an emulated device's padded time instead), see
``agent.node.inference``. The exit heads' softmax
and the copies around the call are per-task overhead, like messaging, and in none of them.

A drift of mu from its expected value (the start-up value, or the profile's entry for a power
mode the worker switched to while serving: ``Capacity.rebase``, from ``agent.node.powerwatch``)
is logged when the estimator's flag (with hysteresis) turns on, and when it turns off, at most
one line per ``DRIFT_WARNING_INTERVAL_S``: a change inside that time stays pending and is logged
(with the count of flips in between) as soon as the interval has passed, by the next task or the
next ``refresh``, so the last line always tells the flag as it is.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from dataclasses import dataclass
from dataclasses import replace
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from agent.ops.files import FileFault, check_regular_file
from agent.node.profilekey import calibrate_hint, missing_entry
from calibration.profile import ProfileError, current_power_mode, load_profile, lookup_capacity
from engines.bundle import check_measurable
from engines import timing
from engines.timing import engine_clock, timing_input

log = logging.getLogger(__name__)

DRIFT_WARNING_INTERVAL_S = 60.0  # at most one drift log line per this many seconds


@dataclass(frozen=True)
class CapacityReport:
    """How this worker's mu was obtained; every report and log line says what is emulated."""

    capacity_flops: float  # mu used by the policies, FLOP/s
    service_time_s: float  # service time per task that mu corresponds to
    measured_capacity_flops: float  # mu of the real engine on this machine (0 if not timed)
    origin: str  # "profile", "timed" or "emulated"
    power_mode: str = ""  # the power mode it was obtained in ("": unknown)

    def describe(self) -> str:
        """One line for logs and status."""
        mode = ", mode %s" % self.power_mode if self.power_mode else ""
        if self.origin == "emulated":
            return ("capacity %.3g FLOP/s EMULATED (engine measured %.3g FLOP/s%s, padded to "
                    "%.2f ms)" % (self.capacity_flops, self.measured_capacity_flops, mode,
                                  self.service_time_s * 1e3))
        return "capacity %.3g FLOP/s (%s%s, %.2f ms per task)" % (
            self.capacity_flops, self.origin, mode, self.service_time_s * 1e3)


def time_engine(run: Callable[[np.ndarray], Any], x: np.ndarray, warmup_runs: int,
                timing_runs: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """Median service time (s) of ``run(x)`` over ``timing_runs`` runs after ``warmup_runs``,
    back to back, each timed by ``engines.timing.timed_run`` on ``clock``: as calibrate
    times an engine."""
    for _ in range(warmup_runs):
        run(x)
    return statistics.median(timing.timed_run(run, x, clock)[1]
                             for _ in range(max(1, timing_runs)))


def startup_capacity(flops: float, run: Callable[[np.ndarray], Any], x: np.ndarray,
                     warmup_runs: int, timing_runs: int, emulate_capacity_flops: float = 0.0,
                     profile_capacity_flops: Optional[float] = None,
                     clock: Callable[[], float] = time.perf_counter) -> CapacityReport:
    """mu at start-up: emulated, from the profile, or timed (``time_engine`` on ``clock``);
    see the module docstring."""
    if profile_capacity_flops and emulate_capacity_flops <= 0:
        return CapacityReport(profile_capacity_flops, flops / profile_capacity_flops, 0.0, "profile")
    median = time_engine(run, x, warmup_runs, timing_runs, clock=clock)
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
    """A worker's ``capacity_profile`` must be a regular file holding a valid profile (``run``
    exits 78 otherwise), read and checked also where the capacity is emulated and no entry of
    it is used: a rehearsal refuses the file a real run would. A missing one (a device not yet
    calibrated) says how it is made."""
    try:
        check_regular_file(path, "capacity_profile")
    except FileFault as exc:
        if os.path.lexists(path):
            raise
        raise FileFault("%s; calibrate this device first (`edge-agent doctor --config CONFIG` "
                        "prints the command), or set capacity_profile = \"\" to time the engine "
                        "at start" % exc) from None
    try:
        load_profile(path)
    except ProfileError as exc:
        if not os.access(path, os.R_OK):  # root's after a calibrate with sudo: keep its entries
            fix = "give this user read access to it (sudo chown %s %s)" % (_user(), path)
        else:
            fix = ("move it away, then calibrate this device (`edge-agent doctor --config "
                   "CONFIG` then prints the command)")
        raise FileFault("capacity_profile: %s; %s" % (exc, fix)) from None


def _user() -> str:
    """This process's user name (its uid where it has none)."""
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def engine_key(cfg: Any, engine: Any) -> Tuple[str, str]:
    """(backend, precision) of a loaded engine as calibrate keys its entries: the backend
    actually used, and the precision it runs (fp16 asked of an onnxruntime without TensorRT
    runs, and was measured, as fp32)."""
    used = ("tensorrt" if "tensorrt" in str(engine.info.get("backend", "")).lower()
            else "onnxruntime")
    return used, str(engine.info.get("precision") or cfg.precision)


def profile_mu(cfg: Any, spec: Any, engine: Any, mode: str) -> Tuple[Optional[float], str]:
    """mu of ``spec``'s engine in ``mode`` from ``cfg.capacity_profile``, or (None, why: which
    part of the entry's key has no entry, and the calibrate command that writes it)."""
    used, precision = engine_key(cfg, engine)
    threads = cfg.engine_threads  # a CPU entry of another thread count is no match
    mu = lookup_capacity(cfg.capacity_profile, spec, used, precision, mode,
                         threads=threads) if mode else None
    if mu is not None:
        return mu, ""
    part, why = missing_entry(cfg.capacity_profile, spec, used, precision, mode,
                              threads=threads)
    return None, "%s (`%s` writes it)" % (why, calibrate_hint(
        cfg.bundle, cfg.capacity_profile, used, precision, part, threads))


def mode_report(cfg: Any, specs: Dict[int, Any], engines: Dict[int, Any],
                mode: str) -> Tuple[Optional[CapacityReport], str]:
    """The worker's mu in ``mode`` from its calibration profile, every stage merged; or (None,
    why) when a stage has no entry (``profile_mu``) or no profile is configured."""
    if not cfg.capacity_profile:
        return None, "no capacity_profile"
    reports = []
    for h, spec in specs.items():
        mu, why = profile_mu(cfg, spec, engines[h], mode)
        if mu is None:
            return None, "stage %d: %s" % (spec.index, why)
        reports.append(CapacityReport(mu, float(spec.flops) / mu, 0.0, "profile", mode))
    merged = merge_reports(reports, float(sum(s.flops for s in specs.values())), False)
    return replace(merged, power_mode=mode), ""


def start_mode(cfg: Any, read: Callable[[], str] = current_power_mode) -> str:
    """The power mode a worker starts in: the config's ``power_mode``, else the one active now
    ("" when it cannot be read: logged)."""
    if cfg.power_mode:
        return cfg.power_mode
    try:
        return read()
    except Exception as exc:  # jtop's own errors, psutil: the mode is only looked up
        log.warning("power mode unknown (%s: %s); no profile entry can be found for it",
                    type(exc).__name__, exc)
        return ""


def worker_capacity(cfg: Any, specs: Dict[int, Any], engines: Dict[int, Any]) -> CapacityReport:
    """Start-up mu of a worker: per stage from its calibration profile or by timing the stage
    engine's call on its timing input, back to back on the clock its runs are timed by
    (``engines.timing``: calibrate's loop; an emulated device's real engine, unpadded), merged;
    the report names the power mode it was obtained in."""
    check_measurable(list(specs.values()))
    mode = start_mode(cfg)
    reports = []
    for h, spec in specs.items():
        engine = engines[h]
        profile: Optional[float] = None
        # emulated: no entry used (the file was checked at start, ``require_profile_file``)
        if cfg.capacity_profile and cfg.emulate_capacity_flops <= 0:
            profile, why = profile_mu(cfg, spec, engine, mode)
            if profile is None:
                log.warning("no calibration entry for stage %d in mode %s in %s: %s; timing the "
                            "engine instead", spec.index, mode or "?", cfg.capacity_profile, why)
        x = timing_input(spec)
        if profile is not None:  # not timed: as warm as if it were (module docstring)
            for _ in range(cfg.warmup_runs + cfg.timing_runs):
                engine.run(x)
        report = startup_capacity(float(spec.flops), engine.run, x, cfg.warmup_runs,
                                  cfg.timing_runs, cfg.emulate_capacity_flops, profile,
                                  engine_clock(engine))
        report = replace(report, power_mode=mode)
        log.info("stage %d on %s: %s", h, engine.info.get("backend", "?"), report.describe())
        reports.append(report)
    merged = merge_reports(reports, float(sum(s.flops for s in specs.values())),
                           cfg.emulate_capacity_flops > 0)
    return replace(merged, power_mode=mode)


class Capacity:
    """The one owner of this node's mu: start-up report, online estimator, current values.

    A source has no report (mu 0). With an estimator (``calibration.online``), observed service
    times update mu; without one, mu stays the start-up value. ``rebase`` makes a new expected
    value (a power mode's profile entry) the baseline, as if the worker had started with it.
    """

    def __init__(self, report: Optional[CapacityReport] = None, estimator: Any = None,
                 clock: Callable[[], float] = time.monotonic):
        self.report = report
        self.estimator = estimator
        self.startup_capacity_flops = report.capacity_flops if report is not None else 0.0
        self.startup_service_time_s = report.service_time_s if report is not None else 0.0
        self.clock = clock
        self._last_drift = False  # the estimator's drift flag as last seen
        self._logged_drift = False  # ... as the last line told it
        self._logged_at: Optional[float] = None  # clock() of the last drift line
        self._flips = 0  # flag changes since that line
        self.drift_changes = 0  # times the drift flag turned on or off

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
        """One task's service time; logs when mu drifts from its expected value and when it
        comes back (the estimator's flag, with hysteresis; see the module docstring)."""
        if self.estimator is None:
            return
        self.estimator.observe(service_time_s)
        drifted = bool(getattr(self.estimator, "drifting", False))
        if drifted != self._last_drift:
            self._last_drift = drifted
            self.drift_changes += 1
            self._flips += 1
        self._log_drift()

    def _log_drift(self) -> None:
        """Log the drift flag when it differs from what the last line said and that line is
        ``DRIFT_WARNING_INTERVAL_S`` old (or there is none), naming the flips in between."""
        if self._last_drift == self._logged_drift:
            return
        now = self.clock()
        if self._logged_at is not None and now - self._logged_at < DRIFT_WARNING_INTERVAL_S:
            return  # pending: the next observe or refresh after the interval logs it
        also = (" (and %d more changes since the last line)" % (self._flips - 1)
                if self._flips > 1 else "")
        mu = self.estimator.capacity_flops or 0.0
        mode = (" in mode %s" % self.report.power_mode
                if self.report is not None and self.report.power_mode else "")
        if self._last_drift:
            log.warning("capacity drifted: expected %.3g FLOP/s%s, now %.3g FLOP/s%s",
                        self.startup_capacity_flops, mode, mu, also)
        else:
            log.info("capacity back near its expected value: %.3g FLOP/s (expected %.3g%s)%s",
                     mu, self.startup_capacity_flops, mode, also)
        self._logged_drift, self._logged_at, self._flips = self._last_drift, now, 0

    def rebase(self, report: CapacityReport) -> None:
        """Take ``report`` (a power mode's profile entry) as the expected mu: the start-up
        values, the estimator's baseline and estimate start from it, the drift flag is off."""
        self.report = report
        self.startup_capacity_flops = report.capacity_flops
        self.startup_service_time_s = report.service_time_s
        if self.estimator is not None:
            self.estimator.rebase(report.capacity_flops)
        self._last_drift = self._logged_drift = False
        self._flips = 0

    def refresh(self, view: Any) -> None:
        """Write the current mu and service time into the policies' ``NodeView`` (and log a
        drift change left pending by the one-line-per-interval limit)."""
        if self.estimator is not None:
            self._log_drift()
        view.capacity_flops = self.capacity_flops
        view.service_time_s = self.service_time_s
