"""DTO-EE's stage-joint step (``step = "joint"``, ``agent/policies/dtoee/joint.py``) against the
default rule: gaps to the optimum, cold phases, and its solver against SLSQP.

The joint step is the policy's own code (``run_dtoee`` with ``step = "joint"``, which calls the
same functions as the agents). Sets: the convergence bench's (``bench/convergence.py``: light
7000-, moderate 7100-, heavy 7200- at 85%, overloaded start 7300-); ``--extra`` adds 15 more
heavy and overloaded-start networks from seed 5000, the link-bound sets of
``bench/link_convergence.py`` and the paper scenarios. Prints median / worst gap to the central
optimum after 10, 25 and 50 rounds. Deterministic.

``--cold``: cold phases on ``bench/settle.py``'s networks (both link models), rounds until the
model delay stays within 1% of its round-200 value and of the optimum. ``--chain``: the same on
``bench/config_phase.py``'s chain, in process. ``--solver``: every stage problem the joint step
solved on the heavy set, solved again with scipy's SLSQP: the cost difference and the time of
each (this machine's).

    python3 bench/heavy_stage_joint.py [--seeds 10] [--extra] [--cold] [--chain] [--solver]
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

from agent.policies.dtoee import joint  # noqa: E402
from agent.policies.dtoee.knobs import DtoeeParams  # noqa: E402
from agent.policies.dtoee.network import run_dtoee  # noqa: E402
from agent.policies.optimum import optimum  # noqa: E402
from agent.scenario.paper import paper_scenario  # noqa: E402
from convergence import _cell, _fixed  # noqa: E402
from tests.unit.dtoee_scenarios import link_bound_scenario, random_scenario  # noqa: E402

CHECKPOINTS = (10, 25, 50)
RULES = (("joint", DtoeeParams(step="joint")), ("default", DtoeeParams()))


def _history(sc, rounds, params):
    return run_dtoee(sc, rounds=rounds, params=params, stop_when_converged=False,
                     track=True).history


def _rounds_to(hist, target):
    """Rounds after which the model delay stays within 1% of ``target``."""
    return max([r + 1 for r, d in enumerate(hist) if abs(d - target) > 0.01 * target] + [0])


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


def gaps(seeds: int, extra: bool) -> int:
    print("| set | step | " + " | ".join("%d rounds" % k for k in CHECKPOINTS) + " |")
    print("| --- | --- |" + " --- |" * len(CHECKPOINTS))
    for name, scenarios in _sets(seeds, extra):
        best = [optimum(sc).delay_s for sc in scenarios]
        for label, params in RULES:
            t0 = time.perf_counter()
            hists = [_history(sc, max(CHECKPOINTS), params) for sc in scenarios]
            print("| %s | %s (%.1f s) | %s |" % (name, label, time.perf_counter() - t0, " | ".join(
                _cell([hist[k - 1] / b - 1.0 for hist, b in zip(hists, best)])
                for k in CHECKPOINTS)), flush=True)
    return 0


def cold() -> int:
    """Cold phases (200 rounds from the uniform routing) on bench/settle.py's networks (seeds
    1-6, both link models; the ones no routing carries left out)."""
    from tests.unit.test_dtoee_agent_rounds import _scenario

    print("| links | load | step | to 1% of round 200 | to 1% of the optimum | gap at 50 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for link_model in ("delay", "shared"):
        for load in (0.3, 0.5, 0.7, 0.85):
            nets = [dataclasses.replace(_scenario(seed, load), knobs={"link_model": link_model})
                    for seed in range(1, 7)]
            nets = [(sc, b) for sc, b in ((sc, optimum(sc).delay_s) for sc in nets)
                    if np.isfinite(b)]
            for label, params in RULES:
                hists = [_history(sc, 200, params) for sc, _ in nets]
                final = [_rounds_to(h, h[-1]) for h in hists]
                best = [_rounds_to(h, b) for h, (_, b) in zip(hists, nets)]
                print("| %s | %.0f%% (%d nets) | %s | %d / %d | %d / %d | %s |" % (
                    link_model, 100 * load, len(nets), label, np.median(final), max(final),
                    np.median(best), max(best),
                    _cell([h[49] / b - 1.0 for h, (_, b) in zip(hists, nets)])), flush=True)
    return 0


def chain() -> int:
    """bench/config_phase.py's chain (2 sources at 10 tasks/s each, 3/3/2/2 workers on the demo
    bundle's stages, every node linked to every node of the next stage, capacities for its
    ``--utilisation``), thresholds fixed at the initial ones, loopback links (1e12 bytes/s)."""
    from config_phase import capacities

    from agent.scenario.format import parse_scenario
    from engines.bundle import load_bundle
    from engines.demo import DEMO_BUNDLE_DIR
    from engines.exit_profile import exit_stats, load_exit_profile

    bundle = load_bundle(DEMO_BUNDLE_DIR)
    profile = load_exit_profile(bundle.exit_profile_path)
    rem = exit_stats(profile, [DtoeeParams().initial_threshold]
                     * len(profile.early_exit_stages)).remaining
    per_stage = (3, 3, 2, 2)
    names = [["s1", "s2"]] + [["w%d%s" % (h, "abc"[i]) for i in range(n)]
                              for h, n in enumerate(per_stage, start=1)]
    print("| utilisation | step | within 1% of round 50 after round | "
          "model delay after rounds 0, 1, 2, 5, 10, 49 |")
    print("| --- | --- | --- | --- |")
    for util in (0.65, 0.87):
        caps = capacities(list(per_stage), 20.0, util)
        sc = parse_scenario({
            "stages": [{"flops": bundle.stage(h).flops, "input_bytes": bundle.stage(h).input_bytes,
                        "exit": h in bundle.early_exit_stages} for h in range(1, 5)],
            "remaining": [float(x) for x in rem], "tradeoff": 0.5,
            "knobs": {"link_model": "delay"},
            "sources": [{"id": s, "rate": 10.0} for s in names[0]],
            "workers": [{"id": w, "stage": h, "capacity": caps[w]}
                        for h in range(1, 5) for w in names[h]],
            "links": [{"from": a, "to": b, "rate": 1e12}
                      for h in range(4) for a in names[h] for b in names[h + 1]]})
        for label, params in RULES:
            hist = _history(sc, 50, params)
            print("| %.0f%% | %s | %d | %s |" % (100 * util, label, _rounds_to(hist, hist[-1]),
                                                ", ".join("%.4g" % hist[k] for k in
                                                          (0, 1, 2, 5, 10, 49))), flush=True)
    return 0


def solver(seeds: int) -> int:
    """The joint step's Newton solve against SLSQP on the same stage problems."""
    from scipy.optimize import minimize

    params = DtoeeParams(step="joint")
    problems, newton_s = [], []
    solve = joint.solve_stage

    def recording(prob, par):
        t0 = time.perf_counter()
        y = solve(prob, par)
        newton_s.append(time.perf_counter() - t0)
        problems.append((prob, par, y))
        return y

    joint.solve_stage = recording
    try:
        for i in range(seeds):
            _history(random_scenario(7200 + i, 0.85), 50, params)
    finally:
        joint.solve_stage = solve
    rel, slsqp_s, edges = [], [], []
    for prob, par, y in problems:
        f, row = prob.out_rate, prob.row
        rowsum = np.zeros((len(f), len(row)))
        rowsum[row, np.arange(len(row))] = 1.0
        scale = np.maximum(f, 1e-12)
        t0 = time.perf_counter()
        ref = minimize(lambda x: joint.stage_cost(prob, x, par)[:2], prob.p * f[row],
                       jac=True, method="SLSQP", bounds=[(0.0, fi) for fi in f[row]],
                       constraints=[{"type": "eq", "fun": lambda x: (rowsum @ x - f) / scale,
                                     "jac": lambda x: rowsum / scale[:, None]}],
                       options={"maxiter": 300, "ftol": 1e-14}).x
        slsqp_s.append(time.perf_counter() - t0)
        mine = joint.stage_cost(prob, y, par)[0]
        theirs = joint.stage_cost(prob, np.maximum(ref, 0.0), par)[0]
        rel.append((mine - theirs) / abs(theirs))
        edges.append(len(row))
    print("%d stage problems (heavy set, %d networks x 50 rounds), %d-%d edges" % (
        len(problems), seeds, min(edges), max(edges)))
    print("cost (Newton - SLSQP) / SLSQP: median %.1e, max %.1e" % (np.median(rel), max(rel)))
    print("time per solve: Newton median %.2f ms (max %.1f), SLSQP median %.2f ms (max %.1f)" % (
        1e3 * np.median(newton_s), 1e3 * max(newton_s), 1e3 * np.median(slsqp_s),
        1e3 * max(slsqp_s)))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10, help="random networks per set")
    ap.add_argument("--extra", action="store_true", help="more seeds, link-bound and paper sets")
    ap.add_argument("--cold", action="store_true", help="cold phases on settle.py's networks")
    ap.add_argument("--chain", action="store_true", help="cold phases on config_phase's chain")
    ap.add_argument("--solver", action="store_true", help="the Newton solve against SLSQP")
    args = ap.parse_args()
    if args.cold:
        return cold()
    if args.chain:
        return chain()
    if args.solver:
        return solver(args.seeds)
    return gaps(args.seeds, args.extra)


if __name__ == "__main__":
    sys.exit(main())
