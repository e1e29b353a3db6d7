"""``edge-agent simulate``: discrete-event simulation of policies on a scenario."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any, Dict, List, Optional

from agent.errors import UsageError
from agent.commands import seed_arg
from agent.policies.setting import MAX_ROUNDS  # --rounds: DTO-EE rounds per slot

HELP = "simulate policies on a scenario (delay/accuracy vs rate, capacity, dynamic slots)"

# bounds of one run, so that a typo cannot start a simulation that never ends: at 1-2 ms per
# slot and about 10 us per task (a small scenario, one core) a run at a bound takes minutes
MAX_SLOTS = 100000  # slots of one run (--duration / --slot, --dynamic-slots)
MAX_TASKS = 10000000  # tasks expected in one run (rate x sources x duration)
SCALE_RANGE = (1e-3, 1e3)  # --scales: capacity factors
SIM_ROUNDS = 50  # DTO-EE rounds per slot where neither --rounds nor the scenario says (100 ms)


def _floats(text: str) -> List[float]:
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("expected comma-separated numbers, got %r" % text)
    if not vals or any(not (math.isfinite(v) and v > 0) for v in vals):
        raise argparse.ArgumentTypeError("expected positive numbers, got %r" % text)
    return vals


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options of ``simulate``."""
    parser.add_argument("--scenario", required=True, help="scenario JSON file")
    parser.add_argument("--policies", default="dtoee,cf,bf,ngto,ga",
                        help="comma-separated: dtoee, cf, bf, ngto, ga, dtoee-cX (DTO-EE with "
                             "thresholds fixed at X), mdi-exit (knobs from the scenario's "
                             "knobs.mdi-exit); on tiered scenarios (scenario dimee-demo, "
                             "mlci-demo): dimee, dimee-f, tier-cloud, tier-edge, tier-mobile, "
                             "tier-random, tier-oracle, mlci, tabi, mlci-noens "
                             "(default dtoee,cf,bf,ngto,ga)")
    parser.add_argument("--rates", type=_floats, default=None,
                        help="per-source arrival rates (tasks/s) to sweep, e.g. 3.6,4.8,6 "
                             "(default: the scenario's rates as they are)")
    parser.add_argument("--scales", type=_floats, default=None,
                        help="capacity scale factors to sweep, e.g. 0.65,0.8,1,1.25,1.5")
    parser.add_argument("--dynamic-slots", type=int, default=0,
                        help="also run N slots of the dynamic environment (rates and power "
                             "modes redrawn every slot)")
    parser.add_argument("--threshold-study", action="store_true",
                        help="also compare DTO-EE with DTO-EE at fixed thresholds 0.7 and 1.0 "
                             "in the dynamic environment (25 slots unless --dynamic-slots)")
    parser.add_argument("--duration", type=float, default=200.0,
                        help="simulated seconds of arrivals per run (default 200; a run is at "
                             "most %d slots and %d tasks)" % (MAX_SLOTS, MAX_TASKS))
    parser.add_argument("--warmup", type=float, default=10.0,
                        help="seconds left out of the summaries (default 10)")
    parser.add_argument("--slot", type=float, default=5.0, help="slot length s (default 5)")
    parser.add_argument("--round-delay", type=float, default=0.002,
                        help="communication delay of one configuration round, s (default 0.002)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="DTO-EE rounds per configuration phase (default: the scenario's "
                             "rounds knob, else %d: 100 ms)" % SIM_ROUNDS)
    # "else delay": agent.policies.model.SIM_DEFAULT_LINK_MODEL, written out (--help loads no
    # numpy)
    parser.add_argument("--link-model", choices=("delay", "shared"), default=None,
                        help="hop = fixed beta/r delay, or links as shared servers (default: "
                             "the scenario's link_model knob, else delay, the paper's, which "
                             "its reproductions use; plan's default is shared); results.json "
                             "records the one used")
    parser.add_argument("--discipline", choices=("ps", "fifo"), default="ps",
                        help="service discipline of workers (default ps, the paper's)")
    parser.add_argument("--cold-start", action="store_true",
                        help="slot 0 pays its configuration phase too (initial routing uniform, "
                             "thresholds 1.0 until then); default: configured before the first task")
    parser.add_argument("--seed", type=seed_arg, default=0, help="seed of arrivals and dynamics")
    parser.add_argument("--rows", choices=("all", "validation", "test"), default=None,
                        help="exit-profile rows the tasks carry (default: test, the odd rows, when "
                             "a policy learns on the validation rows (dimee, mlci), else all)")
    parser.add_argument("--out", required=True, help="folder for results.json and the plots")
    parser.add_argument("--records", action="store_true",
                        help="also write per-task records (records/*.npz) of the rate sweep")
    parser.add_argument("--no-plots", action="store_true", help="write JSON only")


def _policy_width(rows: List[Dict[str, Any]]) -> int:
    """The policy column's width: 8, or the longest name among ``rows`` (``mlci-noens``)."""
    return max([8] + [len(r["policy"]) for r in rows])


def _table(rows: List[Dict[str, Any]], key: str) -> str:
    """One row per (key, policy): delays and accuracy of the completed tasks, and the fate of
    every task created in the measured window (created = completed + rejected + unfinished)."""
    rej = any(r.get("rejected") for r in rows)
    w = _policy_width(rows)
    lines = ["%-10s %-*s %10s %10s %10s %9s %8s %9s %10s%s %9s" % (
        key, w, "policy", "mean ms", "p50 ms", "p95 ms", "accuracy", "created", "completed",
        "unfinished", " %8s" % "rejected" if rej else "", "model ms")]
    for r in rows:
        def ms(v):
            return "-" if v is None or not math.isfinite(v) else "%.1f" % (v * 1e3)
        lines.append("%-10s %-*s %10s %10s %10s %9s %8d %9d %10d%s %9s" % (
            r[key], w, r["policy"], ms(r["mean_delay_s"]), ms(r["p50_delay_s"]),
            ms(r["p95_delay_s"]),
            "-" if r["accuracy"] is None else "%.2f%%" % (r["accuracy"] * 100),
            r["tasks"], r["completed"], r.get("unfinished", 0),
            " %8d" % r.get("rejected", 0) if rej else "", ms(r.get("model_delay_s"))))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the requested experiments; write ``results.json`` and plots to ``--out``. Ctrl-C,
    SIGTERM or SIGHUP keeps what finished (``"interrupted"`` in results.json)."""
    from agent.commands.interrupts import as_interrupts
    from agent.scenario.sections import naming_the_file

    # a policy section's knob a policy refuses mid-run names the file
    with naming_the_file(args.scenario), as_interrupts():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from agent.ops.atomic import write_atomic
    from agent.ops.files import check_output_dir, check_output_file, output_errors
    from agent.policies.registry import check_scenario_knobs, make_sim_policy
    from agent.scenario.format import load_scenario
    from agent.sim import SimConfig

    sc = load_scenario(args.scenario)
    check_scenario_knobs(sc.knobs)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    if not policies:
        raise UsageError("--policies: name at least one policy")
    twice = sorted({p for p in policies if policies.count(p) > 1})
    if twice:  # its rows would come twice and its records file be written over
        raise UsageError("--policies: %s named more than once" % ", ".join(twice))
    row_set = args.rows
    for name in policies:  # fail on a bad name before any simulation runs
        if make_sim_policy(name).sample_rows == "test" and args.rows is None:
            row_set = "test"  # every policy on the same rows (common random numbers)
    _check_thresholds_apply(sc, policies, args.threshold_study)
    if args.rounds is not None and not 1 <= args.rounds <= MAX_ROUNDS:  # plan's bound
        raise UsageError("--rounds: must be in 1..%d, got %d" % (MAX_ROUNDS, args.rounds))
    # the scenario's rounds knob where it has one (None: the policy reads it), else SIM_ROUNDS
    rounds = args.rounds or (None if "rounds" in sc.knobs else SIM_ROUNDS)
    if args.dynamic_slots < 0:
        raise UsageError("--dynamic-slots: must be >= 0, got %d" % args.dynamic_slots)
    try:
        cfg = SimConfig(duration_s=args.duration, slot_s=args.slot,
                        round_delay_s=args.round_delay, warmup_s=args.warmup, seed=args.seed,
                        link_model=args.link_model, discipline=args.discipline,
                        configured_start=not args.cold_start, sample_rows=row_set
                        ).validate().resolved(sc.knobs)  # results.json: the link model used
    except ValueError as exc:
        raise UsageError("--%s" % str(exc).replace("_s:", ":").replace("_", "-"))
    if args.warmup >= args.duration:
        raise UsageError("--warmup: must be shorter than --duration (%g s)" % args.duration)
    _check_bounds(args, sc, row_set)
    results = os.path.join(args.out, "results.json")
    check_output_file(results, "--out")  # --out itself: a folder, or one that can be made
    if args.records:
        check_output_dir(os.path.join(args.out, "records"), "--out")

    def make_dir(path: str) -> str:  # only once there is something to write
        with output_errors("--out", path):
            os.makedirs(path, exist_ok=True)
        return path

    def factory(name: str):
        return make_sim_policy(name, rounds=rounds)

    out: Dict[str, Any] = {"scenario": os.path.abspath(args.scenario), "policies": policies,
                           "config": {k: v for k, v in vars(cfg).items() if k != "dynamic"}}
    plots = []
    rates = args.rates or [None]
    rows: List[Dict[str, Any]] = []
    try:
        _sweeps(args, sc, policies, cfg, factory, rates, rows, out, make_dir)
    except KeyboardInterrupt as exc:
        return _interrupted(args, out, rows, len(rates) * len(policies), results, exc)
    out = _clean(out)
    make_dir(args.out)
    with output_errors("--out", results):
        write_atomic(results, json.dumps(out, indent=1))
    if not args.no_plots:
        from agent.sim.plots import plot_results

        name = os.path.splitext(os.path.basename(args.scenario))[0]
        with output_errors("--out", args.out):
            plots = plot_results(out, name, args.out)
            if len({r["rate"] for r in rows}) == 1:  # plot_results: a sweep from 2 rates up
                from agent.sim.plots import plot_vs

                plots.insert(0, plot_vs(rows, "rate", "arrival rate per source (tasks/s)",
                                        name + " (one rate: give --rates A,B,... for a curve)",
                                        os.path.join(args.out, "%s_vs_rate.png" % name)))
    print(results)
    for p in plots:
        print(p)
    return 0


def _sweeps(args, sc, policies, cfg, factory, rates, rows, out, make_dir) -> None:
    """The runs asked for, into ``out`` (``rows``: the rate sweep's, filled as each ends)."""
    from agent.ops.files import output_errors
    from agent.sim import DynamicConfig, with_source_rate
    from agent.sim import experiments as ex

    for rate in rates:
        scn = sc if rate is None else with_source_rate(sc, rate)
        for name in policies:
            res = ex.run_one(scn, name, cfg, factory)
            row = res["row"]
            row["rate"] = rate if rate is not None else round(
                sum(s.rate for s in sc.sources) / len(sc.sources), 9)
            rows.append(row)
            if args.records:
                path = os.path.join(make_dir(os.path.join(args.out, "records")),
                                    "%s_rate%g.npz" % (name, row["rate"]))
                with output_errors("--out", path):
                    res["result"].save_records(path)
    out["rates"] = rows
    print(_table(rows, "rate"))
    for r in rows:
        if r.get("policy_summary"):
            print("%-10s %-*s %s" % (r["rate"], _policy_width(rows), r["policy"],
                                      _extras(r["policy_summary"])))
    if args.scales:
        crows = ex.capacity_sweep(sc, policies, args.scales, cfg, factory)
        out["capacity"] = crows
        print(_table(crows, "capacity_scale"))
    slots = args.dynamic_slots or (25 if args.threshold_study else 0)
    dyn_cfg = ex.replace_config(cfg, dynamic=DynamicConfig(), duration_s=slots * args.slot,
                                warmup_s=0.0)
    if args.dynamic_slots:
        series = ex.slot_series(sc, policies, dyn_cfg, factory)
        out["dynamic"] = series
        out["dynamic_groups"] = {k: ex.group_slots(v) for k, v in series.items()}
    if args.threshold_study:
        names = ["dtoee", "dtoee-c0.7", "dtoee-c1.0"]
        series = ex.slot_series(sc, names, dyn_cfg, factory)
        out["thresholds"] = series


def _interrupted(args, out, rows, total: int, results: str, exc: BaseException) -> int:
    """Ctrl-C (or SIGTERM, SIGHUP) mid-run: the rate sweep's finished runs kept in
    results.json, marked ``"interrupted"``, and one line saying so; the signal's exit status."""
    from agent.commands.interrupts import signal_name
    from agent.ops.atomic import write_atomic
    from agent.ops.files import output_errors

    out.update(rates=rows, interrupted=signal_name(exc))
    kept = "nothing to keep"
    if rows:
        with output_errors("--out", results):
            os.makedirs(args.out, exist_ok=True)
            write_atomic(results, json.dumps(_clean(out), indent=1))
        kept = "kept in %s" % results
    try:  # a closed terminal (SIGHUP) fails the print (EIO)
        print("\ninterrupted (%s): %d of %d rate-sweep runs finished, %s"
              % (signal_name(exc), len(rows), total, kept), file=sys.stderr)
    except OSError:
        pass
    return int(getattr(exc, "exit_status", 130))


def _check_thresholds_apply(sc: Any, policies: List[str], study: bool) -> None:
    """A threshold experiment (``dtoee-cX``, ``--threshold-study``) needs exits to move: on a
    scenario without an exit profile, or with no early exit, every variant would run the same
    and be labelled as if its thresholds had been set."""
    fixed = [n for n in policies if n.startswith("dtoee-c")]
    if not (fixed or study):
        return
    profile = sc.exit_profile
    why = ("has no exit profile (its stages' fixed `remaining` decide the exits)"
           if profile is None else
           "has no early exit" if not profile.early_exit_stages else "")
    if why:
        raise UsageError("%s: the scenario %s, so there is no threshold to %s"
                         % ("--threshold-study" if study else "--policies " + fixed[0], why,
                            "study" if study else "fix"))


def _check_bounds(args: argparse.Namespace, sc: Any, row_set: Optional[str]) -> None:
    """Times finite, runs of at most MAX_SLOTS slots and MAX_TASKS tasks, capacity scales in
    SCALE_RANGE, a non-empty set of exit-profile rows: a run that could not end or could only
    fail is refused before anything runs or is written."""
    from agent.policies.splits import nonempty_rows
    from agent.sim import DynamicConfig

    for name in ("duration", "warmup", "slot", "round_delay"):
        if not math.isfinite(getattr(args, name)):
            raise UsageError("--%s: must be a finite number, got %r"
                             % (name.replace("_", "-"), getattr(args, name)))
    if args.duration / args.slot > MAX_SLOTS:
        raise UsageError("--duration: %g s is more than %d slots of --slot %g s, the most a "
                         "run may have (at most %g s)"
                         % (args.duration, MAX_SLOTS, args.slot, MAX_SLOTS * args.slot))
    if args.dynamic_slots > MAX_SLOTS:
        raise UsageError("--dynamic-slots: at most %d, got %d" % (MAX_SLOTS, args.dynamic_slots))
    n = len(sc.sources)
    for rate in args.rates or []:
        if rate * n * args.duration > MAX_TASKS:
            raise UsageError("--rates: %g tasks/s from each of %d sources for --duration %g s is "
                             "%.3g tasks; at most %d per run" % (rate, n, args.duration,
                                                                  rate * n * args.duration,
                                                                  MAX_TASKS))
        if rate * n * (args.duration - args.warmup) < 1:
            raise UsageError("--rates: %g tasks/s from %d source(s) gives no task in the %g "
                             "measured seconds" % (rate, n, args.duration - args.warmup))
    total = sum(s.rate for s in sc.sources)
    if not args.rates and total * (args.duration - args.warmup) < 1:  # as --rates above
        raise UsageError("%s: sources[].rate: %g tasks/s over all sources gives no task in the "
                         "%g measured seconds (--duration minus --warmup); give a longer "
                         "--duration or higher --rates" % (args.scenario, total,
                                                           args.duration - args.warmup))
    if not args.rates and total * args.duration > MAX_TASKS:
        raise UsageError("--duration: the scenario's %g tasks/s for %g s is %.3g tasks; at most "
                         "%d per run" % (total, args.duration, total * args.duration, MAX_TASKS))
    slots = args.dynamic_slots or (25 if args.threshold_study else 0)
    if total * DynamicConfig().rate_high * slots * args.slot > MAX_TASKS:
        raise UsageError("--dynamic-slots: %d slots of %g s at the scenario's rates is over %d "
                         "tasks" % (slots, args.slot, MAX_TASKS))
    for opt in ("rates", "scales"):  # a row per value, named by it (records/POLICY_rateR.npz)
        named = ["%g" % v for v in getattr(args, opt) or []]
        twice = sorted({v for v in named if named.count(v) > 1})
        if twice:  # its rows would come twice and its records file be written over
            raise UsageError("--%s: %s given more than once (values equal to 6 digits)"
                             % (opt, ", ".join(twice)))
    for scale in args.scales or []:
        if not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]:
            raise UsageError("--scales: each must be in [%g, %g], got %g"
                             % (SCALE_RANGE + (scale,)))
    rows = sc.exit_profile.num_samples if sc.exit_profile is not None else 1
    if row_set is not None:  # the simulator's own check, before anything runs (DIMEE, MLCI)
        nonempty_rows(row_set, rows, "--rows" if args.rows else "--policies",
                      sc.exit_profile is not None)


def _extras(summary: Dict[str, Any]) -> str:
    """A policy's own numbers on one line (DIMEE's cost and tiers, MLCI's levels)."""
    def fmt(v):
        if isinstance(v, dict):
            return " / ".join("%s %s" % (k, fmt(x)) for k, x in v.items())
        if isinstance(v, (list, tuple)):
            return " / ".join(fmt(x) for x in v)
        return "%.4g" % v if isinstance(v, float) else str(v)
    return "  ".join("%s %s" % (k, fmt(v)) for k, v in summary.items())


def _clean(x):
    """JSON-safe copy: numpy scalars to Python, inf/NaN to null."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if hasattr(x, "item"):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x

