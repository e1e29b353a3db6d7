"""Diagnostic of DTO-EE's heavy-load convergence: the default step taken one offloader at a
time (Gauss-Seidel) with exact marginal delays, so nothing piles up on a receiver and nothing
is stale. If this idealised run is slow too, the limit is the per-node step on a coupled
problem, not the parallel rounds or their damping.

Heavy set of bench/convergence.py (seeds 7200-7209, 85%, the paper's link model); prints the
gap to the optimum after 5, 10, 25 and 50 sweeps (a sweep: every offloader steps once).

    python3 bench/heavy_gauss_seidel.py --seeds 10 [--step-scale 1.5] [--momentum 0]

``--momentum``: each node adds that share of its own previous change in its next turn (the
default rule's heavy ball; the receivers' damping stays 1 here, so nothing cuts it).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from agent.policies.dtoee.knobs import DtoeeParams  # noqa: E402
from agent.policies.dtoee.network import exact_marginals  # noqa: E402
from agent.policies.dtoee.steps import row_marginals, update_rows  # noqa: E402
from agent.policies.model import (  # noqa: E402
    compile_network,
    network_delay,
    stage_remaining,
    uniform_routing,
)
from agent.policies.optimum import optimum  # noqa: E402
from tests.unit.dtoee_scenarios import random_scenario  # noqa: E402

PARAMS = DtoeeParams(link_model="delay", momentum=0.0)


def _omega_psi(net, p, rem):
    """Exact Omega and Psi of every node (a backward pass) and phi, lambda."""
    _, omega, phi = exact_marginals(net, p, rem, PARAMS)
    remv = stage_remaining(rem)
    lam = net.flops[net.stage] * phi
    valid = net.slots >= 0
    e = np.where(valid, net.slots, 0)
    psi = np.zeros(len(net.ids))
    for h in range(net.num_stages - 1, -1, -1):
        rows = np.nonzero(net.stage[net.offloaders] == h)[0]
        d = net.edge_dst[e[rows]]
        _, _, _, ps = row_marginals(
            np.where(valid[rows], p[e[rows]], 0.0), np.full(len(rows), remv[h]),
            np.full(len(rows), net.flops[h + 1]), np.full(len(rows), net.input_bytes[h + 1]),
            net.edge_rate[e[rows]], lam[d], net.capacity[d], omega[d], psi[d], valid[rows],
            PARAMS, phi[net.offloaders[rows]] * remv[h])
        psi[net.offloaders[rows]] = ps
    return phi, lam, omega, psi


def sweeps(seed: int, count: int = 50, params: DtoeeParams = PARAMS) -> np.ndarray:
    """Gap to the optimum after each Gauss-Seidel sweep on one seeded heavy network."""
    sc = random_scenario(seed, 0.85)
    net = compile_network(sc)
    rem, remv = sc.remaining, stage_remaining(sc.remaining)
    best = optimum(sc).delay_s
    p = uniform_routing(net)
    valid = net.slots >= 0
    e = np.where(valid, net.slots, 0)
    out = []
    prev = np.zeros(valid.shape)  # each node's previous change (momentum)
    for _ in range(count):
        for r, node in enumerate(net.offloaders):
            phi, lam, omega, psi = _omega_psi(net, p, rem)
            h = net.stage[node]
            d = net.edge_dst[e[r:r + 1]]
            one = np.ones(d.shape)
            new = update_rows(np.where(valid[r:r + 1], p[e[r:r + 1]], 0.0),
                              np.array([phi[node] * remv[h]]), np.array([remv[h]]),
                              np.array([net.flops[h + 1]]), np.array([net.input_bytes[h + 1]]),
                              net.edge_rate[e[r:r + 1]], lam[d], net.capacity[d], omega[d],
                              psi[d], one, one, valid[r:r + 1], params, None,
                              prev[r:r + 1])[0]
            prev[r] = np.where(valid[r], new[0] - np.where(valid[r], p[e[r]], 0.0), 0.0)
            p = p.copy()
            p[e[r][valid[r]]] = new[0][valid[r]]
        out.append(network_delay(net, p, rem) / best - 1.0)
    return np.asarray(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--step-scale", type=float, default=PARAMS.step_scale)
    ap.add_argument("--momentum", type=float, default=0.0)
    args = ap.parse_args()
    params = dataclasses.replace(PARAMS, step_scale=args.step_scale, momentum=args.momentum)
    g = np.array([sweeps(7200 + i, params=params) for i in range(args.seeds)])
    print("| sweeps | 5 | 10 | 25 | 50 |")
    print("| --- | --- | --- | --- | --- |")
    print("| median / worst | " + " | ".join(
        "%.2f%% / %.2f%%" % (100 * np.median(g[:, k]), 100 * g[:, k].max())
        for k in (4, 9, 24, 49)) + " |")


if __name__ == "__main__":
    main()
