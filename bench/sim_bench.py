"""Simulator speed on the paper setting: 1000 simulated seconds, DTO-EE re-planning every slot.

Usage: python3 bench/sim_bench.py [--duration 1000] [--settings paper-resnet101,paper-bert]
       [--policy dtoee]
Prints one line per setting: tasks, wall time (planning included), tasks per wall second.
Runs on one core (numeric libraries pinned to one thread). Goal: <= 60 s per setting.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agent.scenario.paper import paper_scenario  # noqa: E402
from agent.sim import SimConfig, simulate  # noqa: E402
from agent.policies.registry import make_sim_policy as make_policy  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=1000.0)
    parser.add_argument("--settings", default="paper-resnet101,paper-bert")
    parser.add_argument("--policy", default="dtoee")
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    print("python %s, %s, %s" % (platform.python_version(), platform.machine(),
                                 platform.processor() or "cpu"))
    for name in args.settings.split(","):
        sc = paper_scenario(name, seed=0)
        policy = make_policy(args.policy, rounds=args.rounds)
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        res = simulate(sc, policy, SimConfig(duration_s=args.duration, warmup_s=10.0))
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        s = res.summary()
        print("%-16s %s: %7.0f simulated s, %8d tasks, %3d slots, wall %6.2f s (cpu %6.2f s), "
              "%7.0f tasks/s; mean delay %.1f ms, accuracy %.2f%%"
              % (name, args.policy, args.duration, s["tasks"], len(res.slots), wall, cpu,
                 s["tasks"] / wall, s["mean_delay_s"] * 1e3, (s["accuracy"] or 0) * 100))
    return 0


if __name__ == "__main__":
    sys.exit(main())
