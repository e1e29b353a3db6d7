"""A digest of a simulation result (every per-task array and the slots' decisions), for the
check that the simulator's per-task extensions leave table-driven and MDI-Exit runs unchanged."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from agent.policies.registry import make_sim_policy
from agent.scenario.mdi import mdi_topology
from agent.scenario.paper import paper_scenario
from agent.sim import DynamicConfig, SimConfig, simulate

ARRAYS = ("created_s", "finished_s", "source", "sample", "exit_stage", "status", "correct")


def digest(result) -> str:
    """SHA-256 of the per-task arrays (bytes) and of the slots (thresholds, rounds, info)."""
    h = hashlib.sha256()
    for name in ARRAYS:
        a = np.ascontiguousarray(getattr(result, name))
        h.update(name.encode() + str(a.dtype).encode() + a.tobytes())
    slots = [{"rounds": s["rounds"], "thresholds": s.get("thresholds"),
              "info": {k: repr(v) for k, v in sorted(s["info"].items())}}
             for s in result.slots]
    h.update(json.dumps(slots, sort_keys=True).encode())
    return h.hexdigest()


def runs():
    """(label, scenario, policy name, config) of the reference runs."""
    paper = paper_scenario("paper-resnet101", seed=1, num_sources=6, num_samples=400)
    model = paper_scenario("paper-resnet101", seed=0, num_sources=1, num_samples=300)
    mesh = mdi_topology("3-node-mesh", model, 2e10, 12.5e6, 6.0,
                        knobs={"mdi-exit": {"threshold_adaptation": True}})
    return [
        ("dtoee", paper, "dtoee", SimConfig(duration_s=20.0, slot_s=5.0, seed=2)),
        ("dtoee-dynamic", paper, "dtoee",
         SimConfig(duration_s=20.0, slot_s=5.0, seed=3, dynamic=DynamicConfig())),
        ("cf-shared-fifo", paper, "cf",
         SimConfig(duration_s=20.0, seed=4, link_model="shared", discipline="fifo",
                   service="exponential")),
        ("mdi-exit", mesh, "mdi-exit", SimConfig(duration_s=20.0, seed=5, discipline="fifo")),
    ]


def run_digests():
    """{label: digest} of every reference run."""
    return {label: digest(simulate(sc, make_sim_policy(name, rounds=20), cfg))
            for label, sc, name, cfg in runs()}


if __name__ == "__main__":
    print(json.dumps(run_digests(), indent=1))
