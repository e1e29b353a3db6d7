"""Watching the power mode while a worker serves: an nvpmodel switch changes its capacity mu.

A worker reads its power mode at start-up (``capacity.start_mode``) and takes mu from its
calibration profile's entry for it. Someone may switch the mode later (``nvpmodel -m 0``, a
thermal policy); without a watch mu, the ``edge_agent_power_mode`` metric and ``status`` would
tell the old mode until a restart. So on a Jetson, every ``power_mode_check_interval_s``, the
worker reads the mode again through the reader ``calibration.profile.current_power_mode``
(jtop). A node config with ``power_mode = "NAME"`` fixes the mode, and off a Jetson the CPU path
has one mode: no watch (``JETSON_ROOT``).

Two parts, kept apart:

- ``PowerWatch`` (what to do on a change; pure, no reading): one WARNING line naming the old
  and new mode and the new mu with its source; the metric; and mu itself. With the profile's
  entry for the new mode, mu becomes that entry (``Capacity.rebase``: the online estimator's
  baseline and estimate start from it). Without one (mode not calibrated, no profile), mu
  cannot be timed as at start-up (the engine is serving), so the online estimate is kept: it
  follows the measured service times within a few dozen tasks (with ``online_capacity =
  false``, or several stages, mu stays as it was). Emulated capacity stays emulated. The view
  is refreshed at once, so the next heartbeat and DTO-EE's next slot use the new mu. A read
  that fails (jtop.service stopped or restarting) keeps the mode: each distinct error is
  logged once until a read works again, which one INFO line reports.
- ``ModeReader`` (the adapter): a jtop read opens a connection to the jtop service and waits
  for its first update (0.2-0.5 s on the emulated Orin of the tests, per read), far too long
  for the I/O loop (DTO-EE rounds are 50 ms). Each read (and, on a change, the profile lookup)
  runs on a short-lived thread of its own; the loop only picks up a finished result. At most
  one read is in flight: one that hangs holds back the next reads (logged once), never the loop.

``NodeHooks.gauges`` (every heartbeat) calls ``PowerModeWatch.poll``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Set, Tuple

from engines.accelerator import is_jetson

log = logging.getLogger("agent.run")  # a serving agent's own lines are logged under this name

# A read in flight this long is reported (once) as hanging; the next read waits for it.
READ_HUNG_S = 60.0
# Watched only where nvpmodel modes exist: an L4T release file under this root. Off a Jetson
# the CPU path is one mode, and a jtop client made per read (jetson-stats installed for tests
# or tools) runs nvcc, dpkg, ldconfig and, finding no CUDA libraries, gcc: 0.5 CPU-s a minute.
JETSON_ROOT = "/"
# Distinct read errors logged while reads fail (an error text that varied would log each read).
ERRORS_PER_OUTAGE = 4


@dataclass(frozen=True)
class ModeReading:
    """One read of the power mode: the mode and, when it differs from the known one, the
    profile's capacity in it (``report``; None with ``why`` when there is no entry)."""

    mode: str
    report: Any = None  # capacity.CapacityReport, or None
    why: str = ""  # why there is no report
    error: str = ""  # the read failed: why (``mode`` is then "")


class PowerWatch:
    """What a worker does when its power mode changes (module docstring); ``mode`` is the one
    it knows, ``changes`` how many switches it saw."""

    def __init__(self, mode: str, capacity: Any, view: Any, metrics: Any, emulated: bool):
        self.mode = mode
        self.capacity = capacity
        self.view = view
        self.metrics = metrics
        self.emulated = emulated
        self.changes = 0
        # the read errors logged since the last read that worked, and how many reads failed:
        # a jtop service restarting answers "Lost connection", "not active", "Broken pipe"
        # and "Connection reset" in turn; keeping only the last one logged every alternation
        self._failed: Set[str] = set()
        self._failures = 0

    def apply(self, reading: ModeReading) -> bool:
        """Act on one reading; True when the mode changed. A read error is logged once per
        outage (each distinct one), and the first read that works again says so."""
        if reading.error:
            self._failures += 1
            if reading.error not in self._failed and len(self._failed) < ERRORS_PER_OUTAGE:
                log.warning("power mode could not be read (%s); keeping mode %s", reading.error,
                            self.mode or "?")
                self._failed.add(reading.error)
            return False
        self.read_ok(reading.mode)
        if not reading.mode or reading.mode == self.mode:
            return False
        old, self.mode = self.mode, reading.mode
        self.changes += 1
        self.metrics.power_mode(self.mode)
        cap = self.capacity
        if self.emulated:
            what = "capacity stays emulated at %.3g FLOP/s" % cap.capacity_flops
        elif reading.report is not None:
            cap.rebase(reading.report)
            what = "capacity %.3g FLOP/s (profile entry for %s)" % (cap.capacity_flops, self.mode)
        elif cap.estimator is not None:
            what = ("no profile entry for %s (%s): keeping the online estimate %.3g FLOP/s, "
                    "which follows the measured service times" % (self.mode, reading.why,
                                                                   cap.capacity_flops))
        else:
            what = ("no profile entry for %s (%s): keeping %.3g FLOP/s (no online estimate)"
                    % (self.mode, reading.why, cap.capacity_flops))
        cap.refresh(self.view)
        log.warning("power mode changed from %s to %s: %s", old or "?", self.mode, what)
        return True

    def read_ok(self, mode: str) -> None:
        """A read worked (``mode``: what it gave): after failed reads, one INFO line says so."""
        if self._failures:
            log.info("power mode read again after %d failed read(s): %s", self._failures,
                     mode or "?")
            self._failed, self._failures = set(), 0


class ModeReader:
    """Reads the power mode off the loop's thread (module docstring). ``read()`` returns the
    mode's name; ``lookup(mode)`` returns (report or None, why) and runs only when the mode
    read differs from the one known; ``spawn(fn)`` runs ``fn`` on another thread."""

    def __init__(self, read: Callable[[], str], lookup: Callable[[str], Tuple[Any, str]],
                 interval_s: float, clock: Callable[[], float] = time.monotonic,
                 spawn: Optional[Callable[[Callable[[], None]], None]] = None):
        self.read = read
        self.lookup = lookup
        self.interval_s = float(interval_s)
        self.clock = clock
        self.spawn = spawn if spawn is not None else _thread
        self._next = clock() + self.interval_s  # the start-up read was just made
        self._started: Optional[float] = None  # clock() when the read in flight began
        self._done: Optional[ModeReading] = None  # its result, set by the reading thread
        self._hung_logged = False
        self._lock = threading.Lock()

    def poll(self, known: str) -> Optional[ModeReading]:
        """A finished reading (once), else None; starts the next read when it is due.
        ``known``: the mode the worker knows (the profile is looked up only for another)."""
        now = self.clock()
        with self._lock:
            done, self._done = self._done, None
            if done is not None:
                self._started = None
        if done is not None:
            return done
        if self._started is not None:
            if now - self._started > READ_HUNG_S and not self._hung_logged:
                log.warning("a power mode read has not returned for %.0f s; no new read until "
                            "it does", now - self._started)
                self._hung_logged = True
            return None
        if now >= self._next:
            self._next = now + self.interval_s
            self._started, self._hung_logged = now, False
            self.spawn(lambda: self._read_once(known))
        return None

    def _read_once(self, known: str) -> None:
        """On the reading thread: one read, and the lookup when the mode changed."""
        try:
            mode = str(self.read())
            report, why = self.lookup(mode) if mode and mode != known else (None, "")
            got = ModeReading(mode, report, why)
        except Exception as exc:  # jtop's own errors, a damaged profile: reported, not raised
            got = ModeReading("", error="%s: %s" % (type(exc).__name__, exc))
        with self._lock:
            self._done = got


def _thread(fn: Callable[[], None]) -> None:
    threading.Thread(target=fn, name="power-mode-read", daemon=True).start()


class PowerModeWatch:
    """A ``ModeReader`` feeding a ``PowerWatch``; ``poll`` runs on the loop's thread. A new mode
    is followed once two reads in a row give it (one read between two others is no switch),
    and the CPU path's names (``cpu-GOVERNOR-NNNNMHz``) count as one mode while the governor
    stays: without a frequency cap the name carries the current frequency, and a frequency
    near a 100 MHz boundary would read as a switch every few seconds."""

    def __init__(self, reader: ModeReader, watch: PowerWatch):
        self.reader = reader
        self.watch = watch
        self._seen = ""  # a new mode read once, followed if the next read gives it again

    def poll(self) -> bool:
        """Apply a finished reading, start the next when due; True when the mode changed."""
        got = self.reader.poll(self.watch.mode)
        if got is None:
            return False
        if not got.error:  # a read that works ends an outage, whatever mode it gives
            self.watch.read_ok(got.mode)
        if got.error or same_mode(got.mode, self.watch.mode):
            self._seen = ""
            return self.watch.apply(got) if got.error else False
        if got.mode != self._seen:
            self._seen = got.mode
            return False
        self._seen = ""
        return self.watch.apply(got)


def same_mode(read: str, known: str) -> bool:
    """True when ``read`` is no switch from ``known``: the same name, or two CPU-path names
    (``calibration.host.cpu_mode_name``) of one governor."""
    from calibration.host import cpu_mode_governor

    if not read or read == known:
        return True
    governor = cpu_mode_governor(read)
    return governor is not None and governor == cpu_mode_governor(known)


def attach(cfg: Any, capacity: Any, view: Any, metrics: Any, hooks: Any, status: Any,
           specs: Any, engines: Any) -> Optional[PowerModeWatch]:
    """Report a worker's power mode (metric, stats.json) and, unless its config fixes the
    mode, watch it while serving (``hooks.power``); a source has none (returns None)."""
    from agent.node.capacity import mode_report
    from calibration.profile import current_power_mode

    if cfg.role != "worker" or capacity.report is None:
        return None
    watch = PowerWatch(capacity.report.power_mode, capacity, view, metrics,
                       cfg.emulate_capacity_flops > 0)
    status.power_mode = lambda: watch.mode
    if watch.mode:
        metrics.power_mode(watch.mode)
    if cfg.power_mode or not is_jetson(JETSON_ROOT):  # fixed by the operator; no nvpmodel modes
        return None
    if watch.emulated:  # the profile is not read: mu stays the emulated one
        lookup = lambda m: (None, "capacity emulated")  # noqa: E731
    else:
        lookup = lambda m: mode_report(cfg, specs, engines, m)  # noqa: E731
    reader = ModeReader(current_power_mode, lookup, cfg.power_mode_check_interval_s)
    hooks.power = PowerModeWatch(reader, watch)
    return hooks.power
