"""How ``plan`` and ``simulate`` scale with the network: 50 to 5,000 nodes, one core.

Usage: python3 bench/scale_bench.py [--nodes 50,500,5000] [--model paper-resnet101]
       [--sim-s 2] [--rounds 50] [--policy dtoee] [--step joint]

Each network is the paper's setting (``agent.scenario.paper.paper_scenario``, seed 0) scaled
up: one fifth of the nodes are sources, the rest split evenly over the stages
(``workers_per_stage``), 2-4 receivers per offloader, the busiest stage at 60%. Per size it
times, on one core: writing and reading the scenario file (``save_scenario`` /
``load_scenario``, i.e. ``parse_scenario``), ``compile_network``, ``plan`` (DTO-EE,
``--rounds`` rounds without the convergence stop so every size does the same work) and
``simulate`` (``--sim-s`` simulated seconds in 5 s slots, DTO-EE re-planning every slot). It prints
microseconds per node (per node-round for ``plan``) and per simulated task: flat columns mean
linear scaling. Goal: every column within 2x from 50 to 5,000 nodes. ``--step joint`` runs
DTO-EE's stage-joint rule (the scenario's ``knobs.step``) in ``plan`` and ``simulate``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shutil
import sys
import tempfile
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agent.policies.dtoee.knobs import DtoeeParams  # noqa: E402
from agent.policies.dtoee.network import run_dtoee  # noqa: E402
from agent.policies.model import compile_network  # noqa: E402
from agent.policies.registry import make_sim_policy  # noqa: E402
from agent.scenario.format import load_scenario, save_scenario  # noqa: E402
from agent.scenario.paper import PAPER_MODELS, paper_scenario  # noqa: E402
from agent.sim import SimConfig, simulate  # noqa: E402


def scaled(model: str, nodes: int):
    """The paper setting with ``nodes`` nodes: a fifth sources, the rest workers."""
    h = len(PAPER_MODELS[model]["gflops"])
    sources = max(1, nodes // 5)
    per_stage = max(2, (nodes - sources) // h)
    return paper_scenario(model, seed=0, num_sources=sources, workers_per_stage=per_stage,
                          num_samples=2000)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", default="50,500,5000")
    ap.add_argument("--model", default="paper-resnet101", choices=sorted(PAPER_MODELS))
    ap.add_argument("--sim-s", type=float, default=20.0, help="simulated seconds per size")
    ap.add_argument("--rounds", type=int, default=50, help="DTO-EE rounds in plan and simulate")
    ap.add_argument("--policy", default="dtoee", help="policy the simulator runs")
    ap.add_argument("--step", default="default", choices=("default", "joint", "paper"),
                    help="DTO-EE's step rule (knobs.step) in plan and simulate")
    args = ap.parse_args()
    print("python %s, %s, %d cores, one thread, step %s" % (
        platform.python_version(), platform.machine(), os.cpu_count() or 0, args.step))
    print("| nodes | links | load file s | us/node | compile s | us/node | plan s (%d rounds) "
          "| us/node-round | simulate s | tasks | us/task |" % args.rounds)
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    tmp = tempfile.mkdtemp(prefix="scale-bench-")
    try:
        for n in (int(x) for x in args.nodes.split(",")):
            sc = scaled(args.model, n)
            sc = dataclasses.replace(sc, knobs=dict(sc.knobs, step=args.step))
            nodes = len(sc.sources) + len(sc.workers)
            path = os.path.join(tmp, "s%d.json" % n)
            save_scenario(path, sc)
            sc, load_s = timed(lambda: load_scenario(path))
            _, compile_s = timed(lambda: compile_network(sc))
            params = DtoeeParams(rounds=args.rounds, step=args.step)
            _, plan_s = timed(lambda: run_dtoee(sc, params=params, stop_when_converged=False))
            policy = make_sim_policy(args.policy, rounds=args.rounds)
            cfg = SimConfig(duration_s=args.sim_s, warmup_s=0.0, slot_s=5.0)
            res, sim_s = timed(lambda: simulate(sc, policy, cfg))
            tasks = max(1, res.summary()["tasks"])
            print("| %d | %d | %.3f | %.1f | %.4f | %.2f | %.3f | %.2f | %.2f | %d | %.1f |"
                  % (nodes, len(sc.links), load_s, load_s / nodes * 1e6, compile_s,
                     compile_s / nodes * 1e6, plan_s, plan_s / nodes / args.rounds * 1e6, sim_s,
                     tasks, sim_s / tasks * 1e6))
            sys.stdout.flush()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
