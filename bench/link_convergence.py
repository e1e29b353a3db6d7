"""DTO-EE on link-bound networks (``link_model`` "shared"): gap to the link-aware optimum.

Seeded networks from ``tests/unit/dtoee_scenarios.link_bound_scenario`` (links scaled so the
best routing's busiest worker or link sits at the load; workers at 0.7x that). Prints, per
load, the median / worst gap of the model delay (eq. 8 with the link term) to the central
optimum after 10, 25 and 50 rounds, how many routings still overload a worker or link at
round 50, and the busiest link's utilisation at round 50.

    python3 bench/link_convergence.py --seeds 10
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from agent.policies.dtoee.knobs import DtoeeParams  # noqa: E402
from agent.policies.dtoee.network import run_dtoee  # noqa: E402
from agent.policies.model import compile_network, link_utilisation, routing_vector  # noqa: E402
from agent.policies.optimum import optimum  # noqa: E402
from tests.unit.dtoee_scenarios import link_bound_scenario  # noqa: E402


def gaps(seed: int, load: float, rounds: int = 50, **knobs):
    """(gap after every round, busiest link at the end) of one seeded network."""
    sc = link_bound_scenario(seed, load, sources=4, workers=(3, 3, 2, 2))
    best = optimum(sc).delay_s
    res = run_dtoee(sc, rounds=rounds, params=DtoeeParams(**knobs), stop_when_converged=False,
                    track=True)
    net = compile_network(sc)
    top = float(link_utilisation(net, routing_vector(net, res.routing), sc.remaining).max())
    return np.asarray(res.history) / best - 1.0, top


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=7000)
    args = ap.parse_args()
    print("| load | 10 rounds | 25 rounds | 50 rounds | overloaded at 50 | busiest link at 50 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for load in (0.3, 0.6, 0.85):
        runs = [gaps(args.first_seed + i, load) for i in range(args.seeds)]
        g = np.array([r[0] for r in runs])
        cells = []
        for k in (9, 24, 49):
            col = g[:, k]
            fin = col[np.isfinite(col)]
            cell = ("%.2f%% / %.2f%%" % (100 * np.median(fin), 100 * fin.max())) if len(fin) \
                else "inf"
            if len(fin) < len(col):
                cell += " +%d inf" % (len(col) - len(fin))
            cells.append(cell)
        over = int(np.sum(~np.isfinite(g[:, 49])))
        top = max(r[1] for r in runs)
        print("| %d%% | %s | %d of %d | %.3f |" % (100 * load, " | ".join(cells), over,
                                                 args.seeds, top))


if __name__ == "__main__":
    main()
