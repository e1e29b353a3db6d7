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
that share receivers; groups are packed into blocks of up to ``BLOCK_OFFLOADERS`` offloaders,
one solve each (S is 0 between groups, so a block's solve is its groups' solves).

S is assembled without cancellation: near saturation h_recv is ~1e9 times h_edge (the "delay"
link model has h_edge = 1e-9 (1 + h_recv) only), and diag(q) - nu q q^T (q = 1/h_edge) summed
as written loses those 9 digits; written as the Laplacian of the receiver's offloaders
(weights q_i q_k / s) plus q q^T tau / s (s = sum q, tau = 1 / (1 + h_recv s)) each term is a
sum of positives.

What depends only on which edges are free (the offloaders kept, the pairs of edges that share a
receiver, the blocks) is a ``_Pattern``, built once per free set and kept for later steps: a
solve's steps come back to the free sets they saw (about half the steps on stages of 10-30
edges), and building it costs about half the step's arithmetic there.
"""

from __future__ import annotations

import functools
from typing import List, NamedTuple, Optional, Tuple

import numpy as np

# offloaders per dense solve: small groups share one (a call costs ~5 us however small the
# system); a larger group is solved alone, its O(size^3) being the cost that matters
BLOCK_OFFLOADERS = 64
# free sets whose pattern is kept (least recently used dropped first): a solve revisits the
# last few; a pattern holds O(edges + pairs of edges into one receiver) integers
PATTERNS = 32


class _Pattern(NamedTuple):
    """The structure of a Newton step's free edges (``_pattern``)."""

    keep: Optional[np.ndarray]  # free edges of offloaders with 2+ of them; None: all are
    r: np.ndarray  # kept edge -> offloader, 0..k-1 in id order
    c: np.ndarray  # kept edge -> receiver, 0..m-1 in id order
    recv: np.ndarray  # receiver 0..m-1 -> its index into h_recv
    k: int
    m: int
    # S's terms (``_reduced_direction``): q[ta] q[tb] coef[tc] added at S.flat[s_index]
    ta: np.ndarray
    tb: np.ndarray
    tc: np.ndarray
    s_index: np.ndarray
    blocks: Optional[Tuple[np.ndarray, ...]]  # offloaders solved together; None: all at once


def newton_direction(row: np.ndarray, col: np.ndarray, h_recv: np.ndarray,
                     h_edge: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The step d over the free edges (``row``/``col``: each free edge's offloader and receiver
    index; ``h_edge`` > 0 and ``g`` per free edge; ``h_recv`` per receiver, indexed by ``col``):
    min g.d + 1/2 d^T H d with each offloader's d summing to 0 (module docstring). All zeros
    when the data are not finite (an overflowed curvature or hop cost: no step this round)."""
    n = len(g)
    if n == 0:
        return np.zeros(0)
    with np.errstate(all="ignore"):
        if not np.logical_and.reduce(np.isfinite(np.concatenate((h_recv, h_edge, g)))):
            return np.zeros(n)
        pat = _pattern(np.asarray(row, dtype=np.intp).tobytes(),
                       np.asarray(col, dtype=np.intp).tobytes())
        if pat is None:  # every offloader has one free edge, held at 0 by its balance
            return np.zeros(n)
        if pat.keep is not None:
            h_edge, g = h_edge[pat.keep], g[pat.keep]
        d = _reduced_direction(pat, h_recv, h_edge, g)
    if d is None or not np.logical_and.reduce(np.isfinite(d)):
        return np.zeros(n)
    if pat.keep is None:
        return d
    out = np.zeros(n)
    out[pat.keep] = d
    return out


@functools.lru_cache(maxsize=PATTERNS)
def _pattern(row_key: bytes, col_key: bytes) -> Optional[_Pattern]:
    """The ``_Pattern`` of the free edges whose offloader and receiver indices are the intp
    arrays ``row_key`` and ``col_key`` (as bytes: the cache's key); None when no offloader has
    2 or more free edges. An offloader with one free edge holds it at 0: it is left out."""
    row = np.frombuffer(row_key, dtype=np.intp)
    col = np.frombuffer(col_key, dtype=np.intp)
    n_free = len(row)
    keep = (np.bincount(row)[row] > 1).nonzero()[0]
    if len(keep) == 0:
        return None
    if len(keep) < n_free:
        row, col = row[keep], col[keep]
    rows = np.bincount(row).nonzero()[0]
    size = np.bincount(col)
    recv = size.nonzero()[0]
    size = size[recv]  # kept edges per receiver
    k, m, n = len(rows), len(recv), len(row)
    r = np.searchsorted(rows, row)
    c = np.searchsorted(recv, col)
    # every ordered pair (a, b) of distinct kept edges into the same receiver: edge a (in
    # receiver order) repeated once per edge b of its receiver
    order = np.argsort(c, kind="stable")
    start = size.cumsum() - size
    c_sorted = c[order]
    reps = size[c_sorted]
    a = order.repeat(reps)
    b = order[(start[c_sorted] - (reps.cumsum() - reps)).repeat(reps) + np.arange(len(a))]
    distinct = a != b
    a, b = a[distinct], b[distinct]
    ca = c[a]
    # per edge q^2 tau / s on its offloader's diagonal; per pair -nu q_a q_b off the diagonal
    # and the Laplacian's q_a q_b / s on it (coef: tau / s, -nu, 1 / s per receiver)
    edges = np.arange(n)
    ra = r[a]
    ta, tb = np.concatenate([edges, a, a]), np.concatenate([edges, b, b])
    tc = np.concatenate([c, ca + m, ca + 2 * m])
    s_index = np.concatenate([r * (k + 1), ra * k + r[b], ra * (k + 1)])
    blocks: List[np.ndarray] = []
    if k > BLOCK_OFFLOADERS:  # else the groups all fit one block
        packed: List[np.ndarray] = []
        for group in _groups(r, c, k, m):
            if packed and sum(map(len, packed)) + len(group) > BLOCK_OFFLOADERS:
                blocks.append(np.sort(np.concatenate(packed)))
                packed = []
            packed.append(group)
        blocks.append(np.sort(np.concatenate(packed)))
    return _Pattern(None if n == n_free else keep, r, c, recv, k, m, ta, tb, tc,
                    s_index, tuple(blocks) if len(blocks) > 1 else None)


def _reduced_direction(pat: _Pattern, h_recv, h_edge, g):
    """``newton_direction`` on the kept edges of ``pat`` (``h_edge``, ``g`` per kept edge);
    None when the solve breaks down."""
    r, c, k, m = pat.r, pat.c, pat.k, pat.m
    q = 1.0 / h_edge
    hr = h_recv[pat.recv]
    s = np.bincount(c, weights=q, minlength=m)
    den = 1.0 + hr * s
    nu = hr / den
    q_nu = q * nu[c]

    def h_inv(v):
        """H^-1 v, receiver block by block (Sherman-Morrison: diag(q) - nu q q^T)."""
        qv = q * v
        return qv - q_nu * np.bincount(c, weights=qv)[c]  # c takes every value 0..m-1

    inv_s = 1.0 / s
    coef = np.concatenate([inv_s / den, -nu, inv_s])  # per receiver: tau / s, -nu, 1 / s
    S = np.bincount(pat.s_index, weights=q[pat.ta] * q[pat.tb] * coef[pat.tc],
                    minlength=k * k).reshape(k, k)
    scale = 1.0 / np.sqrt(S.diagonal())
    S *= scale[:, None]  # diagonally scaled: the solves below see this
    S *= scale
    systems = () if pat.blocks is None else [
        (block, S[np.ix_(block, block)]) for block in pat.blocks]

    def solve(r1, r2):
        """(d, lam, r1 - A^T lam) with H d + A^T lam = r1, A d = r2 (None: A d = 0), or
        Nones where S or the right-hand side is not finite (LAPACK may never return on NaN)."""
        rhs = np.bincount(r, weights=h_inv(r1))  # r takes every value 0..k-1
        if r2 is not None:
            rhs -= r2
        rhs *= scale
        # S is checked with the first right-hand side: one pass over both
        if not np.logical_and.reduce(np.isfinite(
                rhs if r2 is not None else np.concatenate((S.ravel(), rhs)))):
            return None, None, None
        if pat.blocks is None:
            lam = _solve(S, rhs)
        else:
            lam = np.zeros(k)
            for block, sub in systems:
                lam[block] = _solve(sub, rhs[block])
        lam *= scale
        v = r1 - lam[r]
        return h_inv(v), lam, v

    d, _, v = solve(-g, None)
    if d is None:
        return None
    # one step of iterative refinement on the full KKT residual: S's solve alone leaves each
    # offloader's step off balance by ~1e-7 of its largest flow change near saturation
    dd, _, _ = solve(v - h_edge * d - (hr * np.bincount(c, weights=d))[c],
                     -np.bincount(r, weights=d))
    if dd is None:
        return None
    return d + dd


def _solve(a, b):
    """a^-1 b for finite ``a`` and ``b``; least squares where ``a`` is singular."""
    try:
        return np.linalg.solve(a, b)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(a, b, rcond=None)[0]


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
