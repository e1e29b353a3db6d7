"""Markdown table of the paper-setting results written by ``bench/paper_figures.sh``.

Usage: python3 bench/paper_table.py [FIGURES_DIR] [--replot] [--same-thresholds]
(FIGURES_DIR: default bench/figures)
For each setting, at the paper's per-source rate: every policy's mean/p95 delay and accuracy,
and DTO-EE's delay change and accuracy difference relative to it. ``--replot`` redraws every
figure from the results.json files without simulating again. ``--same-thresholds`` adds the
model's eq. 8 delay of every routing at DTO-EE's thresholds (seed-0 settings, no simulation),
which separates the routing from the threshold choice.
"""

from __future__ import annotations

import json
import os
import sys

PAPER_RATE = {"paper-resnet101": 4.8, "paper-bert": 2.0}


def replot(folder: str) -> None:
    """Redraw the figures of every results.json under ``folder``."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from agent.sim.plots import plot_results

    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name, "results.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                for out in plot_results(json.load(f), name, os.path.join(folder, name)):
                    print(out, file=sys.stderr)


def same_thresholds() -> None:
    """Eq. 8 delay (ms) of each policy's routing with DTO-EE's thresholds, and the optimum."""
    import warnings

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from agent.policies.baselines import plans as baselines
    from agent.policies.dtoee.network import run_dtoee
    from agent.policies.model import with_link_model
    from agent.policies.optimum import optimum
    from agent.scenario.paper import paper_scenario

    warnings.simplefilter("ignore", RuntimeWarning)  # overloaded routings evaluate to inf
    print()
    print("| setting | DTO-EE thresholds | optimum ms | DTO-EE ms | CF ms | BF ms | NGTO ms "
          "| GA ms |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in PAPER_RATE:
        # the paper's hop model (fixed beta/r), as in its figures
        sc = with_link_model(paper_scenario(name, seed=0), "delay")
        ours = run_dtoee(sc, rounds=50)
        th = ours.thresholds
        cells = [optimum(sc, th).delay_s, ours.delay_s]
        cells += [getattr(baselines, f)(sc, thresholds=th).delay_s
                  for f in ("cf_routing", "bf_routing", "ngto", "ga")]
        print("| %s | %s | %s |" % (name, " ".join("%d:%.2f" % kv for kv in sorted(th.items())),
                                    " | ".join("overloaded" if d == float("inf")
                                               else "%.1f" % (d * 1e3) for d in cells)))


OPTIONS = ("--replot", "--same-thresholds")


def main() -> int:
    """Print the tables; 2 on an option it does not know (a typo would drop a table silently)."""
    if "-h" in sys.argv[1:] or "--help" in sys.argv[1:]:
        print(__doc__.strip())
        return 0
    unknown = [a for a in sys.argv[1:] if a.startswith("-") and a not in OPTIONS]
    if unknown:
        print("paper_table.py: unknown option %s (known: %s)" % (" ".join(unknown),
                                                               ", ".join(OPTIONS)),
              file=sys.stderr)
        return 2
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    folder = args[0] if args else os.path.join(os.path.dirname(__file__), "figures")
    if "--replot" in sys.argv:
        replot(folder)
    print("| setting | rate /source | policy | mean delay ms | p95 ms | accuracy | unfinished "
          "| DTO-EE delay vs it | DTO-EE accuracy vs it |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, rate in PAPER_RATE.items():
        path = os.path.join(folder, name, "results.json")
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            rows = [r for r in json.load(f)["rates"] if abs(r["rate"] - rate) < 1e-9]
        ours = next(r for r in rows if r["policy"] == "dtoee")
        for r in rows:
            if r["mean_delay_s"] is None:
                continue
            d = (ours["mean_delay_s"] / r["mean_delay_s"] - 1) * 100
            a = (ours["accuracy"] - r["accuracy"]) * 100
            cmp_d = "" if r is ours else "%+.1f%%" % d
            cmp_a = "" if r is ours else "%+.2f pt" % a
            print("| %s | %g | %s | %.1f | %.1f | %.2f%% | %d | %s | %s |" % (
                name, rate, r["policy"], r["mean_delay_s"] * 1e3, r["p95_delay_s"] * 1e3,
                r["accuracy"] * 100, r["unfinished"], cmp_d, cmp_a))
    if "--same-thresholds" in sys.argv:
        same_thresholds()
    return 0


if __name__ == "__main__":
    sys.exit(main())
