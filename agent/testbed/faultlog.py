"""A rate's fault log kept in its run folder, so ``edge-agent report`` redoes the per-phase
delays and recovery time the testbed printed.

The testbed writes ``POLICY/rate-R/faults.json`` after each rate with faults: the injector's
log (``agent.testbed.inject.FaultRunner.log``: monotonic begin/end times, the clock of the
sources' records) and the monotonic time the load started. ``redo_fault_phases`` gives it back
to the testbed's own code (``add_fault_phases``), so the report's phase table is the
testbed's. A run folder from before this file has only the relative log in ``results.json``
(seconds after the load's start, and wall-clock times): the start is then found by mapping
the first fault's wall-clock begin onto the monotonic clock with the records' own pairs of
``created_wall``/``created_mono`` (good to a few milliseconds). A run without faults is left
as it is.
"""

from __future__ import annotations

import json
import math
import os
from typing import List, Mapping, Optional

from agent.config.jsonfile import read_json_file
from agent.errors import UsageError
from agent.ops.atomic import write_atomic
from agent.testbed.inject import FaultRunner, add_fault_phases
from agent.testbed.report import read_records

FAULT_LOG = "faults.json"
RESULTS = "results.json"  # the testbed's results, in the run folder


def record_fault_phases(result, runner: FaultRunner, records: Mapping[str, str],
                        warmup_s: float, directory: str) -> None:
    """``add_fault_phases`` for a finished rate, and its log kept in ``directory``."""
    add_fault_phases(result, runner, records, warmup_s)
    if runner.log and runner.started_at is not None:
        write_atomic(os.path.join(directory, FAULT_LOG), json.dumps(
            {"started_mono": runner.started_at, "log": runner.log}, indent=1) + "\n")


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _log_ok(log, keys) -> bool:
    """A list of fault entries, each with a number under ``keys[0]`` and, if present,
    ``keys[1]``."""
    return isinstance(log, list) and bool(log) and all(
        isinstance(e, dict) and _num(e.get(keys[0])) and (keys[1] not in e or _num(e[keys[1]]))
        for e in log)


def _replay(result, log: List[dict], started: float, records: Mapping[str, str],
            warmup_s: float) -> None:
    runner = FaultRunner([], None)
    runner.log, runner.started_at = log, started
    add_fault_phases(result, runner, records, warmup_s)


def redo_fault_phases(result, rate_dir: str, records: Mapping[str, str], warmup_s: float
                      ) -> Optional[str]:
    """Fill ``result``'s faults, phases and recovery time from the run folder's fault log;
    a line naming the file when it is damaged (the result then stays without them)."""
    path = os.path.join(rate_dir, FAULT_LOG)
    if os.path.lexists(path):
        try:
            obj = read_json_file(path, UsageError, "fault log")
        except UsageError as exc:
            return "%s; the delay per phase is left out" % exc
        if not (isinstance(obj, dict) and _num(obj.get("started_mono"))
                and _log_ok(obj.get("log"), ("began_mono", "ended_mono"))):
            return "%s: not a fault log (started_mono and a log of faults with began_mono are " \
                   "needed); the delay per phase is left out" % path
        _replay(result, obj["log"], float(obj["started_mono"]), records, warmup_s)
        return None
    return _from_results(result, rate_dir, records, warmup_s)


def _from_results(result, rate_dir: str, records: Mapping[str, str], warmup_s: float
                  ) -> Optional[str]:
    """The older run folder's way: the rate's relative log in ``results.json``."""
    path = os.path.join(os.path.dirname(os.path.dirname(rate_dir)), RESULTS)
    if not os.path.lexists(path):
        return None  # a run stopped before its first result: nothing to redo
    try:
        obj = read_json_file(path, UsageError, "results")
        runs = obj.get("runs") if isinstance(obj, dict) else None
        if not isinstance(runs, list):
            raise UsageError("%s: not the testbed's results (no list of runs)" % path)
    except UsageError as exc:
        return "%s; the delay per phase is left out" % exc
    mine = [r for r in runs if isinstance(r, dict) and r.get("policy") == result.policy
            and _num(r.get("rate")) and abs(float(r["rate"]) - result.rate) < 1e-6]
    faults = mine[0].get("faults") if mine else None
    if not faults:
        return None  # a rate without faults, or not in the results (cut short)
    if not _log_ok(faults, ("began_s", "ended_s")) or not _num(faults[0].get("began_wall")):
        return "%s: faults of %s at %g/s: began_s and began_wall are needed; the delay per " \
               "phase is left out" % (path, result.policy, result.rate)
    pairs = sorted(float(r["created_mono"]) - float(r["created_wall"])
                   for p in records.values() for r in _readable(p)
                   if _num(r.get("created_mono")) and _num(r.get("created_wall")))
    if not pairs:
        return None  # no record holds both clocks: the faults cannot be placed
    offset = pairs[len(pairs) // 2]  # monotonic minus wall clock, as the sources saw it
    started = float(faults[0]["began_wall"]) + offset - float(faults[0]["began_s"])
    log = []
    for e in faults:
        d = {k: v for k, v in e.items() if k not in ("began_s", "ended_s", "target_resumed_s")}
        d["began_mono"] = started + float(e["began_s"])
        if "ended_s" in e:
            d["ended_mono"] = started + float(e["ended_s"])
        log.append(d)
    _replay(result, log, started, records, warmup_s)
    return None


def _readable(path: str) -> List[dict]:
    try:
        return read_records(path)
    except UsageError:  # named by the summary already
        return []
