"""The stage-joint solve's structured Newton step (``agent/policies/dtoee/joint_kkt.py``) against
the dense KKT solve it replaced (kept here as the oracle): same step on random stages, same
flows out of ``solve_stage``, for both link models, light to overloaded."""

from __future__ import annotations

import numpy as np
import pytest

from agent.policies.dtoee import joint as J
from agent.policies.dtoee import joint_kkt as K
from agent.policies.dtoee.joint_kkt import newton_direction
from tests.unit.test_dtoee_joint import PARAMS


def dense_direction(row, col, h_recv, h_edge, g):
    """The dense oracle: min g.d + 1/2 d^T H d, each offloader's d summing to 0, solved as one
    diagonally scaled KKT system over edges and offloaders."""
    n = len(g)
    rows = np.unique(row)
    inc = np.zeros((len(h_recv), n))
    inc[col, np.arange(n)] = 1.0
    bal = (row[None, :] == rows[:, None]).astype(float)
    hess = (inc.T * h_recv) @ inc + np.diag(h_edge)
    scale = 1.0 / np.sqrt(np.diag(hess))
    k = len(rows)
    kkt = np.block([[hess * scale[:, None] * scale[None, :], (bal * scale).T],
                    [bal * scale, np.zeros((k, k))]])
    z = np.linalg.solve(kkt, np.concatenate([-g * scale, np.zeros(k)]))
    return z[:n] * scale


def random_stage(rng, offloaders, receivers, util):
    """A random stage problem: every offloader feeds 1..4 receivers."""
    flops = 2e9
    cap = rng.uniform(4e10, 2e11, size=receivers)
    rates = rng.uniform(0.5, 1.5, size=offloaders)
    rates *= util * cap.sum() / flops / rates.sum()
    recv = ["r%04d" % j for j in range(receivers)]
    reps = []
    succ = [sorted(rng.choice(receivers, size=int(rng.integers(1, min(4, receivers) + 1)),
                              replace=False)) for _ in range(offloaders)]
    p = [rng.dirichlet(np.ones(len(s))) for s in succ]
    load = np.zeros(receivers)
    for f, s, row in zip(rates, succ, p):
        load[s] += flops * f * row
    feeds = np.bincount(np.concatenate(succ), minlength=receivers).astype(float)
    omega, psi = rng.uniform(0, 0.05, receivers), rng.uniform(0, 1e-3, receivers)
    damp = rng.uniform(1.0, 3.0, receivers)
    for i, (f, s, row) in enumerate(zip(rates, succ, p)):
        pick = {recv[j]: j for j in s}
        reps.append(J.StageReport(
            "o%04d" % i, 3, float(f), {n: float(x) for n, x in zip(pick, row)},
            {n: float(rng.uniform(1e6, 1e7)) for n in pick},
            {n: float(load[j]) for n, j in pick.items()},
            {n: float(cap[j]) for n, j in pick.items()},
            {n: float(omega[j]) for n, j in pick.items()},
            {n: float(psi[j]) for n, j in pick.items()},
            {n: float(damp[j]) for n, j in pick.items()},
            {n: float(feeds[j]) for n, j in pick.items()}))
    return reps, flops


CASES = [(seed, links, util) for seed in range(6) for links in ("delay", "shared")
         for util in (0.3, 0.85, 1.1)]


@pytest.mark.parametrize("seed,links,util", CASES)
def test_structured_step_equals_the_dense_kkt_step(seed, links, util):
    """Rule: the receiver-block / offloader-Schur Newton step equals the dense KKT solve's to
    1e-6 of the step's size (the dense solve's own rounding on a system whose curvatures span
    9 orders of magnitude), at the starting flows of random stages (30 offloaders, 12
    receivers, every edge free, h_edge ~1e-9 h_recv under "delay")."""
    rng = np.random.default_rng(seed)
    reps, flops = random_stage(rng, 30, 12, util)
    params = PARAMS[links]
    prob = J.stage_problem(reps, flops, 7.7e5, params)
    y = prob.p * prob.out_rate[prob.row]
    _, g, h_recv, h_edge = J.stage_cost(prob, y, params)
    h = h_edge + 1e-9 * (1.0 + h_recv[prob.col])
    want = dense_direction(prob.row, prob.col, h_recv, h, g)
    got = newton_direction(prob.row, prob.col, h_recv, h, g)
    assert np.max(np.abs(got - want)) <= 1e-6 * np.max(np.abs(want))
    # each offloader's step keeps its rate
    sums = np.bincount(prob.row, weights=got)
    assert np.max(np.abs(sums)) <= 1e-9 * np.max(np.abs(got))


@pytest.mark.parametrize("seed,links,util", CASES)
def test_structured_solve_gives_the_dense_solves_routing(seed, links, util, monkeypatch):
    """Rule: ``solve_stage`` with the structured step reaches the stage cost the dense KKT step
    reached, to 1e-12, and the same flows, to 1e-5 of each offloader's rate (most to 1e-11;
    ~1e-6 where the optimum is flat and the solves stop a rounding apart), on random stages
    of 30 offloaders and 12 receivers."""
    rng = np.random.default_rng(100 + seed)
    reps, flops = random_stage(rng, 30, 12, util)
    params = PARAMS[links]
    prob = J.stage_problem(reps, flops, 7.7e5, params)
    got = J.solve_stage(prob, params)
    monkeypatch.setattr(J, "newton_direction", dense_direction)
    want = J.solve_stage(prob, params)
    f = prob.out_rate[prob.row]
    assert np.all(np.abs(got - want) <= 1e-5 * f + 1e-12)
    cost_got, cost_want = J.stage_cost(prob, got, params)[0], J.stage_cost(prob, want, params)[0]
    assert abs(cost_got - cost_want) <= 1e-12 * abs(cost_want)


def test_an_offloader_with_one_free_edge_does_not_move_it():
    """Rule: an offloader's only free edge keeps its flow (its balance holds it), and the other
    offloaders' step is the one of the stage without that edge."""
    row = np.array([0, 0, 1, 2, 2])
    col = np.array([0, 1, 1, 0, 1])
    h_recv = np.array([3.0, 5.0])
    h_edge = np.array([1.0, 2.0, 1.5, 0.5, 1.0])
    g = np.array([0.3, -0.1, 0.7, 0.2, 0.4])
    d = newton_direction(row, col, h_recv, h_edge, g)
    assert d[2] == 0.0
    keep = np.array([0, 1, 3, 4])
    assert np.allclose(d[keep], dense_direction(row[keep], col[keep], h_recv, h_edge[keep],
                                                g[keep]), rtol=1e-12, atol=1e-15)


def test_stages_that_share_no_receiver_are_solved_apart_and_alike():
    """Rule: offloaders in groups that share no receiver get the step the dense solve of the
    whole stage gives (each group solved on its own)."""
    row = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    col = np.array([0, 1, 0, 1, 2, 3, 2, 3])
    rng = np.random.default_rng(5)
    h_recv = rng.uniform(1, 10, 4)
    h_edge = rng.uniform(0.1, 1, 8)
    g = rng.uniform(-1, 1, 8)
    d = newton_direction(row, col, h_recv, h_edge, g)
    assert np.allclose(d, dense_direction(row, col, h_recv, h_edge, g), rtol=1e-12,
                       atol=1e-15)


def test_a_newton_step_needs_memory_linear_in_edges_not_quadratic():
    """Rule: a Newton step on a large stage (600 offloaders, 300 receivers, 1,800 edges) holds
    no edges x edges matrix: its peak allocation stays under 24 MB, where the dense KKT system
    alone took (1,800 + 600)^2 x 8 B = 46 MB (and 5,000-node scenarios minutes a round)."""
    import tracemalloc
    rng = np.random.default_rng(11)
    k, m = 600, 300
    row = np.repeat(np.arange(k), 3)
    col = np.concatenate([rng.choice(m, size=3, replace=False) for _ in range(k)])
    h_recv = rng.uniform(1.0, 1e6, m)
    h_edge = 1e-9 * (1.0 + h_recv[col])
    g = rng.uniform(0.1, 0.3, len(row))
    inc = np.zeros((m, len(row)))
    inc[col, np.arange(len(row))] = 1.0
    balance = np.zeros((k, len(row)))
    balance[row, np.arange(len(row))] = 1.0
    tracemalloc.start()
    try:
        d = J._newton_direction(inc, h_recv, h_edge, balance, g)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 24e6, peak
    assert np.max(np.abs(np.bincount(row, weights=d))) <= 1e-9 * np.max(np.abs(d))


def _count_solves(monkeypatch):
    """Calls of ``np.linalg.solve`` (the real one runs): one list entry per call."""
    calls = []
    real = np.linalg.solve

    def counted(a, b):
        calls.append(len(b))
        return real(a, b)
    monkeypatch.setattr(np.linalg, "solve", counted)
    return calls


def test_a_small_stages_groups_share_one_solve_and_its_refinement(monkeypatch):
    """Rule: offloaders in groups that share no receiver are solved in one system while they
    number at most ``BLOCK_OFFLOADERS``: two LAPACK solves per step (the solve and its
    refinement) instead of two per group (a solve's fixed cost, ~5 us, dwarfed the arithmetic
    on stages of 10-30 edges), and the step is the dense solve's."""
    row = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5])
    col = np.array([0, 1, 0, 1, 2, 3, 2, 3, 4, 5, 4, 5])  # three groups of two offloaders
    rng = np.random.default_rng(8)
    h_recv = rng.uniform(1, 10, 6)
    h_edge = rng.uniform(0.1, 1, 12)
    g = rng.uniform(-1, 1, 12)
    calls = _count_solves(monkeypatch)
    d = newton_direction(row, col, h_recv, h_edge, g)
    assert len(calls) == 2
    assert np.allclose(d, dense_direction(row, col, h_recv, h_edge, g), rtol=1e-12,
                       atol=1e-15)


def test_groups_beyond_a_block_are_packed_into_blocks_and_a_large_group_stands_alone(
        monkeypatch):
    """Rule: past ``BLOCK_OFFLOADERS`` offloaders, groups are packed in order into blocks of
    at most that many offloaders and a larger group is solved alone: a 70-offloader chain and
    40 two-offloader groups make 3 blocks (70, 64, 16), 6 solves, and the step is the dense
    solve's."""
    assert K.BLOCK_OFFLOADERS == 64
    row, col = [], []
    for i in range(70):  # a chain: offloader i feeds receivers i and i + 1
        row += [i, i]
        col += [i, i + 1]
    for p in range(40):  # pairs of offloaders on two receivers of their own
        for i in (70 + 2 * p, 71 + 2 * p):
            row += [i, i]
            col += [71 + 2 * p, 72 + 2 * p]
    row, col = np.array(row), np.array(col)
    rng = np.random.default_rng(9)
    h_recv = rng.uniform(1.0, 1e3, col.max() + 1)
    h_edge = rng.uniform(0.1, 1.0, len(row))
    g = rng.uniform(-1, 1, len(row))
    calls = _count_solves(monkeypatch)
    d = newton_direction(row, col, h_recv, h_edge, g)
    assert sorted(calls) == [16, 16, 64, 64, 70, 70]
    want = dense_direction(row, col, h_recv, h_edge, g)
    assert np.max(np.abs(d - want)) <= 1e-9 * np.max(np.abs(want))


def test_a_free_sets_structure_is_built_once_per_solve_and_reused_by_later_steps(
        monkeypatch):
    """Rule: the structure of a step (offloaders kept, edge pairs per receiver, groups) is
    built once per free set: over a whole ``solve_stage`` the builds equal the distinct free
    sets its steps see, and a step on a free set seen before builds nothing."""
    rng = np.random.default_rng(3)
    reps, flops = random_stage(rng, 8, 5, 0.9)
    params = PARAMS["delay"]
    prob = J.stage_problem(reps, flops, 7.7e5, params)
    seen = []
    real = J.newton_direction

    def recorded(row, col, *args):
        seen.append((row.tobytes(), col.tobytes()))
        return real(row, col, *args)
    monkeypatch.setattr(J, "newton_direction", recorded)
    K._pattern.cache_clear()
    J.solve_stage(prob, params)
    info = K._pattern.cache_info()
    assert len(set(seen)) <= K.PATTERNS < len(seen)
    assert info.misses == len(set(seen))
    assert info.hits == len(seen) - len(set(seen)) > 0


def test_a_reused_structure_carries_no_numbers_and_follows_the_arrays_contents():
    """Rule: a step on a free set seen before equals the dense solve's for its own curvatures
    and gradient, and the structure follows the contents of ``row``/``col`` (the same arrays
    changed in place, or given as int32, are matched by value)."""
    rng = np.random.default_rng(12)
    row = np.array([0, 0, 1, 1, 2, 2])
    col = np.array([0, 1, 1, 2, 0, 2])
    K._pattern.cache_clear()
    for _ in range(3):
        h_recv = rng.uniform(1, 10, 3)
        h_edge = rng.uniform(0.1, 1, 6)
        g = rng.uniform(-1, 1, 6)
        for r_, c_ in ((row, col), (row.astype(np.int32), col.astype(np.int32))):
            assert np.allclose(newton_direction(r_, c_, h_recv, h_edge, g),
                               dense_direction(row, col, h_recv, h_edge, g), rtol=1e-12,
                               atol=1e-15)
    col[:] = [0, 1, 0, 1, 0, 1]  # another structure in the same array
    h_recv = rng.uniform(1, 10, 3)
    assert np.allclose(newton_direction(row, col, h_recv, h_edge, g),
                       dense_direction(row, col, h_recv, h_edge, g), rtol=1e-12, atol=1e-15)
    assert K._pattern.cache_info().misses == 2
