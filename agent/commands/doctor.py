"""``edge-agent doctor [--json] [--config NODE.toml ...]``: check this device's installation,
one line per check; with ``--config``, also the start-up of each node the way ``run`` does it.

Each line is OK, WARN or FAIL with what was seen and, for WARN/FAIL, the fix. Exit status 1
when any check FAILs, else 0. The checks live in ``agent.ops.doctor`` and
``agent.ops.doctor_node``; a node's "node stop time" line (its drain against its unit's
``TimeoutStopSec``) in ``agent.ops.stoptime``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HELP = "check the installation on this device (GPU, libraries, jtop, dirs, calibration)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object {checks: [{name, status, detail, fix}], ok}")
    parser.add_argument("--bundle", default="", help="bundle to check (default: the demo bundle)")
    parser.add_argument("--state-dir", default="",
                        help="state directory (default $STATE_DIRECTORY, else /var/lib/edge-agent)")
    parser.add_argument("--cache-dir", default="", help="TensorRT plan cache directory "
                        "(default $CACHE_DIRECTORY, else ~/.cache/edge-agent)")
    parser.add_argument("--user", default="edge-agent", help="service user (default %(default)s)")
    parser.add_argument("--config", action="append", default=[], metavar="NODE.toml",
                        help="also check this node's start-up as `run` does (config, files, "
                             "bundle, keys, policy), without starting it; repeatable. The "
                             "first one's bundle and state_dir are the defaults of --bundle "
                             "and --state-dir")


def run(args: argparse.Namespace) -> int:
    """Run every check, print them, exit 1 on any FAIL."""
    from agent.ops.doctor import FAIL, Context, run_checks
    from agent.ops.doctor_node import check_node
    from agent.ops.stoptime import check_stop_time

    nodes, configs, bundle, state_dir = [], [], args.bundle, args.state_dir
    for path in args.config:
        found, cfg = check_node(path)
        nodes += found
        if cfg is not None:  # the unit's instance is the config's stem (/etc/edge-agent/NAME.toml)
            nodes.append(check_stop_time(cfg, os.path.splitext(os.path.basename(path))[0]))
        configs += [cfg] if cfg is not None else []
        if cfg is not None and path == args.config[0]:
            bundle, state_dir = bundle or cfg.bundle, state_dir or cfg.state_dir
    checks = run_checks(Context(bundle=bundle, state_dir=state_dir,
                                cache_dir=args.cache_dir, user=args.user,
                                configs=configs)) + nodes
    failed = any(c.status == FAIL for c in checks)
    if args.json:
        json.dump({"checks": [c.to_json() for c in checks], "ok": not failed}, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        for c in checks:
            print(c.line())
        print("%d checks: %d OK, %d WARN, %d FAIL" % (
            len(checks), sum(c.status == "OK" for c in checks),
            sum(c.status == "WARN" for c in checks), sum(c.status == FAIL for c in checks)))
    return 1 if failed else 0
