"""Diagnostic of DTO-EE's heavy-load gap at round 50: which part of the delay holds it, and a
prototype of receiver prices (sharing ADMM) that closes it on most networks but is not stable.

Heavy and overloaded-start sets of bench/convergence.py (seeds 7200-7209 at 85% and 7300-7309 at
80% with one stage-1 worker at 0.3x, the paper's link model). Deterministic.

- ``--split``: per heavy network, eq. 8 split into its compute part (sum lambda/(mu - lambda))
  and its hop part (sum x beta/r), each over Phi, for DTO-EE after 50 rounds and for the
  optimum, and the largest difference of a worker's utilisation between the two.
- default: the price prototype, median / worst gap after 25 and 50 rounds (``+k inf``: k
  routings overload a worker), cold (from the uniform start) and warm (the default rule's
  first 20 rounds, then prices), with rho_j = ``THETA`` H_j or adapted, with or without a
  trust region (``RUNS``).

The prototype (a driver of its own, not the policy's code): every receiver j keeps a dual
price L_j and a penalty rho_j = ``THETA`` * H_j (H_j its curvature per task/s, the M/D/1-PS
term plus the downstream Psi_j it would report; rho_j may change by ``RHO_RATE`` per round at
most). From its load y_j (n_j predecessors) it solves its own scalar problem
G_j'(Y) + (rho_j/n_j)(Y - y_j) = L_j for Y (G_j' the marginal delay of its load: its own
pressure term, eq. 11's penalty, Omega_j + Psi_j (Y - y_j)), sets L_j = G_j'(Y) kept within
[max(Omega_j, G_j'(0)), G_j'(headroom_target * mu_j)] and publishes the price
P_j = L_j + (rho_j/n_j)(y_j - Y). Every offloader takes the projected step that minimises
sum_j (beta_j/r_ij + P_j) dx_j + rho_j/2 dx_j^2 over its flow changes (increases capped at its
share of the receiver's headroom, as the default rule does). This is the sharing form of ADMM
with one block per offloader and one shared resource per receiver.

    python3 bench/heavy_prices.py [--seeds 10] [--split] [--current-rates]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from agent.policies.dtoee.knobs import DtoeeParams  # noqa: E402
from agent.policies.dtoee.network import run_dtoee  # noqa: E402
from agent.policies.dtoee.steps import (  # noqa: E402
    DAMP_NOISE,
    penalty_slopes,
    _water_fill,
    row_marginals,
)
from agent.policies.model import (  # noqa: E402
    compile_network,
    edge_flows,
    link_delays,
    loads,
    network_delay,
    node_rates,
    pressure,
    routing_vector,
    stage_remaining,
    uniform_routing,
)
from agent.policies.optimum import optimum  # noqa: E402
from tests.unit.dtoee_scenarios import random_scenario  # noqa: E402

ROUNDS = 50
THETA, RHO_RATE = 0.1, 1.3
# (label, warm rounds, adapt, trust): the settings the docs quote; adapt as in ``prices``
RUNS = (("cold, rho = 0.1 H", 0, None, None),
        ("warm, rho = 0.1 H", 20, None, None),
        ("warm, rho = 0.1 H, trust 0.02", 20, None, 0.02),
        ("warm, rho adaptive (0.2, 0.7, 2, 1)", 20, (0.2, 0.7, 2.0, 1.0), None),
        ("warm, rho adaptive (0.05, 0.7, 2, 0.5), trust 0.02", 20, (0.05, 0.7, 2.0, 0.5), 0.02))


def _sets(seeds):
    return [("heavy (85%)", [random_scenario(7200 + i, 0.85) for i in range(seeds)]),
            ("overloaded start", [random_scenario(7300 + i, 0.8, skew=0.3)
                                  for i in range(seeds)])]


def _receivers(recv, phi, npred, omega, psi, a, mu, dual, rho_state, params, adapt, change):
    """The receivers' part of one round: new dual, published price and penalty rho."""
    y = phi[recv]
    _, d1, d2 = pressure(a * y, mu, params.rho_ext)
    pen1, pen2 = penalty_slopes(a * y, mu, a, params)
    curv = a * a * d2 + pen2 + psi[recv]
    old = rho_state[recv]
    if adapt is None:
        rho = THETA * curv
        rho = np.where(np.isnan(old), rho, np.clip(rho, old / RHO_RATE, old * RHO_RATE))
        rho_state[recv] = rho
    else:  # rho_j = m_j H_j, m_j adapted like the default rule's damping, down to ``floor``
        floor, down, up, start = adapt
        ch, prev = change[0][recv], change[1][recv]
        noise = DAMP_NOISE * mu
        flip = (ch * prev < 0) & (np.abs(ch) > noise) & (np.abs(prev) > noise)
        m = np.where(np.isnan(old), start * npred[recv],
                     np.where(flip, np.minimum(up * old, 4.0 * npred[recv]),
                              np.maximum(floor, down * old)))
        rho_state[recv] = m
        rho = m * curv
    lam0 = np.where(np.isnan(dual[recv]), a * d1 + pen1 + omega[recv], dual[recv])
    rn = rho / npred[recv]

    def marginal(load):
        _, s1, _ = pressure(a * load, mu, params.rho_ext)
        return a * s1 + penalty_slopes(a * load, mu, a, params)[0] + omega[recv] \
            + psi[recv] * (load - y)

    lo, hi = np.zeros_like(y), 4.0 * np.maximum(y, 1.0) + 10.0
    for _ in range(60):  # bisection: the left side is increasing in Y
        mid = 0.5 * (lo + hi)
        below = marginal(mid) + rn * (mid - y) - lam0 < 0
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    big_y = 0.5 * (lo + hi)
    new = np.clip(lam0 + rn * (y - big_y), np.maximum(omega[recv], marginal(np.zeros_like(y))),
                  marginal(params.headroom_target * mu / a))
    dual[recv] = new
    return new + rn * (y - big_y), rho


def prices(sc, rounds=ROUNDS, warm=0, params=None, adapt=None, trust=None,
           current_rates=False):
    """Model delay after each round: ``warm`` rounds of the default rule, then prices.

    ``adapt`` (floor, down, up, start): rho_j = m_j H_j with m_j starting at ``start`` times
    the receiver's predecessors, times ``up`` (at most 4x the predecessors) when its load change
    reverses, else times ``down`` (at least ``floor``); None: rho_j = THETA H_j. ``trust``: no
    flow of an offloader changes by more than that share of its rate in a round.
    ``current_rates``: requests carry the current arrival rates instead of the previous round's."""
    params = params or DtoeeParams(link_model="delay")
    net = compile_network(sc)
    params = dataclasses.replace(params, link_model=net.link_model)
    rem = np.asarray(sc.remaining, dtype=np.float64)
    remv = stage_remaining(rem)
    p, out = uniform_routing(net), []
    if warm:
        first = run_dtoee(sc, rounds=warm, params=params, stop_when_converged=False, track=True)
        p, out = routing_vector(net, first.routing), list(first.history)
    valid = net.slots >= 0
    e = np.where(valid, net.slots, 0)
    row_node = net.offloaders
    row_stage = net.stage[row_node]
    n = len(net.ids)
    npred = np.maximum(np.bincount(net.edge_dst, minlength=n).astype(np.float64), 1.0)
    workers = net.stage > 0
    alpha = np.where(workers, net.flops[net.stage], 1.0)
    phi_prev = node_rates(net, p, rem)
    dual, rho_state = np.full(n, np.nan), np.full(n, np.nan)
    lam_prev, change = None, (np.zeros(n), np.zeros(n))
    for _ in range(rounds - len(out)):
        if current_rates:  # an oracle: requests carry the rates of the current routing
            phi_prev = node_rates(net, p, rem)
        xi = p * phi_prev[net.edge_src] * remv[net.stage[net.edge_src]] \
            * net.flops[net.stage[net.edge_dst]]
        lam = np.bincount(net.edge_dst, weights=xi, minlength=n)
        phi = np.where(workers, lam / alpha, net.source_rate)
        change = (lam - lam_prev if lam_prev is not None else np.zeros(n), change[0])
        lam_prev = lam
        omega, psi, price, rho = np.zeros(n), np.zeros(n), np.zeros(n), np.ones(n)
        prow = np.where(valid, p[e], 0.0)
        new = prow.copy()
        for h in range(net.num_stages - 1, -1, -1):
            rows = np.nonzero(row_stage == h)[0]
            d, v = net.edge_dst[e[rows]], valid[rows]
            a = net.flops[h + 1]
            recv = np.unique(d[v])
            price[recv], rho[recv] = _receivers(recv, phi, npred, omega, psi, a,
                                                net.capacity[recv], dual, rho_state, params,
                                                adapt, change)
            f = phi[row_node[rows]] * remv[h]
            _, _, om, ps = row_marginals(
                prow[rows], remv[row_stage[rows]], np.full(len(rows), a),
                np.full(len(rows), net.input_bytes[h + 1]), net.edge_rate[e[rows]], lam[d],
                net.capacity[d], omega[d], psi[d], v, params, f)
            omega[row_node[rows]] = om + ps * (phi - phi_prev)[row_node[rows]]
            psi[row_node[rows]] = ps
            x = prow[rows] * f[:, None]
            hop = net.input_bytes[h + 1] / np.where(v, net.edge_rate[e[rows]], 1.0)
            room = f[:, None] - x
            head = (params.headroom_target * net.capacity[d] - lam[d]) / a
            hi = np.where(v, np.minimum(np.maximum(head, 0.0) / npred[d], room), 0.0)
            stuck = hi.sum(axis=1) <= 1e-12 * f
            hi = np.where(stuck[:, None] & v, room, hi)
            lo = np.where(v, -x, 0.0)
            if trust is not None:
                hi, lo = np.minimum(hi, trust * f[:, None]), np.maximum(lo, -trust * f[:, None])
            nx = np.maximum(x + _water_fill(np.where(v, hop + price[d], 0.0),
                                            np.where(v, rho[d], 1.0), lo, hi), 0.0)
            tot = nx.sum(axis=1)
            new[rows] = np.where((tot > 0)[:, None], nx / np.maximum(tot, 1e-300)[:, None],
                                 prow[rows])
        p = p.copy()
        p[e[valid]] = new[valid]
        phi_prev = phi
        out.append(network_delay(net, p, rem))
    return np.asarray(out)


def _cell(g):
    g = np.asarray(g)
    fin = g[np.isfinite(g)]
    tail = " +%d inf" % (len(g) - len(fin)) if len(fin) < len(g) else ""
    if not len(fin):
        return "inf" + tail
    return "%.2f%% / %.2f%%%s" % (100 * np.median(fin), 100 * fin.max(), tail)


def _parts(net, p, rem):
    phi = node_rates(net, p, rem)
    lam, w = loads(net, phi), net.stage > 0
    comp = np.sum(lam[w] / (net.capacity[w] - lam[w])) / net.total_rate
    hop = np.sum(link_delays(net, edge_flows(net, p, phi, rem))) / net.total_rate
    return comp, hop, lam[w] / net.capacity[w]


def split(seeds):
    """Compute and hop parts of eq. 8 at round 50 against the optimum's, per heavy network."""
    print("| seed | gap at %d | compute s (DTO-EE / optimum) | hop s (DTO-EE / optimum) "
          "| largest utilisation difference |" % ROUNDS)
    print("| --- | --- | --- | --- | --- |")
    for i in range(seeds):
        sc = random_scenario(7200 + i, 0.85)
        net, rem = compile_network(sc), np.asarray(sc.remaining)
        got = run_dtoee(sc, rounds=ROUNDS, stop_when_converged=False)
        best = optimum(sc)
        c0, h0, u0 = _parts(net, routing_vector(net, got.routing), rem)
        c1, h1, u1 = _parts(net, routing_vector(net, best.routing), rem)
        print("| %d | %.2f%% | %.4f / %.4f | %.4f / %.4f | %.3f |" % (
            7200 + i, 100 * (got.delay_s / best.delay_s - 1), c0, c1, h0, h1,
            np.abs(u0 - u1).max()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--split", action="store_true", help="the compute/hop split instead")
    ap.add_argument("--current-rates", action="store_true",
                    help="requests carry the current arrival rates (an oracle)")
    args = ap.parse_args()
    if args.split:
        split(args.seeds)
        return 0
    print("| run | set | 25 rounds | 50 rounds |")
    print("| --- | --- | --- | --- |")
    for name, scs in _sets(args.seeds):
        best = [optimum(sc).delay_s for sc in scs]
        for label, warm, adapt, trust in RUNS:
            g = np.array([prices(sc, warm=warm, adapt=adapt, trust=trust,
                                 current_rates=args.current_rates) / b - 1.0
                          for sc, b in zip(scs, best)])
            print("| %s | %s | %s | %s |" % (label, name, _cell(g[:, 24]), _cell(g[:, 49])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
