"""``edge-agent plan``: offline routing and exit thresholds for a scenario, by one policy."""

from __future__ import annotations

import argparse
import json
import math
import sys

from agent.errors import UsageError

HELP = "routing and exit thresholds a policy chooses for a scenario, with its model delay (eq. 8)"

POLICIES = ("dtoee", "cf", "bf", "ngto", "ga", "optimum")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options of ``plan``."""
    parser.add_argument("--scenario", "-s", required=True, help="scenario JSON file")
    parser.add_argument("--policy", "-p", default="dtoee", choices=POLICIES,
                        help="dtoee (default); cf/bf: split by receiver capacity/link rate; ngto: "
                             "best responses in turn; ga: sources' genetic path search; optimum: "
                             "the central convex optimum for the start thresholds")
    parser.add_argument("--rounds", "-n", type=int, default=None,
                        help="dtoee: communication rounds (default: knobs.rounds, 200); ngto: "
                             "most best-response passes (100); ga: rounds (20)")
    parser.add_argument("--step", choices=("default", "paper"), default=None,
                        help="dtoee routing update: default (damped Newton) or paper (eq. 19); "
                             "overrides knobs.step")
    parser.add_argument("--staleness", type=int, default=None,
                        help="ga: age in rounds of the state sources search on (default: "
                             "knobs.ga_staleness, 1)")
    parser.add_argument("--seed", type=int, default=0, help="ga: random seed (default 0)")
    parser.add_argument("--json", action="store_true",
                        help="print exactly one JSON object: policy, routing, thresholds, "
                             "delay_s, accuracy, utility, rounds, converged")


def _nonneg_int(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UsageError("%s: must be an integer >= 0, got %r" % (where, value))
    return value


def plan(scenario, policy: str, rounds=None, step=None, staleness=None, seed: int = 0):
    """Run ``policy`` on ``scenario``; returns its ``PolicyResult``."""
    import dataclasses

    from agent.policies.baselines import plans as baselines
    from agent.policies.dtoee.protocol import parse_knobs, run_dtoee

    params = parse_knobs(scenario.knobs)  # validates the DTO-EE knobs for every policy
    if rounds is not None and rounds < 1:
        raise UsageError("--rounds: must be >= 1, got %d" % rounds)
    if step is not None:
        params = dataclasses.replace(params, step=step)
    if policy == "dtoee":
        return run_dtoee(scenario, rounds=rounds, params=params)
    if policy == "cf":
        return baselines.cf_routing(scenario)
    if policy == "bf":
        return baselines.bf_routing(scenario)
    if policy == "ngto":
        return baselines.ngto(scenario, max_rounds=rounds or 100)
    if policy == "ga":
        if staleness is None:
            staleness = _nonneg_int(scenario.knobs.get("ga_staleness", 1), "knobs.ga_staleness")
        elif staleness < 0:
            raise UsageError("--staleness: must be >= 0, got %d" % staleness)
        return baselines.ga(scenario, rounds=rounds or 20, staleness=staleness, seed=seed)
    from agent.policies.optimum import optimum
    th = None
    if scenario.exit_profile is not None:
        th = {h: params.initial_threshold for h in scenario.exit_profile.early_exit_stages}
    return optimum(scenario, th)


def _fmt(x, unit: str = "") -> str:
    if x is None:
        return "-"
    if not math.isfinite(x):
        return "inf (a worker is overloaded)"
    return "%.4f%s" % (x, unit)


def run(args: argparse.Namespace) -> int:
    """Load the scenario, plan, print the result (text or one JSON object)."""
    from agent.policies.model import compile_network, remaining_for
    from agent.policies.optimum import min_max_utilisation
    from agent.scenario.format import load_scenario

    scenario = load_scenario(args.scenario)
    devices = [w.device or w.id for w in scenario.workers]
    if len(set(devices)) < len(devices):
        print("edge-agent plan: note: workers on one device share its processor in the "
              "simulator, but the DTO-EE model (eq. 6) treats each as its own server",
              file=sys.stderr)
    res = plan(scenario, args.policy, args.rounds, args.step, args.staleness, args.seed)
    if not math.isfinite(res.delay_s):
        rem, _ = remaining_for(scenario, res.thresholds or None)
        best, _ = min_max_utilisation(compile_network(scenario), rem)
        print("edge-agent plan: warning: the %s routing overloads a worker; the least possible "
              "utilisation of the busiest worker is %.3f%s" % (
                  res.policy, best, " (no routing fits)" if best >= 1 else ""), file=sys.stderr)
    if args.json:
        json.dump(res.to_json(), sys.stdout, sort_keys=False)
        sys.stdout.write("\n")
        return 0
    out = ["policy      %s" % res.policy,
           "delay       %s" % _fmt(res.delay_s, " s (model, eq. 8)"),
           "accuracy    %s" % _fmt(res.accuracy),
           "utility     %s" % _fmt(res.utility),
           "rounds      %d%s" % (res.rounds, "" if res.converged else " (not converged)"),
           "thresholds  %s" % (", ".join("stage %d: %.2f" % kv for kv in
                                         sorted(res.thresholds.items())) or "fixed remaining"),
           "routing"]
    for node, row in res.routing.items():
        out.append("  %-12s %s" % (node, "  ".join("%s %.3f" % (s, p) for s, p in row.items())))
    print("\n".join(out))
    return 0
