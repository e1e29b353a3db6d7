"""What idle agents cost, and how that grows with the size of a fully linked fleet.

For each fleet size (``--sizes``, agents in all) and policy, starts an idle fleet of real
``edge-agent run`` processes on the tiny test graph (``engines.tiny_model``) cut into two
stages: ``max(2, size // 6)`` sources and the rest of the agents split over the two stages,
every node linked to every worker of the next stage (and, as the testbed gives them, every
worker has every source and the other workers of its stage as peers). The sources take tasks
from clients (``arrival = "client"``) and none come, so the fleet only keeps itself alive:
heartbeats, a configuration phase each slot (DTO-EE), statuses. Workers have emulated
capacities, though no engine runs while idle.

It times READY=1 of every agent (all started at once: on a small machine mostly the agents'
start-up sharing the cores), waits ``--warmup`` seconds, then reads each agent's /proc/PID
files at the start and end of ``--seconds``: CPU (utime + stime of all threads, plus reaped
children), voluntary context switches of all threads (wake-ups), ``write_bytes`` of
/proc/PID/io (bytes sent towards storage: on a device, its flash), open fds and RSS. The agents
count no control messages, so message rates are left out.

    python3 bench/idle_cost.py [--sizes 6,12,24] [--policies dtoee,mdi-exit] [--seconds 30]
                               [--warmup 8] [--slot-s 5] [--verbose]

One row per (policy, size): agents, sources + workers per stage, peers per worker, READY of all
(s), CPU-s per minute per agent (median of sources, median of workers, max), the fleet's CPU
as % of one core, wake-ups/s per agent (median), KB written per minute per agent (median and
max) and that per day, fds per worker (median), RSS (median of workers, MB); then, per policy, a
least-squares line of a worker's CPU-s per minute against its number of peers. Other work on
the machine changes every figure: the load average before the first fleet and, for each fleet,
the CPU other programs used while it was measured (/proc/stat less the fleet's) are printed.
``--verbose`` adds one line per agent.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import os
import shutil
import statistics
import string
import sys
import tempfile
import time

from _local import Local, chain_topology, machine

TICK_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def split(size: int):
    """(sources, workers of stage 1, workers of stage 2) of a fleet of ``size`` agents."""
    sources = max(2, size // 6)
    rest = size - sources
    if rest < 2:
        raise SystemExit("--sizes: %d agents leave no worker for each of the two stages" % size)
    return sources, rest - rest // 2, rest // 2


def tiny_bundle(directory: str) -> str:
    """Cut the tiny test graph (``engines.tiny_model``) into two stages, exit after the first,
    in ``directory/bundle``, with a replay set of 16 random inputs next to it; the bundle's
    folder. (Two stages of the demo bundle would need workers holding several stages, which
    DTO-EE does not model.)"""
    import numpy as np
    import onnx

    from engines.build import build_bundle
    from engines.tiny_model import EXITS, FINAL, make_tiny_multi_exit

    src = os.path.join(directory, "tiny.onnx")
    onnx.save(make_tiny_multi_exit(seed=0), src)
    bundle = build_bundle(src, ["c2"], {1: EXITS[1]}, os.path.join(directory, "bundle"),
                          final_output=FINAL)
    rng = np.random.default_rng(0)
    np.savez(os.path.join(directory, "replay.npz"),
             x=rng.random((16,) + tuple(bundle.stage(1).input_shape[1:]), dtype=np.float32),
             y=rng.integers(0, 3, 16))
    return bundle.path


def fleet_topology(size: int, slot_s: float, bundle_dir: str) -> dict:
    """A two-stage topology on the bundle in ``bundle_dir``, every node linked to every worker
    of the next stage."""
    from engines.bundle import load_bundle

    flops = [s.flops for s in load_bundle(bundle_dir).stages]
    sources, w1, w2 = split(size)
    # capacities 100-300x a stage's work per second: any task would be served at once
    caps = {}
    for h, n in ((1, w1), (2, w2)):
        for j in range(n):
            caps["w%d%s" % (h, string.ascii_lowercase[j])] = 100.0 * flops[h - 1] * (1 + j % 3)
    return chain_topology([w1, w2], num_sources=sources, capacities=caps, slot_s=slot_s,
                          warmup_s=1.0, agent={"replay_path": os.path.join(
                              os.path.dirname(bundle_dir), "replay.npz")})


def sample(pid: int) -> dict:
    """CPU s (all threads and reaped children), voluntary switches of all threads,
    write_bytes, open fds and RSS (KiB) of one process, from /proc."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = sum(int(x) for x in fields[11:15]) / TICK_S  # utime stime cutime cstime
    wakeups = 0
    for path in glob.glob("/proc/%d/task/*/status" % pid):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        wakeups += int(line.split()[1])
        except OSError:  # a thread that ended between the listing and the read
            continue
    with open("/proc/%d/io" % pid) as f:
        io = dict(line.split(": ") for line in f.read().splitlines() if line)
    rss_kib = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kib = int(line.split()[1])
    return {"cpu_s": cpu, "wakeups": wakeups, "write_bytes": int(io["write_bytes"]),
            "fds": len(os.listdir("/proc/%d/fd" % pid)), "rss_kib": rss_kib}


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has been busy (all cores, /proc/stat), so that the work of
    other programs during a window can be told from the fleet's."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is inside user already)
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK_S


def measure(policy: str, size: int, seconds: float, warmup_s: float, slot_s: float,
            bundle_dir: str) -> dict:
    """Start the idle fleet, time READY, sample over ``seconds``; per-agent figures."""
    run = Local(fleet_topology(size, slot_s, bundle_dir), policy, rate=0.0, load_s=3600.0,
                bundle_dir=bundle_dir)
    for s in run.topo.sources:  # no arrivals of their own: they wait for clients
        run.cfgs[s.id] = dataclasses.replace(
            run.cfgs[s.id], arrival="client",
            client_bind="ipc://%s" % os.path.join(run.out_dir, s.id + ".client"))
    workers = [w.id for w in run.topo.workers]
    try:
        run.agents.write(run.cfgs)
        t0 = time.monotonic()
        run.agents.start(workers + [s.id for s in run.topo.sources], ready_timeout_s=180.0)
        ready_s = time.monotonic() - t0
        time.sleep(warmup_s)
        pids = {n: p.pid for n, p in run.agents.procs.items()}
        before = {n: sample(pid) for n, pid in pids.items()}
        t1, busy0 = time.monotonic(), busy_cpu_s()
        time.sleep(seconds)
        busy = busy_cpu_s() - busy0
        after = {n: sample(pid) for n, pid in pids.items()}
        dt = time.monotonic() - t1
        run.agents.check_alive()
    finally:
        run.close()
    shutil.rmtree(run.out_dir, ignore_errors=True)  # kept, with the agents' logs, on an error
    agents = {}
    for n in pids:
        a, b = before[n], after[n]
        agents[n] = {
            "worker": n in workers, "peers": len(run.cfgs[n].peers),
            "cpu_s_min": 60.0 * (b["cpu_s"] - a["cpu_s"]) / dt,
            "wakeups_s": (b["wakeups"] - a["wakeups"]) / dt,
            "kb_min": 60.0 * (b["write_bytes"] - a["write_bytes"]) / dt / 1000.0,
            "fds": b["fds"], "rss_mb": b["rss_kib"] / 1024.0}
    fleet = sum(a["cpu_s_min"] for a in agents.values()) * dt / 60.0
    return {"ready_s": ready_s, "agents": agents, "other_cores": max(0.0, busy - fleet) / dt}


def row(policy: str, size: int, res: dict) -> str:
    """One table line of a fleet's figures."""
    ag = res["agents"]
    med = statistics.median
    src = [a for a in ag.values() if not a["worker"]]
    wrk = [a for a in ag.values() if a["worker"]]
    sources, w1, w2 = split(size)
    peers = max(a["peers"] for a in wrk)
    cpu = [a["cpu_s_min"] for a in ag.values()]
    kb = [a["kb_min"] for a in ag.values()]
    return ("| %s | %d | %d+%d+%d | %d | %.1f | %.2f / %.2f / %.2f | %.1f | %.0f | %.1f / %.1f "
            "| %.1f / %.1f | %d | %.0f |" % (
                policy, size, sources, w1, w2, peers, res["ready_s"],
                med([a["cpu_s_min"] for a in src]), med([a["cpu_s_min"] for a in wrk]),
                max(cpu), 100.0 * sum(cpu) / 60.0, med([a["wakeups_s"] for a in ag.values()]),
                med(kb), max(kb), med(kb) * 60 * 24 / 1000.0, max(kb) * 60 * 24 / 1000.0,
                med([a["fds"] for a in wrk]), med([a["rss_mb"] for a in wrk])))


HEADER = ("| policy | agents | sources+stage 1+stage 2 | peers per worker | READY s "
          "| CPU-s/min per agent (sources / workers / max) | fleet CPU % of a core "
          "| wake-ups/s per agent | KB written/min per agent (median / max) "
          "| MB written/day per agent (median / max) "
          "| fds per worker | worker RSS MB |\n"
          "| --- | ---: | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")


def per_peer(results) -> str:
    """Least-squares line through every worker's (peers, CPU-s/min) of the runs given."""
    pts = [(a["peers"], a["cpu_s_min"]) for res in results for a in res["agents"].values()
           if a["worker"]]
    n = float(len(pts))
    mx, my = sum(p for p, _ in pts) / n, sum(c for _, c in pts) / n
    sxx = sum((p - mx) ** 2 for p, _ in pts)
    if sxx == 0:
        return "one fleet shape: no line"
    slope = sum((p - mx) * (c - my) for p, c in pts) / sxx
    return "%.3f + %.3f x peers CPU-s/min" % (my - slope * mx, slope)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="6,12,24", help="fleet sizes, agents in all")
    ap.add_argument("--policies", default="dtoee", help="comma-separated agent policies")
    ap.add_argument("--seconds", type=float, default=30.0, help="measured seconds per fleet")
    ap.add_argument("--warmup", type=float, default=8.0,
                    help="seconds between the last READY and the first sample")
    ap.add_argument("--slot-s", type=float, default=5.0, help="slot length (the node default)")
    ap.add_argument("--verbose", action="store_true", help="one line per agent as well")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    print("machine: %s; slot %g s, %g s measured after %g s" % (machine(), args.slot_s,
                                                                args.seconds, args.warmup))
    bundle_dir = tiny_bundle(tempfile.mkdtemp(prefix="edge-bench-tiny-"))
    print("load average %.2f %.2f %.2f before the first fleet (the fleets' own agents raise it "
          "later)" % os.getloadavg())
    rows, fits = [], []
    for policy in args.policies.split(","):
        results = []
        for size in sizes:
            res = measure(policy, size, args.seconds, args.warmup, args.slot_s, bundle_dir)
            results.append(res)
            rows.append(row(policy, size, res))
            print("%s, %d agents: READY %.1f s; other programs used %.0f%% of a core while "
                  "measured; load average %.2f after" % (policy, size, res["ready_s"],
                                                         100.0 * res["other_cores"],
                                                         os.getloadavg()[0]), flush=True)
            if args.verbose:
                for n, a in sorted(res["agents"].items()):
                    print("  %-5s peers %2d  %.3f CPU-s/min  %5.1f wake-ups/s  %6.1f KB/min  "
                          "%3d fds  %5.1f MB" % (n, a["peers"], a["cpu_s_min"], a["wakeups_s"],
                                                 a["kb_min"], a["fds"], a["rss_mb"]))
        fits.append("%s: a worker's idle CPU ~ %s" % (policy, per_peer(results)))
    shutil.rmtree(os.path.dirname(bundle_dir), ignore_errors=True)
    print(HEADER)
    print("\n".join(rows))
    print("\n".join(fits))
    return 0


if __name__ == "__main__":
    sys.exit(main())
