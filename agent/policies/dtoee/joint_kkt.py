"""The Newton step of DTO-EE's stage-joint solve (``joint.solve_stage``), solved on the stage's
structure instead of as one dense system.

Over the free edges the step d minimises g.d + 1/2 d^T H d with each offloader's flows summing
to 0 (A d = 0, A the edge -> offloader incidence). H = diag(h_edge) + B^T diag(h_recv) B (B the
edge -> receiver incidence) is block diagonal by receiver: the edges into receiver j form the
block diag(h_edge) + h_recv_j 1 1^T, whose inverse Sherman-Morrison gives in O(edges). The KKT
system is then solved for the offloaders' multipliers only, S lam = -A H^-1 g with
S = A H^-1 A^T (offloaders x offloaders, coupled where they share a receiver), and
d = -H^-1 (g + A^T lam). A dense KKT solve over edges and offloaders cost O((E + R)^3) per step:
minutes a round at 5,000 nodes. Here S only spans the offloaders with 2 or more free edges (one
free edge is held at 0 by its own balance) and is solved per connected group of offloaders
that share receivers.

S is assembled without cancellation: near saturation h_recv is ~1e9 times h_edge (the "delay"
link model has h_edge = 1e-9 (1 + h_recv) only), and diag(q) - nu q q^T (q = 1/h_edge) summed
as written loses those 9 digits; written as the Laplacian of the receiver's offloaders
(weights q_i q_k / s) plus q q^T tau / s (s = sum q, tau = 1 / (1 + h_recv s)) each term is a
sum of positives.
"""

from __future__ import annotations

import numpy as np


def newton_direction(row: np.ndarray, col: np.ndarray, h_recv: np.ndarray,
                     h_edge: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The step d over the free edges (``row``/``col``: each free edge's offloader and receiver
    index; ``h_edge`` > 0 and ``g`` per free edge; ``h_recv`` per receiver, indexed by ``col``):
    min g.d + 1/2 d^T H d with each offloader's d summing to 0 (module docstring). All zeros
    when the data are not finite (an overflowed curvature or hop cost: no step this round)."""
    n = len(g)
    none = np.zeros(n)
    if n == 0:
        return none
    with np.errstate(all="ignore"):
        if not (np.isfinite(h_recv).all() and np.isfinite(h_edge).all()
                and np.isfinite(g).all()):
            return none
        # an offloader with one free edge holds it at 0: leave both out
        count = np.bincount(row)
        keep = np.flatnonzero(count[row] > 1)
        if len(keep) == 0:
            return none
        d = _reduced_direction(row[keep], col[keep], h_recv, h_edge[keep], g[keep])
    if d is None or not np.isfinite(d).all():
        return none
    none[keep] = d
    return none


def _reduced_direction(row, col, h_recv, h_edge, g):
    """``newton_direction`` where every offloader has 2 or more free edges; None when the
    solve breaks down."""
    rows, r = np.unique(row, return_inverse=True)
    recv, c = np.unique(col, return_inverse=True)
    k, m = len(rows), len(recv)
    q = 1.0 / h_edge
    hr = h_recv[recv]
    s = np.bincount(c, weights=q, minlength=m)
    tau = 1.0 / (1.0 + hr * s)
    nu = hr / (1.0 + hr * s)

    def h_inv(v):
        """H^-1 v, receiver block by block."""
        mean = np.bincount(c, weights=q * v, minlength=m) / s
        return q * (v - mean[c]) + q * (mean * tau)[c]

    # every ordered pair (a, b) of free edges into the same receiver, a == b included
    order = np.argsort(c, kind="stable")
    size = np.bincount(c, minlength=m)
    start = np.cumsum(size) - size
    reps = size[c[order]]
    first = np.cumsum(reps) - reps
    a = np.repeat(order, reps)
    b = order[np.repeat(start[c[order]], reps) + np.arange(int(reps.sum()))
              - np.repeat(first, reps)]
    ca = c[a]
    same = a == b
    # S's diagonal: the Laplacian's (q_a q_b / s over the receiver's other edges) plus q^2 tau/s;
    # off the diagonal -nu q_a q_b
    lap = np.where(same, 0.0, q[a] * q[b] / s[ca])
    val = np.where(same, q[a] * q[a] * tau[ca] / s[ca], -q[a] * q[b] * nu[ca])
    idx = np.concatenate([r[a] * k + r[b], r[a] * (k + 1)])
    S = np.bincount(idx, weights=np.concatenate([val, lap]), minlength=k * k).reshape(k, k)
    systems = []  # per group of offloaders: (members, scale, diagonally scaled S block)
    for group in _groups(r, c, k, m):
        sub = S[np.ix_(group, group)]
        scale = 1.0 / np.sqrt(np.diag(sub))
        systems.append((group, scale, sub * scale[:, None] * scale[None, :]))
        if not np.isfinite(systems[-1][2]).all():
            return None
    hc = hr[c]

    def solve(r1, r2):
        """(d, lam) with H d + A^T lam = r1, A d = r2."""
        rhs = np.bincount(r, weights=h_inv(r1), minlength=k) - r2
        lam = np.zeros(k)
        for group, scale, sys_ in systems:
            b_ = rhs[group] * scale
            if not np.isfinite(b_).all():
                return None, None
            try:
                z = np.linalg.solve(sys_, b_)
            except np.linalg.LinAlgError:
                z = np.linalg.lstsq(sys_, b_, rcond=None)[0]
            lam[group] = z * scale
        return h_inv(r1 - lam[r]), lam

    d, lam = solve(-g, np.zeros(k))
    if d is None:
        return None
    # one step of iterative refinement on the full KKT residual: S's solve alone leaves each
    # offloader's step off balance by ~1e-7 of its largest flow change near saturation
    u = np.bincount(c, weights=d, minlength=m)
    dd, dl = solve(-g - h_edge * d - hc * u[c] - lam[r],
                   -np.bincount(r, weights=d, minlength=k))
    if dd is None:
        return None
    return d + dd


def _groups(r, c, k, m):
    """The offloaders (indices 0..k-1) in groups joined by shared receivers: edge i links
    offloader ``r[i]`` and receiver ``c[i]``. Minimum-label propagation with pointer jumping."""
    label = np.arange(k)
    while True:
        recv = np.full(m, k)
        np.minimum.at(recv, c, label[r])
        new = np.full(k, k)
        np.minimum.at(new, r, recv[c])
        new = np.minimum(new, label)
        new = new[new]  # labels point at offloaders: jump along them
        if np.array_equal(new, label):
            break
        label = new
    order = np.argsort(label, kind="stable")
    cuts = np.flatnonzero(np.diff(label[order])) + 1
    return np.split(order, cuts)
