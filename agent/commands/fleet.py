"""``edge-agent fleet render``: every device's node config, keys and sheet from a topology.

The command checks ``--client`` before reading anything; ``--rate`` is checked with the rest of
the render's input (``agent.fleet.render.check_render``). The render is all or nothing: a
refused node or a failed write leaves ``--out`` as it was.
"""

from __future__ import annotations

import argparse

from agent.ops.paths import BUNDLE, ETC
from agent.ops.state import DEFAULT_STATE_DIR

HELP = "render every device's node config, CURVE keys and sheet from a topology and an inventory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="fleet_action", metavar="ACTION")
    sub.required = True
    r = sub.add_parser("render", help="write OUT/devices/NODE/... for every node (keys kept "
                                      "when rendering again)")
    r.add_argument("--topology", required=True, metavar="FILE",
                   help="topology JSON or the name of a shipped one (see `testbed --topology`)")
    r.add_argument("--inventory", required=True, metavar="HOSTS",
                   help="text file, one line per node: NODE HOST [control=P data=P client=P "
                        "metrics=P user=NAME]")
    r.add_argument("--out", required=True, metavar="DIR", help="where the files go")
    r.add_argument("--policy", default=None,
                   help="the policy the fleet runs (default: the topology's fleet.policy, "
                        "else dtoee)")
    r.add_argument("--bundle", default=None,
                   help="the bundle's path on the devices (default %s under --root)" % BUNDLE)
    r.add_argument("--root", default="/",
                   help="device paths (%s, %s, ...) are under this directory (default /; a "
                        "rehearsal on one machine uses the `install --root` folder)"
                        % (ETC, DEFAULT_STATE_DIR))
    r.add_argument("--client", action="append", default=[], metavar="NAME",
                   help="a client keypair allowed on the sources' client endpoints "
                        "(repeatable; default: workstation)")
    r.add_argument("--rate", type=float, default=0.0, metavar="TASKS_S",
                   help="sources make Poisson load themselves at this total rate (replay set) "
                        "instead of taking tasks from clients")
    r.add_argument("--emulate", action="store_true",
                   help="keep the topology's emulated capacities and link rates (a rehearsal)")


def run(args: argparse.Namespace) -> int:
    import os

    from agent.errors import UsageError
    from agent.fleet.inventory import load_inventory
    from agent.fleet.render import RenderOptions, render
    from agent.fleet.render_notes import summary_lines
    from agent.policies.registry import lookup
    from agent.testbed.topology import TopologyError, load_topology

    for c in args.client:
        if not (c and c.isascii() and c.replace("-", "").replace("_", "").isalnum()):
            raise UsageError("--client: %r must be letters, digits, - and _" % c)
    if args.bundle is not None and not os.path.isabs(args.bundle):
        # a device path, unrelated to this folder: a relative one would be taken from the
        # devices' "/" (and --root does not apply to a given --bundle)
        raise UsageError("--bundle: the bundle's path on the devices must be absolute, got %r"
                         % args.bundle)
    topo = load_topology(args.topology)
    fleet_policy = (topo.fleet or {}).get("policy")
    if fleet_policy is not None and not isinstance(fleet_policy, str):  # as the testbed says
        raise TopologyError("%s: fleet.policy: the policy the fleet runs, e.g. \"dtoee\"; got %r"
                            % (topo.path or "topology", fleet_policy))
    policy = args.policy or fleet_policy or "dtoee"
    lookup(policy, "--policy" if args.policy else "fleet.policy", "agent")
    # with --rate a source makes its own load and binds no client port: none is reserved
    clients = [] if args.rate else [s.id for s in topo.sources]
    hosts = load_inventory(args.inventory, topo.node_ids(), clients)
    root = os.path.abspath(args.root)
    opts = RenderOptions(out_dir=os.path.abspath(args.out), policy=policy,
                         bundle=args.bundle or os.path.join(root, BUNDLE.lstrip("/")),
                         root=root, clients=tuple(args.client or ["workstation"]),
                         rate_tasks_s=args.rate, emulate=args.emulate,
                         policy_from="--policy" if args.policy else
                         "fleet.policy" if fleet_policy else "")
    cfgs, made, dropped = render(topo, hosts, opts)
    for line in summary_lines(topo, hosts, cfgs, made, opts.out_dir, opts, dropped):
        print(line)
    return 0
