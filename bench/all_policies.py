"""Every seed policy on one tiered setting: the testbed table, then the simulator's.

One command for both halves of the comparison (DTO-EE, CF, BF, MDI-Exit, DIMEE, DIMEE-F,
MLCI, Tabi; the simulator also NGTO, GA and DIMEE's baselines): it runs
``bench/all_policies_testbed.py`` (real agents on loopback) and ``bench/all_policies_sim.py``
(the simulator, same devices and links) one after the other, each printing its table with the
machine and its own command. Options pass through: ``--rate`` to both, ``--duration`` to the
testbed (measured seconds per policy), ``--sim-duration`` to the simulator.

    PYTHONPATH=. python3 bench/all_policies.py [--rate 5] [--duration 10] [--sim-duration 600]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", default="5", help="total arrival rate, tasks/s (default 5)")
    ap.add_argument("--duration", default="10", help="testbed seconds per policy (default 10)")
    ap.add_argument("--sim-duration", default="600", help="simulated seconds (default 600)")
    ap.add_argument("--out", default="all-policies-out", help="testbed run folder")
    args = ap.parse_args()
    runs = [["all_policies_testbed.py", "--rate", args.rate, "--duration", args.duration,
             "--out", args.out],
            ["all_policies_sim.py", "--rate", args.rate, "--duration", args.sim_duration]]
    for script, *rest in runs:
        print("=== %s %s" % (script, " ".join(rest)), flush=True)
        rc = subprocess.call([sys.executable, os.path.join(HERE, script)] + rest)
        if rc != 0:
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
