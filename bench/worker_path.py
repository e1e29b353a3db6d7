"""The worker's own Python per task, without sockets or the engine's compute: a steady figure.

``worker_cpu.py`` times a real worker process against raw pyzmq; on a shared VM its runs spread
by +-20%, more than most changes to the data path are worth. This bench takes the sockets and
the engine's compute out and times what is left, the agent's own code, in one process:

- the worker is built by ``agent.node.build.build`` from the same config as ``worker_cpu.py``'s
  (stage 4 of the demo bundle, every task exits there), with its transport's ``send`` and
  ``reply`` replaced by functions that keep the frames (no socket is bound);
- each pass hands it ``--batch`` TASK messages (frames encoded beforehand, the bytes a socket
  would give) through ``Node._dispatch``, then does what a pass of the loop does with them:
  the ACKs out (``flush_replies``), the jobs run (``on_clock``, on this thread: the bench pins
  itself to one core as a confined worker is), the RESULTS out (``flush_results``), their ACK
  back in (``_dispatch``) and the timers (``run_timers``);
- ``--engine stub`` (default) answers every job with the real engine's output for one input,
  computed once, so the figure is the agent alone; ``--engine real`` runs onnxruntime.

The worker's start-up objects are frozen out of the garbage collector as ``serve`` does
(``agent.ops.collector``; ``--no-freeze``: not).

Figures: CPU microseconds per task (``time.process_time`` over ``--tasks`` tasks), the minimum
and median of ``--repeat`` runs after a warm-up; the collector's passes during the timed runs
by generation and the longest full one (the loop stands still meanwhile).

    python3 bench/worker_path.py [--tasks 20000] [--batch 5] [--repeat 7] [--engine stub|real]
                                 [--lag 0] [--no-freeze]

``--lag P``: the source's ACK of each pass's results comes P passes later, so the worker
holds about P x batch results in custody meanwhile (what a slow or distant source does).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from collections import deque

import numpy as np

from _local import chain_topology, machine

from agent.net.transport import DATA, REPLY
from agent.node.build import build
from agent.ops.collector import freeze_startup_objects
from agent.protocol import wire
from agent.testbed.local import node_configs
from agent.testbed.topology import parse_topology
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR


class _StubEngine:
    """Answers every call with one precomputed output of the real engine (the agent alone)."""

    def __init__(self, real, x):
        self.info = dict(real.info)
        self.stage = real.stage
        self._out = real.run(x)

    def run(self, x):
        return self._out


def _worker(engine: str):
    """The stage-4 worker of ``worker_cpu.py``'s chain, built but not bound."""
    topo = parse_topology(chain_topology([1, 1, 1, 1], agent={"result_timeout_s": 60.0}))
    run_dir = tempfile.mkdtemp(prefix="worker-path-")
    cfg = node_configs(topo, load_bundle(DEMO_BUNDLE_DIR).path, "fixed", 1.0, 1.0, run_dir)["w4a"]
    built = build(cfg)
    sent = []  # (peer, frames) of RESULTS
    built.transport.send = lambda peer, frames: sent.append((peer, frames)) or True
    built.transport.reply = lambda identity, frames, client=False: True
    x = np.random.default_rng(0).standard_normal((1, 32, 7, 7)).astype(np.float32)
    if engine == "stub":
        runner = built.runner
        runner.engines = {h: _StubEngine(e, x) for h, e in runner.engines.items()}
    built.node.view.alive.update(p.id for p in built.node.cfg.peers)
    built.node.role.on_clock(built.node.clock())  # reads its affinity: jobs run on this thread
    return built, sent, x


def run(built, sent, x, tasks: int, batch: int, first: int, lag: int = 0) -> float:
    """Push ``tasks`` tasks (ids from ``first``) through the worker; CPU seconds used. The
    TASKs and the source's ACK of each pass's results are encoded before the clock starts;
    each ACK comes ``lag`` passes after its results went out."""
    node = built.node
    out, side = node.outbox, node.role
    ids = ["t%d" % i for i in range(first, first + tasks)]
    msgs = [[bytes(f) for f in wire.encode(wire.Kind.TASK, "w3a", {
        "id": i, "source": "s1", "stage": 4, "attempt": 0, "created": time.time(),
        "hops": 3, "resends": 0}, [x])] for i in ids]
    acks = [[bytes(f) for f in wire.encode(wire.Kind.ACK, "s1", {
        "keys": ["R:" + wire.task_key(i, 0) for i in ids[k:k + batch]]})]
        for k in range(0, tasks, batch)]
    pending: deque = deque()
    c0 = time.process_time()
    for k in range(0, tasks, batch):
        for frames in msgs[k:k + batch]:
            node._dispatch((DATA, b"w3a", frames))
        out.flush_replies()
        now = node.clock()
        side.on_clock(now)
        out.flush_results(now)
        if sent:  # the pass's results went out (to s1, as one RESULTS message): ACK them
            pending.append(acks[k // batch])
            del sent[:]
        while len(pending) > lag:
            node._dispatch((REPLY, "s1", pending.popleft()))
        out.run_timers(node.clock(), side.on_timer)
    while pending:
        node._dispatch((REPLY, "s1", pending.popleft()))
    cpu_s = time.process_time() - c0
    if out.items:
        raise SystemExit("%d results left without their ACK" % len(out.items))
    return cpu_s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=20000, help="tasks per timed run")
    ap.add_argument("--batch", type=int, default=5, help="TASK messages per loop pass")
    ap.add_argument("--repeat", type=int, default=7, help="timed runs (after one warm-up run)")
    ap.add_argument("--engine", choices=("stub", "real"), default="stub")
    ap.add_argument("--lag", type=int, default=0,
                    help="passes each ACK of results comes late (custody holds about "
                         "lag x batch results meanwhile)")
    ap.add_argument("--core", type=int, default=0, help="the core this process is pinned to")
    ap.add_argument("--no-freeze", action="store_true",
                    help="leave start-up objects in the collector's full passes")
    args = ap.parse_args()
    os.sched_setaffinity(0, {args.core})  # a confined worker runs its jobs on the loop's thread
    built, sent, x = _worker(args.engine)
    try:
        run(built, sent, x, args.tasks, args.batch, 0, args.lag)  # warm-up
        if not built.node.role.inline:
            raise SystemExit("the worker does not run its jobs on the loop's thread")
        if not args.no_freeze:
            freeze_startup_objects()
        passes, longest, started = [0, 0, 0], [0.0], [0.0]

        def on_gc(phase, info):
            if phase == "start":
                started[0] = time.perf_counter()
                return
            passes[info["generation"]] += 1
            if info["generation"] == 2:
                longest[0] = max(longest[0], time.perf_counter() - started[0])
        gc.callbacks.append(on_gc)
        per_task = [run(built, sent, x, args.tasks, args.batch, (k + 1) * args.tasks, args.lag)
                    / args.tasks * 1e6 for k in range(args.repeat)]
        gc.callbacks.remove(on_gc)
        done = built.node.outbox.counters["finished"]
        want = (args.repeat + 1) * args.tasks
        if done != want:
            raise SystemExit("%d of %d tasks finished" % (done, want))
    finally:
        built.close()
    print("machine: %s; engine %s, %d tasks per run, %d per pass, ACKs %d passes late"
          % (machine(), args.engine, args.tasks, args.batch, args.lag))
    print("CPU per task: min %.2f us, median %.2f us (%s)" % (
        min(per_task), statistics.median(per_task), ", ".join("%.1f" % v for v in per_task)))
    print("collector (%s): %d / %d / %d passes of generation 0 / 1 / 2, the longest full one "
          "%.1f ms" % ("start-up objects in" if args.no_freeze else "start-up objects frozen",
                       passes[0], passes[1], passes[2], longest[0] * 1e3))
    return 0


if __name__ == "__main__":
    sys.exit(main())
