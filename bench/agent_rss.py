"""Resident memory of running agents, next to the size of their engine's weights.

Starts one source and one worker per stage of the demo bundle as real ``edge-agent run``
processes, serves a light load for a few seconds, then reads each process's RSS (and USS, the
memory only it uses) with psutil. A worker's engine weights are its stage's ONNX file; "without
weights" subtracts that file's size. Goal: agent RSS without engine weights <= 120 MB.

    python3 bench/agent_rss.py [--seconds 6]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from _local import Local, chain_topology, machine


def main() -> int:
    import psutil

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=6.0, help="serving time before sampling")
    args = ap.parse_args()
    run = Local(chain_topology([1, 1, 1, 1]), "dtoee", rate=5.0, load_s=args.seconds + 5)
    try:
        run.start()
        time.sleep(args.seconds)
        print("machine: %s" % machine())
        print("%-6s %-7s %9s %9s %12s %16s" % ("agent", "role", "RSS MB", "USS MB",
                                                 "weights KB", "RSS-weights MB"))
        worst = 0.0
        for n, p in run.agents.procs.items():
            info = psutil.Process(p.pid).memory_full_info()
            cfg = run.cfgs[n]
            weights = 0
            if cfg.role == "worker":
                from engines.bundle import load_bundle

                weights = os.path.getsize(load_bundle(cfg.bundle).stage(cfg.stage).onnx_path)
            net = (info.rss - weights) / 2 ** 20
            worst = max(worst, net)
            print("%-6s %-7s %9.1f %9.1f %12.1f %16.1f" % (n, cfg.role, info.rss / 2 ** 20,
                                                          info.uss / 2 ** 20, weights / 1024,
                                                          net))
        print("largest agent RSS without engine weights: %.1f MB (goal <= 120 MB)" % worst)
    finally:
        run.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
