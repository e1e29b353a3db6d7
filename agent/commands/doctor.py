"""``edge-agent doctor [--json]``: check this device's installation, one line per check.

Each line is OK, WARN or FAIL with what was seen and, for WARN/FAIL, the fix. Exit status 1
when any check FAILs, else 0. The checks live in ``agent.ops.doctor``.
"""

from __future__ import annotations

import argparse
import json
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


def run(args: argparse.Namespace) -> int:
    """Run every check, print them, exit 1 on any FAIL."""
    from agent.ops.doctor import FAIL, Context, run_checks

    checks = run_checks(Context(bundle=args.bundle, state_dir=args.state_dir,
                                cache_dir=args.cache_dir, user=args.user))
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
