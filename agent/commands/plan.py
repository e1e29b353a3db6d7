"""``edge-agent plan``: offline routing and exit thresholds for a scenario, by one policy."""

from __future__ import annotations

import argparse
import json
import math
import sys

from agent.commands import seed_arg
from agent.config.checks import short
from agent.errors import UsageError
from agent.policies.setting import MAX_ROUNDS  # --rounds at most (ga: ~5 ms a round)

HELP = "routing and exit thresholds a policy chooses for a scenario, with its model delay (eq. 8)"
# --staleness is bounded as knobs.ga_staleness is (agent.policies.baselines.plans)

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options of ``plan``."""
    parser.add_argument("--scenario", "-s", required=True, help="scenario JSON file")
    parser.add_argument("--policy", "-p", default="dtoee",
                        help="the policy that plans (default dtoee): dtoee, cf, bf, ngto, ga, "
                             "optimum, dimee, dimee-f, mlci, tabi, mlci-noens or one a plug-in "
                             "registered; an unknown name is answered with the list")
    parser.add_argument("--rounds", "-n", type=int, default=None,
                        help="dtoee: communication rounds (default: knobs.rounds, 200); ngto: "
                             "most best-response passes (100); ga: rounds (20)")
    parser.add_argument("--step", choices=("default", "paper", "joint"), default=None,
                        help="dtoee routing update: default (damped Newton per node), paper "
                             "(eq. 19) or joint (each stage's offloaders together); overrides "
                             "knobs.step")
    parser.add_argument("--staleness", type=int, default=None,
                        help="ga: age in rounds of the state sources search on (default: "
                             "knobs.ga_staleness, 1)")
    parser.add_argument("--seed", type=seed_arg, default=0, help="ga: random seed (default 0)")
    parser.add_argument("--link-model", choices=("shared", "delay"), default=None,
                        help="links in the model: shared (a server of r bytes/s, wire overhead "
                             "counted; the default) or delay (the paper's fixed beta/r); "
                             "overrides knobs.link_model")
    parser.add_argument("--json", action="store_true",
                        help="print exactly one JSON object: policy, routing, thresholds, "
                             "delay_s, accuracy, utility, rounds, converged, "
                             "link_utilisation, worker_utilisation (dimee and mlci: "
                             "their own fields, docs/dimee-mlci.md)")


def plan(scenario, policy: str, rounds=None, step=None, staleness=None, seed: int = 0):
    """Run ``policy`` on ``scenario``; returns its ``PolicyResult``."""
    from agent.policies.registry import plan as run_planner

    return run_planner(scenario, policy, rounds, step, staleness, seed)


def _fmt(x, unit: str = "") -> str:
    if x is None:
        return "-"
    if not math.isfinite(x):
        return "inf (a worker or link is overloaded)"
    return "%.4f%s" % (x, unit)


def run(args: argparse.Namespace) -> int:
    """Load the scenario, plan, print the result (text or one JSON object)."""
    from agent.policies.model import with_link_model
    from agent.scenario.format import load_scenario
    from agent.scenario.sections import naming_the_file
    from agent.policies.plan_report import PlanReport, Utilisation, overload_warning

    from agent.policies.baselines.plans import MAX_STALENESS_ROUNDS  # knobs.ga_staleness's too

    for opt, least, most in (("rounds", 1, MAX_ROUNDS), ("staleness", 0, MAX_STALENESS_ROUNDS)):
        v = getattr(args, opt, None)  # a typo must not start a plan that never ends
        if v is not None and not least <= v <= most:
            raise UsageError("--%s: must be in %d..%d, got %s"
                             % (opt, least, most, short(v, 40)))
    scenario = load_scenario(args.scenario)  # knobs checked too, errors naming the file
    if getattr(args, "link_model", None):
        scenario = with_link_model(scenario, args.link_model)
    with naming_the_file(args.scenario):  # a policy section's knob the policy refuses
        res = plan(scenario, args.policy, args.rounds, args.step, args.staleness, args.seed)
    if isinstance(res, PlanReport):  # a per-task policy's own report (DIMEE, MLCI)
        if args.json:
            json.dump(res.to_json(), sys.stdout, sort_keys=False)
            sys.stdout.write("\n")
        else:
            print(res.text())
        return 0
    devices = [w.device or w.id for w in scenario.workers]
    if len(set(devices)) < len(devices):
        print("edge-agent plan: note: workers on one device share its processor in the "
              "simulator, but the DTO-EE model (eq. 6) treats each as its own server",
              file=sys.stderr)
    used = Utilisation.of(scenario, res.routing, res.thresholds)
    if not math.isfinite(res.delay_s):
        print("edge-agent plan: warning: %s"
              % overload_warning(res.policy, scenario, used, res.thresholds), file=sys.stderr)
    if args.json:
        obj = res.to_json()
        obj["link_utilisation"] = used.links
        obj["worker_utilisation"] = used.workers
        json.dump(obj, sys.stdout, sort_keys=False)
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
    out.append("workers     utilisation (load over capacity, lambda/mu)")
    out.extend(used.worker_lines())
    out.append("links       utilisation (%s model: %s)" % (
        used.link_model, "wire bytes/s over r"
        if used.link_model == "shared" else "tensor bytes/s over r"))
    for node, row in used.links.items():
        out.append("  %-12s %s" % (node, "  ".join("%s %.3f" % kv for kv in row.items())))
    print("\n".join(out))
    return 0
