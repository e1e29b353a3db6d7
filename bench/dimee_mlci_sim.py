"""DIMEE and MLCI in the simulator against their exact replay (spec checks D-8 and M-10 at bench
length): the numbers of docs/dimee-mlci.md's simulator section.

Usage: PYTHONPATH=. python3 bench/dimee_mlci_sim.py [--duration-scale 1.0] [--seeds 3]

Scenarios ``dimee-demo`` (5 tasks/s, 850 s of arrivals per run) and ``mlci-demo`` (2.5 tasks/s,
1250 s) from ``agent.scenario.tiered``; tasks on the test rows; DIMEE's baselines (tier-*) with
one seed; per policy and seed: tasks,
completed, accuracy, mean and p95 delay, DIMEE's cost vs cloud-only and tier fractions, MLCI's
level fractions; next to them the replay on the test rows (DIMEE: per row; MLCI: the exact
expectation over the offload draws, latency by eqs. 1-3, no queueing). Prints markdown with the
machine and the command.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from agent.policies.dimee import replay as DP  # noqa: E402
from agent.policies.dimee import rules as DR  # noqa: E402
from agent.policies.mlci import replay as MP  # noqa: E402
from agent.policies.mlci import rules as MR  # noqa: E402
from agent.policies.registry import make_sim_policy  # noqa: E402
from agent.scenario.tiered import dimee_demo, dimee_demo_ee, mlci_demo  # noqa: E402
from agent.sim import SimConfig, simulate  # noqa: E402


def _fr(v):
    return " / ".join("%.3f" % x for x in v)


def _run(sc, name, duration_s, seed):
    pol = make_sim_policy(name)
    t0 = time.monotonic()
    res = simulate(sc, pol, SimConfig(duration_s=duration_s, seed=seed, sample_rows="test"))
    return res, pol, time.monotonic() - t0


def _header(title, columns):
    print("\n## %s\n" % title)
    print("| " + " | ".join(columns) + " |")
    print("| --- " * len(columns) + "|")


def dimee_section(scale, seeds):
    sc = dimee_demo()
    prof = sc.exit_profile
    _header("DIMEE on dimee-demo (5 tasks/s, %.0f s per run, test rows)" % (850 * scale),
            ("policy", "seed", "tasks", "completed", "accuracy", "mean / p95 delay",
             "cost vs cloud", "tiers mobile / edge / cloud", "per-task = replay", "wall"))
    base = DR.params_from_knobs(sc.knobs["dimee"], extra=("tiers",))
    for name in ("dimee-f", "dimee") + DP.BASELINES:
        params = dataclasses.replace(base, adaptive=name == "dimee")
        if name.startswith("tier-"):
            params = dataclasses.replace(params, assign=name[len("tier-"):])
        model = DP.fit(prof, params)
        rep = DP.replay(prof, model, params)
        for seed in range(seeds if name.startswith("dimee") else 1):
            res, pol, wall = _run(sc, name, 850.0 * scale, seed)
            out = pol.task_outcomes(res, sc)
            s, extra = res.summary(0.0), pol.extra_summary(res, sc)
            pos = np.full(prof.num_samples, -1)
            pos[rep.rows] = np.arange(len(rep.rows))
            at = pos[res.sample]
            same = "-" if name in ("dimee", "tier-random") else "%d / %d" % (
                int(np.sum((out["tier"] == rep.tier[at]) & (res.correct == rep.correct[at])
                           & (out["cost"] == rep.cost[at]))), len(at))
            print("| %s | %d | %d | %d | %.4f | %.1f / %.1f ms | %+.1f %% | %s | %s | %.1f s |" % (
                name, seed, s["tasks"], s["completed"], s["accuracy"], 1e3 * s["mean_delay_s"],
                1e3 * s["p95_delay_s"], 100 * extra["cost_vs_cloud"],
                _fr(extra["tier_fractions"].values()), same, wall))
        _replay_row(name, rep)
    ee = dimee_demo_ee()
    rep = DP.early_exit_baseline(prof, base, DP.fit(prof, base).alpha)
    res, pol, wall = _run(ee, "tier-mobile", 850.0 * scale, 0)
    s, extra = res.summary(0.0), pol.extra_summary(res, ee)
    print("| tier-mobile on dimee-demo-ee (Early-Exit) | 0 | %d | %d | %.4f | %.1f / %.1f ms | "
          "%+.1f %% | %s | - | %.1f s |" % (s["tasks"], s["completed"], s["accuracy"],
                                           1e3 * s["mean_delay_s"], 1e3 * s["p95_delay_s"],
                                           100 * extra["cost_vs_cloud"],
                                           _fr(extra["tier_fractions"].values()), wall))
    _replay_row("Early-Exit", rep)


def _replay_row(name, rep):
    print("| %s replay (rows ascending) | - | %d | - | %.4f | - | %+.1f %% | %s | - | - |" % (
        name, len(rep.rows), rep.accuracy, 100 * rep.cost_vs_cloud, _fr(rep.tier_fractions)))


def mlci_section(scale, seeds):
    sc = mlci_demo()
    prof = sc.exit_profile
    _header("MLCI on mlci-demo (2.5 tasks/s, %.0f s per run, test rows)" % (1250 * scale),
            ("policy", "seed", "tasks", "completed", "accuracy", "mean / p95 delay",
             "levels end / edge / cloud", "per-task correct = replay", "wall"))
    for name in ("mlci", "tabi", "mlci-noens"):
        params = MP.variant(MR.params_from_knobs(sc.knobs["mlci"]), name)
        setting = MP.setting_from_scenario(sc, params)
        model = MP.fit(prof, params, MP.choose_prefixes(prof, params, setting))
        rep = MP.expected_replay(prof, model, params, setting)
        pos = np.full(prof.num_samples, -1)
        pos[rep.rows] = np.arange(len(rep.rows))
        for seed in range(seeds):
            res, pol, wall = _run(sc, name, 1250.0 * scale, seed)
            s = res.summary(0.0)
            level = pol.answering_level(res, sc)
            frac = np.bincount(level, minlength=3) / float(len(level))
            same = int(np.sum(res.correct == rep.correct[pos[res.sample], level]))
            print("| %s | %d | %d | %d | %.4f | %.1f / %.1f ms | %s | %d / %d | %.1f s |" % (
                name, seed, s["tasks"], s["completed"], s["accuracy"], 1e3 * s["mean_delay_s"],
                1e3 * s["p95_delay_s"], _fr(frac), same, len(level), wall))
        print("| %s replay (exact expectation) | - | %d | - | %.4f | %.1f ms (eqs. 1-3) | %s | - "
              "| - |" % (name, len(rep.rows), rep.accuracy, 1e3 * rep.mean_latency_s,
                         _fr(rep.level_fractions)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-scale", type=float, default=1.0,
                        help="multiply the runs' lengths (default 1: D-8's and M-10's)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per policy (default 3)")
    args = parser.parse_args()
    print("python %s, %s, %d cores; command: PYTHONPATH=. python3 bench/dimee_mlci_sim.py%s"
          % (platform.python_version(), platform.machine(), os.cpu_count() or 0,
             "".join(" %s %s" % (k, v) for k, v in (("--duration-scale", args.duration_scale),
                                                    ("--seeds", args.seeds))
                     if v != parser.get_default(k.lstrip("-").replace("-", "_")))))
    dimee_section(args.duration_scale, args.seeds)
    mlci_section(args.duration_scale, args.seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
