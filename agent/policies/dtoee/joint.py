"""DTO-EE's stage-joint step (``step = "joint"``): the offloaders of a stage choose their flows
together.

The default rule steps each offloader on its own flows; near saturation the receivers'
curvature makes trades between offloaders (A moves from j to k while B moves from k to j, loads
unchanged) crawl, and 50 rounds do not reach 1% of the optimum at heavy load. Here the
offloaders of a stage minimise their stage's model jointly, each round:

    sum_j [ P(a A_j) + N(a A_j) + Omega_j A_j + 1/2 Psi'_j (A_j - A0_j)^2 ] + sum_ij hop_ij(y_ij)

over their flows y_ij (tasks/s) with sum_j y_ij = f_i (each offloader's outgoing rate) and
y >= 0; A_j = B_j + sum_i y_ij is receiver j's arrival rate (B_j: tasks/s from predecessors not
in the problem), A0_j = lambda_j / a its current one, a the next stage's FLOP per task, P the
M/D/1-PS term (``model.pressure``), N eq. 11's penalty, Omega_j and Psi_j the marginal delay and
curvature j reports downstream of itself, and hop_ij the link term of ``link_model`` ("delay":
beta/r per task; "shared": the link as a server of r bytes/s, with its penalty). The damping acts
on the receiver's aggregate: Psi'_j = Psi_j + (kappa_j - 1)(a^2 P''(lambda_j) + Psi_j), kappa_j
adapted as the default rule's (``steps.adapt_damping``) but starting at 1. A trade costs only
its hop-cost difference; a shift of load pays the receivers' curvature once.

The problem is convex; ``solve_stage`` is a projected Newton method in numpy. Every offloader of
a stage builds the same ``StageProblem`` from the same data (``stage_problem``: rows and
receivers sorted by id) and keeps its own row; the whole-network driver calls the same
functions, so an agent's routing equals the driver's to rounding. In the agent the data come
from ``StageReport``s, which the offloaders of a stage exchange once their successors' statuses
are in (``agent.policies.dtoee.joint_sync``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Container, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from agent.policies.dtoee.joint_kkt import newton_direction
from agent.policies.dtoee.knobs import DtoeeParams
# rates and capacities below it (a denormal) overflow the hop cost and the pressure terms, and
# LAPACK's least-squares fallback never returns on the NaN system that follows
from agent.config.checks import MIN_RATE
from agent.policies.dtoee.steps import IDLE_LEAN, paper_step, penalty_slopes, row_marginals
from agent.policies.model import hop_bytes, penalty, pressure

NEWTON_ITERATIONS = 60  # at most; 1-3 are typical, 31 the most seen (docs/dtoee.md)


@dataclass(frozen=True)
class StageReport:
    """What an offloader tells the other offloaders of its stage in a round (``step = "joint"``).

    Sent once the round-``round`` statuses of its live successors are in; the maps cover
    exactly those successors."""

    sender: str
    round: int
    out_rate_tasks_s: float  # f_i = phi_i * I_h: tasks/s it sends to the next stage
    routing: Dict[str, float]  # p_ij, its routing the step starts from
    link_rates_bytes_s: Dict[str, float]  # r_ij
    loads_flops_s: Dict[str, float]  # lambda_j from j's status
    capacities_flops_s: Dict[str, float]  # mu_j
    omegas_s: Dict[str, float]  # Omega_j
    curvatures_s2: Dict[str, float]  # Psi_j
    dampings: Dict[str, float]  # kappa_j
    predecessors: Dict[str, float]  # how many requests j summed this round
    quiet: int = 0  # the sender's quiet streak (``protocol.quiet_streak``)


_POSITIVE = ("link_rates_bytes_s", "capacities_flops_s")
_NON_NEGATIVE = ("routing", "loads_flops_s", "curvatures_s2", "dampings", "predecessors")


def check_report(report: StageReport) -> StageReport:
    """``report`` if its maps cover the same successors and hold sensible numbers (all finite;
    link rates and capacities >= ``MIN_RATE``, the rest >= 0 but Omega, which the rate
    extrapolation may take below 0); ValueError naming the field otherwise."""
    keys = set(report.routing)
    if not (report.out_rate_tasks_s >= 0 and math.isfinite(report.out_rate_tasks_s)):
        raise ValueError("StageReport.out_rate_tasks_s: %r" % report.out_rate_tasks_s)
    for name in _POSITIVE + _NON_NEGATIVE + ("omegas_s",):
        got = getattr(report, name)
        if set(got) != keys:
            raise ValueError("StageReport.%s: successors %s, routing has %s"
                             % (name, sorted(map(repr, got)), sorted(map(repr, keys))))
        bad = [v for v in got.values() if not math.isfinite(v)]
        if bad:  # inf or NaN: no comparison below would catch NaN
            raise ValueError("StageReport.%s: %r not finite" % (name, bad[0]))
        low = min(got.values(), default=MIN_RATE)
        if name in _POSITIVE + _NON_NEGATIVE and not (low >= MIN_RATE if name in _POSITIVE
                                                      else low >= 0):
            raise ValueError("StageReport.%s: %r out of range" % (name, low))
    return report


def check_receivers(report: StageReport, not_receivers: Container[str]) -> StageReport:
    """``report`` if its routing names no node of ``not_receivers`` (nodes known to serve no
    stage after the sender's); ValueError naming them otherwise. Taken in, such a name became
    a receiver of the stage problem, and the missing-report warning named it as one."""
    bad = sorted(j for j in report.routing if j in not_receivers)
    if bad:
        raise ValueError("StageReport.routing of %r names %s, known to serve no stage after "
                         "the sender's" % (report.sender, ", ".join(bad)))
    return report


@dataclass(frozen=True)
class StageProblem:
    """One stage's joint problem: offloaders (rows) and receivers sorted by id, one entry per
    edge (offloader -> receiver) in row-major order."""

    offloaders: Tuple[str, ...]
    receivers: Tuple[str, ...]
    out_rate: np.ndarray  # (R,) f_i, tasks/s
    row: np.ndarray  # (E,) offloader index of each edge
    col: np.ndarray  # (E,) receiver index of each edge
    succ: Tuple[str, ...]  # (E,) receiver id of each edge
    p: np.ndarray  # (E,) current routing probability
    rate: np.ndarray  # (E,) link rate, bytes/s
    flops: float  # a: FLOP per task at the receivers
    hop_bytes: float  # bytes per task on a hop: input bytes ("delay") or wire bytes ("shared")
    load: np.ndarray  # (J,) lambda_j, FLOP/s
    capacity: np.ndarray  # (J,) mu_j
    omega: np.ndarray  # (J,) Omega_j
    curvature: np.ndarray  # (J,) Psi'_j, the aggregate damping included
    background: np.ndarray  # (J,) tasks/s from predecessors not in the problem


def stage_problem(reports: Sequence[StageReport], flops: float, input_bytes: float,
                  params: DtoeeParams, own: str = "") -> StageProblem:
    """The joint problem of the offloaders whose ``reports`` are given (one each, any order).

    A receiver whose status counted more predecessors than the reports that feed it (a sibling
    that is gone or late) keeps their flow as background: its load minus the reported flows.
    A receiver's status is taken from the report of ``own`` (the node solving: what the
    receiver told it) when that report routes to it, else from the first sender's: a sibling's
    copy never overrides a node's own (one that lied about a receiver's capacity had steered
    its siblings' routing); in one round every copy is the same status."""
    reps = sorted(reports, key=lambda r: r.sender)
    recv: Dict[str, Tuple[float, float, float, float, float, float]] = {}
    for r in sorted(reps, key=lambda r: r.sender != own):  # own first, the rest as sorted
        for j in sorted(r.routing):
            recv.setdefault(j, (r.loads_flops_s[j], r.capacities_flops_s[j], r.omegas_s[j],
                                r.curvatures_s2[j], r.dampings[j], r.predecessors[j]))
    names = tuple(sorted(recv))
    index = {j: k for k, j in enumerate(names)}
    row, col, succ, p, rate = [], [], [], [], []
    for i, r in enumerate(reps):
        for j in sorted(r.routing):
            row.append(i)
            col.append(index[j])
            succ.append(j)
            p.append(max(0.0, float(r.routing[j])))
            rate.append(float(r.link_rates_bytes_s[j]))
    f = np.array([max(0.0, r.out_rate_tasks_s) for r in reps], dtype=np.float64)
    row_a, col_a, p_a = np.array(row, dtype=np.intp), np.array(col, dtype=np.intp), np.array(p)
    total = np.bincount(row_a, weights=p_a, minlength=len(reps))
    p_a = np.where(total[row_a] > 0, p_a / np.maximum(total[row_a], 1e-300),
                   1.0 / np.maximum(np.bincount(row_a, minlength=len(reps))[row_a], 1))
    st = np.array([recv[j] for j in names], dtype=np.float64).reshape(len(names), 6)
    load, cap, omega, psi, kappa, npred = st.T
    fed = np.bincount(col_a, minlength=len(names))
    flow = np.bincount(col_a, weights=p_a * f[row_a], minlength=len(names))
    background = np.where(npred > fed, np.maximum(load / flops - flow, 0.0), 0.0)
    _, _, d2 = pressure(load, cap, params.rho_ext)
    curv = psi + (np.maximum(kappa, 1.0) - 1.0) * (flops * flops * d2 + psi)
    hop = float(hop_bytes(input_bytes, params.link_model))
    return StageProblem(tuple(r.sender for r in reps), names, f, row_a, col_a, tuple(succ), p_a,
                        np.array(rate, dtype=np.float64), float(flops), hop, load, cap, omega,
                        curv, background)


def stage_cost(prob: StageProblem, y: np.ndarray, params: DtoeeParams):
    """(cost, gradient per edge, curvature per receiver, curvature per edge) of the stage model
    (module docstring) at flows ``y`` (E,)."""
    a = prob.flops
    arr = prob.background + np.bincount(prob.col, weights=y, minlength=len(prob.receivers))
    load = a * arr
    v, d1, d2 = pressure(load, prob.capacity, params.rho_ext)
    pen1, pen2 = penalty_slopes(load, prob.capacity, a, params)
    gap = arr - prob.load / a
    cost = float((v + prob.omega * arr + 0.5 * prob.curvature * gap * gap).sum()) + penalty(
        load, prob.capacity, params.penalty_k, params.epsilon)
    grad = (a * d1 + pen1 + prob.omega + prob.curvature * gap)[prob.col]
    h_recv = a * a * d2 + pen2 + prob.curvature
    b = prob.hop_bytes
    if params.link_model == "shared":
        wire = b * y
        lv, l1, l2 = pressure(wire, prob.rate, params.rho_ext)
        lpen1, lpen2 = penalty_slopes(wire, prob.rate, b, params)
        return (cost + float(lv.sum()) + penalty(wire, prob.rate, params.penalty_k,
                                                 params.epsilon),
                grad + b * l1 + lpen1, h_recv, b * b * l2 + lpen2)
    per_task = b / prob.rate  # s per task on each link
    return cost + float((per_task * y).sum()), grad + per_task, h_recv, np.zeros(len(y))


def solve_stage(prob: StageProblem, params: DtoeeParams) -> np.ndarray:
    """The flows y (E,) that minimise ``stage_cost`` under each offloader's flow balance and
    y >= 0: projected Newton. Each iteration solves the KKT system of the cost's quadratic
    expansion (curvature B^T diag(h_recv) B + diag(h_edge), B the edge -> receiver incidence)
    over the free edges (flow > 0, or at 0 with a gradient below the largest on its
    offloader's used edges; one whose step would go negative is fixed at 0 and the system
    solved again; ``joint_kkt.newton_direction``: reduced to the offloaders with 2 or more free
    edges and solved per group of them that share receivers, small groups together),
    then steps as far as the bounds allow and backtracks until the cost falls."""
    f, row, col = prob.out_rate, prob.row, prob.col
    n_edges, n_rows = len(row), len(f)
    f_row = f[row]
    y = prob.p * f_row
    if n_edges == 0 or not np.any(f > 0):
        return y
    tiny = 1e-12 * f_row  # flows at or below it count as unused
    cost, g, h_recv, h_edge = stage_cost(prob, y, params)
    for _ in range(NEWTON_ITERATIONS):
        used = y > tiny
        top = np.full(n_rows, -np.inf)
        np.maximum.at(top, row, np.where(used, g, -np.inf))
        free = used | (g < top[row])
        h_edge_reg = h_edge + 1e-9 * (1.0 + h_recv[col])  # > 0 where a link adds no curvature
        while True:
            idx = free.nonzero()[0]
            d = np.zeros(n_edges)
            d[idx] = newton_direction(row[idx], col[idx], h_recv, h_edge_reg[idx], g[idx])
            bad = free & ~used & (d < 0)
            if not bad.any():
                break
            free &= ~bad
        slope = float(g @ d)
        if not slope < -1e-16 * max(1.0, abs(cost)):
            break
        neg = (d < 0) & used
        t_max = float((-y[neg] / d[neg]).min()) if neg.any() else 1.0
        t = min(1.0, t_max)
        while True:
            y_new = np.maximum(y + t * d, 0.0)
            # back onto each offloader's rate (the clip and the solve's rounding drift off it)
            total = np.bincount(row, weights=y_new, minlength=n_rows)
            y_new *= np.where(total > 0, f / np.maximum(total, 1e-300), 0.0)[row]
            new = stage_cost(prob, y_new, params)
            if new[0] <= cost + 1e-4 * t * slope or t < 1e-10:
                break
            t *= 0.5
        if not np.isfinite(new[0]):  # the backtrack gave up on a NaN cost: do not move there
            break
        # a step cut short by a bound only fixes that flow at 0: go on
        settled = t_max >= 1.0 and cost - new[0] < 1e-13 * max(1.0, abs(cost))
        y, (cost, g, h_recv, h_edge) = y_new, new
        if settled:
            break
    return y


def joint_routing(prob: StageProblem, params: DtoeeParams
                  ) -> Tuple[List[Dict[str, float]], Dict[str, float]]:
    """Solve ``prob``: the new routing of each offloader (``prob.offloaders`` order) and each
    receiver's load (FLOP/s) under it. An offloader sending nothing has no flow to solve for:
    as under the default rule, it leans half way to the receiver its next task would cost the
    least (the stage's marginal cost there), so that it routes well once tasks come."""
    y = solve_stage(prob, params)
    total = np.bincount(prob.row, weights=y, minlength=len(prob.offloaders))
    routing: List[Dict[str, float]] = [{} for _ in prob.offloaders]
    for e, (i, j) in enumerate(zip(prob.row, prob.succ)):
        # a non-finite total (inf/NaN rate in ``prob``) would give NaN shares: keep the old ones
        routing[i][j] = (float(y[e] / total[i]) if 0 < total[i] < np.inf
                         else float(prob.p[e]))
    idle = [i for i in range(len(prob.offloaders)) if total[i] == 0 and routing[i]]
    if idle:
        g = stage_cost(prob, y, params)[1]
        for i in idle:
            edges = np.flatnonzero(prob.row == i)
            if np.isfinite(g[edges]).all():
                lean = paper_step(prob.p[edges][None, :], g[edges][None, :],
                                  np.ones((1, len(edges)), dtype=bool), IDLE_LEAN)[0]
                routing[i] = {prob.succ[e]: float(v) for e, v in zip(edges, lean)}
    arr = prob.background + np.bincount(prob.col, weights=y, minlength=len(prob.receivers))
    return routing, {j: float(prob.flops * a) for j, a in zip(prob.receivers, arr)}


def joint_row(report: StageReport, new_routing: Mapping[str, float],
              new_loads: Mapping[str, float], remaining: float, flops: float,
              input_bytes: float, params: DtoeeParams, pending: float = 0.0):
    """One offloader's side after the joint solve: (Delta_ij at the routing the step started
    from, {succ: Delta}; Omega_i and Psi_i at the new routing and the receivers' loads under it,
    Omega_i extrapolated by Psi_i times ``pending``, as ``steps.update_rows`` does)."""
    succ = sorted(report.routing)
    one = np.ones((1, len(succ)), dtype=bool)
    args = (np.array([remaining]), np.array([flops]), np.array([input_bytes]),
            np.array([[report.link_rates_bytes_s[j] for j in succ]]))
    cap = np.array([[report.capacities_flops_s[j] for j in succ]])
    omega = np.array([[report.omegas_s[j] for j in succ]])
    psi = np.array([[report.curvatures_s2[j] for j in succ]])
    old = np.array([[report.routing[j] for j in succ]])  # normalised by its builder
    delta = row_marginals(old, *args, np.array([[report.loads_flops_s[j] for j in succ]]), cap,
                          omega, psi, one, params, np.array([report.out_rate_tasks_s]))[0]
    _, _, om, ps = row_marginals(np.array([[new_routing[j] for j in succ]]), *args,
                                 np.array([[new_loads[j] for j in succ]]), cap, omega, psi, one,
                                 params, np.array([report.out_rate_tasks_s]))
    return ({j: float(d) for j, d in zip(succ, delta[0])}, float(om[0] + ps[0] * pending),
            float(ps[0]))


def _newton_direction(inc, h_recv, h_edge, balance, g):
    """``joint_kkt.newton_direction`` given the free edges' incidence as matrices: ``inc``
    (receivers x edges) and ``balance`` (offloaders x edges), one 1 per column."""
    return newton_direction(np.argmax(balance, axis=0), np.argmax(inc, axis=0), h_recv, h_edge,
                            g)
