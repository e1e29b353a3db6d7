"""CPU an agent uses when there is next to no traffic: what a device pays for running it idle.

Starts one source and one worker per stage of the demo bundle as real ``edge-agent run``
processes, the source at ``--rate`` tasks/s (default 0.2: the fleet is idle but alive), waits
``--warmup`` seconds, then reads every agent's user + system CPU time (psutil) over
``--seconds`` and prints it as a share of one core, per policy. ``--slot-s`` is DTO-EE's slot
length (a configuration phase of up to 50 rounds starts each slot; 5 s is the node config's
default); a slot longer than the measurement shows the cost between phases alone.

    python3 bench/idle_cpu.py [--policies dtoee,cf] [--seconds 20] [--slot-s 5] [--rate 0.2]
"""

from __future__ import annotations

import argparse
import sys
import time

from _local import Local, chain_topology, machine


def measure(policy: str, seconds: float, slot_s: float, rate: float, warmup_s: float):
    """{agent: share of one core} over ``seconds``, after ``warmup_s``."""
    import psutil

    run = Local(chain_topology([1, 1, 1, 1], slot_s=slot_s), policy, rate=rate,
                load_s=warmup_s + seconds + 20)
    try:
        run.start()
        time.sleep(warmup_s)
        procs = {n: psutil.Process(p.pid) for n, p in run.agents.procs.items()}
        before = {n: sum(p.cpu_times()[:2]) for n, p in procs.items()}
        time.sleep(seconds)
        after = {n: sum(p.cpu_times()[:2]) for n, p in procs.items()}
    finally:
        run.close()
    return {n: (after[n] - before[n]) / seconds for n in sorted(procs)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--policies", default="dtoee,cf", help="comma-separated agent policies")
    ap.add_argument("--seconds", type=float, default=20.0, help="measuring time per policy")
    ap.add_argument("--slot-s", type=float, default=5.0, help="DTO-EE slot length")
    ap.add_argument("--rate", type=float, default=0.2, help="the source's tasks/s")
    ap.add_argument("--warmup", type=float, default=6.0, help="seconds before measuring")
    args = ap.parse_args()
    print("machine: %s; slot %g s, %g tasks/s, %g s measured" % (machine(), args.slot_s,
                                                                 args.rate, args.seconds))
    for policy in args.policies.split(","):
        cpu = measure(policy, args.seconds, args.slot_s, args.rate, args.warmup)
        print("%-8s %s" % (policy, "  ".join("%s %.2f%%" % (n, 100 * c) for n, c in cpu.items())),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
