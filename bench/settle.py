"""DTO-EE's early end in the agents, in process: rounds used and the routing's gap to the optimum.

The nodes' ``DtoeePolicy`` objects exchange their messages encoded and decoded on the wire
format, in memory, no sockets (the harness of ``tests/unit/test_dtoee_agent_rounds.py``: 3
sources, 3/3/2 workers on three stages, random links and capacities), in a phase of at most
``--rounds`` rounds with the ``settle_rounds``/``settle_tolerance`` knobs. Per load: rounds
until the last node ended, the model delay (eq. 8) of the routing then against the central
optimum (``agent.policies.optimum``), and how many networks ended before the last round.

    python3 bench/settle.py [--seeds 6] [--loads 0.3,0.5,0.7,0.85] [--settle-tolerance 0.01]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

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
    args = ap.parse_args()
    knobs = {"settle_rounds": args.settle_rounds, "settle_tolerance": args.settle_tolerance}
    print("python %s, %s; settle_rounds %d, settle_tolerance %g, at most %d rounds"
          % (platform.python_version(), platform.machine(), args.settle_rounds,
             args.settle_tolerance, args.rounds))
    print("| load | rounds, median / max | gap to the optimum, median / worst | ended early |")
    print("| --- | --- | --- | --- |")
    for load in (float(x) for x in args.loads.split(",")):
        rounds, gaps, ended = [], [], 0
        for seed in range(1, args.seeds + 1):
            sc = _scenario(seed, load)
            routing, nodes, _ = _run_phase(sc, args.rounds, knobs=knobs)
            net = compile_network(sc)
            gaps.append(network_delay(net, routing_vector(net, routing), sc.remaining)
                        / optimum(sc).delay_s - 1.0)
            rounds.append(max(p.round for p, _ in nodes.values()))
            ended += all(p.settled for p, _ in nodes.values())
        print("| %.0f%% | %d / %d | %.2f%% / %.2f%% | %d of %d |"
              % (100 * load, np.median(rounds), max(rounds), 100 * np.median(gaps),
                 100 * max(gaps), ended, len(rounds)))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
