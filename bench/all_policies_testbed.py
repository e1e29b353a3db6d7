"""Every agent policy on one tiered setting, in the testbed: one table.

The setting is the demo bundle on three devices, end (2e6 FLOP/s, where the source is), edge
(1e7) and cloud (1e8), with end -> edge at 3.2e5 bytes/s and edge -> cloud at 3.2e4 bytes/s
(the shipped ``dimee`` and ``mlci`` topologies). Each policy runs in the shape it is made for,
on those devices and links:

- ``dtoee``, ``cf``, ``bf``: a pipeline, one stage per worker (DTO-EE models one stage per
  worker): stage 1 on end, stages 2 and 3 on edge (half its capacity each), stage 4 on cloud;
  with one worker per stage their routing has no choice, so they differ by thresholds only;
- ``mdi-exit``: three nodes holding every stage (end, edge, cloud), tasks offloaded along
  end -> edge -> cloud by its queue rule, fixed thresholds (no admission, no adaptation);
- ``dimee``, ``dimee-f``: the ``dimee`` topology (tiers holding stages 1..1, 1..2, 1..4);
- ``mlci``, ``tabi``: the ``mlci`` topology (levels holding 1..1, 1..3, 1..4).

Usage::

    PYTHONPATH=. python3 bench/all_policies_testbed.py --rate 5 --duration 10 --out runs-all

Per run: tasks, lost, mean and p95 delay and accuracy (after the warm-up, the testbed's own
summary), compute per task (MFLOP run for the task on any device, from its record: the stages
up to its exit; MLCI: every level that ran, its exit head by the patience rule on the row) and
bytes per task on links between devices (tensors only; MDI-Exit's path is not in its records,
so none is given). Prints the machine and the command.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

from agent.policies.mlci import replay as mlci_replay
from agent.policies.mlci import rules as MR
from agent.testbed.driver import load_bundle_for, run_all
from agent.testbed.local import TestbedSettings, bundle_stages, rate_label
from agent.testbed.report import read_records
from agent.testbed.topology import load_topology, parse_topology
from engines.exit_profile import load_exit_profile

END, EDGE, CLOUD = 2.0e6, 1.0e7, 1.0e8  # FLOP/s of the three devices
END_EDGE, EDGE_CLOUD = 3.2e5, 3.2e4  # bytes/s
AGENT = {"heartbeat_interval_s": 0.25, "status_interval_s": 1.0, "ack_timeout_s": 2.0,
         "result_timeout_s": 10.0, "replay_rows": "test"}


def pipeline() -> dict:
    """One stage per worker on the three devices (DTO-EE, CF, BF)."""
    return {"warmup_s": 2.0, "thresholds": {"1": 0.8, "2": 0.8, "3": 0.8},
            "knobs": {"dtoee": {"headroom_target": 0.85}}, "agent": dict(AGENT),
            "sources": [{"id": "cam", "share": 1.0}],
            "workers": [{"id": "end1", "stage": 1, "emulate_capacity_flops": END},
                        {"id": "edge2", "stage": 2, "emulate_capacity_flops": EDGE / 2},
                        {"id": "edge3", "stage": 3, "emulate_capacity_flops": EDGE / 2},
                        {"id": "cloud4", "stage": 4, "emulate_capacity_flops": CLOUD}],
            "links": [{"from": "cam", "to": "end1"},
                      {"from": "end1", "to": "edge2", "rate_bytes_s": END_EDGE},
                      {"from": "edge2", "to": "edge3"},
                      {"from": "edge3", "to": "cloud4", "rate_bytes_s": EDGE_CLOUD}]}


def mdi_nodes() -> dict:
    """Three nodes holding every stage, offloading along end -> edge -> cloud (MDI-Exit)."""
    return {"warmup_s": 2.0, "thresholds": {"1": 0.8, "2": 0.8, "3": 0.8},
            "knobs": {"mdi-exit": {"admission_control": False, "threshold_adaptation": False}},
            "agent": dict(AGENT), "sources": [{"id": "cam", "share": 1.0}],
            "workers": [{"id": "end", "stage": 1, "last_stage": 4, "emulate_capacity_flops": END},
                        {"id": "edge", "stage": 1, "last_stage": 4,
                         "emulate_capacity_flops": EDGE},
                        {"id": "cloud", "stage": 1, "last_stage": 4,
                         "emulate_capacity_flops": CLOUD}],
            "links": [{"from": "cam", "to": "end"},
                      {"from": "end", "to": "edge", "rate_bytes_s": END_EDGE},
                      {"from": "edge", "to": "cloud", "rate_bytes_s": EDGE_CLOUD}]}


GROUPS = (("pipeline", ("dtoee", "cf", "bf")), ("mdi", ("mdi-exit",)),
          ("dimee", ("dimee", "dimee-f")), ("mlci", ("mlci", "tabi")))


def topology(group: str):
    if group == "pipeline":
        return parse_topology(pipeline(), path="all-policies pipeline")
    if group == "mdi":
        return parse_topology(mdi_nodes(), path="all-policies mdi")
    return load_topology(group)


def per_task(group: str, policy: str, rec: dict, cum: np.ndarray, beta: np.ndarray, profile,
             mlci_model) -> tuple:
    """(FLOP, bytes on links between devices) of one completed task."""
    h = rec["exit_stage"]
    if group == "pipeline":  # end | edge (2, 3) | cloud: stage 2 and stage 4 cross a device
        return cum[h - 1], (beta[1] if h >= 2 else 0) + (beta[3] if h >= 4 else 0)
    if group == "mdi":
        return cum[h - 1], None
    if group == "dimee":
        return cum[h - 1], 0 if rec["worker"] == "mobile" else beta[0]
    params = mlci_replay.variant(MR.params_from_knobs({}), policy)
    flops = 0.0
    for ell in range(rec["level"] + 1):
        cols = mlci_model.cols[ell]
        col = cols[MR.model_exit(profile.confidence[rec["row"], list(cols)], params.tau,
                                 params.patience)]
        flops += cum[profile.exit_stages[col] - 1]
    return flops, beta[0] * rec["level"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=5.0, help="tasks/s (default 5)")
    ap.add_argument("--duration", type=float, default=10.0, help="measured s per run")
    ap.add_argument("--out", default="all-policies-out")
    args = ap.parse_args(argv)
    out = os.path.abspath(os.path.join(args.out, time.strftime("%Y%m%d-%H%M%S")))
    rows = []
    for group, policies in GROUPS:
        topo = topology(group)
        bundle = load_bundle_for(topo)
        stages = bundle_stages(bundle)
        cum = np.cumsum([s.flops for s in stages])
        beta = np.array([s.input_bytes for s in stages])
        profile = load_exit_profile(bundle.exit_profile_path)
        model = mlci_replay.fit(profile, MR.params_from_knobs({}), (1, 3, 4))
        settings = TestbedSettings(duration_s=args.duration, out_dir=os.path.join(out, group))
        for res in run_all(topo, bundle, policies, [args.rate], settings):
            folder = os.path.join(settings.out_dir, res.policy, rate_label(res.rate))
            recs = [r for s in topo.sources for r in read_records(
                os.path.join(folder, s.id, "records.jsonl")) if r["status"] == "completed"]
            costs = [per_task(group, res.policy, r, cum, beta, profile, model) for r in recs]
            flops = np.mean([c[0] for c in costs]) / 1e6
            nbytes = None if group == "mdi" else np.mean([c[1] for c in costs])
            rows.append((group, res, flops, nbytes))
    print("\nmachine: %s, %d CPUs, Python %s; command: %s" % (
        platform.processor() or platform.machine(), os.cpu_count() or 0,
        platform.python_version(), " ".join(["bench/all_policies_testbed.py"] + sys.argv[1:])))
    print("setting    policy    tasks  lost  mean ms  p95 ms  accuracy  MFLOP/task  bytes/task")
    for group, r, flops, nbytes in rows:
        print("%-10s %-9s %5d %5d %8.1f %7.1f  %8.3f  %10.3f  %10s"
              % (group, r.policy, r.created, r.lost, 1e3 * (r.mean_delay_s or float("nan")),
                 1e3 * (r.p95_delay_s or float("nan")), r.accuracy or float("nan"), flops,
                 "-" if nbytes is None else "%.0f" % nbytes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
