"""DIMEE's and MLCI's own numbers from a testbed run folder, next to the replay's.

Usage::

    edge-agent testbed --topology dimee --policies dimee,dimee-f --duration 30 --out runs
    PYTHONPATH=. python3 bench/tiers_testbed.py runs/latest

For each (policy, rate) run of a ``dimee`` or ``mlci`` topology: tasks, lost, mean and p95
delay, accuracy, and where tasks were answered (DIMEE: tier fractions and eq. 2's mean cost
relative to sending everything to the cloud; MLCI: level fractions); then the exit-profile
replay's accuracy and fractions on the same rows (DIMEE: the replay of the records' rows in
their arrival order; MLCI: the exact expectation over the offload draws). Prints the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

import numpy as np

from agent.policies.dimee import replay as dimee_replay
from agent.policies.dimee import rules as DR
from agent.policies.dimee.agent import DEFAULT_TIERS, tier_counts
from agent.policies.mlci import replay as mlci_replay
from agent.policies.mlci import rules as MR
from agent.policies.mlci.agent import level_counts
from agent.testbed.local import rate_label
from agent.testbed.report import percentile, read_records
from engines.demo import DEMO_BUNDLE_DIR
from engines.exit_profile import load_exit_profile


def _records(run_dir: str, policy: str, rate: float) -> list:
    folder = os.path.join(run_dir, policy, rate_label(rate))
    out = []
    for source in sorted(os.listdir(folder)):
        path = os.path.join(folder, source, "records.jsonl")
        if os.path.exists(path):
            out += read_records(path)
    return sorted(out, key=lambda r: r.get("created_mono") or 0.0)


def dimee_row(profile, policy: str, recs: list) -> dict:
    """Measured tier fractions and cost vs cloud-only; the replay on the same rows."""
    done = [r for r in recs if r["status"] == "completed"]
    params = DR.params_from_knobs({"adaptive": policy != "dimee-f"})
    model = dimee_replay.fit(profile, params)
    tiers = np.array([DR.TIERS.index(next(t for t, ids in DEFAULT_TIERS.items()
                                          if r["worker"] in ids)) for r in done])
    heads = np.array([profile.exit_stages.index(r["exit_stage"]) for r in done])
    cost = DR.costs_of(tiers, heads, params.costs, model.layout).mean()
    cloud = params.costs.unit * (params.costs.cloud_offload + params.costs.cloud_fee)
    counts = tier_counts(done, DEFAULT_TIERS)
    rows = np.array([r["row"] for r in done])
    rep, pools = [], model.pools
    for row in rows:  # arrival order, as the source saw them (Ours-D's updates depend on it)
        tier = DR.nearest_tier(pools, profile.embedding[row])
        if params.adaptive:
            pools = DR.update_pool(pools, tier, profile.embedding[row])
        rep.append((tier, bool(profile.correct[row, DR.answer_head(
            profile.confidence[row], tier, model.alpha, model.layout)])))
    rep_t = np.array([t for t, _ in rep])
    return {"fractions": [counts[t] / len(done) for t in DR.TIERS],
            "cost_vs_cloud": cost / cloud - 1.0,
            "replay_accuracy": float(np.mean([c for _, c in rep])),
            "replay_fractions": [float(np.mean(rep_t == t)) for t in range(3)]}


def mlci_row(profile, policy: str, recs: list) -> dict:
    """Measured level fractions; the exact replay expectation on the same rows."""
    done = [r for r in recs if r["status"] == "completed"]
    params = mlci_replay.variant(MR.params_from_knobs({}), policy)
    model = mlci_replay.fit(profile, params, (1, 3, 4))
    setting = mlci_replay.MlciSetting((1.0,) * 4, (1.0,) * 3, (1.0,) * 2, 1.0)
    rep = mlci_replay.expected_replay(profile, model, params, setting,
                                      rows=[r["row"] for r in done])
    per_row = (rep.stop * rep.correct).sum(axis=1)
    return {"fractions": [n / len(done) for n in level_counts(done, 3)],
            "replay_accuracy": float(per_row.mean()),
            "replay_fractions": [float(f) for f in rep.stop.mean(axis=0)]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", help="a testbed run folder (DIR/latest)")
    args = ap.parse_args(argv)
    runs = json.load(open(os.path.join(args.run_dir, "results.json")))["runs"]
    profile = load_exit_profile(os.path.join(DEMO_BUNDLE_DIR, "exit_profile.npz"))
    print("machine: %s, %d CPUs, Python %s" % (platform.processor() or platform.machine(),
                                               os.cpu_count() or 0, platform.python_version()))
    print("policy      rate  tasks lost  mean ms  p95 ms  acc    replay acc  fractions "
          "(measured / replay)            cost vs cloud")
    for run in runs:
        pol, rate = run["policy"], run["rate"]
        recs = _records(args.run_dir, pol, rate)
        done = [r for r in recs if r["status"] == "completed"]
        delays = [r["delay_s"] * 1e3 for r in done]
        row = (dimee_row if pol.startswith("dimee") else mlci_row)(profile, pol, recs)
        acc = np.mean([bool(r["correct"]) for r in done])
        frac = "%s / %s" % ("/".join("%.2f" % f for f in row["fractions"]),
                            "/".join("%.2f" % f for f in row["replay_fractions"]))
        cost = ("%+.1f %%" % (100 * row["cost_vs_cloud"])) if "cost_vs_cloud" in row else "-"
        print("%-10s %5g %6d %4d %8.1f %7.1f  %.3f  %.3f       %-33s %s"
              % (pol, rate, len(recs), run["lost"], np.mean(delays),
                 percentile(delays, 95), acc, row["replay_accuracy"], frac, cost))
    return 0


if __name__ == "__main__":
    sys.exit(main())
