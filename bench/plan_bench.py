"""``plan`` speed on the paper settings: wall time of each policy's planning, one core.

Usage: python3 bench/plan_bench.py [--settings paper-resnet101,paper-bert] [--repeat 5]
                                    [--link-model shared|delay]
Builds each setting in memory (``agent.scenario.paper.paper_scenario``, seed 0, the paper's
rate, thresholds tuned from the synthetic exit profile) and times ``agent.commands.plan.plan``
per policy: best and median of ``--repeat`` runs, excluding interpreter start and scenario
loading. ``--link-model`` sets the links of the model as ``edge-agent plan --link-model`` does
(default: the scenario's own knob, ``shared``; ``delay`` is the paper's fixed beta/r).
Goal: DTO-EE (200 rounds, the default) <= 1 s per setting.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agent.commands.plan import plan  # noqa: E402
from agent.policies.model import with_link_model  # noqa: E402
from agent.scenario.paper import paper_scenario  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="paper-resnet101,paper-bert")
    parser.add_argument("--policies", default="dtoee,cf,bf,ngto,ga")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--link-model", choices=("shared", "delay"), default=None,
                        help="links in the model (default: the scenario's link_model knob)")
    args = parser.parse_args()
    print("python %s, %s, %d cores, one thread, links: %s"
          % (platform.python_version(), platform.machine(), os.cpu_count() or 0,
             args.link_model or "the scenario's"))
    print("| setting | nodes | links | policy | rounds | best s | median s | delay s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in args.settings.split(","):
        sc = paper_scenario(name, seed=0)
        if args.link_model:  # as ``edge-agent plan --link-model`` overrides knobs.link_model
            sc = with_link_model(sc, args.link_model)
        nodes = len(sc.sources) + len(sc.workers)
        for policy in args.policies.split(","):
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                res = plan(sc, policy)
                times.append(time.perf_counter() - t0)
            print("| %s | %d | %d | %s | %d | %.3f | %.3f | %.4f |"
                  % (name, nodes, len(sc.links), policy, res.rounds, min(times),
                     statistics.median(times), res.delay_s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
