"""``edge-agent status``: the fleet at a glance, from every agent's metrics endpoint.

Exit status 0 only when every node answers and serves: a node still starting (its engines
loading, for minutes) or draining (stopping) gives 1, as one that does not answer, so a deploy
or a rolling restart waits (``until edge-agent status ...``) until the fleet serves again.
"""

from __future__ import annotations

import argparse

HELP = ("one table of the fleet: alive (or starting, draining), role, power mode, capacity, "
        "queues, tasks, policy, routing, drops, last warning")


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
    import time

    from agent.config.checks import MAX_INTERVAL_S
    from agent.errors import UsageError

    for opt, value, ok, what in (  # finite and at most a day, as every period (sleep(inf) fails)
            ("--watch", args.watch, 0 <= args.watch <= MAX_INTERVAL_S, "[0, %g]"),
            ("--timeout", args.timeout, 0 < args.timeout <= MAX_INTERVAL_S, "(0, %g]")):
        if not ok:  # nan fails both comparisons
            raise UsageError("%s: must be in %s seconds, got %g" % (opt, what % MAX_INTERVAL_S,
                                                                      value))
    if not args.watch:
        return _draw(args, _nodes(args))
    try:  # Ctrl-C ends a watch with 0 whether it lands in a read or in the pause between
        nodes = _nodes(args)
        while True:
            _draw(args, nodes)
            time.sleep(args.watch)
    except KeyboardInterrupt as exc:
        if getattr(exc, "exit_status", None) is not None:  # SIGTERM, SIGHUP: their own status
            raise
        return 0


def _nodes(args: argparse.Namespace):
    """The nodes to read: ``--fleet``'s manifest entries, or the ``--endpoints`` given."""
    from agent.fleet.manifest import require_manifest
    from agent.fleet.status import nodes_from_endpoints

    if args.fleet:
        return require_manifest(args.fleet)["nodes"]
    return nodes_from_endpoints(args.endpoints)


def _draw(args: argparse.Namespace, nodes) -> int:
    """Read every node once and print the table (or JSON); 0 when all answer and serve (none
    starting or draining), else 1."""
    import json
    import sys
    import time

    from agent.fleet.status import fleet_status, format_status

    status = fleet_status(nodes, args.timeout)
    if args.json:
        print(json.dumps(status, indent=1, sort_keys=True))
    else:
        if args.watch and sys.stdout.isatty():
            sys.stdout.write("\033[H\033[2J")  # clear the screen, cursor home
        print(time.strftime("%Y-%m-%d %H:%M:%S  ") + "edge-agent status")
        print(format_status(status))
    sys.stdout.flush()
    return 0 if all(s.get("alive") and s.get("state") == "serving"
                    for s in status.values()) else 1
