"""The netns testbed's fault run: one run per fault on the default topology, one table.

Each run is the shipped default topology with one fault (kill, stop, link down, blackhole,
5% loss on every link) starting ``--at`` seconds into the load and lasting ``--fault-s``;
``edge-agent testbed --network netns`` runs it and this prints lost, delay per phase and the
recovery time of each. Needs root or user namespaces.

    python bench/testbed_faults.py --policy dtoee --rate 60% --duration 26 --out /tmp/faults
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT = os.path.join(REPO, "agent", "testbed", "topologies", "default.json")


def faults(at_s: float, fault_s: float) -> dict:
    """The fault of each run, by name."""
    return {
        "kill": {"kind": "kill", "target": "w2a"},  # restarted after fault_s
        "stop": {"kind": "stop", "target": "w2a"},
        "link-down": {"kind": "link-down", "target": "w1a"},
        "blackhole": {"kind": "blackhole", "target": "w3a"},
        "loss-5%": {"kind": "loss", "target": "*", "loss": 0.05},
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--policy", default="dtoee")
    p.add_argument("--rate", default="60%")
    p.add_argument("--duration", type=float, default=26.0, help="measured load per run, s")
    p.add_argument("--at", type=float, default=8.0, help="fault start, s into the load")
    p.add_argument("--fault-s", type=float, default=10.0, help="how long each fault lasts")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--only", default="", help="comma-separated fault names to run (default: all)")
    p.add_argument("--out", default="/tmp/testbed-faults")
    args = p.parse_args()
    with open(DEFAULT) as f:
        base = json.load(f)
    rows = []
    os.makedirs(args.out, exist_ok=True)
    wanted = [n for n in args.only.split(",") if n]
    for name, fault in faults(args.at, args.fault_s).items():
        if wanted and name not in wanted:
            continue
        topo = dict(base, faults=[dict(fault, at=args.at, duration=args.fault_s)])
        path = os.path.join(args.out, name + ".json")
        with open(path, "w") as f:
            json.dump(topo, f, indent=1)
        out = os.path.join(args.out, name)
        rc = subprocess.call([sys.executable, "-m", "agent", "testbed", "--topology", path,
                              "--network", "netns", "--policies", args.policy, "--rates",
                              args.rate, "--duration", str(args.duration), "--seed",
                              str(args.seed), "--out", out, "--no-plots"],
                             env=dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1"))
        try:
            with open(os.path.join(out, "latest", "results.json")) as f:
                run = json.load(f)["runs"][0]
        except (OSError, ValueError, IndexError, KeyError):
            rows.append((name, "exit %d, no results" % rc))
            continue
        ph = run.get("phases") or {}

        def cell(phase):
            s = ph.get(phase) or {}
            m, q = s.get("mean_delay_s"), s.get("p95_delay_s")
            return "-" if m is None else "%.0f / %.0f" % (m * 1e3, q * 1e3)

        rec = run.get("recovery_s")
        back = [f.get("target_resumed_s") for f in run.get("faults") or []
                if "target_resumed_s" in f]
        rows.append((name, "%d" % run["lost"], "%d" % run.get("rejected", 0),
                     "%d" % run["created"], cell("before"),
                     cell("during"), cell("after"),
                     "never" if rec is None else "%.1f" % rec,
                     "-" if not back else "never" if back[0] is None else "%.1f" % back[0],
                     "%d" % run.get("resent", 0)))
    print("| fault | lost | rejected | tasks | before mean / p95 ms | during | after | "
          "recovery s | target answers again after, s | resent |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
