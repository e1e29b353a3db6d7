"""Diagnostic of DTO-EE's heavy-load convergence at round 50: which stage's routing holds the
gap, and variants of the default rule's per-node parts that did not close it.

Heavy and overloaded-start sets of bench/convergence.py (seeds 7200-7209 at 85% and 7300-7309
at 80% with one stage-1 worker at 0.3x, the paper's link model), 50 rounds of the
whole-network driver, gap of eq. 8 to the central optimum (median / worst). Deterministic.

- ``--swap``: per heavy network, the gap at round 50 and the gap after replacing one stage's
  offloaders' routing by the optimum's (the others as DTO-EE left them);
- default: each variant (swapped into ``network.adapt_damping`` or ``steps.row_marginals``
  for the run, restored after) against the default rule.

    python3 bench/heavy_variants.py [--seeds 10] [--swap]
"""

from __future__ import annotations

import argparse
import os
import sys

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from agent.policies.dtoee import network, steps  # noqa: E402
from agent.policies.dtoee.knobs import DtoeeParams  # noqa: E402
from agent.policies.model import compile_network, network_delay, routing_vector  # noqa: E402
from agent.policies.optimum import optimum  # noqa: E402
from tests.unit.dtoee_scenarios import random_scenario  # noqa: E402

ROUNDS = 50


def _damping(cap=4.0, noise=steps.DAMP_NOISE, ratio=0.0):
    """adapt_damping with another cap (times the predecessors), noise floor, or a reversal
    counted only when the new change is at least ``ratio`` of the previous one."""
    def adapt(change, previous_change, damping, predecessors, capacity):
        nz = noise * np.asarray(capacity, dtype=np.float64)
        flip = (change * previous_change < 0) & (np.abs(change) > nz) \
            & (np.abs(previous_change) > nz) & (np.abs(change) >= ratio * np.abs(previous_change))
        return np.where(flip, np.minimum(steps.DAMP_UP * damping,
                                         cap * np.maximum(predecessors, 1)),
                        np.maximum(1.0, steps.DAMP_DOWN * damping))
    return {"adapt_damping": adapt}


def _psi(mode):
    """row_marginals whose downstream curvature Psi_i is the harmonic one (what a successor that
    re-splits its extra flow optimally feels: rem^2 / sum_j 1/H_ij) or half the reported one."""
    base = steps.row_marginals

    def marginals(p, remaining, *args, **kw):
        delta, h, omega_i, psi_i = base(p, remaining, *args, **kw)
        ok = np.isfinite(h)
        harm = np.asarray(remaining) ** 2 / np.sum(np.where(ok, 1.0 / np.where(ok, h, 1.0), 0.0),
                                                   axis=1)
        return delta, h, omega_i, (harm if mode == "harmonic" else 0.5 * psi_i)
    return {"row_marginals": marginals}


VARIANTS = [
    ("default", {}, {}),
    ("damping cap 2x predecessors", _damping(cap=2.0), {}),
    ("damping cap 8x predecessors", _damping(cap=8.0), {}),
    ("damping noise floor 1% of capacity", _damping(noise=1e-2), {}),
    ("reversal counted if >= 0.3x the previous change", _damping(ratio=0.3), {}),
    ("same, momentum 0.8", _damping(ratio=0.3), {"momentum": 0.8}),
    ("harmonic downstream curvature", _psi("harmonic"), {}),
    ("half the downstream curvature", _psi("half"), {}),
]


def _sets(seeds):
    return [("heavy (85%)", [random_scenario(7200 + i, 0.85) for i in range(seeds)]),
            ("overloaded start", [random_scenario(7300 + i, 0.8, skew=0.3)
                                  for i in range(seeds)])]


def _gap(sc, best, params):
    return run_gap(sc, params) / best - 1.0


def run_gap(sc, params):
    """Model delay after ROUNDS rounds of the whole-network driver."""
    return network.run_dtoee(sc, rounds=ROUNDS, params=params, stop_when_converged=False).delay_s


def _patched(patch, fn):
    mods = {"adapt_damping": network, "row_marginals": steps}
    saved = {k: getattr(mods[k], k) for k in patch}
    try:
        for k, v in patch.items():
            setattr(mods[k], k, v)
        return fn()
    finally:
        for k, v in saved.items():
            setattr(mods[k], k, v)


def swap(seeds):
    """Per heavy network: round-50 gap, and the gap with stage h's routing set to the optimum's."""
    print("| seed | gap at 50 | " + " | ".join("stage %d from the optimum" % h for h in range(4))
          + " |")
    print("| --- | --- |" + " --- |" * 4)
    for i in range(seeds):
        sc = random_scenario(7200 + i, 0.85)
        net = compile_network(sc)
        best = optimum(sc)
        got = network.run_dtoee(sc, rounds=ROUNDS, stop_when_converged=False)
        po, pr = routing_vector(net, best.routing), routing_vector(net, got.routing)
        cells = []
        for h in range(net.num_stages):
            p = pr.copy()
            at = net.stage[net.edge_src] == h
            p[at] = po[at]
            cells.append("%.2f%%" % (100 * (network_delay(net, p, sc.remaining) / best.delay_s - 1)))
        print("| %d | %.2f%% | %s |" % (7200 + i, 100 * (got.delay_s / best.delay_s - 1),
                                        " | ".join(cells)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--swap", action="store_true", help="the per-stage swap table instead")
    args = ap.parse_args()
    if args.swap:
        swap(args.seeds)
        return 0
    sets = [(name, scs, [optimum(sc).delay_s for sc in scs]) for name, scs in _sets(args.seeds)]
    print("| variant (round %d) | %s |" % (ROUNDS, " | ".join(name for name, _, _ in sets)))
    print("| --- |" + " --- |" * len(sets))
    for label, patch, knobs in VARIANTS:
        params = DtoeeParams(**knobs)
        cells = []
        for _, scs, best in sets:
            g = np.array(_patched(patch, lambda: [_gap(sc, b, params)
                                                  for sc, b in zip(scs, best)]))
            fin = g[np.isfinite(g)]
            cells.append("%.2f%% / %.2f%%" % (100 * np.median(fin), 100 * fin.max())
                         + (" +%d inf" % (len(g) - len(fin)) if len(fin) < len(g) else ""))
        print("| %s | %s |" % (label, " | ".join(cells)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
