"""``edge-agent heads`` wall time on 2,000 labelled samples, one onnxruntime thread.

Usage: python3 bench/heads.py [--samples 2000] [--cases demo,resnet18-64]
Each case runs the real command (``python -m agent heads``, a fresh interpreter, so import and
start-up count) and reports its wall time; goal: under a minute on a 2-core machine.

* ``demo``: the shipped demo with its exit heads removed, heads at its three cut tensors
  (2x2 pooling + linear) on the first Fashion-MNIST training images (Debian's package);
* ``resnet18-64``: a full-width ResNet-18 layout (64..512 channels, random weights,
  ``engines.heads_resnet``) on 3x64x64 random images with balanced labels, heads after layers
  1, 2 and 3 (global pooling + linear): the cost is almost all in the backbone's forward pass.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import onnx  # noqa: E402

from _local import machine  # noqa: E402


def _demo(d: str, n: int):
    from engines.demo import MULTI_EXIT_ONNX
    from engines.demo.train_demo import CUT_TENSORS, FINAL_OUTPUT, INPUT_NAME, load_split

    backbone = os.path.join(d, "demo_backbone.onnx")
    onnx.utils.extract_model(MULTI_EXIT_ONNX, backbone, [INPUT_NAME], [FINAL_OUTPUT])
    x, y = load_split("train")
    np.savez(os.path.join(d, "demo.npz"), x=x[:n, None], y=y[:n])
    return backbone, os.path.join(d, "demo.npz"), ",".join(CUT_TENSORS), ["--grid", "2"]


def _resnet(d: str, n: int):
    from engines.heads_resnet import CLASSES, make_resnet18

    backbone = os.path.join(d, "resnet18.onnx")
    onnx.save(make_resnet18(size=64, widths=(64, 128, 256, 512)), backbone)
    rng = np.random.default_rng(0)
    np.savez(os.path.join(d, "resnet.npz"), x=rng.integers(0, 256, size=(n, 3, 64, 64)).astype(np.uint8),
             y=np.arange(n) % CLASSES)
    return backbone, os.path.join(d, "resnet.npz"), "layer1.1,layer2.1,layer3.1", []


CASES = {"demo": _demo, "resnet18-64": _resnet}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--cases", default="demo,resnet18-64")
    args = parser.parse_args()
    print(machine())
    print("| case | samples | heads | wall s |")
    print("| --- | --- | --- | --- |")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    with tempfile.TemporaryDirectory() as d:
        for name in args.cases.split(","):
            backbone, data, at, extra = CASES[name](d, args.samples)
            cmd = [sys.executable, "-m", "agent", "--log-level", "WARNING", "heads", "--onnx", backbone,
                   "--at", at, "--data", data, "--out", os.path.join(d, name + "_me.onnx")] + extra
            t0 = time.monotonic()
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
            print("| %s | %d | %s | %.1f |" % (name, args.samples, at, time.monotonic() - t0), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
