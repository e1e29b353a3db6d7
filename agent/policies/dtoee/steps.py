"""DTO-EE's routing maths on rows of offloaders: marginal delays and the two step rules.

Rows are offloaders, columns their successor slots, ``valid`` masks the padding. The per-node
functions of ``agent.policies.dtoee`` call these with one row, the whole-network driver
(``agent.policies.dtoee.network``) with every offloader of a stage at once: one implementation
of eqs. 15, 16 and 19 and of the default step. See ``agent.policies.dtoee`` for the protocol
and the description of the default rule.
"""

from __future__ import annotations

import numpy as np

from agent.policies.dtoee.knobs import DtoeeParams
from agent.policies.model import hop_bytes, pressure

# receiver damping (``adapt_damping``): growth on an overshoot, decay otherwise, and the load
# change (fraction of capacity) below which a reversal counts as noise
DAMP_UP, DAMP_DOWN, DAMP_NOISE = 2.0, 0.8, 1e-3


def link_terms(p, out_rate, next_bytes, link_rate, valid, params: DtoeeParams):
    """The offloader's own links under ``link_model`` "shared": (b (R,1) wire bytes per task,
    L (R,D) bytes/s it puts on each link, r (R,D) link rates). Every directed link carries only
    this node's tasks, so its load is known here from the node's own routing and rate."""
    b = hop_bytes(next_bytes, "shared")[:, None]
    pv = np.where(valid, p, 0.0)
    load = pv * np.asarray(out_rate, dtype=np.float64)[:, None] * b
    return b, load, np.where(valid, link_rate, 1.0)


def penalty_slopes(load, cap, per_task, params: DtoeeParams):
    """Eq. 11's first and second derivative in the flow for one server (worker or link) whose
    load grows by ``per_task`` (FLOP or bytes) per task/s."""
    excess = np.maximum(0.0, load / cap - 1.0 + params.epsilon)
    return (2.0 * params.penalty_k * excess * per_task / cap,
            np.where(excess > 0, 2.0 * params.penalty_k * (per_task / cap) ** 2, 0.0))


def row_marginals(p, remaining, next_flops, next_bytes, link_rate, load, capacity, omega,
                  curvature, valid, params: DtoeeParams, out_rate=None, parts=None):
    """Eqs. 15-16 plus curvature: returns (Delta (R,D), H (R,D), Omega_i (R,), Psi_i (R,)).

    ``out_rate`` (R,): tasks/s the node sends on (phi_i * I_h); needed by ``link_model``
    "shared", where each link is a server of its rate loaded by the node's own flow on it.
    ``parts``: a dict that receives what was computed on the way and ``update_rows`` reuses for
    its secant step: "receivers" (pressure d1, d2) and, under "shared", "links" (b, L, r, the
    links' pressure d1, d2 and penalty derivatives)."""
    a = np.asarray(next_flops, dtype=np.float64)[:, None]
    cap = np.where(valid, capacity, 1.0)
    _, d1, d2 = pressure(np.where(valid, load, 0.0), cap, params.rho_ext)
    pen1, pen2 = penalty_slopes(load, cap, a, params)
    if parts is not None:
        parts["receivers"] = (d1, d2)
    if params.link_model == "shared" and out_rate is not None:
        b, lload, rate = link_terms(p, out_rate, next_bytes, link_rate, valid, params)
        _, l1, l2 = pressure(lload, rate, params.rho_ext)
        lp1, lp2 = penalty_slopes(lload, rate, b, params)
        link, link_h = b * l1 + lp1, b * b * l2 + lp2
        if parts is not None:
            parts["links"] = (b, lload, rate, l1, l2, lp1, lp2)
    else:
        link = np.asarray(next_bytes, dtype=np.float64)[:, None] / np.where(valid, link_rate, 1.0)
        link_h = 0.0
    delta = np.where(valid, a * d1 + link + omega + pen1, np.inf)
    h = np.where(valid, a * a * d2 + pen2 + link_h + curvature, np.inf)
    rem = np.asarray(remaining, dtype=np.float64)
    pv = np.where(valid, p, 0.0)
    omega_i = rem * np.sum(pv * np.where(valid, delta, 0.0), axis=1)
    psi_i = rem ** 2 * np.sum(pv ** 2 * np.where(valid, h, 0.0), axis=1)
    return delta, h, omega_i, psi_i


# the share of its routing an idle offloader (no flow) moves to its best successor each round
IDLE_LEAN = 0.5


def paper_step(p, delta, valid, tau: float):
    """Eq. 19: every successor keeps (1 - tau) of its probability, the least-Delta one gains."""
    best = np.argmin(np.where(valid, delta, np.inf), axis=1)
    pv = np.where(valid, p, 0.0)
    new = (1.0 - tau) * pv
    rows = np.arange(p.shape[0])
    new[rows, best] = pv[rows, best] + tau * (pv.sum(axis=1) - pv[rows, best])
    return new


def _water_fill(d, hc, lo, hi):
    """Per row, x_j = clip((nu - d_j) / hc_j, lo_j, hi_j) with the nu that makes sum_j x_j = 0.

    Needs lo <= 0 <= hi (padding slots: lo = hi = 0). sum_j x_j is piecewise linear and
    non-decreasing in nu with breakpoints where a clip starts or stops; it is evaluated at every
    breakpoint and interpolated on the segment where it crosses 0.
    """
    bp = np.sort(np.concatenate([d + hc * lo, d + hc * hi], axis=1), axis=1)
    s = np.clip((bp[:, :, None] - d[:, None, :]) / hc[:, None, :], lo[:, None, :],
                hi[:, None, :]).sum(axis=2)
    k = np.argmax(s >= 0.0, axis=1)  # first breakpoint with sum >= 0 (the last one always is)
    rows = np.arange(d.shape[0])
    km = np.maximum(k - 1, 0)
    nu0, nu1, s0, s1 = bp[rows, km], bp[rows, k], s[rows, km], s[rows, k]
    span = s1 - s0
    frac = np.where(span > 0, -s0 / np.where(span > 0, span, 1.0), 1.0)
    nu = nu0 + frac * (nu1 - nu0)
    return np.clip((nu[:, None] - d) / hc, lo, hi)


def newton_step(p, out_rate, delta, curvature, headroom, predecessors, damping, valid,
                params: DtoeeParams, link_headroom=None, own_curvature=None):
    """The default rule (module docstring): a projected, scaled Newton step per row.

    ``out_rate`` (R,) is phi_i * I_h (tasks/s leaving the node), ``headroom`` (R,D) the tasks/s
    each receiver can still take up to ``headroom_target`` (its share is 1/predecessors),
    ``link_headroom`` (R,D) the tasks/s each of the node's own links can still take (None: no
    bound, the paper's links), ``own_curvature`` (R,D) the part of ``curvature`` from those
    links: exact and felt by this node alone, it takes a plain Newton step (no damping, no
    ``step_scale``).
    """
    f = np.asarray(out_rate, dtype=np.float64)
    pv = np.where(valid, p, 0.0)
    x = pv * f[:, None]
    own = 0.0 if own_curvature is None else np.where(valid, own_curvature, 0.0)
    hc = np.where(valid, np.maximum(damping, 1.0) * (curvature - own) / params.step_scale + own,
                  1.0)
    room = f[:, None] - x
    hi = np.where(valid, np.minimum(np.maximum(headroom, 0.0) / np.maximum(predecessors, 1),
                                    room), 0.0)
    if link_headroom is not None:
        hi = np.minimum(hi, np.maximum(link_headroom, 0.0))
    # nowhere to grow (every successor full): let mass move anyway, towards the least Delta
    stuck = hi.sum(axis=1) <= 1e-12 * f
    if stuck.any():
        hi = np.where(stuck[:, None] & valid, room, hi)
    new_x = np.maximum(x + _water_fill(np.where(valid, delta, 0.0), hc, -x, hi), 0.0)
    total = new_x.sum(axis=1)
    moving = (f > 0) & (total > 0)
    out = np.where(moving[:, None], new_x / np.where(moving, total, 1.0)[:, None], pv)
    # an idle offloader (no flow) still leans towards its best successor for when tasks come
    idle = ~moving
    if idle.any():
        out[idle] = paper_step(pv[idle], delta[idle], valid[idle], IDLE_LEAN)
    return out


def initial_damping(predecessors, joint: bool):
    """A receiver's damping kappa_j before its load has changed: its number of predecessors
    (their steps pile up on it), or 1 under ``step = "joint"`` (the joint solve sees the
    pile-up). Arrays or scalars."""
    return np.ones_like(predecessors, dtype=np.float64) if joint \
        else np.maximum(predecessors, 1.0)


def adapt_damping(change, previous_change, damping, predecessors, capacity):
    """A receiver's damping kappa_j for the default rule, adapted from its own load history.

    Its predecessors step at the same time, so their steps add up on it. When its load change
    reverses (their steps overshot) kappa grows by DAMP_UP, up to 4x its number of
    predecessors; otherwise it decays by DAMP_DOWN towards 1, so that moves that do not pile up
    (offloaders trading receivers) go at full Newton speed. Arrays or scalars.
    """
    noise = DAMP_NOISE * np.asarray(capacity, dtype=np.float64)
    flip = (change * previous_change < 0) & (np.abs(change) > noise) \
        & (np.abs(previous_change) > noise)
    return np.where(flip, np.minimum(DAMP_UP * damping, 4.0 * np.maximum(predecessors, 1)),
                    np.maximum(1.0, DAMP_DOWN * damping))


def update_rows(p, out_rate, remaining, next_flops, next_bytes, link_rate, load, capacity,
                omega, curvature, predecessors, damping, valid, params: DtoeeParams,
                pending=None, previous_step=None):
    """One offloader step for many rows: returns (new p, Delta, Omega_i, Psi_i).

    ``pending`` (R,): the change of the node's arrival rate that its successors have not seen
    yet (its requests carried the previous rate); Omega_i is extrapolated by Psi_i * pending
    (not under ``step = "paper"``: Algorithm 2 takes Omega_i as eq. 16 gives it).
    ``previous_step`` (R,D): the node's previous routing change (default rule's momentum).
    """
    parts = {}
    delta, h, omega_i, psi_i = row_marginals(p, remaining, next_flops, next_bytes, link_rate,
                                             load, capacity, omega, curvature, valid, params,
                                             out_rate, parts=parts)
    if pending is not None and params.step != "paper":  # eq. 16 as it stands for the paper's
        omega_i = omega_i + psi_i * np.asarray(pending, dtype=np.float64)
    if params.step == "paper":
        new = paper_step(p, delta, valid, params.paper_step_size)
    else:
        a = np.asarray(next_flops, dtype=np.float64)[:, None]
        headroom = (params.headroom_target * capacity - load) / a
        links, own = None, None
        if params.link_model == "shared":
            b, lload, rate, l1, l2, _, lp2 = parts["links"]  # as row_marginals computed them
            links = (params.headroom_target * rate - lload) / b
            own = b * b * l2 + lp2
        new = newton_step(p, out_rate, delta, h, headroom, predecessors, damping, valid, params,
                          links, own)
        # the delay's slope grows faster than its curvature at the current load predicts: take
        # the secant over the span the step (times the pile-up) would cover, and step again
        grow = np.maximum(new - np.where(valid, p, 0.0), 0.0) * np.asarray(out_rate)[:, None]
        cap = np.where(valid, capacity, 1.0)
        lam0 = np.where(valid, load, 0.0)
        lam1 = lam0 + a * np.maximum(damping, 1.0) * grow
        s0, c0 = parts["receivers"]
        span = lam1 - lam0
        sec = np.where(span > 0, (pressure(lam1, cap, params.rho_ext)[1] - s0)
                       / np.where(span > 0, span, 1.0), c0)
        h2 = h + a * a * np.maximum(sec - c0, 0.0)
        if links is not None:  # the same secant on the node's own links
            lspan = b * grow
            lsec = np.where(lspan > 0, (pressure(lload + lspan, rate, params.rho_ext)[1] - l1)
                            / np.where(lspan > 0, lspan, 1.0), l2)
            more = b * b * np.maximum(lsec - l2, 0.0)
            h2, own = h2 + more, own + more
        new = newton_step(p, out_rate, delta, h2, headroom, predecessors, damping, valid, params,
                          links, own)
        if previous_step is not None and params.momentum > 0:
            # heavy ball: offloaders trading receivers face a constant gradient gap along a
            # direction the diagonal curvature overstates; momentum keeps such trades going
            # ... except towards receivers whose predecessors overshoot (damping above 3)
            carry = params.momentum * np.minimum(1.0, 3.0 / np.maximum(damping, 1.0))
            new = np.where(valid, np.maximum(new + carry * previous_step, 0.0), 0.0)
            new = new / np.maximum(new.sum(axis=1, keepdims=True), 1e-300)
    return new, delta, omega_i, psi_i


