"""``edge-agent scenario``: write the DTO-EE paper's settings, the MDI-Exit topologies and the
tiered demo settings of DIMEE and MLCI as scenario files."""

from __future__ import annotations

import argparse
import math
import os

from agent.errors import UsageError
from agent.policies.setting import DEFAULT_TRADEOFF
from agent.commands import seed_arg

HELP = ("generate a scenario file for the DTO-EE paper's settings (paper-resnet101, paper-bert), "
        "an MDI-Exit topology (mdi-local, mdi-2-node, mdi-3-node-mesh, ...), the demo bundle "
        "on tiers for DIMEE or MLCI (dimee-demo, dimee-demo-ee, mlci-demo) or a testbed "
        "topology as plan and simulate model it (topology)")

# MDI-Exit topologies, each node holding every stage: agent.scenario.mdi.topology_names, written
# out here so that --help loads no numpy (a test holds the two lists equal)
MDI_SETTINGS = tuple("mdi-%s%s" % (t, v) for t in ("local", "2-node", "3-node-mesh",
                                                   "3-node-circular", "5-node-mesh")
                     for v in ("", "-noee"))
# the demo bundle on end/mobile, edge and cloud: agent.scenario.tiered.SETTINGS (a test holds
# the two lists equal)
TIERED_SETTINGS = ("dimee-demo", "dimee-demo-ee", "mlci-demo")
# a testbed topology (--topology) at a total rate (--total-rate): agent.testbed.topology_scenario
TOPOLOGY_SETTING = "topology"
SETTINGS = ("paper-resnet101", "paper-bert") + MDI_SETTINGS + TIERED_SETTINGS + (TOPOLOGY_SETTING,)
# --total-rate's default: the middle one of the testbed's default --rates
DEFAULT_TOTAL_RATE = "60%"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options of ``scenario``."""
    parser.add_argument("setting", choices=SETTINGS,
                        help="which setting to generate: a paper's, or topology (a testbed "
                             "topology's, --topology)")
    parser.add_argument("--out", "-o", default=None,
                        help="scenario JSON to write (default ./SETTING.json); the synthetic exit "
                             "profile goes next to it as NAME.exit_profile.npz")
    parser.add_argument("--seed", type=seed_arg, default=None,
                        help="seed of topology, devices and exit profile (default 0)")
    parser.add_argument("--rate", type=float, default=None,
                        help="tasks/s per source (default: the paper's, 4.8 ResNet101, 2.0 BERT; "
                             "dimee-demo(-ee) 5, mlci-demo 2.5; topology takes --total-rate)")
    parser.add_argument("--load", type=float, default=None,
                        help="paper-* settings: utilisation of the busiest stage at the paper's "
                             "rate, in (0, 1), sets the FLOP/s of one unit of device speed "
                             "(default 0.6)")
    parser.add_argument("--sources", type=int, default=None,
                        help="paper-* settings: number of sources (default 50)")
    parser.add_argument("--samples", type=int, default=None,
                        help="samples in the synthetic exit profile (default 10000)")
    parser.add_argument("--tradeoff", type=float, default=None,
                        help="weight a of delay in the utility, in [0, 1] (default %g)"
                        % DEFAULT_TRADEOFF)
    parser.add_argument("--homogeneous", action="store_true",
                        help="paper-* settings: the threshold study's setting (Section 4.4): 5 "
                             "workers per stage, all alike, equal link rates")
    parser.add_argument("--mdi-mode", choices=("fixed", "admission", "adapt"), default=None,
                        help="mdi-* settings: fixed threshold 0.8 (rate 3/s), admission control "
                             "(Alg. 3, offered 100/s) or threshold adaptation (Alg. 4, 6/s)")
    parser.add_argument("--node-capacity", type=float, default=None,
                        help="mdi-* settings: FLOP/s of every node (default 2e10)")
    parser.add_argument("--link-rate", type=float, default=None,
                        help="mdi-* settings: bytes/s of every link (default 12.5e6)")
    parser.add_argument("--topology", metavar="FILE", default=None,
                        help="topology setting: a testbed topology JSON or the name of a shipped "
                             "one whose workers each serve one stage (default: the testbed's "
                             "default topology); written with its thresholds as the initial "
                             "ones, links as shared servers (knobs.link_model shared) and "
                             "baselines at fixed thresholds (knobs.baseline_thresholds fixed), "
                             "as its agents run")
    parser.add_argument("--total-rate", metavar="RATE", default=None,
                        # argparse %-expands help texts: every literal % is written %%
                        help="topology setting: total arrival rate over all sources, split by "
                             "their shares, as testbed --rates takes one: tasks/s, or N%% of "
                             "the topology's capacity (default "
                             + DEFAULT_TOTAL_RATE.replace("%", "%%") + ")")


# the options each family of settings takes (besides the setting, --out and --rate), with the
# default it gets when not given: an option given to a setting that has no use for it is refused
_OPTIONS = {
    "paper": {"seed": 0, "load": 0.6, "sources": 50, "samples": 10000,
              "tradeoff": DEFAULT_TRADEOFF, "homogeneous": False},
    "mdi": {"seed": 0, "samples": 10000, "tradeoff": DEFAULT_TRADEOFF, "mdi_mode": "fixed",
            "node_capacity": 2.0e10, "link_rate": 12.5e6},
    "tiered": {},
    "topology": {"topology": None, "total_rate": DEFAULT_TOTAL_RATE},
}
_FAMILY_NAMES = {"paper": "paper-*", "mdi": "mdi-*", "tiered": "tiered",
                 "topology": TOPOLOGY_SETTING}


def _family(setting: str) -> str:
    if setting == TOPOLOGY_SETTING:
        return "topology"
    if setting in TIERED_SETTINGS:
        return "tiered"
    return "mdi" if setting.startswith("mdi-") else "paper"


def _fill_defaults(args: argparse.Namespace) -> None:
    """Refuse an option ``args.setting`` does not use (it would be ignored without a word);
    give the others their defaults."""
    family = _family(args.setting)
    takes = _OPTIONS[family]
    for name in sorted(set().union(*_OPTIONS.values())):
        value = getattr(args, name)
        if name in takes:
            if value is None or value is False:
                setattr(args, name, takes[name])
        elif value is not None and value is not False:
            users = " and ".join(_FAMILY_NAMES[f] for f in _OPTIONS if name in _OPTIONS[f])
            raise UsageError("--%s: applies to %s, not %s" % (
                name.replace("_", "-"), "the topology setting" if users == TOPOLOGY_SETTING
                else users + " settings", args.setting))
    if family == "topology" and args.rate is not None:  # per source there; a total here
        raise UsageError("--rate: tasks/s per source of the other settings; the topology "
                         "setting takes --total-rate (over all sources, split by their shares)")


# upper bounds far above any real setting (the paper's 50 sources, ImageNet's 50,000 validation
# images) that a typo passes: 10**12 samples ran numpy out of memory, 10**8 sources for minutes
MAX_SOURCES = 10000
MAX_SAMPLES = 1000000


def _check_numbers(args: argparse.Namespace) -> None:
    """Every number finite and in its range, before anything is generated or written."""
    # rates and capacities are written into the scenario, so they take its reader's range (a
    # value outside it wrote a file that plan refused): a task rate POSITIVE_RANGE, a capacity
    # or link rate the wire's RATE_RANGE; imported here: --help loads no numpy
    from agent.config.checks import POSITIVE_RANGE, RATE_RANGE

    _fill_defaults(args)  # None from here on: an option this setting does not take
    if args.sources is not None and not 1 <= args.sources <= MAX_SOURCES:
        raise UsageError("--sources: must be in [1, %d], got %d" % (MAX_SOURCES, args.sources))
    if args.samples is not None and not 10 <= args.samples <= MAX_SAMPLES:
        raise UsageError("--samples: must be in [10, %d], got %d" % (MAX_SAMPLES, args.samples))
    for name in ("rate", "node_capacity", "link_rate"):
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise UsageError("--%s: must be a finite number > 0, got %r"
                             % (name.replace("_", "-"), value))
        lo, hi = POSITIVE_RANGE if name == "rate" else RATE_RANGE
        if value is not None and not lo <= value <= hi:
            raise UsageError("--%s: must be in [%g, %g] (%s), got %r"
                             % (name.replace("_", "-"), lo, hi, "a scenario's range"
                                if name == "rate" else "the range the agents' messages carry",
                                value))
    if args.load is not None and not 0 < args.load < 1:  # nan fails too
        raise UsageError("--load: must be in (0, 1), got %r" % args.load)
    if args.tradeoff is not None and not 0.0 <= args.tradeoff <= 1.0:
        raise UsageError("--tradeoff: must be in [0, 1], got %r" % args.tradeoff)


def run(args: argparse.Namespace) -> int:
    """Generate the scenario and its exit profile, print the paths written."""
    from agent.config.checks import check_service_times
    from agent.ops.files import check_output_file
    from agent.scenario.format import save_scenario
    from agent.scenario.paper import paper_scenario

    _check_numbers(args)
    out = args.out or args.setting + ".json"
    check_output_file(out, "--out")
    if args.setting == TOPOLOGY_SETTING:
        sc = _topology_scenario(args)
    elif args.setting in TIERED_SETTINGS:
        from agent.scenario.tiered import tiered_setting

        sc = tiered_setting(args.setting, rate=args.rate)
    elif args.setting.startswith("mdi-"):
        from agent.scenario.mdi import mdi_setting

        sc = mdi_setting(args.setting, args.mdi_mode, seed=args.seed, rate=args.rate,
                         capacity_flops=args.node_capacity,
                         link_rate_bytes_s=args.link_rate, num_samples=args.samples,
                         tradeoff=args.tradeoff)
        # every node holds every stage at --node-capacity: a stage it takes over a day on is
        # said naming the option (the file's check would name workers[0].capacity)
        check_service_times(args.node_capacity, {h: s.flops for h, s in enumerate(sc.stages, 1)},
                            "--node-capacity", UsageError)
    else:
        sc = paper_scenario(args.setting, seed=args.seed, rate=args.rate, load=args.load,
                            num_sources=args.sources, num_samples=args.samples,
                            tradeoff=args.tradeoff, homogeneous=args.homogeneous)
    if sc.exit_profile is not None:  # save_scenario's name for it: STEM.exit_profile.npz
        stem = os.path.splitext(os.path.basename(out))[0]
        check_output_file(os.path.join(os.path.dirname(os.path.abspath(out)),
                                       stem + ".exit_profile.npz"), "--out")
    written = save_scenario(out, sc, "--out")  # all or nothing; errors name --out
    for path in written:
        print(path)
    return 0


def _topology_scenario(args: argparse.Namespace):
    """The scenario of ``--topology`` at ``--total-rate``, read as ``testbed`` reads them (the
    rate rounded to 0.01 tasks/s as its runs are)."""
    from agent.commands.testbed import parse_rates
    from agent.testbed.topology_scenario import load_testbed, topology_scenario

    setting = load_testbed(args.topology)
    rates = parse_rates(args.total_rate, setting.capacity_tasks_s, "--total-rate")
    if len(rates) != 1:
        raise UsageError("--total-rate: one rate, got %r" % args.total_rate)
    cap = setting.capacity_tasks_s
    comment = ("testbed topology %s at %g tasks/s over all sources%s, written by edge-agent "
               "scenario topology" % (setting.topo.path, rates[0], "" if cap == float("inf")
                                      else " (%.4g%% of its capacity, %.4g tasks/s)"
                                      % (rates[0] / cap * 100.0, cap)))
    return topology_scenario(setting, rates[0], comment)
