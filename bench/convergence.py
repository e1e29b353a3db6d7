"""DTO-EE convergence: gap of the model delay to the central optimum after 10, 25, 50 and 200
rounds, the paper's rule (eq. 19) against the default rule, thresholds fixed.

Usage: python3 bench/convergence.py [--seeds 10] [--paper-step 0.1]
Sets: seeded random paper-like networks (``tests/unit/dtoee_scenarios.py``: 8 sources, 5/4/4/3
workers, ResNet101's stages) at light (busiest stage 30%), moderate (60%) and heavy (85%) load,
heavy starts where the uniform routing overloads a worker (one stage-1 worker at 0.3x the
slowest), and the paper settings (``agent.scenario.paper``, 50 sources, thresholds 0.8).
Prints a Markdown table: median and worst gap per set; "inf" counts routings that overload a
worker. The optimum is ``agent.policies.optimum`` (SLSQP over edge flows).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from agent.policies.dtoee.knobs import DtoeeParams  # noqa: E402
from agent.policies.dtoee.network import run_dtoee  # noqa: E402
from agent.policies.optimum import optimum  # noqa: E402
from agent.scenario.paper import paper_scenario  # noqa: E402
from engines.exit_profile import exit_stats  # noqa: E402
from tests.unit.dtoee_scenarios import random_scenario  # noqa: E402

CHECKPOINTS = (10, 25, 50, 200)


def _fixed(sc, c=0.8):
    prof = sc.exit_profile
    rem = exit_stats(prof, [c] * len(prof.early_exit_stages)).remaining
    return dataclasses.replace(sc, exit_profile=None, remaining=tuple(float(x) for x in rem))


def _sets(seeds):
    return [
        ("light (30%)", [random_scenario(7000 + i, 0.3) for i in range(seeds)]),
        ("moderate (60%)", [random_scenario(7100 + i, 0.6) for i in range(seeds)]),
        ("heavy (85%)", [random_scenario(7200 + i, 0.85) for i in range(seeds)]),
        ("heavy, overloaded start", [random_scenario(7300 + i, 0.8, skew=0.3)
                                     for i in range(seeds)]),
        ("paper-resnet101", [_fixed(paper_scenario("paper-resnet101", seed=0))]),
        ("paper-bert", [_fixed(paper_scenario("paper-bert", seed=0))]),
    ]


def _cell(gaps):
    g = np.asarray(gaps)
    fin = g[np.isfinite(g)]
    n_inf = int(np.sum(~np.isfinite(g)))
    if len(fin) == 0:
        return "inf (%d/%d)" % (n_inf, len(g))
    text = "%.2f%% / %.2f%%" % (100 * np.median(fin), 100 * fin.max())
    return text + (" +%d inf" % n_inf if n_inf else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="random networks per set")
    parser.add_argument("--paper-step", type=float, default=0.1, help="tau_p of eq. 19")
    args = parser.parse_args()
    print("python %s, %s, %d cores, one thread; cells: median / worst gap over the set"
          % (platform.python_version(), platform.machine(), os.cpu_count() or 0))
    print("| set | rule | " + " | ".join("%d rounds" % k for k in CHECKPOINTS) + " |")
    print("| --- | --- |" + " --- |" * len(CHECKPOINTS))
    rules = (("paper (tau_p=%g)" % args.paper_step,
              DtoeeParams(step="paper", paper_step_size=args.paper_step)),
             ("default", DtoeeParams()))
    for name, scenarios in _sets(args.seeds):
        best = [optimum(sc).delay_s for sc in scenarios]
        for label, params in rules:
            gaps = {k: [] for k in CHECKPOINTS}
            for sc, b in zip(scenarios, best):
                hist = run_dtoee(sc, rounds=max(CHECKPOINTS), params=params,
                                 stop_when_converged=False, track=True).history
                for k in CHECKPOINTS:
                    gaps[k].append(hist[k - 1] / b - 1.0)
            print("| %s | %s | %s |" % (name, label,
                                        " | ".join(_cell(gaps[k]) for k in CHECKPOINTS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
