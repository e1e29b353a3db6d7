"""Does a node's stop fit its unit's ``TimeoutStopSec``? ``doctor --config``'s "node stop time".

On SIGTERM (``systemctl stop``, ``restart``, a rolling upgrade) an agent drains for up to
``drain_timeout_s`` (a source waits for its answers in flight, a worker finishes what it holds),
then closes: its inference thread is joined, its sockets linger, its final state, stats and
records are written. systemd waits ``TimeoutStopSec`` (30 s in the shipped unit) for all of it,
then SIGKILLs the agent: the drain is cut short, its tasks in flight are recorded as lost only
at the next start (reason crash), its state is not saved and the unit is marked failed. So
``drain_timeout_s`` + ``CLOSE_MARGIN_S`` must fit in the unit's stop timeout; the config alone
cannot say (a node run by hand, the testbed, a unit given more time by a drop-in), so doctor
compares the two, naming both numbers and both fixes.

The unit's value is systemd's own (``systemctl show``) where the unit is loaded; else it is read
from the unit files on disk (``/etc/systemd/system/edge-agent@.service`` and its drop-ins, the
last ``TimeoutStopSec=`` winning), else from the shipped unit; a value found only in the shipped
file gives a WARN, not a FAIL (the installed unit may differ).
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
from typing import Any, List, Optional, Tuple

from agent.ops.doctor_check import FAIL, OK, WARN, Check
from agent.ops.paths import InstallError, unit_dir

UNIT = "edge-agent@.service"
# after the drain: the inference thread's join (``InferenceThread.stop``, 5 s at most), the
# sockets' lingers (``agent.net.transport_stop``, 0.15 s), the final state, stats and records
# writes with their fsyncs (seconds on a slow SD card)
CLOSE_MARGIN_S = 10.0
SYSTEMCTL_WAIT_S = 5.0
_SPAN_UNITS = {"us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3, "s": 1.0, "sec": 1.0,
               "second": 1.0, "seconds": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
               "minutes": 60.0, "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0}


def parse_timespan(text: str) -> Optional[float]:
    """Seconds of a systemd time span ("30s", "1min 30s", "90", "500ms"); ``inf`` for
    "infinity" (no timeout); None when it is not one."""
    text = text.strip()
    if text == "infinity":
        return float("inf")
    if re.fullmatch(r"\d+(\.\d+)?", text):  # a bare number: seconds
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]+)", text)
    if not parts or re.sub(r"[\d.\sa-z]", "", text) or any(u not in _SPAN_UNITS for _, u in parts):
        return None
    return sum(float(n) * _SPAN_UNITS[u] for n, u in parts)


def _from_files(paths: List[str]) -> Optional[Tuple[float, str]]:
    """The last ``TimeoutStopSec=`` (or ``TimeoutSec=``, which sets it too) in ``paths``."""
    found = None
    for path in paths:
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for line in lines:
            key, _, value = line.strip().partition("=")
            if key in ("TimeoutStopSec", "TimeoutSec"):
                seconds = parse_timespan(value)
                if seconds is not None:
                    found = (seconds, path)
    return found


def _from_systemd(instance: str) -> Optional[float]:
    """``TimeoutStopUSec`` of the loaded unit edge-agent@INSTANCE, or None (no systemd here,
    or the unit is not installed)."""
    unit = "edge-agent@%s.service" % instance
    try:
        proc = subprocess.run(["systemctl", "show", "-p", "LoadState,TimeoutStopUSec", unit],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              universal_newlines=True, timeout=SYSTEMCTL_WAIT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    props = dict(ln.partition("=")[::2] for ln in proc.stdout.splitlines())
    if proc.returncode != 0 or props.get("LoadState") != "loaded":
        return None
    return parse_timespan(props.get("TimeoutStopUSec", ""))


def unit_stop_timeout(instance: str, root: str = "/",
                      shipped: Optional[str] = None) -> Optional[Tuple[float, str, bool]]:
    """(seconds, where it was read, installed?) of edge-agent@INSTANCE's stop timeout; None
    when no unit says. ``shipped``: the shipped unit file (None: found as install finds it)."""
    if root == "/":
        seconds = _from_systemd(instance)
        if seconds is not None:
            return seconds, "systemctl show edge-agent@%s" % instance, True
    system = os.path.join(root, "etc/systemd/system")
    paths = [os.path.join(system, UNIT)]
    for unit in (UNIT, "edge-agent@%s.service" % instance):  # drop-ins: template's, instance's
        paths += sorted(glob.glob(os.path.join(system, unit + ".d", "*.conf")))
    if os.path.exists(paths[0]):
        found = _from_files(paths)
        if found is not None:
            return found[0], found[1], True
    if shipped is None:
        try:
            shipped = os.path.join(unit_dir(), UNIT)
        except InstallError:
            return None
    found = _from_files([shipped])
    return (found[0], found[1], False) if found is not None else None


def check_stop_time(cfg: Any, instance: str, root: str = "/",
                    shipped: Optional[str] = None) -> Check:
    """"node stop time": ``cfg``'s ``drain_timeout_s`` and ``CLOSE_MARGIN_S`` against the
    stop timeout of edge-agent@INSTANCE (``unit_stop_timeout``)."""
    need = cfg.drain_timeout_s + CLOSE_MARGIN_S
    unit = "edge-agent@%s" % instance
    got = unit_stop_timeout(instance, root, shipped)
    if got is None:
        return Check("node stop time", OK, "drain_timeout_s = %g s; no unit file found to "
                     "compare with" % cfg.drain_timeout_s)
    limit, where, installed = got
    if need <= limit:
        return Check("node stop time", OK, "drain_timeout_s = %g s + %g s to close fit %s's "
                     "TimeoutStopSec = %s (%s)" % (cfg.drain_timeout_s, CLOSE_MARGIN_S, unit,
                                                   _span(limit), where))
    return Check(
        "node stop time", FAIL if installed else WARN,
        "drain_timeout_s = %g s + %g s to close is longer than %s's TimeoutStopSec = %s (%s): "
        "systemd SIGKILLs the agent mid-drain (tasks in flight lost, state not saved, the unit "
        "failed)" % (cfg.drain_timeout_s, CLOSE_MARGIN_S, unit, _span(limit), where),
        "set drain_timeout_s = %g or less in the config, or give the unit the time: `sudo "
        "systemctl edit %s` with [Service] TimeoutStopSec=%ds" % (max(limit - CLOSE_MARGIN_S, 0.0), unit, int(-(-need // 1))))


def _span(seconds: float) -> str:
    return "%gs" % seconds
