"""Churn soak: a small fleet whose workers restart in turn, watched for what grows per restart.

A field testbed runs for days while devices reboot. This starts one or two sources and four
workers on the two-stage test bundle (``tests/integration/agent_cluster``; two workers per
stage, so a stage keeps a worker while the other restarts) as real ``edge-agent run``
processes on loopback, then for
``--minutes``: restarts one worker every 20-40 s in turn (SIGTERM and SIGKILL alternately, then
starts it again with the same config), restarts a source once or twice (``--source-restarts``),
and sends SIGHUP to a running agent now and then. Every ``--sample-s`` it samples each running
process: RSS (``VmRSS``), open fds (sockets apart), threads, the size of its state dir's files,
its ``stats.json`` counters, and the lengths of the containers held by its ``Node`` object (a
probe thread inside the agent walks them; the agent itself is unchanged).

At the end it prints, for the process lifetimes that saw the most restarts of others (after
their first ``--warm-s``), each metric's first and last value and its growth per restart seen,
over the whole lifetime and over its second half, and the largest per-peer structures (the
Node's containers) with theirs. ``--keep`` leaves workers running throughout: long-lived
observers; ``--keep`` naming every worker with ``--source-restarts 0`` is the control run
(the same load, no churn). A leak keeps its growth per restart in the second half; a value
that levels off grows less there. It also checks that every task the sources created has
exactly one record (exit status 1 when not).

    python bench/churn_soak.py --minutes 8 --policy dtoee --source-restarts 0 --out /tmp/churn
    python bench/churn_soak.py --minutes 10 --policy mdi-exit --keep w2b --out /tmp/churn
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import random
import signal
import sys
import threading
import time
from collections import Counter, defaultdict
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
PROBE_FILE = "probe.json"  # next to the agent's state dir, not in it (its sizes are measured)


# ---------------------------------------------------------------- probe (inside an agent)

def _sizes(obj, path: str, out: Dict[str, int], seen: set, depth: int) -> None:
    """Lengths of the containers reachable from ``obj`` through attributes of agent objects,
    keyed by their attribute path (to ``depth`` objects down)."""
    if id(obj) in seen or depth < 0:
        return
    seen.add(id(obj))
    attrs = getattr(obj, "__dict__", None)
    if attrs is None and hasattr(obj, "__slots__"):
        attrs = {s: getattr(obj, s, None) for s in obj.__slots__}
    for name, v in list((attrs or {}).items()):
        p = path + "." + name
        if isinstance(v, (dict, set, frozenset, list)) or type(v).__name__ in ("deque", "Counter",
                                                                               "OrderedDict"):
            try:
                out[p] = len(v)
            except TypeError:
                continue
            if isinstance(v, dict):  # a dict of agent objects: the first few's containers
                for k, item in list(v.items())[:3]:
                    if type(item).__module__.startswith("agent."):
                        _sizes(item, "%s[%s]" % (p, "*"), out, seen, depth - 1)
        elif type(v).__module__.startswith("agent.") and not isinstance(v, type):
            _sizes(v, p, out, seen, depth - 1)


def _is_node(o) -> bool:
    return type(o).__name__ == "Node" and type(o).__module__ == "agent.node.loop"


def _find_node():
    """The agent's ``Node``: a local of some frame of its threads (start-up objects are frozen
    out of ``gc.get_objects``)."""
    for frame in list(sys._current_frames().values()):
        while frame is not None:
            for v in list(frame.f_locals.values()):
                if _is_node(v):
                    return v
            frame = frame.f_back
    return next((o for o in gc.get_objects() if _is_node(o)), None)


def _probe_loop(path: str, every_s: float) -> None:
    node = None
    while True:
        time.sleep(every_s)
        if node is None:
            node = _find_node()
            if node is None:
                continue
        out: Dict[str, int] = {}
        try:
            _sizes(node, "node", out, set(), 4)
        except Exception as exc:  # a container changed size while read: next time
            out = {"probe_error": 1}
            sys.stderr.write("churn probe: %r\n" % exc)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(out, f)
        os.replace(tmp, path)


def run_probed_agent(argv: List[str]) -> int:
    """``edge-agent`` with a probe thread writing its Node's container sizes next to its
    state dir every 5 s."""
    from agent.cli import main
    from agent.config.node import load_config

    cfg = load_config(argv[argv.index("--config") + 1])
    path = os.path.join(os.path.dirname(cfg.state_dir.rstrip("/")),
                        "%s.%s" % (cfg.node_id, PROBE_FILE))
    threading.Thread(target=_probe_loop, args=(path, 5.0), name="churn-probe",
                     daemon=True).start()
    return main(argv)


# ---------------------------------------------------------------- sampling (outside)

def proc_sample(pid: int) -> Optional[Dict[str, float]]:
    """RSS (kB), fds, socket fds and threads of ``pid``; None once it is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
        fds = os.listdir("/proc/%d/fd" % pid)
        kinds = Counter()
        for fd in fds:
            try:
                t = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            kinds["socket" if t.startswith("socket:") else "pipe" if t.startswith("pipe:")
                  else "anon" if t.startswith("anon_inode:") else "file"] += 1
        return {"rss_kb": float(status["VmRSS"].split()[0]), "fds": float(len(fds)),
                "sock_fds": float(kinds["socket"]), "pipe_fds": float(kinds["pipe"]),
                "anon_fds": float(kinds["anon"]), "file_fds": float(kinds["file"]),
                "threads": float(len(os.listdir("/proc/%d/task" % pid)))}
    except (OSError, KeyError):
        return None


def dir_sizes(state_dir: str) -> Dict[str, float]:
    """Bytes of each file in ``state_dir`` (rotated records, ``records.jsonl.N``, together),
    and the number of files."""
    out: Dict[str, float] = defaultdict(float)
    n = 0
    for name in os.listdir(state_dir) if os.path.isdir(state_dir) else []:
        try:
            size = os.path.getsize(os.path.join(state_dir, name))
        except OSError:
            continue
        n += 1
        head, _, tail = name.rpartition(".")
        base = head + ".N" if tail.isdigit() and head else name  # rotated files: one name
        out["file:" + base] += size
    out["files"] = float(n)
    return dict(out)


def topology(sources: int) -> dict:
    """Sources and four workers on the two-stage test bundle: w1a/w1b hold stage 1 (with its
    exit head), w2a/w2b stage 2."""
    srcs = [{"id": "s%d" % (i + 1), "share": round(1.0 / sources, 6)} for i in range(sources)]
    srcs[-1]["share"] = round(1.0 - sum(s["share"] for s in srcs[:-1]), 6)
    workers = [{"id": w, "stage": int(w[1])} for w in ("w1a", "w1b", "w2a", "w2b")]
    links = [{"from": s["id"], "to": w} for s in srcs for w in ("w1a", "w1b")]
    links += [{"from": a, "to": b} for a in ("w1a", "w1b") for b in ("w2a", "w2b")]
    return {"bundle": "two-stage", "warmup_s": 2.0, "slot_s": 2.0, "sources": srcs,
            "workers": workers, "links": links,
            "agent": {"heartbeat_interval_s": 0.25, "status_interval_s": 1.0,
                      "ack_timeout_s": 2.0, "result_timeout_s": 6.0, "replay_path": ""}}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--probe":
        return run_probed_agent(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n")[-1])
    ap.add_argument("--minutes", type=float, default=12.0, help="churn time (default 12)")
    ap.add_argument("--policy", default="dtoee", help="routing policy (dtoee, mdi-exit, ...)")
    ap.add_argument("--rate", type=float, default=3.0, help="tasks/s over all sources")
    ap.add_argument("--sources", type=int, default=1, choices=(1, 2))
    ap.add_argument("--restart-min-s", type=float, default=20.0)
    ap.add_argument("--restart-max-s", type=float, default=40.0)
    ap.add_argument("--keep", default="",
                    help="comma-separated workers never restarted (long-lived observers)")
    ap.add_argument("--source-restarts", type=int, default=1, help="times a source restarts")
    ap.add_argument("--sample-s", type=float, default=12.0, help="sampling interval")
    ap.add_argument("--warm-s", type=float, default=60.0,
                    help="a lifetime's first seconds left out of the growth (start-up)")
    ap.add_argument("--base-port", type=int, default=0,
                    help="first TCP port of the agents' block (2 per agent; default: free ports)")
    ap.add_argument("--records-max-bytes", type=int, default=256 << 10,
                    help="a source rotates records.jsonl at this size (default 256 KiB)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="/tmp/churn-soak", help="run folder (emptied)")
    args = ap.parse_args()

    sys.path.insert(0, HERE)
    from _local import _exit_on_sigterm, machine
    from agent.testbed.local import node_configs, read_stats
    from agent.testbed.procs import LocalAgents
    from agent.testbed.report import read_records
    from agent.testbed.topology import parse_topology
    sys.path.insert(0, os.path.dirname(HERE))
    from tests.integration.agent_cluster import build_two_stage_bundle

    _exit_on_sigterm()
    sys.stdout.reconfigure(line_buffering=True)  # progress shows in a file as it happens
    rnd = random.Random(args.seed)
    total_s = args.minutes * 60.0
    os.makedirs(args.out, exist_ok=True)
    bundle = build_two_stage_bundle(args.out + ".bundle")
    replay = os.path.join(os.path.dirname(bundle), "replay.npz")
    topo_obj = topology(args.sources)
    topo_obj["agent"]["replay_path"] = replay
    topo = parse_topology(topo_obj)
    ids = topo.node_ids()
    ports = (list(range(args.base_port, args.base_port + 2 * len(ids))) if args.base_port
             else None)
    cfgs = node_configs(topo, bundle, args.policy, args.rate,
                        total_s + 120.0, args.out, args.seed, ports)
    # rotation on: a field source rotates its records (the testbed turns it off)
    cfgs = {n: dataclasses.replace(c, records_max_bytes=args.records_max_bytes) if n in
            [x.id for x in topo.sources] else c for n, c in cfgs.items()}
    agents = LocalAgents(args.out, launcher=(os.path.abspath(__file__), "--probe"))
    workers = [w.id for w in topo.workers]
    churned = [w for w in workers if w not in args.keep.split(",")]
    sources = [s.id for s in topo.sources]
    restarts = Counter()  # per node: its own restarts
    seen_restarts = 0  # fleet-wide restarts so far
    events: List[str] = []
    samples: List[dict] = []  # {t, node, pid, life, seen, metrics...}
    life_start: Dict[str, tuple] = {}  # node -> (t, seen_restarts at start)
    created: List[int] = []  # tasks each ended source lifetime created (its final stats)

    def source_created(n: str) -> int:
        st = read_stats(os.path.join(cfgs[n].state_dir, "stats.json")) or {}
        return int(st.get("tasks", {}).get("created", 0))

    def sample(t: float) -> None:
        for n, p in list(agents.procs.items()):
            if p.poll() is not None:
                continue
            m = proc_sample(p.pid)
            if m is None:
                continue
            m.update(dir_sizes(cfgs[n].state_dir))
            st = read_stats(os.path.join(cfgs[n].state_dir, "stats.json")) or {}
            m["stats_keys"] = float(len(json.dumps(st)))
            try:
                with open(os.path.join(args.out, "%s.%s" % (n, PROBE_FILE))) as f:
                    for k, v in json.load(f).items():
                        m["probe:" + k] = float(v)
            except (OSError, ValueError):
                pass
            samples.append(dict(m, t=t, node=n, pid=p.pid, life_t=t - life_start[n][0],
                                seen=seen_restarts - life_start[n][1]))

    t0 = time.monotonic()
    try:
        agents.write(cfgs)
        agents.start(workers)
        agents.start(sources)
        now = time.monotonic() - t0
        for n in ids:
            life_start[n] = (now, 0)
        print("machine: %s" % machine())
        print("fleet up in %.1f s: %s, policy %s, %.1f tasks/s" % (now, ids, args.policy, args.rate))
        next_sample = now
        next_restart = now + rnd.uniform(args.restart_min_s, args.restart_max_s)
        next_hup = now + rnd.uniform(30, 90)
        src_at = [total_s * (i + 1) / (args.source_restarts + 1) for i in range(args.source_restarts)]
        turn = 0
        while True:
            now = time.monotonic() - t0
            if now >= total_s:
                break
            if now >= next_sample:
                sample(now)
                next_sample = now + args.sample_s
            if (churned and now >= next_restart) or (src_at and now >= src_at[0]):
                if src_at and now >= src_at[0]:
                    src_at.pop(0)
                    n = sources[sum(restarts[x] for x in sources) % len(sources)]
                else:
                    n = churned[turn % len(churned)]
                    turn += 1
                    next_restart = now + rnd.uniform(args.restart_min_s, args.restart_max_s)
                # a source stops with SIGTERM: its final stats count what it created
                how = "KILL" if restarts[n] % 2 and n not in sources else "TERM"
                if how == "KILL":
                    agents.kill(n)
                else:
                    agents.stop([n], timeout_s=30.0)
                if n in sources:
                    created.append(source_created(n))
                restarts[n] += 1
                seen_restarts += 1
                agents.launch([n])
                life_start[n] = (time.monotonic() - t0, seen_restarts)
                events.append("%.0f s: %s %s -> restarted" % (now, n, how))
                print(events[-1])
            if now >= next_hup:
                n = rnd.choice([x for x in ids if x in agents.procs])
                os.kill(agents.procs[n].pid, signal.SIGHUP)
                events.append("%.0f s: SIGHUP %s" % (now, n))
                print(events[-1])
                next_hup = now + rnd.uniform(30, 90)
            for n, p in agents.procs.items():
                rc = p.poll()
                if rc is not None and n not in agents.injected:
                    events.append("%.0f s: %s EXITED %s: %s" % (now, n, rc, p.last_error()))
                    print(events[-1])
                    agents.injected.add(n)
            time.sleep(0.5)
        sample(time.monotonic() - t0)
    finally:
        agents.stop(sources, timeout_s=60.0)
        created.extend(source_created(n) for n in sources)
        agents.close()
    report(samples, restarts, seen_restarts, args.warm_s)
    lost = check_records([os.path.join(cfgs[s].state_dir, "records.jsonl") for s in sources],
                         read_records, sum(created))
    with open(os.path.join(args.out, "samples.json"), "w") as f:
        json.dump(samples, f)
    print("samples: %s" % os.path.join(args.out, "samples.json"))
    return 1 if lost else 0


CORE = ("rss_kb", "fds", "sock_fds", "threads", "file:records.jsonl", "file:records.jsonl.N",
        "file:records.jsonl.journal", "file:state.json", "file:stats.json", "files")


def _growth(ss: List[dict], k: str) -> tuple:
    """(first value, last value, growth per restart seen, the same over the second half of
    the lifetime) of metric ``k`` in one lifetime's samples."""
    pts = [(s["seen"], s[k]) for s in ss if k in s]
    if not pts:
        return (0.0, 0.0, 0.0, 0.0)
    mid = [p for p in pts if p[0] >= pts[-1][0] / 2.0] or pts

    def per(a: tuple, b: tuple) -> float:
        return (b[1] - a[1]) / (b[0] - a[0]) if b[0] > a[0] else 0.0
    return (pts[0][1], pts[-1][1], per(pts[0], pts[-1]), per(mid[0], mid[-1]))


def report(samples: List[dict], restarts: Counter, total: int, warm_s: float) -> None:
    """Per process lifetime that saw restarts of others (after its first ``warm_s``): each
    metric's first and last value and its growth per restart seen, over the whole lifetime and
    over its second half (a value that levels off grows less there); then its largest Node
    containers and those that grew."""
    print("\nrestarts: %d (%s)" % (total, ", ".join("%s %d" % kv for kv in sorted(restarts.items()))))
    lives: Dict[tuple, List[dict]] = defaultdict(list)
    for s in samples:
        if s["life_t"] >= warm_s:
            lives[(s["node"], s["pid"])].append(s)
    # the lifetimes that saw most restarts: the long-lived observers first
    order = sorted(lives, key=lambda key: -(lives[key][-1]["seen"] - lives[key][0]["seen"]))
    for key in order[:3]:
        ss = lives[key]
        seen = ss[-1]["seen"] - ss[0]["seen"]
        if seen < 2:
            continue
        print("\n%s (pid %d): %.0f s, saw %d restarts of others"
              % (key[0], key[1], ss[-1]["life_t"] - ss[0]["life_t"], seen))
        print("  %-30s %12s %12s %12s %14s" % ("metric", "first", "last", "per restart",
                                                "2nd half"))
        for k in CORE:
            if any(k in s for s in ss):
                a, b, g, g2 = _growth(ss, k)
                print("  %-30s %12.0f %12.0f %+12.2f %+14.2f" % (k, a, b, g, g2))
        probe = sorted({k for s in ss for k in s if k.startswith("probe:")},
                       key=lambda k: -ss[-1].get(k, 0.0))
        print("  largest Node containers (length first, last; per restart):")
        for k in probe[:6]:
            a, b, g, _ = _growth(ss, k)
            print("    %-56s %5.0f %5.0f %+6.2f" % (k[6:], a, b, g))
        grew = [k for k in probe if _growth(ss, k)[2] > 0.1]
        print("  Node containers longer at the end than at the start: %s"
              % (", ".join("%s %+.0f" % (k[6:], _growth(ss, k)[1] - _growth(ss, k)[0])
                           for k in grew) or "none"))


def check_records(paths: List[str], read_records, created: int) -> int:
    """Tasks recorded more than once, and the difference between the tasks the sources' final
    stats say they created and the tasks recorded (printed); returns their sum."""
    recs = []
    for path in paths:  # rotated files first (records.jsonl.N is the oldest)
        n = 1
        while os.path.exists("%s.%d" % (path, n)):
            n += 1
        recs += [r for i in range(n - 1, 0, -1) for r in read_records("%s.%d" % (path, i))]
        recs += list(read_records(path))
    by_id = Counter(r.get("id") for r in recs)
    dup = sum(1 for c in by_id.values() if c > 1)
    outcomes = Counter(str(r.get("outcome", r.get("status", "?"))) for r in recs)
    print("\nrecords: %d lines, %d tasks, %d with more than one record; sources created %d "
          "(final stats of each lifetime); outcomes: %s"
          % (len(recs), len(by_id), dup, created, ", ".join("%s %d" % kv for kv in
                                                            sorted(outcomes.items()))))
    return dup + abs(created - len(by_id))


if __name__ == "__main__":
    sys.exit(main())
