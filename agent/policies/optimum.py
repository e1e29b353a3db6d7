"""The central optimum of the routing problem for fixed thresholds (a convex program).

With fixed thresholds the mean response time T is convex in the edge flows x_e (tasks/s): each
worker contributes lambda/(mu - lambda) with lambda = alpha * (inflow), each edge x_e * beta/r_e
(the paper's ``link_model`` "delay") or L_e/(r_e - L_e) with L_e = b x_e its bytes/s ("shared",
a link kept below RHO_EXT of its rate like a worker), and the flows obey linear conservation (a
source sends its rate; a worker of stage h forwards I_h of its inflow). This module solves it
with scipy's SLSQP and analytic gradients, posed so that the answer depends neither on the scale
of the rates nor on their spread (``solve``). It exists to check DTO-EE (tests, the figures in
docs/dtoee.md), not to run in the agent: it needs global state.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Optional, Tuple

import numpy as np
from scipy import sparse
from scipy.optimize import linprog, minimize

from agent.policies.model import (
    Network,
    PolicyResult,
    compile_network,
    edge_flows,
    make_result,
    network_delay,
    node_rates,
    pressure,
    remaining_for,
    stage_remaining,
    uniform_routing,
)
from agent.policies.setting import Scenario

RHO_EXT = 0.999  # utilisation cap of the program; past it the objective is only a continuation
# a successor getting a positive share below this of its sender's tasks is dropped by the
# polish before SLSQP runs again: such crumbs on a link or worker 1e8 times slower than the
# rest (1e-8 of the tasks) can cost more delay than all the other traffic
POLISH_SHARE = 1e-6
POLISH_ROUNDS = 5  # most polish-and-solve-again rounds after the first solve
# the rounds end at one that improves eq. 8 by less than this fraction: it found the same point
# again, up to SLSQP's own tolerance
POLISH_GAIN = 1e-9


class Solution(NamedTuple):
    """Edge flows of ``solve`` and whether to trust them as the optimum."""

    flows: np.ndarray  # tasks/s per edge
    delay_s: float  # eq. 8 of their routing; inf when it overloads a worker or link
    converged: bool  # SLSQP reported success and the flows are no worse than its start point
    message: str  # SLSQP's last word, or why the start point was kept


def _flows_to_routing(net: Network, x: np.ndarray) -> np.ndarray:
    out = np.bincount(net.edge_src, weights=x, minlength=len(net.ids))
    deg = np.bincount(net.edge_src, minlength=len(net.ids)).astype(np.float64)
    src_out = out[net.edge_src]
    return np.where(src_out > 0, x / np.where(src_out > 0, src_out, 1.0),
                    1.0 / deg[net.edge_src])


def _program(net: Network, remaining):
    """The constraints per unit of the total rate Phi, over y = x/Phi: conservation
    (A_eq y = b_eq: an offloader sends its share of Phi, a worker of stage h forwards I_h of
    what it receives; coefficients 1 and -I_h, b_eq summing to 1) and utilisation rows
    (a_in y = lambda/mu); under ``link_model`` "shared" one more row per link (a_in y = L/r).

    Both sides of every row are free of Phi's unit on purpose: solvers' tolerances are
    absolute (HiGHS's 1e-7 on a row), so rows in tasks/s took every flow 0 for conserved at a
    total of 1e-9 tasks/s, and rows of 1e24 defeated the LP."""
    n, ne = len(net.ids), net.num_edges
    rem = stage_remaining(remaining)
    workers = np.nonzero(net.stage > 0)[0]
    alpha = net.flops[net.stage]
    offl = net.offloaders
    scale = net.total_rate if net.total_rate > 0 else 1.0  # no tasks: every flow is 0 anyway
    # sparse: two entries per edge at most, where dense rows x edges grew with the square of
    # the sources (10,000 sources of paper-bert: over 24 GB)
    row = np.full(n, -1)
    row[offl] = np.arange(len(offl))
    wrow = np.full(n, -1)
    wrow[workers] = np.arange(len(workers))
    src, dst, edges = net.edge_src, net.edge_dst, np.arange(ne)
    fwd = row[dst] >= 0  # an edge into an offloading worker: it forwards I_h of that flow
    a_eq = sparse.csr_matrix((np.r_[np.ones(ne), -rem[net.stage[dst[fwd]]]],
                              (np.r_[row[src], row[dst[fwd]]], np.r_[edges, edges[fwd]])),
                             shape=(len(offl), ne))
    a_in = sparse.csr_matrix((alpha[dst] * scale / net.capacity[dst], (wrow[dst], edges)),
                             shape=(len(workers), ne))
    if net.link_model == "shared":
        a_in = sparse.vstack([a_in, sparse.diags(_link_bytes(net) * scale / net.edge_rate)],
                             format="csr")
    return a_eq, net.source_rate[offl] / scale, a_in, scale, workers, n


def _link_bytes(net: Network) -> np.ndarray:
    """b_e: wire bytes per task on every edge."""
    return net.hop_bytes[net.stage[net.edge_dst]]


def _utilisation_floor(net: Network, remaining) -> float:
    """A utilisation every routing reaches at some worker or link: the busiest stage's work
    (alpha_h times the tasks/s entering stage h, the same under any routing) over the stage's
    total capacity, and under ``link_model`` "shared" the bytes/s into a stage over the total
    rate of the links into it."""
    entering = np.cumprod(stage_remaining(remaining))[:-1] * net.total_rate
    w = net.stage > 0
    cap = np.bincount(net.stage[w], weights=net.capacity[w], minlength=net.num_stages + 1)[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = net.flops[1:] * entering / cap
        if net.link_model == "shared":
            rate = np.bincount(net.stage[net.edge_dst], weights=net.edge_rate,
                               minlength=net.num_stages + 1)[1:]
            u = np.r_[u, net.hop_bytes[1:] * entering / rate]
    u = u[np.isfinite(u) & (u > 0)]
    return float(u.max()) if u.size else 1.0


def min_max_utilisation(net: Network, remaining) -> Tuple[float, np.ndarray]:
    """The lowest possible utilisation of the busiest worker (and, under ``link_model``
    "shared", link) -- an LP -- and edge flows reaching it.

    Above 1, no routing fits every worker (and link) below capacity. The LP is posed per unit
    of the total rate (``_program``) and its utilisation rows in units of ``_utilisation_floor``
    (the answer is at least 1 there), so its answer does not depend on the rates' scale:
    HiGHS takes a coefficient below 1e-9 for 0 and refuses one above 1e15, and utilisations
    per unit of Phi run from about 1e-20 to 1e28 over the rates a scenario may hold.
    """
    a_eq, b_eq, a_in, scale, workers, _ = _program(net, remaining)
    ne = net.num_edges
    rows = a_in.shape[0]
    unit = _utilisation_floor(net, remaining)
    a_in = a_in / unit
    # an edge whose worker or link a share of Phi loads over 1e15 times more than another edge
    # of its sender can relieve the answer by 1e-15 of it at most: kept at 0 when HiGHS would
    # refuse its coefficient, so that the LP is solved at all
    col = a_in.max(axis=0).toarray().ravel()
    cheapest = np.full(len(net.ids), np.inf)
    np.minimum.at(cheapest, net.edge_src, col)
    far = (col > 1e15) & (col > 1e15 * cheapest[net.edge_src])
    a_in = a_in @ sparse.diags((~far).astype(float))
    lp = linprog(np.r_[np.zeros(ne), 1.0],
                 A_ub=sparse.hstack([a_in, -np.ones((rows, 1))], format="csr"),
                 b_ub=np.zeros(rows),
                 A_eq=sparse.hstack([a_eq, np.zeros((len(b_eq), 1))], format="csr"), b_eq=b_eq,
                 bounds=[(0.0, 0.0) if f else (0.0, None) for f in far] + [(0.0, None)],
                 method="highs")
    if lp.status != 0:
        return float("inf"), np.zeros(ne)
    return float(lp.x[-1]) * unit, np.maximum(lp.x[:ne], 0.0) * scale


def _objective(net: Network, scale: float, workers: np.ndarray, n: int):
    """(Phi*T / Phi, its gradient) as functions of y = x/Phi: T in seconds."""
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

    return fun, grad


def _polish(net: Network, remaining, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(flows, crumbs): ``x``'s routing without the successors that get a positive share below
    ``POLISH_SHARE`` of their sender's tasks (the crumbs, a mask over the edges), the others'
    shares scaled up to make 1 again, and the flows that routing gives (conserved exactly)."""
    p = _flows_to_routing(net, x)
    crumbs = (p > 0) & (p < POLISH_SHARE)  # a sender's shares sum to 1: not all are crumbs
    p = np.where(crumbs, 0.0, p)
    out = np.bincount(net.edge_src, weights=p, minlength=len(net.ids))
    p = p / out[net.edge_src]
    return edge_flows(net, p, node_rates(net, p, remaining), remaining), crumbs


def _delay(net: Network, remaining, x: np.ndarray) -> float:
    """Eq. 8 of the routing that flows ``x`` give (what ``optimum`` reports for them)."""
    return network_delay(net, _flows_to_routing(net, x), remaining)


def solve(net: Network, remaining, x0: Optional[np.ndarray] = None, max_iter: int = 500,
          ftol: float = 1e-11) -> Solution:
    """Edge flows minimising Phi*T under flow conservation: SLSQP from ``x0`` (tasks/s; by
    default the flows of ``min_max_utilisation``), then rounds of a polish (``_polish``) and
    SLSQP again from there, while a round gains more than ``POLISH_GAIN``; the best flows by
    eq. 8 of all these.

    Each SLSQP run is posed in units taken at its start point, as SLSQP's tolerances and its
    first steps are absolute: the objective is T over T there (``ftol`` is relative: with T
    in seconds, 1e-11 ended the search at its first step when T was microseconds), and each
    edge's flow is counted in the flow whose marginal delay there is the whole of T, at most
    all of Phi (a diagonal preconditioner: an edge into a worker or over a link 1e8 times
    slower than the rest moves in steps its own size, not the fast edges'). Each round starts
    afresh in the units of the last result. When every result is worse than the start point,
    the start point is returned, not converged."""
    a_eq, b_eq, a_in, scale, workers, n = _program(net, remaining)
    a_eq, a_in = a_eq.toarray(), a_in.toarray()  # SLSQP takes dense Jacobians
    fun, grad = _objective(net, scale, workers, n)
    if x0 is None:
        # start from the flows that minimise the highest utilisation: feasible whenever the
        # problem is, which SLSQP needs to make progress on this steep objective
        u, x0 = min_max_utilisation(net, remaining)
        if not np.isfinite(u):
            p0 = uniform_routing(net)
            x0 = edge_flows(net, p0, node_rates(net, p0, remaining), remaining)

    def run(x_start: np.ndarray) -> Solution:
        """SLSQP from ``x_start`` over z = y / unit, the objective T / T(start)."""
        y0 = x_start / scale
        ref = fun(y0)
        ref = ref if np.isfinite(ref) and ref > 0 else 1.0
        g0 = grad(y0) / ref  # > 0: every edge adds compute (and hop) delay
        unit = 1.0 / np.clip(g0, 1.0, 1e300)
        eq, ineq = a_eq * unit, a_in * unit
        res = minimize(lambda z: fun(z * unit) / ref, y0 / unit,
                       jac=lambda z: grad(z * unit) * unit / ref, method="SLSQP",
                       bounds=[(0.0, None)] * net.num_edges,
                       constraints=[{"type": "eq", "fun": lambda z: eq @ z - b_eq,
                                     "jac": lambda z: eq},
                                    {"type": "ineq", "fun": lambda z: RHO_EXT - ineq @ z,
                                     "jac": lambda z: -ineq}],
                       options={"maxiter": max_iter, "ftol": ftol})
        x = np.maximum(res.x, 0.0) * unit * scale
        return Solution(x, _delay(net, remaining, x), bool(res.success), str(res.message))

    last = run(x0)
    tried = [last]
    for _ in range(POLISH_ROUNDS):
        polished, crumbs = _polish(net, remaining, last.flows)
        if crumbs.any():
            tried.append(last._replace(flows=polished, delay_s=_delay(net, remaining, polished)))
        again = run(polished)
        tried.append(again)
        if not again.delay_s < last.delay_s * (1.0 - POLISH_GAIN):
            break
        last = again
    # the least delay; among equals one SLSQP vouched for, then the earliest
    best = min(tried, key=lambda s: (s.delay_s, not s.converged))
    start = _delay(net, remaining, x0)
    if best.delay_s > start:
        return Solution(x0, start, False, "every solution was worse than the start point "
                        "(%s)" % best.message)
    return best


def optimum(scenario: Scenario, thresholds: Optional[Mapping[int, float]] = None
            ) -> PolicyResult:
    """The optimal routing for fixed thresholds (policy name ``optimum``).

    ``thresholds`` is needed when the scenario has an exit profile; ``rounds`` in the result is
    0 and ``converged`` says whether the optimum is feasible (every worker, and under
    ``link_model`` "shared" every link, below capacity) and the solver found it: false too
    when SLSQP reported a failure or ended worse than its start point (``solve``).
    """
    net = compile_network(scenario)
    remaining, _ = remaining_for(scenario, thresholds)
    sol = solve(net, remaining)
    p = _flows_to_routing(net, sol.flows)
    res = make_result("optimum", scenario, net, p, thresholds, 0, sol.converged)
    if res.converged and not np.isfinite(res.delay_s):
        return make_result("optimum", scenario, net, p, thresholds, 0, False)
    return res
