"""Goodput under overload: completed tasks per second as a fraction of the fleet's capacity.

One source and one worker per stage of the demo bundle (4 stages), as real ``edge-agent run``
processes on loopback. Every worker emulates the same service time S (capacity flops_h / S),
so the fleet's capacity is C = 1/S tasks/s (stage 1 sees every task; early exits only lighten
the later stages). The source offers L x C tasks/s for ``--seconds``; the agents' back-pressure
(bounded queues, refusals, admission with a reason) must keep goodput near C, queues within
``max_queue_tasks`` and memory flat. MDI-Exit runs with its admission control (Alg. 3) on.

Goodput counts the tasks completed from ``--warmup`` seconds after the first arrival to the
last one, over that window. Per run it prints goodput/C, the peak task count any worker held
(``held_tasks`` in stats.json, sampled every 0.25 s), each process's RSS growth over the load,
and the record counts (every created task has one: completed, rejected with reason, lost).

    python3 bench/overload.py [--policies cf,dtoee,mdi-exit] [--loads 1.5,2.5,4]
                              [--seconds 60] [--service-ms 40] [--json out.json]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time

from _local import Local, chain_topology, machine

MAX_QUEUE_TASKS = 16


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (0 once it has gone)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def one(policy: str, load: float, seconds: float, service_s: float, warmup_s: float) -> dict:
    """One run of ``policy`` at ``load`` x capacity; its figures."""
    from engines.bundle import load_bundle
    from engines.demo import DEMO_BUNDLE_DIR

    bundle = load_bundle(DEMO_BUNDLE_DIR)
    n = bundle.num_stages
    caps = {"w%da" % (h + 1): s.flops / service_s for h, s in enumerate(bundle.stages)}
    topo = chain_topology([1] * n, capacities=caps,
                          agent={"max_queue_tasks": MAX_QUEUE_TASKS, "status_interval_s": 0.25})
    if policy == "mdi-exit":
        topo["knobs"] = {"mdi-exit": {"admission_control": True}}
    capacity = 1.0 / service_s
    run = Local(topo, policy, rate=load * capacity, load_s=seconds)
    workers = [w.id for w in run.topo.workers]
    peak = collections.Counter()
    try:
        run.start()
        pids = {k: p.pid for k, p in run.agents.procs.items()}
        want = run.cfgs["s1"].max_tasks
        path = os.path.join(run.cfgs["s1"].state_dir, "records.jsonl")
        rss0 = None
        t_start = time.monotonic()
        end = t_start + seconds * 3 + 60
        while time.monotonic() < end:
            if rss0 is None and time.monotonic() - t_start >= warmup_s:
                rss0 = {k: rss_bytes(p) for k, p in pids.items()}
            for w in workers:
                peak[w] = max(peak[w], (run.stats(w) or {}).get("held_tasks", 0))
            if os.path.exists(path) and sum(1 for _ in open(path)) >= want:
                break
            time.sleep(0.25)
        rss1 = {k: rss_bytes(p) for k, p in pids.items()}
        recs = run.records("s1")
    finally:
        run.close()
    created = [r["created_mono"] for r in recs]
    t0, t1 = min(created) + warmup_s, max(created)
    done = sum(1 for r in recs if r["status"] == "completed" and t0 <= r["finished_mono"] <= t1)
    status = collections.Counter(r["status"] for r in recs)
    reasons = collections.Counter(r["reason"] for r in recs if r["status"] != "completed")
    return {"policy": policy, "load": load, "capacity_tasks_s": capacity,
            "goodput_tasks_s": done / (t1 - t0), "goodput_fraction": done / (t1 - t0) / capacity,
            "peak_held_tasks": max(peak.values()) if peak else 0,
            "rss_growth_mb": max((rss1[k] - (rss0 or rss1)[k]) / 2 ** 20 for k in rss1),
            "records": len(recs), "created": want, "status": dict(status),
            "reasons": dict(reasons), "duplicates": len(recs) - len({r["id"] for r in recs})}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--policies", default="cf,dtoee,mdi-exit")
    ap.add_argument("--loads", default="1.5,2.5,4", help="offered load as multiples of capacity")
    ap.add_argument("--seconds", type=float, default=60.0, help="load per run")
    ap.add_argument("--service-ms", type=float, default=40.0, help="emulated service time")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds left out of goodput")
    ap.add_argument("--json", default="", help="also write the figures to this file")
    args = ap.parse_args()
    print("machine: %s" % machine())
    print("%-9s %5s %9s %9s %6s %9s %8s %s" % ("policy", "load", "goodput/s", "fraction",
                                              "peakQ", "rss+ MB", "records", "outcomes"))
    rows = []
    for policy in args.policies.split(","):
        for load in (float(x) for x in args.loads.split(",")):
            r = one(policy, load, args.seconds, args.service_ms / 1000.0, args.warmup)
            rows.append(r)
            print("%-9s %5.1f %9.1f %8.1f%% %6d %9.1f %8s %s" % (
                policy, load, r["goodput_tasks_s"], 100 * r["goodput_fraction"],
                r["peak_held_tasks"], r["rss_growth_mb"],
                "%d/%d" % (r["records"], r["created"]),
                " ".join("%s=%d" % kv for kv in sorted({**r["status"], **{
                    "why:" + k: v for k, v in r["reasons"].items()}}.items()))))
            sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "args": vars(args), "runs": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
