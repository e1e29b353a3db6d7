"""The central optimum of the routing problem for fixed thresholds (a convex program).

With fixed thresholds the mean response time T is convex in the edge flows x_e (tasks/s): each
worker contributes lambda/(mu - lambda) with lambda = alpha * (inflow), each edge x_e * beta/r_e
(the paper's ``link_model`` "delay") or L_e/(r_e - L_e) with L_e = b x_e its bytes/s ("shared",
a link kept below RHO_EXT of its rate like a worker), and the flows obey linear conservation (a source sends its rate; a worker of stage h forwards
I_h of its inflow). This module solves it with scipy's SLSQP and analytic gradients. It exists
to check DTO-EE (tests, the figures in docs/dtoee.md), not to run in the agent: it needs global state.
"""

from __future__ import annotations

from typing import Mapping, Optional, Tuple

import numpy as np
from scipy.optimize import linprog, minimize

from agent.policies.model import (
    Network,
    PolicyResult,
    compile_network,
    edge_flows,
    make_result,
    node_rates,
    pressure,
    remaining_for,
    stage_remaining,
    uniform_routing,
)
from agent.policies.setting import Scenario

RHO_EXT = 0.999  # utilisation cap of the program; past it the objective is only a continuation


def _flows_to_routing(net: Network, x: np.ndarray) -> np.ndarray:
    out = np.bincount(net.edge_src, weights=x, minlength=len(net.ids))
    deg = np.bincount(net.edge_src, minlength=len(net.ids)).astype(np.float64)
    src_out = out[net.edge_src]
    return np.where(src_out > 0, x / np.where(src_out > 0, src_out, 1.0),
                    1.0 / deg[net.edge_src])


def _program(net: Network, remaining):
    """Conservation (A_eq y = b_eq) and utilisation rows (a_in y = lambda/mu) over y = x/Phi;
    under ``link_model`` "shared" one more row per link (a_in y = L/r)."""
    n = len(net.ids)
    rem = stage_remaining(remaining)
    workers = np.nonzero(net.stage > 0)[0]
    alpha = net.flops[net.stage]
    offl = net.offloaders
    row = {int(i): k for k, i in enumerate(offl)}
    scale = max(net.total_rate, 1e-12)
    a_eq = np.zeros((len(offl), net.num_edges))
    a_in = np.zeros((len(workers), net.num_edges))
    wrow = {int(j): k for k, j in enumerate(workers)}
    for e in range(net.num_edges):
        a_eq[row[int(net.edge_src[e])], e] += scale
        d = int(net.edge_dst[e])
        if d in row:
            a_eq[row[d], e] -= rem[net.stage[d]] * scale
        a_in[wrow[d], e] = alpha[d] * scale / net.capacity[d]
    if net.link_model == "shared":
        a_in = np.r_[a_in, np.diag(_link_bytes(net) * scale / net.edge_rate)]
    return a_eq, net.source_rate[offl], a_in, scale, workers, n


def _link_bytes(net: Network) -> np.ndarray:
    """b_e: wire bytes per task on every edge."""
    return net.hop_bytes[net.stage[net.edge_dst]]


def min_max_utilisation(net: Network, remaining) -> Tuple[float, np.ndarray]:
    """The lowest possible utilisation of the busiest worker (and, under ``link_model``
    "shared", link) -- an LP -- and edge flows reaching it.

    Above 1, no routing keeps every worker (and link) below capacity.
    """
    a_eq, b_eq, a_in, scale, workers, _ = _program(net, remaining)
    ne = net.num_edges
    rows = a_in.shape[0]
    lp = linprog(np.r_[np.zeros(ne), 1.0],
                 A_ub=np.c_[a_in, -np.ones(rows)], b_ub=np.zeros(rows),
                 A_eq=np.c_[a_eq, np.zeros(len(b_eq))], b_eq=b_eq,
                 bounds=[(0.0, None)] * ne + [(0.0, None)], method="highs")
    if lp.status != 0:
        return float("inf"), np.zeros(ne)
    return float(lp.x[-1]), lp.x[:ne] * scale


def optimal_flows(net: Network, remaining, x0: Optional[np.ndarray] = None,
                  max_iter: int = 500, ftol: float = 1e-11) -> np.ndarray:
    """Edge flows (tasks/s) minimising Phi*T under flow conservation; SLSQP."""
    a_eq, b_eq, a_in, scale, workers, n = _program(net, remaining)
    alpha = net.flops[net.stage]
    shared = net.link_model == "shared"
    b = _link_bytes(net)
    link = net.input_bytes[net.stage[net.edge_dst]] / net.edge_rate

    def inflow(y):
        return np.bincount(net.edge_dst, weights=y * scale, minlength=n)

    def hops(y):
        """(the links' share of Phi*T / scale, its gradient in y)."""
        if not shared:
            return y @ link, link
        v, d1, _ = pressure(b * y * scale, net.edge_rate, RHO_EXT)
        return np.sum(v) / scale, b * d1

    def fun(y):
        lam = alpha * inflow(y)
        v, d1, _ = pressure(lam[workers], net.capacity[workers], RHO_EXT)
        return np.sum(v) / scale + hops(y)[0]

    def grad(y):
        lam = alpha * inflow(y)
        d1 = np.zeros(n)
        d1[workers] = pressure(lam[workers], net.capacity[workers], RHO_EXT)[1]
        return alpha[net.edge_dst] * d1[net.edge_dst] + hops(y)[1]

    if x0 is None:
        # start from the flows that minimise the highest utilisation: feasible whenever the
        # problem is, which SLSQP needs to make progress on this steep objective
        u, x0 = min_max_utilisation(net, remaining)
        if not np.isfinite(u):
            p0 = uniform_routing(net)
            x0 = edge_flows(net, p0, node_rates(net, p0, remaining), remaining)
    res = minimize(fun, x0 / scale, jac=grad, method="SLSQP",
                   bounds=[(0.0, None)] * net.num_edges,
                   constraints=[{"type": "eq", "fun": lambda y: a_eq @ y - b_eq,
                                 "jac": lambda y: a_eq},
                                {"type": "ineq", "fun": lambda y: RHO_EXT - a_in @ y,
                                 "jac": lambda y: -a_in}],
                   options={"maxiter": max_iter, "ftol": ftol})
    return np.maximum(res.x, 0.0) * scale


def optimum(scenario: Scenario, thresholds: Optional[Mapping[int, float]] = None
            ) -> PolicyResult:
    """The optimal routing for fixed thresholds (policy name ``optimum``).

    ``thresholds`` is needed when the scenario has an exit profile; ``rounds`` in the result is
    0 and ``converged`` says whether the optimum is feasible (every worker, and under
    ``link_model`` "shared" every link, below capacity).
    """
    net = compile_network(scenario)
    remaining, _ = remaining_for(scenario, thresholds)
    x = optimal_flows(net, remaining)
    p = _flows_to_routing(net, x)
    res = make_result("optimum", scenario, net, p, thresholds, 0, True)
    if not np.isfinite(res.delay_s):
        return make_result("optimum", scenario, net, p, thresholds, 0, False)
    return res
