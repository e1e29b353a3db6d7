"""DTO-EE's early end in the agents, in process: rounds used and the routing's gap to the optimum.

The nodes' ``DtoeePolicy`` objects exchange their messages encoded and decoded on the wire
format, in memory, no sockets (the harness of ``tests/unit/test_dtoee_agent_rounds.py``: 3
sources, 3/3/2 workers on three stages, random links and capacities), in a phase of at most
``--rounds`` rounds with the ``settle_rounds``/``settle_tolerance`` knobs. Per load: rounds
until the last node ended, the model delay (eq. 8) of the routing then against the central
optimum (``agent.policies.optimum``), how many networks ended before the last round, and the
rounds a cold phase (uniform start, the whole-network driver, which the agents' rounds equal)
takes until its model delay stays within 1% of the delay it ends with.

    python3 bench/settle.py [--seeds 6] [--loads 0.3,0.5,0.7,0.85] [--settle-tolerance 0.01]
                            [--link-model delay]

The harness's links carry 1-15 MB/s; with the default link model ("shared": a link is a
server of its rate) the heavier loads can overload them, so ``--link-model delay`` (the
paper's fixed beta/r) gives the networks the table in docs/dtoee.md was first made on.
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

from agent.policies.dtoee.network import run_dtoee  # noqa: E402
from agent.policies.model import compile_network, network_delay, routing_vector  # noqa: E402
from agent.policies.optimum import optimum  # noqa: E402
from tests.unit.test_dtoee_agent_rounds import _run_phase, _scenario  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=6, help="networks per load (seeds 1..N)")
    ap.add_argument("--loads", default="0.3,0.5,0.7,0.85")
    ap.add_argument("--rounds", type=int, default=200, help="phase length (rounds_per_slot)")
    ap.add_argument("--settle-rounds", type=int, default=8)
    ap.add_argument("--settle-tolerance", type=float, default=0.01)
    ap.add_argument("--link-model", default="shared", choices=("shared", "delay"))
    args = ap.parse_args()
    knobs = {"settle_rounds": args.settle_rounds, "settle_tolerance": args.settle_tolerance,
             "link_model": args.link_model}
    print("python %s, %s; settle_rounds %d, settle_tolerance %g, at most %d rounds, link model %s"
          % (platform.python_version(), platform.machine(), args.settle_rounds,
             args.settle_tolerance, args.rounds, args.link_model))
    print("| load | rounds, median / max | gap to the optimum, median / worst | ended early | "
          "rounds to 1% of the final delay, median / max |")
    print("| --- | --- | --- | --- | --- |")
    for load in (float(x) for x in args.loads.split(",")):
        rounds, gaps, ended, to1, infeasible = [], [], 0, [], 0
        for seed in range(1, args.seeds + 1):
            sc = dataclasses.replace(_scenario(seed, load), knobs={"link_model": args.link_model})
            if not np.isfinite(optimum(sc).delay_s):
                infeasible += 1  # no routing carries it (shared links): nothing to converge to
                continue
            routing, nodes, _ = _run_phase(sc, args.rounds, knobs=knobs)
            net = compile_network(sc)
            gaps.append(network_delay(net, routing_vector(net, routing), sc.remaining)
                        / optimum(sc).delay_s - 1.0)
            rounds.append(max(p.round for p, _ in nodes.values()))
            ended += all(p.settling.settled for p, _ in nodes.values())
            hist = run_dtoee(sc, rounds=args.rounds, stop_when_converged=False,
                             track=True).history
            to1.append(max([r + 1 for r, d in enumerate(hist)
                            if abs(d - hist[-1]) > 0.01 * hist[-1]] + [0]))
        if not rounds:
            print("| %.0f%% | - | - | - | - (%d networks infeasible) |" % (100 * load, infeasible))
            continue
        print("| %.0f%% | %d / %d | %.2f%% / %.2f%% | %d of %d | %d / %d%s |"
              % (100 * load, np.median(rounds), max(rounds), 100 * np.median(gaps),
                 100 * max(gaps), ended, len(rounds), np.median(to1), max(to1),
                 " (%d more networks infeasible)" % infeasible if infeasible else ""))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
