"""The model columns of a local run over its measured window, not its warm-up.

The measured delay leaves out the tasks created in the warm-up; the ``model ms`` and ``fifo
sim ms`` columns take their routing from the nodes' send counters (``columns.routing_used``),
which the nodes keep over the whole run. A policy that routes uniformly until its first
configuration (DTO-EE) then shows a warm-up split the measured tasks never saw: one task sent
to a device 1000x slower makes the model see it overloaded. The records name only the worker a
task left at, not its path, so the routing cannot come from them; ``WindowSnapshot`` reads
every node's ``stats.json`` once the warm-up is over and the columns are recomputed from the
counters' growth after that reading (``columns.stats_delta``).

The nodes rewrite ``stats.json`` every ``status_interval_s``, so a reading taken that long
after the warm-up's end holds no warm-up send. The reading is kept only where it can be
trusted: every node's file read, no fault schedule (a process restarted by a fault counts
from zero again), and the records confirm the warm-up had ended one interval before it.
Otherwise the run keeps its whole-run columns and ``model_window`` says so.

A trusted reading leaves each node's counters over the window in the rate's folder
(``WINDOW_FILE``), from which ``edge-agent report`` redoes the same columns (``redo_window``);
a rate folder without one (its reading not trusted, or a run folder from before the file) is
reported with the whole-run columns, as the testbed printed them then.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from agent.config.checks import short
from agent.config.jsonfile import read_json_file
from agent.config.node import NodeConfig
from agent.errors import UsageError
from agent.ops.atomic import write_atomic
from agent.ops.state import RECORDS_FILE, STATS_FILE
from agent.testbed.columns import fifo_sim_delay, model_delay, routing_used, stats_delta
from agent.testbed.counters import read_stats
from agent.testbed.report import AFTER_WARMUP, WHOLE_RUN, RunResult, _finite, read_records
from agent.testbed.rundir import rate_label
from agent.testbed.topology import Topology
from agent.testbed.topology_bundle import StageInfo

# in each rate's folder, next to run.json: {"model_window", "read_mono", "stats": {node:
# {"counters", "routing"}}}, every node's counters grown since the reading after the warm-up
WINDOW_FILE = "window.json"


def status_interval_s(topo: Topology) -> float:
    """How often the agents rewrite ``stats.json``: the topology's ``agent`` setting, else the
    node config's default (what an agent given none runs with)."""
    default = NodeConfig.__dataclass_fields__["status_interval_s"].default
    got = (topo.agent or {}).get("status_interval_s", default)
    return float(got) if isinstance(got, (int, float)) and got > 0 else float(default)


class WindowSnapshot:
    """Every node's ``stats.json`` read one ``status_interval_s`` after each rate's warm-up.

    ``tick(rate_index, phase)`` is the driver's progress callback: the first ``load`` tick of
    a rate starts its clock (its sources are running by then, so the warm-up ends no later
    than ``warmup_s`` after it). ``apply`` recomputes a finished rate's columns.
    """

    def __init__(self, topo: Topology, stages: Sequence[StageInfo], run_dir: str,
                 clock: Callable[[], float] = time.monotonic):
        self.topo, self.stages, self.run_dir, self.clock = topo, list(stages), run_dir, clock
        self.interval = status_interval_s(topo)
        self.started: Dict[int, float] = {}
        self.taken: Dict[int, Tuple[float, Dict[str, Optional[dict]]]] = {}

    def tick(self, i: int, phase: str) -> None:
        """Start rate ``i``'s clock at its first load tick; read the nodes once it is due."""
        if phase != "load" or i in self.taken:
            return
        now = self.clock()
        start = self.started.setdefault(i, now)
        if now - start >= self.topo.warmup_s + self.interval:
            self.taken[i] = (now, {n: read_stats(os.path.join(self.run_dir, n, STATS_FILE))
                                   for n in self.topo.node_ids()})

    def apply(self, i: int, r: RunResult) -> None:
        """Recompute ``r``'s routing and model columns over the counts after rate ``i``'s
        reading; leave them, marked ``WHOLE_RUN``, where the reading cannot be trusted."""
        r.model_window = WHOLE_RUN
        snap = self.taken.get(i)
        if snap is None or self.topo.faults or r.note or any(
                v is None for v in snap[1].values()):
            return
        rate_dir = os.path.join(self.run_dir, rate_label(r.rate))
        created = [t for s in self.topo.sources
                   for t in _created_mono(os.path.join(rate_dir, s.id, RECORDS_FILE))]
        if not created or snap[0] - self.interval < min(created) + self.topo.warmup_s:
            return  # the reading may hold warm-up sends
        final: Dict[str, Optional[dict]] = {
            s.id: read_stats(os.path.join(rate_dir, s.id, STATS_FILE)) for s in self.topo.sources}
        final.update({w.id: read_stats(os.path.join(self.run_dir, w.id, STATS_FILE))
                      for w in self.topo.workers})
        if any(v is None for v in final.values()):
            return
        window = stats_delta(snap[1], final)
        try:  # first: a report finds the window the testbed printed, or none and whole-run
            write_window(rate_dir, snap[0], window)
        except OSError:
            return
        window_columns(self.topo, self.stages, r, window)


def write_window(rate_dir: str, read_mono: float, window: Mapping[str, Optional[dict]]
                 ) -> None:
    """``rate_dir/WINDOW_FILE``, atomically: each node's ``counters`` and ``routing`` over the
    window (all ``routing_used`` reads) and when the reading was taken (monotonic s)."""
    obj = {"model_window": AFTER_WARMUP, "read_mono": read_mono,
           "stats": {n: None if st is None else {"counters": st.get("counters") or {},
                                                 "routing": st.get("routing")}
                     for n, st in window.items()}}
    write_atomic(os.path.join(rate_dir, WINDOW_FILE),
                 json.dumps(obj, indent=1, sort_keys=True) + "\n")


def window_columns(topo: Topology, stages: Sequence[StageInfo], r: RunResult,
                   window: Mapping[str, Optional[dict]]) -> None:
    """``r``'s routing, model and fifo sim columns from the nodes' counters over the window."""
    r.routing = routing_used(topo, window)
    r.model_delay_s = model_delay(topo, stages, r.rate, r.routing, r.remaining)
    r.fifo_sim_delay_s = fifo_sim_delay(topo, stages, r.rate, r.routing, r.remaining)
    r.model_window = AFTER_WARMUP


def redo_window(topo: Topology, stages: Sequence[StageInfo], r: RunResult, rate_dir: str
                ) -> Optional[str]:
    """``edge-agent report``: ``r``'s columns over the window its rate folder keeps
    (``WINDOW_FILE``), as the testbed printed them. Without that file ``r`` keeps its
    whole-run columns, marked ``WHOLE_RUN``; so it does when the file is damaged, and a line
    naming the file is returned."""
    r.model_window = WHOLE_RUN
    path = os.path.join(rate_dir, WINDOW_FILE)
    if not os.path.lexists(path):
        return None
    keep = "model and fifo sim are over the whole run"
    try:
        obj = read_json_file(path, UsageError, "model window")
    except UsageError as exc:
        return "%s; %s" % (exc, keep)
    stats = obj.get("stats") if isinstance(obj, dict) else None
    if not (isinstance(stats, dict) and all(v is None or isinstance(v, dict)
                                            for v in stats.values())):
        return "%s: stats: must be an object {node: {counters, routing} or null}, got %s; %s" \
            % (path, short(stats), keep)
    bad = stats_problem(stats) or _window_problem(topo, stats)
    if bad:
        return "%s: %s; %s" % (path, bad, keep)
    before = (r.routing, r.model_delay_s, r.fifo_sim_delay_s)
    try:
        window_columns(topo, stages, r, stats)
    except (UsageError, ValueError, ZeroDivisionError, KeyError, TypeError) as exc:  # no run's
        r.routing, r.model_delay_s, r.fifo_sim_delay_s = before
        r.model_window = WHOLE_RUN
        return "%s: cannot route by it (%s); %s" % (path, short(str(exc)), keep)
    return None


def _window_problem(topo: Topology, stats: Mapping[str, Optional[dict]]) -> Optional[str]:
    """What a window's stats lack that the testbed always writes: every node of the topology
    with its counters (a node left out would route uniformly, unsaid) and finite counts of at
    least 0 (the counters' growth over the window)."""
    missing = [n for n in topo.node_ids()
               if not isinstance((stats.get(n) or {}).get("counters"), dict)]
    if missing:
        return "stats: no counters for %s (the testbed writes every node's)" % ", ".join(
            missing[:5])
    for node, st in stats.items():
        for key in ("counters", "routing"):
            v = (st or {}).get(key) or {}
            neg = next((k for k, x in v.items() if not 0 <= x < math.inf), None)
            if neg is not None:
                return "stats.%s.%s.%s: must be in [0, inf), got %s" % (
                    node if len(node) <= 64 else short(node), key,
                    neg if len(str(neg)) <= 64 else short(neg), short(v[neg]))
    return None


def stats_problem(stats: Mapping[str, Optional[dict]]) -> Optional[str]:
    """The first part of a ``{node: stats}`` (a run.json's, a window's) the routing columns
    cannot read (each node's ``counters`` and ``routing``), as ``stats.NODE.KEY: must be
    ...``; None when every part can be read."""
    for node, st in stats.items():
        for key in ("counters", "routing"):
            v = (st or {}).get(key)
            if v is not None and not (isinstance(v, dict) and all(_finite(x)
                                                                   for x in v.values())):
                return "stats.%s.%s: must be an object {name: number} or null, got %s" % (
                    node if len(node) <= 64 else short(node), key, short(v))
    return None


def _created_mono(path: str) -> List[float]:
    """The ``created_mono`` of every task record of a records file, read by the summary's own
    reader (``report.read_records``: a line that is no task record is passed over, as the
    summary passes it over); none when the file cannot be read."""
    try:
        recs = read_records(path)
    except UsageError:
        return []
    return [float(r["created_mono"]) for r in recs if _finite(r.get("created_mono"))]
