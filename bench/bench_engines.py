"""Per-stage latency of a bundle on one backend (batch 1), for the demo-model table in
docs/benchmarks.md.

    python3 bench/bench_engines.py [--bundle DIR] [--backend onnxruntime] [--threads 1] [--runs 2000]

Prints, per stage, the median and 95th-percentile wall time of ``Engine.run`` on replay images
(their features at later stages) and the implied capacity in MAC/s.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from engines.bundle import load_bundle  # noqa: E402
from engines.loader import load_engine
from engines.demo import DEMO_BUNDLE_DIR, REPLAY_PATH  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", default=DEMO_BUNDLE_DIR)
    p.add_argument("--data", default=REPLAY_PATH)
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=2000)
    args = p.parse_args()
    bundle = load_bundle(args.bundle)
    with np.load(args.data) as z:
        x = z["x"][: args.runs].astype(np.float32)
    engines = [load_engine(s, backend=args.backend, threads=args.threads) for s in bundle.stages]
    print("machine: %s, Python %s, %d CPUs; backend %s (%s), threads %d"
          % (platform.machine(), platform.python_version(), os.cpu_count() or 0, args.backend,
             ",".join(engines[0].info.get("providers", [])), args.threads))
    print("%-6s %12s %12s %12s %16s" % ("stage", "MACs", "median us", "p95 us", "MAC/s (median)"))
    inputs = [x[i:i + 1] for i in range(len(x))]
    for stage, engine in zip(bundle.stages, engines):
        for t in inputs[:50]:  # warm-up
            engine.run(t)
        times, nxt = [], []
        for t in inputs:
            t0 = time.perf_counter()
            out = engine.run(t)
            times.append(time.perf_counter() - t0)
            nxt.append(out.features)
        med, p95 = np.median(times), np.percentile(times, 95)
        print("%-6d %12d %12.1f %12.1f %16.3g" % (stage.index, stage.flops, med * 1e6, p95 * 1e6,
                                                 stage.flops / med))
        inputs = nxt
    return 0


if __name__ == "__main__":
    sys.exit(main())
