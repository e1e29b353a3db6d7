"""Every seed policy on one tiered setting, in the simulator: the table next to the testbed's.

The setting of ``bench/all_policies_testbed.py`` (the demo bundle on end 2e6, edge 1e7 and
cloud 1e8 FLOP/s; end -> edge 3.2e5 B/s, edge -> cloud 3.2e4 B/s), each policy in its shape:
DTO-EE, CF, BF, NGTO and GA on the pipeline of one-stage workers; MDI-Exit on three devices
holding every stage (fixed thresholds); DIMEE, DIMEE-F and DIMEE's baselines on
``dimee-demo``; MLCI and Tabi on ``mlci-demo`` (``agent.scenario.tiered``). Tasks on the test
rows, one rate, per policy: tasks, unfinished, mean and p95 delay, accuracy, MFLOP and bytes
per task (as in the testbed bench; MDI-Exit's bytes are not derivable from its records).

Usage: PYTHONPATH=. python3 bench/all_policies_sim.py [--rate 5] [--duration 600] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from all_policies_testbed import CLOUD, EDGE, EDGE_CLOUD, END, END_EDGE, per_task  # noqa: E402
from agent.policies.mdi_exit import rules as mx  # noqa: E402
from agent.policies.mlci import replay as mlci_replay  # noqa: E402
from agent.policies.mlci import rules as MR  # noqa: E402
from agent.policies.registry import make_sim_policy  # noqa: E402
from agent.policies.setting import Link, Scenario, Source, Worker  # noqa: E402
from agent.scenario.tiered import demo_model, dimee_demo, mlci_demo  # noqa: E402
from agent.sim import SimConfig, simulate  # noqa: E402

FREE = 1.0e12  # bytes/s of a link inside one device


def pipeline(rate: float) -> Scenario:
    """One stage per worker: stage 1 on the end, 2 and 3 on the edge, 4 on the cloud."""
    stages, profile = demo_model()
    workers = (Worker("end1", 1, END), Worker("edge2", 2, EDGE / 2), Worker("edge3", 3, EDGE / 2),
               Worker("cloud4", 4, CLOUD))
    links = (Link("cam", "end1", FREE), Link("end1", "edge2", END_EDGE),
             Link("edge2", "edge3", FREE), Link("edge3", "cloud4", EDGE_CLOUD))
    return Scenario(stages, (Source("cam", rate),), workers, links, 0.5, None, profile, {})


def mdi_nodes(rate: float) -> Scenario:
    """End, edge and cloud each holding every stage; offloading end -> edge -> cloud."""
    stages, profile = demo_model()
    h = len(stages)
    caps = {"end": END, "edge": EDGE, "cloud": CLOUD}
    workers = tuple(Worker("%s/%d" % (d, s), s, c, device=d) for d, c in caps.items()
                    for s in range(1, h + 1))
    links = [Link("end/src", "end/1", FREE)]
    for d, up, r in (("end", "edge", END_EDGE), ("edge", "cloud", EDGE_CLOUD), ("cloud", "", 0)):
        for s in range(1, h):
            links.append(Link("%s/%d" % (d, s), "%s/%d" % (d, s + 1), FREE))
            if up:
                links.append(Link("%s/%d" % (d, s), "%s/%d" % (up, s + 1), r))
    knobs = {mx.POLICY_NAME: mx.params_dict(mx.params_from_knobs(
        {"admission_control": False, "threshold_adaptation": False}))}
    return Scenario(stages, (Source("end/src", rate, device="end"),), workers, tuple(links), 0.5,
                    None, profile, knobs)


SETTINGS = (("pipeline", pipeline, ("dtoee", "cf", "bf", "ngto", "ga")),
            ("mdi", mdi_nodes, ("mdi-exit",)),
            ("dimee", dimee_demo, ("dimee", "dimee-f", "tier-cloud", "tier-edge", "tier-mobile",
                                   "tier-random")),
            ("mlci", mlci_demo, ("mlci", "tabi")))
TIER_OF_DEVICE = {"mob": "mobile", "edge": "edge", "cloud": "cloud"}
LEVEL_OF_DEVICE = {"end": 0, "edge": 1, "cloud": 2}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=5.0)
    ap.add_argument("--duration", type=float, default=600.0, help="simulated s of arrivals")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    stages, profile = demo_model()
    cum = np.cumsum([s.flops for s in stages])
    beta = np.array([s.input_bytes for s in stages])
    model = mlci_replay.fit(profile, MR.params_from_knobs({}), (1, 3, 4))
    print("machine: %s, %d CPUs, Python %s; command: %s" % (
        platform.processor() or platform.machine(), os.cpu_count() or 0,
        platform.python_version(), " ".join(["bench/all_policies_sim.py"] + sys.argv[1:])))
    print("setting    policy        tasks unfin  mean ms  p95 ms  accuracy  MFLOP/task  "
          "bytes/task  wall s")
    for group, build, policies in SETTINGS:
        sc = build(args.rate)
        for name in policies:
            t0 = time.monotonic()
            res = simulate(sc, make_sim_policy(name), SimConfig(
                duration_s=args.duration, seed=args.seed, sample_rows="test"))
            s = res.summary(0.0)
            done = np.flatnonzero(res.status == 1)
            costs = []
            for i in done:
                w = sc.workers[res.answered_by[i]] if res.answered_by is not None else None
                dev = (w.device or w.id.split("/")[0]) if w is not None else ""
                rec = {"exit_stage": int(res.exit_stage[i]), "row": int(res.sample[i]),
                       "worker": TIER_OF_DEVICE.get(dev, dev),
                       "level": LEVEL_OF_DEVICE.get(dev, 0)}
                costs.append(per_task(group, name, rec, cum, beta, profile, model))
            flops = np.mean([c[0] for c in costs]) / 1e6
            nbytes = "-" if group == "mdi" else "%.0f" % np.mean([c[1] for c in costs])
            print("%-10s %-12s %6d %5d %8.1f %7.1f  %8.4f  %10.3f  %10s  %6.1f"
                  % (group, name, s["tasks"], s["tasks"] - s["completed"],
                     1e3 * s["mean_delay_s"], 1e3 * s["p95_delay_s"], s["accuracy"], flops,
                     nbytes, time.monotonic() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
