"""``edge-agent scenario``: write the DTO-EE paper's settings as scenario files."""

from __future__ import annotations

import argparse

from agent.errors import UsageError

HELP = "generate a scenario file for the DTO-EE paper's settings (paper-resnet101, paper-bert)"

SETTINGS = ("paper-resnet101", "paper-bert")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options of ``scenario``."""
    parser.add_argument("setting", choices=SETTINGS, help="which paper setting to generate")
    parser.add_argument("--out", "-o", default=None,
                        help="scenario JSON to write (default ./SETTING.json); the synthetic exit "
                             "profile goes next to it as NAME.exit_profile.npz")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of topology, devices and exit profile (default 0)")
    parser.add_argument("--rate", type=float, default=None,
                        help="tasks/s per source (default: the paper's, 4.8 ResNet101, 2.0 BERT)")
    parser.add_argument("--load", type=float, default=0.6,
                        help="utilisation of the busiest stage at the paper's rate, sets the FLOP/s "
                             "of one unit of device speed (default 0.6)")
    parser.add_argument("--sources", type=int, default=50, help="number of sources (default 50)")
    parser.add_argument("--samples", type=int, default=10000,
                        help="samples in the synthetic exit profile (default 10000)")
    parser.add_argument("--tradeoff", type=float, default=0.5,
                        help="weight a of delay in the utility, in [0, 1] (default 0.5)")


def run(args: argparse.Namespace) -> int:
    """Generate the scenario and its exit profile, print the paths written."""
    from agent.scenario import save_scenario
    from agent.scenario_gen import paper_scenario

    if args.sources < 1:
        raise UsageError("--sources: must be >= 1, got %d" % args.sources)
    if args.samples < 10:
        raise UsageError("--samples: must be >= 10, got %d" % args.samples)
    if args.rate is not None and not args.rate > 0:
        raise UsageError("--rate: must be > 0, got %r" % args.rate)
    if not 0.0 <= args.tradeoff <= 1.0:
        raise UsageError("--tradeoff: must be in [0, 1], got %r" % args.tradeoff)
    sc = paper_scenario(args.setting, seed=args.seed, rate=args.rate, load=args.load,
                        num_sources=args.sources, num_samples=args.samples,
                        tradeoff=args.tradeoff)
    for path in save_scenario(args.out or args.setting + ".json", sc):
        print(path)
    return 0
