"""DTO-EE per node: the messages, the receiver step (Alg. 1), the offloader step (Alg. 2, eqs.
13-16 and the routing update) and the threshold step (Alg. 3, eqs. 17-18).

Protocol (what an agent does in the configuration phase of a slot)
------------------------------------------------------------------
Every node is an *offloader* (sources and workers of stages 1..H-1: they hold a routing
``{successor: p}``), a *receiver* (workers: they get tasks from predecessors), or both. A round
t has two message waves:

1. **RUR** (``Request``), offloader -> each successor. Prepared at the end of round t-1 by
   ``offloader_step`` (round 0: ``make_requests`` with the initial routing): the compute the
   offloader will send there, ``flops_s = p_ij * phi_i * I_h * alpha_{h+1}`` (eq. 5's xi).
2. **RUS** (``Status``), receiver -> each predecessor, sent once the receiver has the round-t
   RURs of all live predecessors (or its wait timed out): ``receiver_status`` sums them into its
   load lambda_j (eq. 5) and adds its capacity mu_j, its downstream marginal delay Omega_j
   (eq. 16) and curvature from its own latest offloader step (0 at the final stage), and the
   number of predecessors it heard from.
3. Once an offloader has the round-t RUS of all live successors, ``offloader_step`` computes the
   marginal delays Delta_ij (eq. 15), its own Omega_i (eq. 16), the new routing (``paper``: eq. 19;
   ``default``: see below) and the round-(t+1) RURs. A worker uses as its own arrival rate phi_i
   ``arrival_rate(requests, alpha_h)`` of the round-t RURs (a source: its own rate).

So information moves one stage per round in each direction, with no waiting on far nodes.

Every m rounds one exit stage adjusts its threshold (``threshold_stage``): each worker of that
stage sends a ``ThresholdReport`` (its phi_i and sum_j p_ij Delta_ij) to the others of its
stage; each then calls ``choose_threshold`` on the same reports and the accuracy-ratio table
(the exit profile) and gets the same new thresholds C (eqs. 17-18). C travels in every RUR/RUS
with a version number; ``merge_thresholds`` keeps the newest.

Neighbours that are gone: an offloader passes only the statuses it received this round. A
successor without a status gets probability 0 and its mass moves to the others (in proportion to
their probabilities, uniformly if those are all 0) before the step; a receiver sums only the
requests it received. A node whose every successor is gone gets an empty routing and must not
offload until one returns.

Step rules (``DtoeeParams.step``)
---------------------------------
``paper``: eq. 19, move a fixed fraction tau_p of the mass to the successor of least Delta.

``default``: a scaled projected-Newton step in the offloader's flows, as in Gallager's and
Bertsekas-Gafni's minimum-delay routing: the node minimises sum_j (Delta_ij x_j + 1/2 kappa_j
H_ij x_j^2) over flow changes x_j with sum x_j = 0 and x_j >= -(current flow), where H_ij is the
second derivative of the delay along j (the receiver's M/D/1-PS term plus the downstream
curvature it reports) and kappa_j = (number of predecessors of j) / step_scale, because all of
j's predecessors move at the same time. Increases towards j are capped by an equal share of j's
headroom up to ``headroom_target * mu_j``, so receivers that are not overloaded never become so,
and overloaded ones are drained at once. Everything it uses is in the node's own RUS messages.

Units: Delta, Omega in seconds (derivatives of Phi*T, the total delay per second, in the flow
tasks/s), curvature in s^2, loads and capacities in FLOP/s. The penalty (eq. 11) is written on
utilisation and its factor K already includes the paper's Phi, so no node needs Phi for routing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from agent.policies.model import pressure
from agent.policies.thresholds import (  # noqa: F401 (re-exported: the threshold step)
    ThresholdReport, choose_threshold, threshold_report, threshold_stage)
from agent.scenario import ScenarioError

STEP_RULES = ("default", "paper")


@dataclass(frozen=True)
class DtoeeParams:
    """DTO-EE knobs (scenario ``knobs`` or node config); ``parse_knobs`` validates them."""

    step: str = "default"  # routing update: "default" (scaled Newton) or "paper" (eq. 19)
    paper_step_size: float = 0.1  # tau_p of eq. 19, in (0, 1]
    step_scale: float = 1.0  # default rule: multiplier of the Newton step, in (0, 2]
    headroom_target: float = 0.95  # default rule: fill receivers up to this utilisation, (0, 1)
    rho_ext: float = 0.99  # delay function continued quadratically past this utilisation
    penalty_k: float = 1.0e4  # K of eq. 11 (already times Phi), seconds
    epsilon: float = 0.01  # epsilon of eq. 11, as a fraction of capacity
    rounds: int = 100  # communication rounds per configuration phase
    tolerance: float = 1e-4  # converged when no routing probability moved more than this
    m: int = 5  # a threshold step every m rounds (Alg. 3)
    threshold_step: float = 0.05  # tau_c: threshold change per step
    initial_threshold: float = 0.8  # c_h of every exit before tuning


_FLOAT_RANGES = {
    "paper_step_size": (0.0, 1.0, False, True),
    "step_scale": (0.0, 2.0, False, True),
    "headroom_target": (0.0, 1.0, False, False),
    "rho_ext": (0.5, 1.0, True, False),
    "penalty_k": (0.0, math.inf, True, False),
    "epsilon": (0.0, 0.5, True, True),
    "tolerance": (0.0, 1.0, False, True),
    "threshold_step": (0.0, 1.0, False, True),
    "initial_threshold": (0.0, 1.0, False, True),
}


def parse_knobs(knobs: Mapping[str, Any]) -> DtoeeParams:
    """Read the DTO-EE knobs from ``knobs`` (other keys are left to other policies).

    Raises ``ScenarioError`` naming the field, e.g. ``knobs.step: must be one of ...``.
    """
    kw: Dict[str, Any] = {}
    if "step" in knobs:
        if knobs["step"] not in STEP_RULES:
            raise ScenarioError("knobs.step: must be one of %s, got %r"
                                % ("|".join(STEP_RULES), knobs["step"]))
        kw["step"] = knobs["step"]
    for name in ("rounds", "m"):
        if name in knobs:
            v = knobs[name]
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ScenarioError("knobs.%s: must be an integer >= 1, got %r" % (name, v))
            kw[name] = v
    for name, (lo, hi, lo_ok, hi_ok) in _FLOAT_RANGES.items():
        if name not in knobs:
            continue
        v = knobs[name]
        ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
        ok = ok and (v >= lo if lo_ok else v > lo) and (v <= hi if hi_ok else v < hi)
        if not ok:
            raise ScenarioError("knobs.%s: must be a number in %s%s, %s%s, got %r"
                                % (name, "[" if lo_ok else "(", lo, hi, "]" if hi_ok else ")", v))
        kw[name] = float(v)
    return DtoeeParams(**kw)


# ---------------------------------------------------------------------------------- messages

@dataclass(frozen=True)
class Request:
    """RUR, offloader -> successor, round ``round``."""

    sender: str
    round: int
    flops_s: float  # xi_ij: FLOP/s the sender will offload to the receiver (eq. 5 term)
    thresholds: Dict[str, float]  # C as the sender knows it, {"stage": c}
    thresholds_version: int  # bumped at every threshold change; newest wins


@dataclass(frozen=True)
class Status:
    """RUS, receiver -> each predecessor, round ``round``."""

    sender: str
    round: int
    load_flops_s: float  # lambda_j (eq. 5) from this round's requests
    capacity_flops_s: float  # mu_j
    omega_s: float  # Omega_j (eq. 16) from the receiver's latest offloader step; 0 at stage H
    curvature_s2: float  # downstream second derivative from its latest offloader step
    predecessors: int  # how many predecessors' requests it summed this round
    thresholds: Dict[str, float]
    thresholds_version: int


@dataclass(frozen=True)
class OffloaderResult:
    """What ``offloader_step`` hands back to the node."""

    routing: Dict[str, float]  # p_i for the next round, {successor: p}
    omega_s: float  # Omega_i (eq. 16), goes into this node's next RUS
    curvature_s2: float  # Psi_i, goes into this node's next RUS
    marginals_s: Dict[str, float]  # Delta_ij (eq. 15) per live successor
    requests: Dict[str, Request]  # the next round's RUR per successor


# ------------------------------------------------------------------------- shared row maths
# Rows are offloaders, columns successor slots; ``valid`` masks the padding. The per-node
# functions call these with one row, the network driver with all offloaders at once.

def row_marginals(p, remaining, next_flops, next_bytes, link_rate, load, capacity, omega,
                  curvature, valid, params: DtoeeParams):
    """Eqs. 15-16 plus curvature: returns (Delta (R,D), H (R,D), Omega_i (R,), Psi_i (R,))."""
    a = np.asarray(next_flops, dtype=np.float64)[:, None]
    cap = np.where(valid, capacity, 1.0)
    _, d1, d2 = pressure(np.where(valid, load, 0.0), cap, params.rho_ext)
    excess = np.maximum(0.0, load / cap - 1.0 + params.epsilon)
    pen1 = 2.0 * params.penalty_k * excess * a / cap
    pen2 = np.where(excess > 0, 2.0 * params.penalty_k * (a / cap) ** 2, 0.0)
    link = np.asarray(next_bytes, dtype=np.float64)[:, None] / np.where(valid, link_rate, 1.0)
    delta = np.where(valid, a * d1 + link + omega + pen1, np.inf)
    h = np.where(valid, a * a * d2 + pen2 + curvature, np.inf)
    rem = np.asarray(remaining, dtype=np.float64)
    pv = np.where(valid, p, 0.0)
    omega_i = rem * np.sum(pv * np.where(valid, delta, 0.0), axis=1)
    psi_i = rem ** 2 * np.sum(pv ** 2 * np.where(valid, h, 0.0), axis=1)
    return delta, h, omega_i, psi_i


def paper_step(p, delta, valid, tau: float):
    """Eq. 19: every successor keeps (1 - tau) of its probability, the least-Delta one gains."""
    best = np.argmin(np.where(valid, delta, np.inf), axis=1)
    pv = np.where(valid, p, 0.0)
    new = (1.0 - tau) * pv
    rows = np.arange(p.shape[0])
    new[rows, best] = pv[rows, best] + tau * (pv.sum(axis=1) - pv[rows, best])
    return new


def newton_step(p, out_rate, delta, curvature, headroom, predecessors, valid,
                params: DtoeeParams, iterations: int = 60):
    """The default rule (module docstring): a projected, scaled Newton step per row.

    ``out_rate`` (R,) is phi_i * I_h (tasks/s leaving the node), ``headroom`` (R,D) the tasks/s
    each receiver can still take up to ``headroom_target`` (its share is 1/predecessors).
    """
    f = np.asarray(out_rate, dtype=np.float64)
    pv = np.where(valid, p, 0.0)
    x = pv * f[:, None]
    kappa = np.maximum(predecessors, 1) / params.step_scale
    hc = np.where(valid, kappa * curvature, 1.0)
    lo = -x
    hi = np.where(valid, np.maximum(headroom, 0.0) / np.maximum(predecessors, 1), 0.0)
    # nowhere to grow (every successor full): let mass move anyway, towards the least Delta
    stuck = hi.sum(axis=1) <= 1e-12 * np.maximum(f, 1e-300)
    hi = np.where(stuck[:, None] & valid, f[:, None], hi)
    hi = np.minimum(hi, np.where(valid, f[:, None] - x, 0.0))
    d = np.where(valid, delta, 0.0)
    nu_lo = np.min(np.where(valid, d + hc * lo, np.inf), axis=1)
    nu_hi = np.max(np.where(valid, d + hc * hi, -np.inf), axis=1)
    for _ in range(iterations):  # bisection on the multiplier of sum_j x_j = 0
        nu = 0.5 * (nu_lo + nu_hi)
        s = np.sum(np.where(valid, np.clip((nu[:, None] - d) / hc, lo, hi), 0.0), axis=1)
        pos = s > 0
        nu_hi = np.where(pos, nu, nu_hi)
        nu_lo = np.where(pos, nu_lo, nu)
    nu = 0.5 * (nu_lo + nu_hi)
    step = np.where(valid, np.clip((nu[:, None] - d) / hc, lo, hi), 0.0)
    new_x = np.maximum(x + step, 0.0)
    total = new_x.sum(axis=1)
    moving = (f > 0) & (total > 0)
    out = np.where(moving[:, None], new_x / np.where(total > 0, total, 1.0)[:, None], pv)
    # an idle offloader (no flow) still leans towards its best successor for when tasks come
    idle = ~moving
    if np.any(idle):
        out[idle] = paper_step(pv[idle], delta[idle], valid[idle], 0.5)
    return out


def update_rows(p, out_rate, remaining, next_flops, next_bytes, link_rate, load, capacity,
                omega, curvature, predecessors, valid, params: DtoeeParams):
    """One offloader step for many rows: returns (new p, Delta, Omega_i, Psi_i)."""
    delta, h, omega_i, psi_i = row_marginals(p, remaining, next_flops, next_bytes, link_rate,
                                             load, capacity, omega, curvature, valid, params)
    if params.step == "paper":
        new = paper_step(p, delta, valid, params.paper_step_size)
    else:
        a = np.asarray(next_flops, dtype=np.float64)[:, None]
        headroom = (params.headroom_target * capacity - load) / a
        new = newton_step(p, out_rate, delta, h, headroom, predecessors, valid, params)
    return new, delta, omega_i, psi_i


# --------------------------------------------------------------------------- per-node steps

def arrival_rate(requests: Sequence[Request], stage_flops: float) -> float:
    """phi_j of a worker from this round's RURs: lambda_j / alpha_h (Alg. 1, line 4)."""
    return sum(r.flops_s for r in requests) / stage_flops


def make_requests(node_id: str, round: int, routing: Mapping[str, float],
                  arrival_rate_tasks_s: float, remaining: float, next_stage_flops: float,
                  thresholds: Mapping[str, float], thresholds_version: int
                  ) -> Dict[str, Request]:
    """RURs for every successor in ``routing``: xi_ij = p_ij * phi_i * I_h * alpha_{h+1}."""
    th = {str(k): float(v) for k, v in thresholds.items()}
    return {succ: Request(node_id, round, float(p * arrival_rate_tasks_s * remaining
                                                * next_stage_flops), th, thresholds_version)
            for succ, p in routing.items()}


def receiver_status(node_id: str, round: int, capacity_flops_s: float,
                    requests: Sequence[Request], downstream: Optional[OffloaderResult],
                    thresholds: Mapping[str, float], thresholds_version: int) -> Status:
    """Alg. 1: sum this round's RURs into lambda_j and answer with a RUS.

    ``downstream`` is this node's latest ``OffloaderResult`` (None at the final stage, or before
    its first offloader step: Omega = 0).
    """
    load = float(sum(r.flops_s for r in requests))
    omega = downstream.omega_s if downstream is not None else 0.0
    curv = downstream.curvature_s2 if downstream is not None else 0.0
    return Status(node_id, round, load, float(capacity_flops_s), float(omega), float(curv),
                  len(requests), {str(k): float(v) for k, v in thresholds.items()},
                  thresholds_version)


def offloader_step(node_id: str, round: int, routing: Mapping[str, float],
                   arrival_rate_tasks_s: float, remaining: float, next_stage_flops: float,
                   next_input_bytes: float, link_rates_bytes_s: Mapping[str, float],
                   statuses: Mapping[str, Status], params: DtoeeParams,
                   thresholds: Mapping[str, float], thresholds_version: int) -> OffloaderResult:
    """Alg. 2 for one offloader: Delta (eq. 15), Omega (eq. 16), new routing, next RURs.

    ``routing`` is the current p_i over all successors, ``remaining`` the node's own I_h (1 for a
    source), ``statuses`` the round-t RUS of each live successor (others count as gone).
    """
    live = [s for s in routing if s in statuses]
    if not live:
        return OffloaderResult({}, 0.0, 0.0, {}, {})
    p = np.array([max(0.0, float(routing[s])) for s in live])
    p = p / p.sum() if p.sum() > 0 else np.full(len(live), 1.0 / len(live))
    st = [statuses[s] for s in live]
    one = np.ones((1, len(live)), dtype=bool)
    new, delta, omega, psi = update_rows(
        p[None, :], np.array([arrival_rate_tasks_s * remaining]), np.array([remaining]),
        np.array([next_stage_flops]), np.array([next_input_bytes]),
        np.array([[link_rates_bytes_s[s] for s in live]]),
        np.array([[x.load_flops_s for x in st]]), np.array([[x.capacity_flops_s for x in st]]),
        np.array([[x.omega_s for x in st]]), np.array([[x.curvature_s2 for x in st]]),
        np.array([[x.predecessors for x in st]], dtype=np.float64), one, params)
    new_routing = {s: 0.0 for s in routing}
    new_routing.update({s: float(v) for s, v in zip(live, new[0])})
    requests = make_requests(node_id, round + 1, {s: new_routing[s] for s in live},
                             arrival_rate_tasks_s, remaining, next_stage_flops, thresholds,
                             thresholds_version)
    return OffloaderResult(new_routing, float(omega[0]), float(psi[0]),
                           {s: float(d) for s, d in zip(live, delta[0])}, requests)


def merge_thresholds(thresholds: Mapping[str, float], version: int,
                     messages: Sequence[Any]) -> Tuple[Dict[str, float], int]:
    """Synchronise C (Algs. 1-2, line 2): keep the newest version among ours and the messages'."""
    best, best_v = dict(thresholds), version
    for msg in messages:
        if msg.thresholds_version > best_v:
            best, best_v = dict(msg.thresholds), msg.thresholds_version
    return best, best_v


def run_dtoee(scenario, rounds=None, params=None, thresholds=None, initial_routing=None,
              stop_when_converged=True, track=False):
    """Whole-network driver: see ``agent.policies.dtoee_network.run_dtoee``."""
    from agent.policies.dtoee_network import run_dtoee as _run
    return _run(scenario, rounds, params, thresholds, initial_routing, stop_when_converged,
                track)
