"""Emulated capacities the workers could not reach, for a WARN line under ``emulated:``.

A worker emulates a device by padding each task's service time to flops / its
``emulate_capacity_flops``; padding only slows the engine down, so an emulated capacity above
what the engine measures on this machine is never reached, and the worker serves slower than
the topology (and the model columns) say. The worker times its engine at start and logs that
case in its own words (``agent.node.capacity.startup_capacity``); its ``stats.json`` holds the
emulated capacity only, so its log is the one record of the measured speed. The testbed reads
the workers' logs in the run folder (local runs: a fleet's logs are on its devices).
"""

from __future__ import annotations

import os
import re
from typing import Dict, List, Sequence

from agent.testbed.topology import Topology

# agent.node.capacity's warning: "emulate_capacity_flops 1e+15 is above this machine's
# measured 2.27e+10 FLOP/s; the emulated speed cannot be reached"
_UNREACHABLE = re.compile(r"emulate_capacity_flops (\S+) is above this machine's measured "
                          r"(\S+) FLOP/s")
_LOG_READ_BYTES = 1 << 20  # the start-up lines come first; a long log's tail is not needed


def unreachable_capacities(topo: Topology, run_dir: str) -> Dict[str, Dict[str, float]]:
    """{worker: {"emulated_flops", "measured_flops"}} for every emulating worker whose log in
    ``run_dir`` (``<id>.log``) says its engine measured slower than its emulated capacity.

    A worker holding several stages times each; the slowest measurement is kept. A restarted
    worker appends to the same log, so every start it made counts.
    """
    out: Dict[str, Dict[str, float]] = {}
    for w in topo.workers:
        if w.emulate_capacity_flops is None:
            continue
        try:
            with open(os.path.join(run_dir, w.id + ".log"), "r", encoding="utf-8",
                      errors="replace") as f:
                text = f.read(_LOG_READ_BYTES)
        except OSError:
            continue  # no log (fleet, or the worker never started): nothing to tell
        for m in _UNREACHABLE.finditer(text):
            try:
                emulated, measured = float(m.group(1)), float(m.group(2))
            except ValueError:
                continue
            got = out.get(w.id)
            if got is None or measured < got["measured_flops"]:
                out[w.id] = {"emulated_flops": emulated, "measured_flops": measured}
    return out


def capacity_warning_lines(found: Sequence[Dict[str, Dict[str, float]]]) -> List[str]:
    """One WARN line naming every worker of ``found`` (one mapping per run, as
    ``unreachable_capacities`` gives) with its emulated and measured capacity; none if empty."""
    merged: Dict[str, Dict[str, float]] = {}
    for one in found:
        for w, v in one.items():
            if w not in merged or v["measured_flops"] < merged[w]["measured_flops"]:
                merged[w] = v
    if not merged:
        return []
    return ["WARN emulated capacity not reached: %s; this machine's engine is slower, so those "
            "workers served slower than the topology (and the model columns) assume"
            % ", ".join("%s %.3g FLOP/s (measured %.3g)" % (w, v["emulated_flops"],
                                                          v["measured_flops"])
                        for w, v in sorted(merged.items()))]
