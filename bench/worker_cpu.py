"""Worker CPU per task: a real worker agent next to a raw pyzmq loop with the same messages.

The worker is a real ``edge-agent run`` process serving the last stage of the demo bundle
(stage 4: onnxruntime, one intra-op thread, ~25 us per task, every task exits there), with all
its threads pinned to one core (``os.sched_setaffinity`` on every thread id). This process is
the worker's neighbours, on the other core: its stage-3 predecessor (a DEALER with routing id
``w3a`` that keeps ``--window`` TASKs in flight) and the source (a ROUTER bound at ``s1``'s
data address that takes the RESULTs and ACKs them as a source does, one ACK per message).
Per task the worker gets a TASK and ACKs it (one ACK for all the TASKs a poll brought), runs
the engine and sends a RESULT (one RESULTS message for all the results of a loop pass), whose
ACK comes back.

``raw`` runs the same exchange in a plain pyzmq process pinned the same way: a ROUTER takes
the TASK (the same bytes) and answers a 3-byte ACK, the same onnxruntime engine runs inline on
the tensor, a DEALER sends a RESULT (a constant header of the same size) and reads its ACK.

Figures per run: tasks/s completed and the pinned process's CPU per task (user + system of all
its threads, from ``/proc/<pid>/stat``) over ``--seconds`` after a warm-up. Raw and agent runs
alternate (``--pairs``); the table gives medians. Goal: agent CPU per task <= 1.3x raw, and
>= 12,000 tasks/s on one core.

    python3 bench/worker_cpu.py [--seconds 3] [--pairs 3] [--window 16] [--core 0] [--threads]
                                [--profile FILE] [--metrics] [--batch N] [--capacity]

``--threads`` splits the CPU by thread (the agent's loop, its inference thread, libzmq's I/O
thread); ``--profile FILE`` runs the first agent under cProfile (its loop thread).

``--core -1`` leaves every process free to run on any core (the kernel's choice).

``--batch N`` sets the worker's ``engine_batch_max`` (``agent.node.batching``): the tasks
waiting together, up to N, run as one engine call (raw still runs one call per task).

``--capacity`` also prints the agent's online capacity estimate (``capacity_flops`` in its
``stats.json``, written every 0.5 s) at the end of each run over its value before the load
and over the stage engine timed alone on the worker's core right after the run (the start-up
value is timed while the other processes start), and the median of the estimate over the
run's second half (read every 0.5 s) over the engine alone: how far the estimate moves while
the worker is saturated.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time

import msgpack

from _local import Local, chain_topology, machine

HERE = os.path.dirname(os.path.abspath(__file__))


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of every thread of ``pid`` so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _threads_s(pid: int) -> dict:
    """CPU seconds so far of each thread of ``pid``, by thread name (names summed)."""
    out: dict = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                st = f.read()
        except OSError:
            continue
        name = st[st.index("(") + 1:st.rindex(")")]
        if name == "python":  # the loop is the main thread; the rest is the inference thread
            name = "loop" if int(tid) == pid else "inference"
        fields = st.rsplit(")", 1)[1].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / os.sysconf(
            "SC_CLK_TCK")
    return out


def _pin(pid: int, core: int) -> None:
    """Pin every thread of ``pid`` (libzmq's and the inference thread included) to ``core``."""
    for tid in os.listdir("/proc/%d/task" % pid):
        os.sched_setaffinity(int(tid), {core})


def drive(worker_data: str, source_data: str, x, seconds: float, window: int, pid: int,
          warmup_s: float = 1.0):
    """Feed the worker at ``worker_data`` as w3a, take its RESULTs as s1 at ``source_data``;
    return (tasks/s, CPU us per task of ``pid``) over ``seconds`` after ``warmup_s``."""
    import zmq

    from agent.protocol import wire

    ctx = zmq.Context()
    d = ctx.socket(zmq.DEALER)
    d.setsockopt(zmq.ROUTING_ID, b"w3a")
    d.setsockopt(zmq.LINGER, 0)
    d.connect(worker_data)
    r = ctx.socket(zmq.ROUTER)
    r.setsockopt(zmq.LINGER, 0)
    r.bind(source_data)
    poller = zmq.Poller()
    poller.register(d, zmq.POLLIN)
    poller.register(r, zmq.POLLIN)
    sent = done = 0
    marks = []  # (time, results, cpu) at the window's start and end
    start = time.monotonic()
    t_mark = start + warmup_s
    try:
        while True:
            while sent - done < window:
                sent += 1
                d.send_multipart(wire.encode(wire.Kind.TASK, "w3a", {
                    "id": "t%d" % sent, "source": "s1", "stage": 4, "attempt": 0,
                    "created": time.time(), "hops": 3, "resends": 0}, [x]), copy=False)
            for sock, _ in poller.poll(5000):
                while True:
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if sock is r:  # RESULT(S) from the worker: ACK them as the source would
                        h = msgpack.unpackb(frames[1], raw=False)
                        keys = ["R:" + wire.task_key(i["id"], i["attempt"])
                                for i in h.get("items", [h])]
                        r.send_multipart([frames[0]] + wire.encode(wire.Kind.ACK, "s1",
                                                                   {"keys": keys}))
                        done += len(keys)
            now = time.monotonic()
            if now >= t_mark:
                marks.append((now, done, _cpu_s(pid), _threads_s(pid)))
                if len(marks) == 2:
                    break
                t_mark = now + seconds
            if now > start + warmup_s + seconds + 30:
                raise RuntimeError("the worker stopped answering (%d results)" % done)
    finally:
        d.close()
        r.close()
        ctx.term()
    (t0, n0, c0, th0), (t1, n1, c1, th1) = marks
    n = max(n1 - n0, 1)
    per_thread = {k: (v - th0.get(k, 0.0)) / n * 1e6 for k, v in th1.items()}
    return (n1 - n0) / (t1 - t0), (c1 - c0) / n * 1e6, per_thread


def raw_worker(data_bind: str, source_data: str, model: str) -> None:
    """The raw pyzmq equivalent of the worker: ACK, engine inline, RESULT, its ACK."""
    import numpy as np
    import zmq

    sys.path.insert(0, os.path.join(HERE, ".."))
    from agent.protocol import wire
    from engines.bundle import load_bundle
    from engines.loader import load_engine

    spec = load_bundle(model).stage(4)
    engine = load_engine(spec, backend="onnxruntime", threads=1)
    result = wire.encode(wire.Kind.RESULT, "w4a", {
        "id": "t0000000", "attempt": 0, "source": "s1", "exit_stage": 4, "cls": 3,
        "confidence": 0.5, "worker": "w4a", "hops": 4, "resends": 0, "created": time.time()})
    ctx = zmq.Context()
    r = ctx.socket(zmq.ROUTER)
    r.setsockopt(zmq.LINGER, 0)
    r.bind(data_bind)
    d = ctx.socket(zmq.DEALER)
    d.setsockopt(zmq.ROUTING_ID, b"w4a")
    d.setsockopt(zmq.LINGER, 0)
    d.connect(source_data)
    poller = zmq.Poller()
    poller.register(r, zmq.POLLIN)
    poller.register(d, zmq.POLLIN)
    shape = tuple(spec.input_shape)
    print("ready", flush=True)
    while True:
        for sock, _ in poller.poll(1000):
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                if sock is d:
                    continue  # the RESULT's ACK
                r.send_multipart([frames[0], b"ack"], copy=False)
                x = np.frombuffer(memoryview(frames[2]), dtype=np.float32).reshape(shape)
                engine.run(x)
                d.send_multipart(result, copy=False)


def _capacity_flops(state_dir: str, wait_s: float = 10.0) -> float:
    """``capacity_flops`` in the agent's ``stats.json`` (waiting for its first write)."""
    from agent.ops.state import STATS_FILE
    from agent.testbed.counters import read_stats

    path, end = os.path.join(state_dir, STATS_FILE), time.monotonic() + wait_s
    stats = read_stats(path)
    while stats is None and time.monotonic() < end:
        time.sleep(0.1)
        stats = read_stats(path)
    if stats is None:
        raise SystemExit("no %s from the agent within %.0f s" % (path, wait_s))
    return float(stats["capacity_flops"])


_ALONE = []  # the stage engine this process times alone (loaded once)


def _poll_capacity(state_dir: str, stop, readings: list, interval_s: float = 0.5) -> None:
    """Append (monotonic time, ``capacity_flops``) from the agent's ``stats.json`` every
    ``interval_s`` (its ``status_interval_s``) until ``stop`` (a threading.Event) is set."""
    while not stop.wait(interval_s):
        try:
            readings.append((time.monotonic(), _capacity_flops(state_dir, wait_s=0.0)))
        except SystemExit:  # no stats.json at that moment: the next reading
            pass


def _alone_capacity_flops(core: int) -> float:
    """mu of the worker's stage engine timed alone, as the agent's start-up times it (the
    median of a tight loop on the calling thread's CPU clock), on ``core``: the unloaded value
    a saturated worker's estimate is held against, measured right after its run."""
    from agent.node.capacity import time_engine
    from engines.bundle import load_bundle
    from engines.demo import DEMO_BUNDLE_DIR
    from engines.loader import load_engine
    from engines.timing import timing_input

    if not _ALONE:
        spec = load_bundle(DEMO_BUNDLE_DIR).stage(4)
        _ALONE.append((spec, load_engine(spec, backend="onnxruntime", threads=1)))
    spec, engine = _ALONE[0]
    mask = os.sched_getaffinity(0)
    if core >= 0:
        os.sched_setaffinity(0, {core})
    try:
        return spec.flops / time_engine(engine.run, timing_input(spec), 500, 3000,
                                        time.thread_time)
    finally:
        os.sched_setaffinity(0, mask)


def one(mode: str, seconds: float, window: int, core: int, profile: str = "",
        metrics: bool = False, batch: int = 1, capacity: bool = False):
    """One run of ``mode`` (raw or agent): (tasks/s, CPU us per task, {thread: us per task},
    the agent's capacity estimate at the end over before the load and over the engine timed
    alone after the run, and its median over the run's second half over the engine timed
    alone (``capacity``, else 0, 0, 0));
    ``metrics``: the agent serves its Prometheus metrics, as a deployed agent does; ``batch``:
    its ``engine_batch_max``."""
    import numpy as np

    from agent.testbed.ports import free_ports
    from engines.demo import DEMO_BUNDLE_DIR

    x = np.random.default_rng(0).standard_normal((1, 32, 7, 7)).astype(np.float32)
    agent = {"result_timeout_s": 60.0, "engine_batch_max": batch}
    if capacity:
        agent["status_interval_s"] = 0.5
    if metrics:
        agent["metrics_port"] = free_ports(1)[0]
    topo = chain_topology([1, 1, 1, 1], agent=agent)
    run = Local(topo, "fixed", rate=1.0, load_s=1.0)
    wcfg, scfg = run.cfgs["w4a"], run.cfgs["s1"]
    proc = None
    try:
        if mode == "agent":
            if profile:  # the loop thread under cProfile, written when the agent stops
                run.agents.launcher = ("-m", "cProfile", "-o", os.path.abspath(profile),
                                       "-m", "agent")
            run.agents.write({"w4a": wcfg})
            run.agents.start(["w4a"])
            pid = run.agents.procs["w4a"].pid
        else:
            proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--raw-child",
                                     wcfg.data_bind, scfg.data_bind, DEMO_BUNDLE_DIR],
                                    stdout=subprocess.PIPE, text=True)
            proc.stdout.readline()
            pid = proc.pid
        if core >= 0:
            _pin(pid, core)
            os.sched_setaffinity(0, set(os.sched_getaffinity(0)) - {core} or {core})
        before = _capacity_flops(wcfg.state_dir) if capacity and mode == "agent" else 0.0
        readings: list = []
        if before:  # the estimate through the run, not one reading of it at the end
            stop = threading.Event()
            poller = threading.Thread(target=_poll_capacity, daemon=True,
                                      args=(wcfg.state_dir, stop, readings))
            poller.start()
        # the second half of the measured seconds (after drive's 1 s of warm-up)
        half = time.monotonic() + 1.0 + seconds / 2
        got = drive(wcfg.data_bind, scfg.data_bind, x, seconds, window, pid)
        if before:
            stop.set()
            poller.join()
            time.sleep(0.6)  # the status write after the last task
            end = _capacity_flops(wcfg.state_dir)
            late = [mu for t, mu in readings if t >= half] or [end]
            run.close()  # its agents stopped first (closed again below: a no-op), so that
            alone = _alone_capacity_flops(core)  # the engine is timed alone on that core
            return got + (end / before, end / alone, statistics.median(late) / alone)
        return got + (0.0, 0.0, 0.0)
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        run.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="measuring time per run")
    ap.add_argument("--pairs", type=int, default=3, help="alternated raw/agent runs")
    ap.add_argument("--window", type=int, default=16, help="tasks in flight to the worker")
    ap.add_argument("--core", type=int, default=0,
                    help="the core the worker is pinned to (-1: not pinned, nor is the driver)")
    ap.add_argument("--threads", action="store_true", help="also print CPU per task by thread")
    ap.add_argument("--profile", default="",
                    help="cProfile file of the agent worker's loop thread (first agent run)")
    ap.add_argument("--metrics", action="store_true",
                    help="the agent serves Prometheus metrics (metrics_port), as deployed")
    ap.add_argument("--batch", type=int, default=1,
                    help="the worker's engine_batch_max (1: one engine call per task)")
    ap.add_argument("--capacity", action="store_true",
                    help="also print the agent's capacity estimate at the end over its start "
                         "and over the engine timed alone")
    ap.add_argument("--raw-child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.raw_child:
        raw_worker(*args.raw_child)
        return 0
    print("machine: %s; window %d, %g s per run, %d pairs, worker on core %d%s%s"
          % (machine(), args.window, args.seconds, args.pairs, args.core,
             "; the agent serves metrics" if args.metrics else "",
             "; engine_batch_max %d" % args.batch if args.batch > 1 else ""))
    print("| run | raw tasks/s | agent tasks/s | raw CPU us/task | agent CPU us/task | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    raw, ag = [], []
    for i in range(args.pairs):
        raw.append(one("raw", args.seconds, args.window, args.core))
        ag.append(one("agent", args.seconds, args.window, args.core,
                      args.profile if i == 0 else "", args.metrics, args.batch, args.capacity))
        print("| %d | %.0f | %.0f | %.1f | %.1f | %.2fx |" % (
            i + 1, raw[-1][0], ag[-1][0], raw[-1][1], ag[-1][1], ag[-1][1] / raw[-1][1]))
        if args.capacity:
            print("  agent capacity estimate at the end / before the load: %.3f; / the engine "
                  "timed alone on that core after the run: %.3f at the end, %.3f the median "
                  "over the run's second half" % ag[-1][3:6])
        if args.threads:
            for mode, res in (("raw", raw[-1]), ("agent", ag[-1])):
                print("  %s: %s" % (mode, ", ".join("%s %.0f us" % kv for kv in
                                                    sorted(res[2].items()) if kv[1] >= 0.5)))
        sys.stdout.flush()
    r = [statistics.median(c) for c in list(zip(*raw))[:2]]
    a = [statistics.median(c) for c in list(zip(*ag))[:2]]
    print("| median | %.0f | %.0f | %.1f | %.1f | %.2fx |" % (r[0], a[0], r[1], a[1], a[1] / r[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
