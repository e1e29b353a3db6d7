"""The model columns of a local run over its measured window, not its warm-up.

(``RunResult`` is typed ``Any`` here: ``agent.testbed.report`` imports this module.)

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
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from agent.config.node import NodeConfig
from agent.testbed.columns import fifo_sim_delay, model_delay, routing_used, stats_delta
from agent.testbed.counters import STATS_FILE, read_stats
from agent.testbed.rundir import rate_label
from agent.testbed.topology import StageInfo, Topology

WHOLE_RUN = "whole run"  # model_window of a run whose columns include the warm-up
AFTER_WARMUP = "after warm-up"  # ... of one whose routing counts only sends after it


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

    def apply(self, i: int, r: Any) -> None:
        """Recompute ``r``'s routing and model columns over the counts after rate ``i``'s
        reading; leave them, marked ``WHOLE_RUN``, where the reading cannot be trusted."""
        r.model_window = WHOLE_RUN
        snap = self.taken.get(i)
        if snap is None or self.topo.faults or r.note or any(
                v is None for v in snap[1].values()):
            return
        rate_dir = os.path.join(self.run_dir, rate_label(r.rate))
        created = [t for s in self.topo.sources
                   for t in _created_mono(os.path.join(rate_dir, s.id, "records.jsonl"))]
        if not created or snap[0] - self.interval < min(created) + self.topo.warmup_s:
            return  # the reading may hold warm-up sends
        final: Dict[str, Optional[dict]] = {
            s.id: read_stats(os.path.join(rate_dir, s.id, STATS_FILE)) for s in self.topo.sources}
        final.update({w.id: read_stats(os.path.join(self.run_dir, w.id, STATS_FILE))
                      for w in self.topo.workers})
        if any(v is None for v in final.values()):
            return
        window = stats_delta(snap[1], final)
        r.routing = routing_used(self.topo, window)
        r.model_delay_s = model_delay(self.topo, self.stages, r.rate, r.routing, r.remaining)
        r.fifo_sim_delay_s = fifo_sim_delay(self.topo, self.stages, r.rate, r.routing,
                                            r.remaining)
        r.model_window = AFTER_WARMUP


def window_lines(runs: Sequence[Any]) -> List[str]:
    """One line when some run's model columns still include its warm-up (``WHOLE_RUN``)."""
    whole = ["%s@%g/s" % (r.policy, r.rate) for r in runs if r.model_window == WHOLE_RUN]
    if not whole:
        return []
    return ["model, fifo sim: routing over the whole run, warm-up included, for %s (its "
            "send counters could not be read at the warm-up's end)" % ", ".join(whole)]


def _created_mono(path: str) -> List[float]:
    """The ``created_mono`` of every record in a records file (none if it cannot be read; a
    damaged line is passed over, as the summary passes over it)."""
    out: List[float] = []
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    t = json.loads(line).get("created_mono")
                except (ValueError, AttributeError):
                    continue
                if isinstance(t, (int, float)) and not isinstance(t, bool):
                    out.append(float(t))
    except OSError:
        pass
    return out
