"""``edge-agent status``: the fleet at a glance, from every agent's metrics endpoint."""

from __future__ import annotations

import argparse

HELP = ("one table of the fleet: alive, role, power mode, capacity, queues, tasks, policy, "
        "routing, drops, last warning")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_mutually_exclusive_group(required=True)
    g.add_argument("--fleet", metavar="DIR",
                   help="a `fleet render` folder (or its fleet.json): every node's metrics "
                        "endpoint, role and stage")
    g.add_argument("--endpoints", nargs="+", metavar="HOST:PORT",
                   help="metrics endpoints (HOST:PORT or http://HOST:PORT/metrics)")
    parser.add_argument("--watch", type=float, default=0.0, metavar="S",
                        help="redraw every S seconds until Ctrl-C")
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    parser.add_argument("--timeout", type=float, default=2.0, metavar="S",
                        help="seconds to wait for each endpoint (default 2)")


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    import time

    from agent.config.checks import MAX_INTERVAL_S
    from agent.errors import UsageError
    from agent.fleet.manifest import require_manifest
    from agent.fleet.status import fleet_status, format_status, nodes_from_endpoints

    for opt, value, ok, what in (  # finite and at most a day, as every period (sleep(inf) fails)
            ("--watch", args.watch, 0 <= args.watch <= MAX_INTERVAL_S, "[0, %g]"),
            ("--timeout", args.timeout, 0 < args.timeout <= MAX_INTERVAL_S, "(0, %g]")):
        if not ok:  # nan fails both comparisons
            raise UsageError("%s: must be in %s seconds, got %g" % (opt, what % MAX_INTERVAL_S,
                                                                      value))
    if args.fleet:
        nodes = require_manifest(args.fleet)["nodes"]
    else:
        nodes = nodes_from_endpoints(args.endpoints)
    tty = sys.stdout.isatty()
    while True:
        status = fleet_status(nodes, args.timeout)
        if args.json:
            print(json.dumps(status, indent=1, sort_keys=True))
        else:
            if args.watch and tty:
                sys.stdout.write("\033[H\033[2J")  # clear the screen, cursor home
            print(time.strftime("%Y-%m-%d %H:%M:%S  ") + "edge-agent status")
            print(format_status(status))
        sys.stdout.flush()
        if not args.watch:
            return 0 if all(s.get("alive") for s in status.values()) else 1
        try:
            time.sleep(args.watch)
        except KeyboardInterrupt:
            return 0
