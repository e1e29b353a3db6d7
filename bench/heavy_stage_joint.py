"""Prototype of a stage-joint DTO-EE step: the offloaders of a stage minimise their stage's
model together, which closes the heavy-load gap at round 50 that no per-node step closed.

The default rule takes one damped Newton step per offloader on its own flows; near saturation
the receivers' curvature (times the damping) makes trades between offloaders (A moves from j to
k while B moves from k to j, loads unchanged) crawl. Here every round, stage by stage from the
last one back (the RUS wave's order, with the same one-round-old arrival rates the requests
carry), the offloaders of stage h jointly choose their flows y_ij (tasks/s) by minimising

    sum_j [ P(a A_j) + N(a A_j) + Omega_j A_j + 1/2 Psi'_j (A_j - A0_j)^2 ] + sum_ij link_ij(y_ij)

subject to sum_j y_ij = f_i (each offloader's outgoing rate) and y >= 0, where A_j = sum_i y_ij
is receiver j's arrival rate (A0_j its current one), a the next stage's FLOP per task, P the
M/D/1-PS pressure term of ``agent.policies.model.pressure`` (exact, not a quadratic), N eq.
11's penalty, Omega_j and Psi_j the downstream marginal delay and curvature receiver j reports
(computed after j's own stage stepped, as in the protocol), and link_ij the hop cost
(``link_model``: beta/r, or the shared link's pressure and penalty). The damping acts on the
receiver's *aggregate* arrival, not on each offloader's share of it: Psi'_j = Psi_j +
(kappa_j - 1)(a^2 P''(a A0_j) + Psi_j), with kappa_j adapted as the default rule's receiver
damping (``adapt_damping``) but starting at 1, since the joint solve already sees the whole
stage's pile-up. So a trade costs only its hop-cost difference, a shift of load pays the
receivers' curvature once. The stage problem is convex; it is solved with SLSQP (scipy, as
``agent.policies.optimum``), and each offloader's routing is its row of the solution.

Without the aggregate damping (``--no-damping``) most networks reach 0.00% by round 25, but
one heavy network (7204) oscillates with period 2 between stages 2 and 3 and stays overloaded:
all stages move at once on arrival rates that are a round old per stage.

Not the policy's code: a driver of its own (thresholds fixed), for the convergence bench's
sets (``bench/convergence.py``: light 7000-, moderate 7100-, heavy 7200- at 85%, overloaded
start 7300-; ``--extra``: 15 more heavy and overloaded-start networks from seed 5000, the
link-bound sets of ``bench/link_convergence.py`` and the paper scenarios; ``--cold``: cold
phases on ``bench/settle.py``'s networks, rounds to 1%; ``--chain``: the same on
``bench/config_phase.py``'s chain). Deterministic up to
SLSQP's floating point. Prints median / worst gap to the central optimum after 10, 25 and 50
rounds for the stage-joint step and the default rule.

    python3 bench/heavy_stage_joint.py [--seeds 10] [--extra] [--no-damping] [--fraction 1]
                                     [--solver slsqp|newton] [--cold]
                                     [--chain]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
from scipy.optimize import minimize  # noqa: E402

from agent.policies.dtoee.knobs import DtoeeParams  # noqa: E402
from agent.policies.dtoee.network import run_dtoee  # noqa: E402
from agent.policies.dtoee.steps import adapt_damping, row_marginals  # noqa: E402
from agent.policies.model import (  # noqa: E402
    compile_network,
    network_delay,
    node_rates,
    pressure,
    stage_remaining,
    uniform_routing,
    wire_bytes,
)
from agent.policies.optimum import optimum  # noqa: E402
from agent.scenario.paper import paper_scenario  # noqa: E402
from convergence import _cell, _fixed  # noqa: E402
from tests.unit.dtoee_scenarios import link_bound_scenario, random_scenario  # noqa: E402

CHECKPOINTS = (10, 25, 50)


def _penalty(load, cap, params):
    """Eq. 11 for one server and its first two derivatives in the load."""
    ex = np.maximum(0.0, load / cap - 1.0 + params.epsilon)
    k = params.penalty_k
    return k * ex ** 2, 2.0 * k * ex / cap, np.where(ex > 0, 2.0 * k / cap ** 2, 0.0)


def stage_step(out_rate, dst, valid, p, a, b, link, load, capacity, omega, psi, kappa, params,
               solver="slsqp"):
    """New routing rows (R, D) of one stage's offloaders: the joint minimum of the stage model
    (module docstring). ``out_rate`` (R,) f_i; ``dst`` (R, D) receiver node ids; ``load``,
    ``capacity``, ``omega``, ``psi``, ``kappa`` indexed by node id; ``b`` (R, 1) wire bytes.
    ``solver``: "slsqp" (scipy) or "newton" (``_newton``, numpy only)."""
    rows, _ = np.nonzero(valid)
    recv, col = np.unique(dst[valid], return_inverse=True)
    a0 = load[recv] / a
    cap = capacity[recv]
    _, _, d2 = pressure(load[recv], cap, params.rho_ext)
    curv = psi[recv] + (kappa[recv] - 1.0) * (a * a * d2 + psi[recv])
    be = np.broadcast_to(b, valid.shape)[valid]
    rate = link[valid]

    def model(y):
        """(cost, gradient per edge, curvature per receiver, curvature per edge) at flows y."""
        arr = np.bincount(col, weights=y, minlength=len(recv))
        v, d1, d2 = pressure(a * arr, cap, params.rho_ext)
        pen, pen1, pen2 = _penalty(a * arr, cap, params)
        gap = arr - a0
        total = np.sum(v + pen + omega[recv] * arr + 0.5 * curv * gap * gap)
        grad = (a * d1 + a * pen1 + omega[recv] + curv * gap)[col]
        h_recv = a * a * (d2 + pen2) + curv
        if params.link_model == "shared":
            lv, l1, l2 = pressure(be * y, rate, params.rho_ext)
            lpen, lpen1, lpen2 = _penalty(be * y, rate, params)
            return (total + np.sum(lv + lpen), grad + be * (l1 + lpen1), h_recv,
                    be * be * (l2 + lpen2))
        return total + np.sum(be / rate * y), grad + be / rate, h_recv, np.zeros(len(y))

    f = np.asarray(out_rate, dtype=np.float64)
    rowsum = np.zeros((len(f), len(rows)))
    rowsum[rows, np.arange(len(rows))] = 1.0
    y0 = p[valid] * f[rows]
    if solver == "newton":
        y = _newton(model, y0, f, rows, col, len(recv), rowsum)
    else:
        scale = np.maximum(f, 1e-12)[:, None]
        y = minimize(lambda y: model(y)[:2], y0, jac=True, method="SLSQP",
                     bounds=[(0.0, fi) for fi in f[rows]],
                     constraints=[{"type": "eq", "fun": lambda y: (rowsum @ y - f) / scale[:, 0],
                                   "jac": lambda y: rowsum / scale}],
                     options={"maxiter": 300, "ftol": 1e-14}).x
    out = np.zeros(valid.shape)
    out[valid] = np.maximum(y, 0.0)
    total = out.sum(axis=1, keepdims=True)
    return np.where(total > 0, out / np.maximum(total, 1e-300), np.where(valid, p, 0.0))


def _newton(model, y, f, rows, col, n_recv, rowsum, iters=60):
    """Projected Newton for the stage problem, numpy only: each iteration solves the KKT system
    of the model's quadratic expansion (curvature B^T diag(h_recv) B + diag(h_edge), B the
    edge -> receiver incidence, one flow balance per offloader) over the free edges (flow > 0,
    or at 0 with a gradient below the offloader's largest on a used edge; one that would go
    negative is fixed at 0 and the system solved again), then a step cut to stay >= 0 and
    backtracked until the cost falls."""
    n_edges = len(y)
    inc = np.zeros((n_recv, n_edges))
    inc[col, np.arange(n_edges)] = 1.0
    total = rowsum @ y  # start on the flow balance
    y = np.where(total[rows] > 0, y * f[rows] / np.maximum(total[rows], 1e-300),
                 f[rows] / np.bincount(rows)[rows])
    cost, g, h_recv, h_edge = model(y)
    for _ in range(iters):
        used = y > 1e-12 * f[rows]
        top = np.full(len(f), -np.inf)
        np.maximum.at(top, rows, np.where(used, g, -np.inf))
        free = used | (g < top[rows])
        while True:
            idx = np.flatnonzero(free)
            hess = (inc[:, idx].T * h_recv) @ inc[:, idx] \
                + np.diag(h_edge[idx] + 1e-9 * (1.0 + h_recv[col[idx]]))
            kkt = np.block([[hess, rowsum[:, idx].T],
                            [rowsum[:, idx], np.zeros((len(f), len(f)))]])
            sol = np.linalg.lstsq(kkt, np.concatenate([-g[idx], np.zeros(len(f))]),
                                  rcond=None)[0]
            d = np.zeros(n_edges)
            d[idx] = sol[:len(idx)]
            bad = free & ~used & (d < 0)
            if not bad.any():
                break
            free &= ~bad
        slope = g @ d
        if slope > -1e-16 * max(1.0, abs(cost)):
            break
        neg = (d < 0) & used
        t_max = float(np.min(-y[neg] / d[neg])) if neg.any() else 1.0
        t = min(1.0, t_max)
        while True:
            y_new = np.maximum(y + t * d, 0.0)
            parts = model(y_new)
            if parts[0] <= cost + 1e-4 * t * slope or t < 1e-10:
                break
            t *= 0.5
        # a step cut short by a bound only fixes that flow at 0: go on
        settled = t_max >= 1.0 and cost - parts[0] < 1e-13 * max(1.0, abs(cost))
        y, (cost, g, h_recv, h_edge) = y_new, parts
        if settled:
            break
    return y


def run_stage_joint(sc, rounds, params, damping=True, fraction=1.0, solver="slsqp"):
    """Model delay after each round: the protocol's rounds (as ``run_dtoee``, thresholds fixed)
    with ``stage_step`` in place of each stage's per-node steps, of which each offloader takes
    ``fraction`` of the way."""
    net = compile_network(sc)
    params = dataclasses.replace(params, link_model=net.link_model)
    rem = np.asarray(sc.remaining, dtype=np.float64)
    remv = stage_remaining(rem)
    p = uniform_routing(net)
    valid = net.slots >= 0
    e = np.where(valid, net.slots, 0)
    row_node = net.offloaders
    row_stage = net.stage[row_node]
    dst = net.edge_dst[e]
    n = len(net.ids)
    npred = np.bincount(net.edge_dst, minlength=n).astype(np.float64)
    workers = net.stage > 0
    alpha = np.where(workers, net.flops[net.stage], 1.0)
    phi_prev = node_rates(net, p, rem)
    stage_rows = [np.nonzero(row_stage == h)[0] for h in range(net.num_stages)]
    kappa = np.ones(n)
    lam_prev, change_prev = None, np.zeros(n)
    history = []
    for _t in range(rounds):
        xi = p * phi_prev[net.edge_src] * remv[net.stage[net.edge_src]] \
            * net.flops[net.stage[net.edge_dst]]
        lam = np.bincount(net.edge_dst, weights=xi, minlength=n)
        phi = np.where(workers, lam / alpha, net.source_rate)
        if lam_prev is not None and damping:
            change = lam - lam_prev
            kappa = adapt_damping(change, change_prev, kappa, npred, net.capacity)
            change_prev = change
        lam_prev = lam
        omega, psi = np.zeros(n), np.zeros(n)
        prow = np.where(valid, p[e], 0.0)
        new = prow.copy()
        for h in range(net.num_stages - 1, -1, -1):
            rows = stage_rows[h]
            if len(rows) == 0:
                continue
            d, v, nodes = dst[rows], valid[rows], row_node[rows]
            f = phi[nodes] * remv[h]
            a = net.flops[h + 1]
            b = wire_bytes(np.full(len(rows), net.input_bytes[h + 1], dtype=np.float64))[:, None]
            joint = stage_step(f, d, v, prow[rows], a, b, net.edge_rate[e[rows]], lam,
                               net.capacity, omega, psi, kappa, params, solver)
            new[rows] = joint if fraction == 1.0 else prow[rows] + fraction * (joint - prow[rows])
            # the status the stage's workers send back: Omega and Psi at their new routing and
            # the receivers' loads that routing gives
            lam_new = lam.copy()
            recv = np.unique(d[v])
            lam_new[recv] = 0.0
            np.add.at(lam_new, d[v], (new[rows] * f[:, None] * a)[v])
            _, _, om, ps = row_marginals(new[rows], np.full(len(rows), remv[h]),
                                         np.full(len(rows), a),
                                         np.full(len(rows), net.input_bytes[h + 1]),
                                         net.edge_rate[e[rows]], lam_new[d], net.capacity[d],
                                         omega[d], psi[d], v, params, f)
            omega[nodes] = om + ps * (phi - phi_prev)[nodes]
            psi[nodes] = ps
        p = p.copy()
        p[e[valid]] = new[valid]
        phi_prev = phi
        history.append(network_delay(net, p, rem))
    return history


def _sets(seeds, extra):
    sets = [
        ("light (30%)", [random_scenario(7000 + i, 0.3) for i in range(seeds)]),
        ("moderate (60%)", [random_scenario(7100 + i, 0.6) for i in range(seeds)]),
        ("heavy (85%)", [random_scenario(7200 + i, 0.85) for i in range(seeds)]),
        ("heavy, overloaded start", [random_scenario(7300 + i, 0.8, skew=0.3)
                                     for i in range(seeds)]),
    ]
    if extra:
        small = {"sources": 4, "workers": (3, 3, 2, 2)}
        sets += [
            ("heavy (85%), seeds 5000-5014", [random_scenario(5000 + i, 0.85)
                                             for i in range(15)]),
            ("overloaded start, seeds 5000-5014", [random_scenario(5000 + i, 0.8, skew=0.3)
                                                  for i in range(15)]),
        ] + [("link-bound %d%%" % (100 * load),
              [link_bound_scenario(7000 + i, load, **small) for i in range(seeds)])
             for load in (0.3, 0.6, 0.85)] + [
            (name, [_fixed(paper_scenario(name, seed=0))])
            for name in ("paper-resnet101", "paper-bert")]
    return sets


def _rounds_to(hist, target):
    """Rounds after which the model delay stays within 1% of ``target``."""
    return max([r + 1 for r, d in enumerate(hist) if abs(d - target) > 0.01 * target] + [0])


def cold(solver: str) -> int:
    """Cold phases (200 rounds from the uniform routing) on bench/settle.py's networks (seeds
    1-6, both link models; the ones no routing carries left out): rounds until the delay stays
    within 1% of its round-200 value and of the optimum, median / max."""
    from tests.unit.test_dtoee_agent_rounds import _scenario

    print("| links | load | rule | to 1% of round 200 | to 1% of the optimum | gap at 50 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for link_model in ("delay", "shared"):
        for load in (0.3, 0.5, 0.7, 0.85):
            nets = [dataclasses.replace(_scenario(seed, load), knobs={"link_model": link_model})
                    for seed in range(1, 7)]
            nets = [(sc, optimum(sc).delay_s) for sc in nets]
            nets = [(sc, b) for sc, b in nets if np.isfinite(b)]
            runs = (("stage-joint", [run_stage_joint(sc, 200, DtoeeParams(), solver=solver)
                                     for sc, _ in nets]),
                    ("default", [run_dtoee(sc, rounds=200, stop_when_converged=False,
                                           track=True).history for sc, _ in nets]))
            for label, hists in runs:
                final = [_rounds_to(h, h[-1]) for h in hists]
                best = [_rounds_to(h, b) for h, (_, b) in zip(hists, nets)]
                print("| %s | %.0f%% (%d nets) | %s | %d / %d | %d / %d | %s |" % (
                    link_model, 100 * load, len(nets), label, np.median(final), max(final),
                    np.median(best), max(best),
                    _cell([h[49] / b - 1.0 for h, (_, b) in zip(hists, nets)])), flush=True)
    return 0


def chain(solver: str) -> int:
    """The chain of bench/config_phase.py (2 sources at 10 tasks/s each, 3/3/2/2 workers on the
    demo bundle's stages, every node linked to every node of the next stage, capacities for
    utilisation U as its ``--utilisation``), in process, thresholds fixed at the initial ones
    and loopback links (1e12 bytes/s): rounds of a cold phase until the model delay stays
    within 1% of its round-50 value."""
    from config_phase import capacities

    from agent.scenario.format import parse_scenario
    from engines.bundle import load_bundle
    from engines.demo import DEMO_BUNDLE_DIR
    from engines.exit_profile import exit_stats, load_exit_profile

    bundle = load_bundle(DEMO_BUNDLE_DIR)
    profile = load_exit_profile(bundle.exit_profile_path)
    params = DtoeeParams()
    rem = exit_stats(profile, [params.initial_threshold] * len(profile.early_exit_stages))
    per_stage = (3, 3, 2, 2)
    names = [["s1", "s2"]] + [["w%d%s" % (h, "abc"[i]) for i in range(n)]
                              for h, n in enumerate(per_stage, start=1)]
    print("| utilisation | rule | within 1% of round 50 after round | "
          "model delay after rounds 0, 1, 2, 5, 10, 49 |")
    print("| --- | --- | --- | --- |")
    for util in (0.65, 0.87):
        caps = capacities(list(per_stage), 20.0, util)
        sc = parse_scenario({
            "stages": [{"flops": bundle.stage(h).flops, "input_bytes": bundle.stage(h).input_bytes,
                        "exit": h in bundle.early_exit_stages} for h in range(1, 5)],
            "remaining": [float(x) for x in rem.remaining], "tradeoff": 0.5,
            "knobs": {"link_model": "delay"},
            "sources": [{"id": s, "rate": 10.0} for s in names[0]],
            "workers": [{"id": w, "stage": h, "capacity": caps[w]}
                        for h in range(1, 5) for w in names[h]],
            "links": [{"from": a, "to": b, "rate": 1e12}
                      for h in range(4) for a in names[h] for b in names[h + 1]]})
        for label, hist in (
                ("stage-joint", run_stage_joint(sc, 50, params, solver=solver)),
                ("default", run_dtoee(sc, rounds=50, params=params, stop_when_converged=False,
                                      track=True).history)):
            print("| %.0f%% | %s | %d | %s |" % (100 * util, label, _rounds_to(hist, hist[-1]),
                                                ", ".join("%.4g" % hist[k] for k in
                                                          (0, 1, 2, 5, 10, 49))), flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10, help="random networks per set")
    ap.add_argument("--extra", action="store_true", help="more seeds, link-bound and paper sets")
    ap.add_argument("--no-damping", action="store_true", help="kappa = 1 throughout")
    ap.add_argument("--solver", choices=("slsqp", "newton"), default="slsqp",
                    help="the stage problem's solver")
    ap.add_argument("--fraction", type=float, default=1.0,
                    help="part of the joint step each offloader takes")
    ap.add_argument("--cold", action="store_true",
                    help="cold phases on bench/settle.py's networks instead")
    ap.add_argument("--chain", action="store_true",
                    help="cold phases on bench/config_phase.py's chain instead")
    args = ap.parse_args()
    if args.chain:
        return chain(args.solver)
    if args.cold:
        return cold(args.solver)
    print("| set | rule | " + " | ".join("%d rounds" % k for k in CHECKPOINTS) + " |")
    print("| --- | --- |" + " --- |" * len(CHECKPOINTS))
    params = DtoeeParams()
    for name, scenarios in _sets(args.seeds, args.extra):
        best = [optimum(sc).delay_s for sc in scenarios]
        t0 = time.perf_counter()
        joint = [run_stage_joint(sc, max(CHECKPOINTS), params, not args.no_damping,
                                 args.fraction, args.solver)
                 for sc in scenarios]
        spent = time.perf_counter() - t0
        default = [run_dtoee(sc, rounds=max(CHECKPOINTS), params=params,
                             stop_when_converged=False, track=True).history
                   for sc in scenarios]
        for label, hists in (("stage-joint (%.0f s)" % spent, joint), ("default", default)):
            print("| %s | %s | %s |" % (name, label, " | ".join(
                _cell([hist[k - 1] / b - 1.0 for hist, b in zip(hists, best)])
                for k in CHECKPOINTS)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
