"""DIMEE and MLCI on the demo, at the replay level: every number in docs/dimee-mlci.md.

Usage: PYTHONPATH=. python3 bench/dimee_mlci_replay.py [--only dimee|mlci] [--seeds 200]
       PYTHONPATH=. python3 bench/dimee_mlci_replay.py --write-scenario tiered.json
(the second writes the tiered demo setting, ``edge-agent scenario mlci-demo``, as a scenario
file for ``edge-agent plan --policy dimee|dimee-f|mlci|tabi|mlci-noens --scenario tiered.json``
and exits)

Reads the shipped demo exit profile (format 2) and the tiered demo setting (end device 2e6
FLOP/s holding stage 1, edge 1e7 holding 1..3, cloud 1e8 holding 1..4; links 3.2e5 and 3.2e4
B/s; ``agent.scenario.tiered.mlci_demo``). Validation rows (even) learn, test rows (odd) report. All
numbers are exact replays of the profile (DIMEE: per row; MLCI: expectations over the offload
draws), no queueing. Prints markdown tables with the machine and the command.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from agent.policies.dimee import replay as DP  # noqa: E402
from agent.policies.dimee import rules as DR  # noqa: E402
from agent.policies.mlci import replay as MP  # noqa: E402
from agent.policies.mlci import rules as MR  # noqa: E402
from agent.policies.splits import test_rows, validation_rows  # noqa: E402
from agent.scenario.paper import synthetic_exit_profile  # noqa: E402
from agent.scenario.tiered import mlci_demo  # noqa: E402

MULTS = (0.5, 1.0, 2.0, 3.0, 4.0)


def _pct(x):
    return "%+.1f %%" % (100.0 * x) if x is not None else "-"


def _fr(v):
    return " / ".join("%.3f" % x for x in v)


def _costs(params, **kw):
    return dataclasses.replace(params, costs=dataclasses.replace(params.costs, **kw))


def dimee_rows(prof, params, flops, seeds):
    """(name, replay or (mean, sd) accuracy) rows of the main table for one cost pricing."""
    f = dataclasses.replace(params, adaptive=False)
    model = DP.fit(prof, f, flops=flops)
    rows = []
    for name, p in (("cloud-only (the paper's 1.00)", "cloud"), ("mobile-only", "mobile"),
                    ("edge-only", "edge"), ("Random (uniform)", "random")):
        rows.append((name, DP.replay(prof, model, dataclasses.replace(f, assign=p))))
    ours_f = DP.replay(prof, model, f)
    rnd = DP.random_like(prof, model, f, ours_f, seeds)
    rows.append(("Random at DIMEE-F's fractions (%d seeds)" % seeds, (rnd.mean(), rnd.std(),
                                                                      ours_f)))
    rows.append(("**DIMEE-F**", ours_f))
    rows.append(("**DIMEE-D** (rows ascending)", DP.replay(prof, DP.fit(prof, params, flops=flops),
                                                           params)))
    oracle = DP.replay(prof, model, dataclasses.replace(f, assign="oracle"))
    rows.append(("oracle tiers (Alg. 1 on the test row itself)", oracle))
    rows.append(("Early-Exit (whole model on the mobile, alpha*)",
                 DP.early_exit_baseline(prof, f, model.alpha, flops)))
    agree = float(np.mean(ours_f.tier == oracle.tier))
    return model, rows, agree


def dimee_section(prof, flops, seeds):
    base = DR.DimeeParams()
    model = DP.fit(prof, base)
    print("\n## DIMEE\n")
    print("E[r] (eq. 3) on the validation rows, count units, lambda = 0.05, gamma = 5 lambda:\n")
    print("| alpha | " + " | ".join("%.1f" % a for a in model.reward_by_alpha) + " |")
    print("| --- " * (len(model.reward_by_alpha) + 1) + "|")
    print("| E[r] | " + " | ".join("%.3f" % r for r in model.reward_by_alpha.values()) + " |")
    print("\nalpha* = %.2f; validation pools (easy / moderate / hard) = %s"
          % (model.alpha, " / ".join(str(int(c)) for c in model.pools.count)))
    for label, p in (("stage_units = count (paper-literal: one layer per stage)", base),
                     ("stage_units = flops, model_units = 12 (priced like BERT-base's 12 layers)",
                      _costs(base, stage_units="flops", model_units=12.0))):
        m, rows, agree = dimee_rows(prof, p, flops, seeds)
        print("\n### %s (alpha* = %.2f)\n" % (label, m.alpha))
        print("| policy | accuracy | cost vs cloud-only | tiers mobile / edge / cloud |")
        print("| --- | --- | --- | --- |")
        for name, r in rows:
            if isinstance(r, tuple):
                print("| %s | %.3f +- %.3f | %s | %s |" % (name, r[0], r[1],
                                                          _pct(r[2].cost_vs_cloud),
                                                          _fr(r[2].tier_fractions)))
            else:
                print("| %s | %.3f | %s | %s |" % (name, r.accuracy, _pct(r.cost_vs_cloud),
                                                   _fr(r.tier_fractions)))
        print("\nnearest-mean tier = oracle tier on %.1f %% of the test rows" % (100 * agree))
    print("\n### Fig. 3: one cost multiplied, the others fixed (count units)\n")
    print("| cost | x | alpha* | val. cloud fraction | DIMEE-F accuracy | DIMEE-F cost vs cloud "
          "| oracle-tier accuracy |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    val = validation_rows(prof.num_samples)
    for key, default in (("mobile", 1.5), ("edge", 1.0), ("cloud_offload", 3.0)):
        for k in MULTS:
            p = _costs(dataclasses.replace(base, adaptive=False), **{key: default * k})
            m = DP.fit(prof, p)
            r = DP.replay(prof, m, p)
            o = DP.replay(prof, m, dataclasses.replace(p, assign="oracle"))
            cloud = np.mean(DR.oracle_tiers(prof.confidence[val], m.alpha, m.layout) == DR.CLOUD)
            print("| %s | %g | %.2f | %.3f | %.3f | %s | %.3f |" % (
                key, k, m.alpha, cloud, r.accuracy, _pct(r.cost_vs_cloud), o.accuracy))
    print("\n### cloud fee gamma (in lambda), count and flops/12 pricing\n")
    print("| gamma | alpha* | DIMEE-F accuracy | DIMEE-F cost | Early-Exit cost (count) | "
          "Early-Exit cost (flops/12) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for g in (3.0, 5.0, 8.0, 12.0):
        p = _costs(dataclasses.replace(base, adaptive=False), cloud_fee=g)
        m = DP.fit(prof, p)
        r = DP.replay(prof, m, p)
        ee = DP.early_exit_baseline(prof, p, m.alpha)
        p12 = _costs(p, stage_units="flops", model_units=12.0)
        ee12 = DP.early_exit_baseline(prof, p12, DP.fit(prof, p12, flops=flops).alpha, flops)
        print("| %g | %.2f | %.3f | %s | %s | %s |" % (g, m.alpha, r.accuracy,
                                                       _pct(r.cost_vs_cloud),
                                                       _pct(ee.cost_vs_cloud),
                                                       _pct(ee12.cost_vs_cloud)))


def synthetic_section():
    """The embedding's quality, which the demo cannot vary: a 12-head, 2-class stand-in for
    BERT-base whose embedding column 0 carries the latent difficulty with weight rho."""
    print("\n### Synthetic 12-head profile: what the embedding's quality does\n")
    print("12 heads, accuracies 0.80 -> 0.935, C = 2, 10,000 rows, m = 3, n = 6, lambda = 0.01, "
          "gamma = 5 lambda, Ours-F.\n")
    print("| rho | alpha* | accuracy | cost vs cloud-only | oracle accuracy |")
    print("| --- | --- | --- | --- | --- |")
    accs = list(np.linspace(0.80, 0.935, 12))
    for rho in (0.0, 0.5, 0.9, 1.0):
        prof = synthetic_exit_profile(accs, range(1, 13), 12, 2, 10000, seed=0, v2_fields=True,
                                      embedding_rho=rho)
        p = DR.DimeeParams(m=3, n=6, adaptive=False, embedding="synthetic16",
                           costs=DR.DimeeCosts(unit=0.01))
        m = DP.fit(prof, p)
        r = DP.replay(prof, m, p)
        o = DP.replay(prof, m, dataclasses.replace(p, assign="oracle"))
        print("| %g | %.2f | %.3f | %s | %.3f |" % (rho, m.alpha, r.accuracy,
                                                     _pct(r.cost_vs_cloud), o.accuracy))


def mlci_section(prof, setting):
    params = MR.MlciParams()
    prefixes = MP.choose_prefixes(prof, params, setting)
    model = MP.fit(prof, params, prefixes)
    print("\n## MLCI\n")
    print("deployment (prefix ends) = %s; T per head = %s; weights = %s"
          % (list(prefixes), ", ".join("%.3f" % t for t in model.temperatures),
             ", ".join("%.3f" % w for w in model.weights / model.weights.sum())))
    print("\n### Table I grid (exact expectations, test rows, k = 10, p = 1)\n")
    print("| t | tau | accuracy | latency (eqs. 1-3) | vs tau = 0 | levels end / edge / cloud |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in MP.grid(prof, model, params, setting):
        if row["tau"] == 0.0:
            ref = row["latency_s"]
        print("| %g | %g | %.4f | %.1f ms | %s | %s |" % (
            row["t"], row["tau"], row["accuracy"], 1e3 * row["latency_s"],
            "-" if row["tau"] == 0.0 else _pct(row["latency_s"] / ref - 1.0),
            _fr(row["level_fractions"])))
    print("\nsingle levels (the input relayed up to it): " + "; ".join(
        "%s %.3f at %.1f ms" % (name, r["accuracy"], 1e3 * r["latency_s"])
        for name, r in ((n, MP.reference(prof, model, setting, l))
                        for l, n in enumerate(("end-only", "edge-only", "cloud-only")))))
    print("\n### Ablations at t = 0.8, tau = 0 (Tabi) and tau = 0.01 (mlci)\n")
    print("| variant | tau = 0 accuracy | latency | tau = 0.01 accuracy | latency |")
    print("| --- | --- | --- | --- | --- |")
    t1 = MP.fit(prof, dataclasses.replace(params, temperature=1.0), prefixes)
    for name, p, m in (("defaults (ensemble, T fitted, k = 10)", params, model),
                       ("no ensemble", dataclasses.replace(params, ensemble=False), model),
                       ("no temperature (T = 1)", params, t1),
                       ("k = 1", dataclasses.replace(params, k=1.0), model),
                       ("k = 5", dataclasses.replace(params, k=5.0), model),
                       ("k = 20", dataclasses.replace(params, k=20.0), model),
                       ("k = 100", dataclasses.replace(params, k=100.0), model),
                       ("k = 1000 (about hard: offload iff conf < (1+t)/2)",
                        dataclasses.replace(params, k=1000.0), model)):
        out = [MP.expected_replay(prof, m, dataclasses.replace(p, tau=tau), setting)
               for tau in (0.0, 0.01)]
        print("| %s | %.4f | %.1f ms | %.4f | %.1f ms |" % (
            name, out[0].accuracy, 1e3 * out[0].mean_latency_s, out[1].accuracy,
            1e3 * out[1].mean_latency_s))
    print("\nFig. 4 (eq. 7, t = 0.7, k = 10): " + ", ".join(
        "p(%.4g) = %.4f" % (c, MR.offload_probability(c, 0.7, 10.0))
        for c in (0.5, 0.7, 0.7001, 0.775, 0.85, 0.925, 1.0)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("dimee", "mlci"), default=None)
    parser.add_argument("--seeds", type=int, default=200,
                        help="random assignments at DIMEE-F's fractions (default 200)")
    parser.add_argument("--write-scenario", metavar="PATH", default=None,
                        help="write the tiered demo setting (and its exit profile) and exit")
    args = parser.parse_args()
    scenario = mlci_demo()
    if args.write_scenario:
        from agent.scenario.format import save_scenario

        print("\n".join(save_scenario(args.write_scenario, scenario)))
        return 0
    prof = scenario.exit_profile
    flops = [s.flops for s in scenario.stages]
    print("python %s, %s, %d cores; command: PYTHONPATH=. python3 bench/dimee_mlci_replay.py%s"
          % (platform.python_version(), platform.machine(), os.cpu_count() or 0,
             " --only " + args.only if args.only else ""))
    print("demo profile: %d rows (%d validation, %d test), heads at stages %s"
          % (prof.num_samples, len(validation_rows(prof.num_samples)),
             len(test_rows(prof.num_samples)), list(prof.exit_stages)))
    if args.only in (None, "dimee"):
        dimee_section(prof, flops, args.seeds)
        synthetic_section()
    if args.only in (None, "mlci"):
        mlci_section(prof, MP.setting_from_scenario(scenario, MR.MlciParams()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
