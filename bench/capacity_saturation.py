"""Online capacity under saturation, service timed without and with lock waits.

The setting of ``tests/unit/test_capacity_saturation.py``: a real onnxruntime engine (one
intra-op thread, a chain of matrix products, several ms per task), mu timed unloaded before
and after 120 tasks with the inference thread's queue kept full behind a thread that holds
the interpreter lock (as a busy I/O loop does). Per run: the unloaded mu (before / after), the
online mu while saturated (mean over the second half), and its distance from the unloaded
values, for the inference thread's CPU clock (the agent's measure for such an engine) and for
the wall clock around the same runs (the measure before it). Goal: within 5%.

    python3 bench/capacity_saturation.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tests.unit.test_capacity_saturation import _matmul_engine, _off_by, _run_once  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    print("machine: %s, %d cores, Python %s" % (platform.machine(), os.cpu_count() or 0,
                                               platform.python_version()))
    print("| clock | unloaded mu FLOP/s (before / after) | saturated mu FLOP/s | off by |")
    print("| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as folder:
        spec, engine = _matmul_engine(folder)
        try:
            for _ in range(args.runs):
                for label, wall in (("thread CPU (agent)", False), ("wall (before)", True)):
                    unloaded, saturated = _run_once(spec, engine, wall_clock=wall)
                    print("| %s | %.3g / %.3g | %.3g | %.1f%% |"
                          % (label, unloaded[0], unloaded[1], saturated,
                             100 * _off_by(unloaded, saturated)))
                    sys.stdout.flush()
        finally:
            engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
