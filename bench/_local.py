"""Shared by the benches: a topology on the demo bundle started as local agent processes."""

from __future__ import annotations

import os
import platform
import signal
import string
import sys
import tempfile
from typing import Dict, List, Optional

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from agent.testbed.local import node_configs, read_stats  # noqa: E402
from agent.testbed.procs import LocalAgents  # noqa: E402
from agent.testbed.report import read_records  # noqa: E402
from agent.testbed.topology import parse_topology  # noqa: E402


def machine() -> str:
    """One line naming the machine the figures come from."""
    return "%s, %d cores, Python %s, %s" % (platform.machine(), os.cpu_count() or 0,
                                            platform.python_version(), platform.platform())


def chain_topology(workers_per_stage: List[int], num_sources: int = 1,
                   capacities: Optional[Dict[str, float]] = None, agent: Optional[dict] = None,
                   warmup_s: float = 1.0, slot_s: float = 2.0) -> dict:
    """Every node of stage h linked to every node of stage h+1; ids s1.., w<h><letter> (up to 26
    workers a stage)."""
    caps = capacities or {}
    sources = [{"id": "s%d" % (i + 1), "share": round(1.0 / num_sources, 12)}
               for i in range(num_sources)]
    sources[-1]["share"] = round(1.0 - sum(s["share"] for s in sources[:-1]), 12)
    workers, links = [], []
    prev = [s["id"] for s in sources]
    for h, n in enumerate(workers_per_stage, start=1):
        ids = ["w%d%s" % (h, string.ascii_lowercase[i]) for i in range(n)]
        for wid in ids:
            w = {"id": wid, "stage": h}
            if wid in caps:
                w["emulate_capacity_flops"] = caps[wid]
            workers.append(w)
        links += [{"from": p, "to": q} for p in prev for q in ids]
        prev = ids
    return {"bundle": "demo", "warmup_s": warmup_s, "slot_s": slot_s, "agent": dict(agent or {}),
            "sources": sources, "workers": workers, "links": links}


def _exit_on_sigterm() -> None:
    """A bench stopped by SIGTERM (``kill``, ``timeout``) leaves through its ``finally`` blocks,
    which stop its agents; by default SIGTERM ends Python at once and leaves them running."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


class Local:
    """Start a topology's workers, then its sources at ``rate`` for ``load_s`` seconds."""

    def __init__(self, topo_obj: dict, policy: str, rate: float, load_s: float,
                 out_dir: Optional[str] = None, seed: int = 1, bundle_dir: Optional[str] = None):
        """``bundle_dir``: the bundle the agents serve (the demo bundle when None)."""
        from engines.bundle import load_bundle
        from engines.demo import DEMO_BUNDLE_DIR

        _exit_on_sigterm()

        self.topo = parse_topology(topo_obj)
        self.out_dir = out_dir or tempfile.mkdtemp(prefix="edge-bench-")
        self.cfgs = node_configs(self.topo, load_bundle(bundle_dir or DEMO_BUNDLE_DIR).path,
                                 policy, rate, load_s, self.out_dir, seed)
        self.agents = LocalAgents(self.out_dir)

    def start(self) -> None:
        self.agents.write(self.cfgs)
        self.agents.start([w.id for w in self.topo.workers])
        self.agents.start([s.id for s in self.topo.sources])

    def records(self, source: str) -> List[dict]:
        return read_records(os.path.join(self.cfgs[source].state_dir, "records.jsonl"))

    def stats(self, node: str) -> Optional[dict]:
        return read_stats(os.path.join(self.cfgs[node].state_dir, "stats.json"))

    def close(self) -> None:
        self.agents.close()
