"""Pipeline throughput of real agents as a fraction of the bottleneck's capacity.

One source and one worker per stage of the demo bundle, as real ``edge-agent run`` processes
on loopback. The stage-1 worker (every task passes it) emulates a capacity of C tasks/s; the
later stages run at the engine's real speed. The source offers 1.2 C tasks/s, so the
bottleneck always has work; throughput is the rate of completed tasks while it is saturated
(from 1 s after the first result to the last arrival). Goal: >= 90% of C.

    python3 bench/pipeline_throughput.py [--capacities 25,50,100] [--seconds 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from _local import Local, chain_topology, machine


def one(capacity_tasks_s: float, seconds: float) -> float:
    from engines.bundle import load_bundle
    from engines.demo import DEMO_BUNDLE_DIR

    flops = load_bundle(DEMO_BUNDLE_DIR).stages[0].flops
    topo = chain_topology([1, 1, 1, 1], capacities={"w1a": capacity_tasks_s * flops},
                          agent={"result_timeout_s": 60.0, "ack_timeout_s": 5.0})
    run = Local(topo, "fixed", rate=1.2 * capacity_tasks_s, load_s=seconds)
    try:
        run.start()
        want = run.cfgs["s1"].max_tasks
        end = time.monotonic() + seconds * 4 + 60
        while time.monotonic() < end:
            path = os.path.join(run.cfgs["s1"].state_dir, "records.jsonl")
            if os.path.exists(path) and sum(1 for _ in open(path)) >= want:
                break
            time.sleep(0.2)
        recs = run.records("s1")
    finally:
        run.close()
    done = sorted(r["finished_mono"] for r in recs if r["status"] == "completed")
    last_arrival = max(r["created_mono"] for r in recs)
    t0 = done[0] + 1.0
    n = sum(1 for t in done if t0 <= t <= last_arrival)
    return n / (last_arrival - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--capacities", default="25,50,100",
                    help="bottleneck capacities to try, tasks/s")
    ap.add_argument("--seconds", type=float, default=8.0, help="load per capacity")
    args = ap.parse_args()
    print("machine: %s" % machine())
    print("%14s %14s %9s" % ("bottleneck/s", "completed/s", "fraction"))
    for c in (float(x) for x in args.capacities.split(",")):
        thr = one(c, args.seconds)
        print("%14.1f %14.1f %8.1f%%" % (c, thr, 100.0 * thr / c))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
