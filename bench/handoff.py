"""Cost of the hand-off between a worker's I/O loop and its inference thread, trivial engine.

One job at a time: ``InferenceThread.submit``, wait on the wake-up pipe with ``select``,
``take_done``, so each task crosses the two threads twice, as in a worker. The engine returns
its input (no compute), so the figures are the hand-off alone: median round trip and process
CPU per task. ``--queue queue`` runs the same with ``queue.Queue`` (the previous job queue,
Python-level locks) in place of ``queue.SimpleQueue``, for an A/B on the same machine.

    python3 bench/handoff.py [--tasks 20000] [--queue simple|queue] [--pairs 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import queue
import select
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from agent.node.inference import InferenceThread, Job  # noqa: E402
from engines.engine import StageOutput  # noqa: E402


class Echo:
    """A trivial engine: hands its input back as the features."""

    info = {"backend": "echo", "device": "CPU", "threads": 1}

    def run(self, x):
        return StageOutput(features=x, logits=None)


def run(tasks: int, kind: str):
    runner = InferenceThread({1: Echo()}, {1: 1.0})
    if kind == "queue":
        runner._jobs = queue.Queue()
    runner.start()
    x = np.zeros((1, 16), dtype=np.float32)
    times = []
    cpu0 = time.process_time()
    try:
        for i in range(tasks):
            t0 = time.perf_counter()
            runner.submit(Job(meta=i, x=x, stage=1))
            got = []
            while not got:
                select.select([runner.wake_fd], [], [], 10.0)
                got = runner.take_done()
            times.append(time.perf_counter() - t0)
    finally:
        cpu = time.process_time() - cpu0
        runner.stop()
    return statistics.median(times) * 1e6, cpu / tasks * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=20000)
    ap.add_argument("--pairs", type=int, default=3, help="alternated runs per queue kind")
    ap.add_argument("--queue", default="simple,queue", help="simple, queue or both")
    args = ap.parse_args()
    kinds = args.queue.split(",")
    print("machine: %s, %d cores, Python %s" % (platform.machine(), os.cpu_count() or 0,
                                               platform.python_version()))
    res = {k: [] for k in kinds}
    for _ in range(args.pairs):
        for k in kinds:
            res[k].append(run(args.tasks, k))
    print("| job queue | round trip p50 us | CPU us per task |")
    print("| --- | --- | --- |")
    for k in kinds:
        print("| %s | %.1f | %.1f |" % ("queue.SimpleQueue" if k == "simple" else "queue.Queue",
                                       statistics.median(r[0] for r in res[k]),
                                       statistics.median(r[1] for r in res[k])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
