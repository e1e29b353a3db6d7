"""Timing one stage engine for a fixed time, with power, clock and temperature samples.

``measure_stage`` warms the engine up, then runs it back to back for ``seconds`` on a fixed
input, timing every run by ``engines.timing.timed_run`` on ``service_clock``. Between runs (at
most every ``sample_interval_s``) it takes a ``Reading`` from the sampler -- jtop on a Jetson,
psutil on the CPU path -- and reports: service time median and p90, mu = flops / median, mean
total power, clocks, peak temperature per sensor and whether throttling was seen (a clock cap
below its value at the start, or a sensor at its limit).

``measure_engine`` is how calibrate times a stage engine, by the rule a worker times it by at
start-up and while serving (``engines.timing``): the engine call alone, on the stage's timing
input, by the calling thread's CPU clock when the engine computes on that thread (onnxruntime
on the CPU with one intra-op thread), else the wall clock; the warm-up and the timed phase's
length stay on the wall clock.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, TextIO

import numpy as np

from calibration.jtop_adapter import Reading
from engines import timing


@dataclass(frozen=True)
class StageMeasurement:
    """What timing one stage engine produced."""

    samples: int  # timed runs
    service_time_median_s: float
    service_time_p90_s: float
    capacity_flops: float  # flops / median
    measured_seconds: float  # length of the timed phase
    power_avg_w: Optional[float] = None  # mean of the total-power samples, None without sensor
    clocks: Dict[str, float] = field(default_factory=dict)  # cap and mean current clock, kHz
    temperature_peak_c: Dict[str, float] = field(default_factory=dict)
    throttled: bool = False


class CpuSampler:
    """Readings on the CPU path through psutil: CPU clock and temperature sensors, no power."""

    def read(self) -> Reading:
        import psutil

        cur_khz = max_khz = None
        try:
            freq = psutil.cpu_freq()
        except (OSError, NotImplementedError, AttributeError):
            freq = None
        if freq is not None:
            cur_khz = float(freq.current) * 1000.0 if freq.current else None
            max_khz = float(freq.max) * 1000.0 if freq.max else None
        temps: Dict[str, float] = {}
        limits: Dict[str, float] = {}
        sensors = getattr(psutil, "sensors_temperatures", None)
        try:
            groups = sensors() if sensors else {}
        except (OSError, RuntimeError):
            groups = {}
        for group, entries in (groups or {}).items():
            for i, entry in enumerate(entries):
                name = "%s/%s" % (group, entry.label or i)
                temps[name] = float(entry.current)
                limit = entry.high or entry.critical
                if limit:
                    limits[name] = float(limit)
        return Reading(
            cpu_cur_khz=cur_khz,
            cpu_max_khz=max_khz,
            temperatures_c=temps,
            temperature_limits_c=limits,
        )


class ProgressBar:
    """One status line on ``stream`` (stderr): mode, stage and elapsed/total seconds.

    On a terminal the line is redrawn in place a few times a second; otherwise (a log file,
    journald) it is written once when a stage starts and once when it ends.
    """

    def __init__(
        self,
        stream: Optional[TextIO] = None,
        width: int = 24,
        min_interval_s: float = 0.25,
    ):
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.min_interval_s = min_interval_s
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = -1.0
        self._label = ""

    def start(self, label: str) -> None:
        self._label = label
        self._last = -1.0
        if not self._tty:
            self.stream.write("%s: measuring\n" % label)
            self.stream.flush()

    def update(self, done_s: float, total_s: float, phase: str = "") -> None:
        now = time.monotonic()
        if not self._tty or now - self._last < self.min_interval_s:
            return
        self._last = now
        frac = min(1.0, done_s / total_s) if total_s > 0 else 1.0
        filled = int(round(frac * self.width))
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write("\r%s [%s] %5.1f/%.1f s %s" % (self._label, bar, done_s, total_s, phase))
        self.stream.flush()

    def finish(self, summary: str) -> None:
        prefix = "\r" if self._tty else ""
        self.stream.write("%s%s: %s%s\n" % (prefix, self._label, summary, " " * 10 if self._tty else ""))
        self.stream.flush()


def _summarise_readings(readings: List[Reading]) -> Dict[str, Any]:
    power = [r.power_w for r in readings if r.power_w is not None]
    clocks: Dict[str, float] = {}
    for key in ("gpu_max_khz", "gpu_cur_khz", "cpu_max_khz", "cpu_cur_khz"):
        values = [getattr(r, key) for r in readings if getattr(r, key) is not None]
        if values:
            # caps: the lowest seen (a drop is throttling); current clocks: the mean under load
            clocks[key] = min(values) if key.endswith("max_khz") else float(np.mean(values))
    peaks: Dict[str, float] = {}
    limits: Dict[str, float] = {}
    for r in readings:
        for name, t in r.temperatures_c.items():
            peaks[name] = max(t, peaks.get(name, t))
        limits.update(r.temperature_limits_c)
    throttled = any(peaks[n] >= limits[n] for n in peaks if n in limits)
    if readings:
        first = readings[0]
        for key in ("gpu_max_khz", "cpu_max_khz"):
            start = getattr(first, key)
            if start is not None and key in clocks and clocks[key] < start:
                throttled = True
    return {
        "power_avg_w": float(np.mean(power)) if power else None,
        "clocks": clocks,
        "temperature_peak_c": peaks,
        "throttled": throttled,
    }


def measure_stage(
    run: Callable[[np.ndarray], Any],
    x: np.ndarray,
    flops: float,
    seconds: float,
    warmup_s: float = 1.0,
    sampler: Any = None,
    sample_interval_s: float = 0.5,
    progress: Optional[ProgressBar] = None,
    clock: Callable[[], float] = time.perf_counter,
    check: Optional[Callable[[], None]] = None,
    service_clock: Optional[Callable[[], float]] = None,
) -> StageMeasurement:
    """Warm up for ``warmup_s`` (at least 3 runs), then time ``run(x)`` back to back for
    ``seconds`` (at least 5 runs) and summarise; see the module docstring. ``clock`` paces the
    phases; ``service_clock`` (default ``clock``) times each run. ``check`` is called after
    every run; it may raise to stop the measurement (a pending SIGTERM)."""
    busy = clock if service_clock is None else service_clock
    total_s = warmup_s + seconds
    t_begin = clock()
    runs = 0
    while runs < 3 or clock() - t_begin < warmup_s:
        run(x)
        runs += 1
        if check is not None:
            check()
        if progress is not None:
            progress.update(clock() - t_begin, total_s, "warm-up")
    readings: List[Reading] = []
    times: List[float] = []
    next_sample = clock()
    t_start = clock()
    while len(times) < 5 or clock() - t_start < seconds:
        times.append(timing.timed_run(run, x, busy)[1])
        t1 = clock()
        if check is not None:
            check()
        if sampler is not None and t1 >= next_sample:
            readings.append(sampler.read())
            next_sample = t1 + sample_interval_s
        if progress is not None:
            progress.update(warmup_s + (t1 - t_start), total_s)
    measured_s = clock() - t_start
    if sampler is not None:
        readings.append(sampler.read())
    arr = np.asarray(times, dtype=np.float64)
    median = float(np.median(arr))
    summary = _summarise_readings(readings)
    return StageMeasurement(
        samples=len(times),
        service_time_median_s=median,
        service_time_p90_s=float(np.percentile(arr, 90)),
        capacity_flops=float(flops) / median if median > 0 else float("inf"),
        measured_seconds=measured_s,
        **summary,
    )


def measure_engine(engine: Any, stage: Any, seconds: float, **kw: Any) -> StageMeasurement:
    """``measure_stage`` of ``engine`` (the stage ``stage``, a ``StageSpec``) as a worker times
    it: on ``engines.timing.timing_input(stage)``, each run on ``engines.timing.engine_clock``
    (module docstring); ``kw`` are ``measure_stage``'s other options."""
    return measure_stage(engine.run, timing.timing_input(stage), float(stage.flops), seconds,
                         service_clock=timing.engine_clock(engine), **kw)
