"""`edge-agent heads` and `build` on models past protobuf's 2 GB limit: wall time and peak RSS.

Writes float32 models with their weights in a side file (N x N MatMuls, N = 17,000 by default:
2.3 GB each) into a scratch folder, one at a time, and runs on each:

- ``one`` (`build`): both N x N weights in stage 2 (stage 1 is a rank-256 bottleneck): a small
  inline stage and a 2.3 GB one, whose weights go to ``stage2.onnx.data``;
- ``split`` (`build`): two N x N weights, one per stage: two inline stages of about 1.2 GB each;
- ``heads``: a backbone without exits (two N x N weights) gets a head at the first Relu from 60
  labelled samples; its multi-exit graph (with ``multi.onnx.data``) is then built as ``split``.

Each bundle's chain is checked against the whole model's logits (onnxruntime on the model).
Needs about 10 GB of free disk and 9 GB of memory at the default N.

    python3 bench/big_models.py [--n 17000] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from _local import machine  # (puts this checkout first on sys.path)

import onnx
from onnx import TensorProto, helper, numpy_helper


def make_source(path: str, n: int, kind: str) -> None:
    """A two-stage multi-exit MLP on x [1, n] with its weights in ``path``.data."""
    rng = np.random.default_rng(0)

    def w(name, shape):
        return numpy_helper.from_array(rng.standard_normal(shape, dtype=np.float32) * 0.01, name)

    c, m = 10, 256
    if kind in ("split", "heads"):
        inits = [w("W1", (n, n)), w("E1", (n, c)), w("W2", (n, n)), w("F", (n, c))]
        nodes = [helper.make_node("MatMul", ["x", "W1"], ["feat1"])]
        tail = [helper.make_node("MatMul", ["feat1", "W2"], ["h"]),
                helper.make_node("MatMul", ["h", "F"], ["logits"])]
    else:
        inits = [w("A", (n, m)), w("B", (m, n)), w("E1", (n, c)), w("W2", (n, n)),
                 w("W3", (n, n)), w("F", (n, c))]
        nodes = [helper.make_node("MatMul", ["x", "A"], ["a"]),
                 helper.make_node("MatMul", ["a", "B"], ["feat1"])]
        tail = [helper.make_node("MatMul", ["feat1", "W2"], ["h2"]),
                helper.make_node("MatMul", ["h2", "W3"], ["h"]),
                helper.make_node("MatMul", ["h", "F"], ["logits"])]
    outputs = [helper.make_tensor_value_info("exit1", TensorProto.FLOAT, ["N", c]),
               helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", c])]
    if kind == "heads":  # a backbone: no exit, the head goes on feat1
        inits = [w("W1", (n, n)), w("W2", (n, n)), w("F", (n, c))]
        nodes = [helper.make_node("MatMul", ["x", "W1"], ["h1"]),
                 helper.make_node("Relu", ["h1"], ["feat1"])] + tail
        outputs = outputs[1:]
    else:
        nodes += [helper.make_node("MatMul", ["feat1", "E1"], ["exit1"])] + tail
    graph = helper.make_graph(
        nodes, kind, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n])], outputs,
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=os.path.basename(path) + ".data")


def check_chain(source: str, bundle_dir: str) -> float:
    """Largest difference between the bundle's logits and the whole model's."""
    import onnxruntime as ort

    from engines.bundle import load_bundle
    from engines.loader import load_engine

    bundle = load_bundle(bundle_dir)
    x = np.random.default_rng(1).standard_normal(bundle.stage(1).input_shape).astype(np.float32)
    whole = ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    worst, y = 0.0, x
    for spec, ref in zip(bundle.stages, whole):
        engine = load_engine(spec, backend="onnxruntime", threads=1)
        try:
            out = engine.run(y)
        finally:
            engine.close()
        worst = max(worst, float(np.max(np.abs(out.logits - ref))))
        y = out.features
    return worst


# runs a command and prints its peak RSS in kB: a child forked from this small process counts
# only its own pages (a child forked from a process holding gigabytes starts with their count)
PEAK = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
        "stdout=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def _size(path: str) -> int:
    return os.path.getsize(path) if os.path.exists(path) else 0


def _peak(argv):
    """(wall s, peak RSS GB) of ``python -m agent ARGV`` run from this checkout."""
    t0 = time.monotonic()
    peak_kb = subprocess.run(
        [sys.executable, "-c", PEAK, sys.executable, "-m", "agent"] + argv, check=True,
        stdout=subprocess.PIPE, universal_newlines=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),  # this checkout
    ).stdout.split()[-1]
    return time.monotonic() - t0, int(peak_kb) / 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=17000, help="width of the N x N weights")
    ap.add_argument("--dir", default=None, help="scratch folder (default: a new one in TMPDIR)")
    ap.add_argument("--make", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.make:  # in a process of its own, so the weights made leave no pages here
        make_source(args.make[1], args.n, args.make[0])
        return 0
    print(machine())
    scratch = tempfile.mkdtemp(prefix="build-big-", dir=args.dir)
    try:
        for kind in ("one", "split", "heads"):
            source = os.path.join(scratch, kind + ".onnx")
            subprocess.run([sys.executable, os.path.abspath(__file__), "--n", str(args.n),
                            "--make", kind, source], check=True)
            size = os.path.getsize(source) + os.path.getsize(source + ".data")
            if kind == "heads":
                data = os.path.join(scratch, "data.npz")
                np.savez(data, x=np.random.default_rng(2).standard_normal((60, args.n), np.float32),
                         y=np.arange(60) % 10)
                multi = os.path.join(scratch, "multi.onnx")
                wall, peak = _peak(["heads", "--onnx", source, "--at", "feat1", "--data", data,
                                    "--out", multi])
                print("heads backbone %.2f GB: heads in %.1f s, peak RSS %.2f GB; multi.onnx %d B, "
                      "multi.onnx.data %.2f GB" % (size / 1e9, wall, peak, os.path.getsize(multi),
                                                    _size(multi + ".data") / 1e9))
                os.remove(source + ".data")
                source = multi
            out = os.path.join(scratch, kind + "-bundle")
            wall, peak = _peak(["build", "--onnx", source, "--cuts", "feat1", "--exits", "1:exit1",
                                "--out", out])
            files = ", ".join("%s %.2f GB" % (f, os.path.getsize(os.path.join(out, f)) / 1e9)
                              for f in sorted(os.listdir(out)) if f != "bundle.json")
            print("%-5s source %.2f GB: built in %.1f s, peak RSS %.2f GB; %s; chain vs whole "
                  "model: max |diff| %.2g" % (kind, size / 1e9, wall, peak, files,
                                               check_chain(source, out)))
            shutil.rmtree(out)
            if os.path.exists(source + ".data"):  # (a small --n writes the weights inline)
                os.remove(source + ".data")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
