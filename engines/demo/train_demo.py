"""Train, export and package the demo multi-exit CNN on Fashion-MNIST (reproducible).

Run from the repository root (needs the ``train`` extra: torch, onnxscript)::

    OMP_NUM_THREADS=1 python3 engines/demo/train_demo.py

Data comes only from Debian's ``dataset-fashion-mnist`` package (``apt-get install
dataset-fashion-mnist``, files under /usr/share/datasets/fashion-mnist); nothing is downloaded.
Steps: train the network below (seeded, one thread), export the multi-exit ONNX graph with every
tensor inline, write the replay set (held-out test images), then call ``edge-agent build`` and
``edge-agent profile`` exactly as a user would.

The network has four stages and an exit head after each of the first three. The heads are
deliberately small (average pooling + one linear layer) so the accuracy trade-off between
an early exit and the final head is clearly visible.
"""

from __future__ import annotations

import argparse
import gzip
import os
import subprocess
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

DATA_DIR = "/usr/share/datasets/fashion-mnist"
HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 20240601
NUM_REPLAY = 2000  # first images of the official test split, never used for training
NUM_CLASSES = 10
# names of the tensors that the graph exposes; the cut tensors become internal tensors again
EXIT_OUTPUTS = ("exit1", "exit2", "exit3")
FINAL_OUTPUT = "logits"
CUT_TENSORS = ("feat1", "feat2", "feat3")
INPUT_NAME = "image"


def read_idx(path: str) -> np.ndarray:
    """Read one gzip'd IDX file (the MNIST container format) into a uint8 array."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(split: str):
    """Return (images uint8 (N,28,28), labels int64 (N,)) of ``train`` or ``t10k``."""
    images = os.path.join(DATA_DIR, "%s-images-idx3-ubyte.gz" % split)
    labels = os.path.join(DATA_DIR, "%s-labels-idx1-ubyte.gz" % split)
    for p in (images, labels):
        if not os.path.exists(p):
            sys.exit("missing %s: install Debian's dataset with "
                     "`sudo apt-get install dataset-fashion-mnist` (this script never downloads)" % p)
    return read_idx(images), read_idx(labels).astype(np.int64)


def make_model():
    from torch import nn

    class MultiExitCNN(nn.Module):
        """Four stages; heads after stages 1-3 and the final classifier after stage 4."""

        def __init__(self):
            super().__init__()
            self.stage1 = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
            self.stage2 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
            self.stage3 = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU())
            self.stage4 = nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                        nn.Flatten(), nn.Linear(64 * 3 * 3, 128), nn.ReLU(),
                                        nn.Linear(128, NUM_CLASSES))
            # linear heads on coarsely pooled features: cheap, and weaker the earlier they sit
            self.exit1 = nn.Sequential(nn.AvgPool2d(7), nn.Flatten(), nn.Linear(8 * 2 * 2, NUM_CLASSES))
            self.exit2 = nn.Sequential(nn.AvgPool2d(3), nn.Flatten(), nn.Linear(16 * 2 * 2, NUM_CLASSES))
            self.exit3 = nn.Sequential(nn.AvgPool2d(3), nn.Flatten(), nn.Linear(32 * 2 * 2, NUM_CLASSES))

        def forward(self, x):
            f1 = self.stage1(x)
            f2 = self.stage2(f1)
            f3 = self.stage3(f2)
            return (self.exit1(f1), self.exit2(f2), self.exit3(f3), self.stage4(f3), f1, f2, f3)

    return MultiExitCNN()


def train(model, x, y, epochs: int, batch: int, log) -> None:
    """Plain Adam on the sum of every head's cross-entropy (all heads trained jointly)."""
    import torch
    import torch.nn.functional as F

    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(SEED)
    n = x.shape[0]
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        t0, total = time.monotonic(), 0.0
        for i in range(0, n, batch):
            idx = order[i:i + batch]
            outs = model(x[idx])
            loss = sum(F.cross_entropy(o, y[idx]) for o in outs[:4])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        log("epoch %d: loss %.4f (%.0f s)" % (epoch + 1, total / n, time.monotonic() - t0))


def export_onnx(model, path: str) -> None:
    """Export the multi-exit graph with every weight inline (one self-contained file).

    The TorchScript exporter (``dynamo=False``) is used because it keeps the tensor names given
    in ``output_names``; the cut tensors are exported as extra outputs only to pin their names
    and are then removed from the graph outputs. If that exporter is unavailable the dynamo one
    is used with ``external_data=False``; in both cases the file is re-loaded (with any external
    data) and saved with all tensors inline.
    """
    import onnx
    import torch

    model.eval()
    dummy = torch.zeros(1, 1, 28, 28)
    names = list(EXIT_OUTPUTS) + [FINAL_OUTPUT] + list(CUT_TENSORS)
    tmp = path + ".export.onnx"
    try:
        torch.onnx.export(model, (dummy,), tmp, dynamo=False, input_names=[INPUT_NAME],
                          output_names=names, opset_version=17,
                          dynamic_axes={n: {0: "batch"} for n in [INPUT_NAME] + names})
    except (TypeError, RuntimeError):
        batch = torch.export.Dim("batch", min=1, max=4096)
        torch.onnx.export(model, (dummy,), tmp, dynamo=True, external_data=False,
                          input_names=[INPUT_NAME], output_names=names,
                          dynamic_shapes=({0: batch},))
    m = onnx.load(tmp, load_external_data=True)
    keep = [o for o in m.graph.output if o.name not in CUT_TENSORS]
    del m.graph.output[:]
    m.graph.output.extend(keep)
    m.producer_name = "edge-agent demo"
    onnx.checker.check_model(m)
    onnx.save_model(m, path, save_as_external_data=False)
    for leftover in (tmp, tmp + ".data"):
        if os.path.exists(leftover):
            os.remove(leftover)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6, help="training epochs (default 6)")
    parser.add_argument("--batch", type=int, default=128, help="minibatch size (default 128)")
    parser.add_argument("--out", default=HERE, help="where to write multi_exit.onnx, replay.npz "
                        "and bundle/ (default: this package folder)")
    args = parser.parse_args(argv)

    import torch

    def log(msg):
        print("train_demo: " + msg, flush=True)

    torch.manual_seed(SEED)
    np.random.seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    xtr, ytr = load_split("train")
    xte, yte = load_split("t10k")
    x = torch.from_numpy(xtr.astype(np.float32)[:, None] / 255.0)
    y = torch.from_numpy(ytr)
    model = make_model()
    t0 = time.monotonic()
    train(model, x, y, args.epochs, args.batch, log)
    log("trained in %.0f s" % (time.monotonic() - t0))

    os.makedirs(args.out, exist_ok=True)
    onnx_path = os.path.join(args.out, "multi_exit.onnx")
    export_onnx(model, onnx_path)
    replay_path = os.path.join(args.out, "replay.npz")
    np.savez_compressed(replay_path, x=(xte[:NUM_REPLAY].astype(np.float32)[:, None] / 255.0),
                        y=yte[:NUM_REPLAY])
    log("wrote %s and %s" % (onnx_path, replay_path))

    def cli(argv):
        # the same commands a user types, run as the console script would run them
        root = os.path.dirname(os.path.dirname(HERE))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH", "")) if p))
        return subprocess.call([sys.executable, "-m", "agent"] + argv, env=env)

    bundle_dir = os.path.join(args.out, "bundle")
    status = cli(["build", "--onnx", onnx_path, "--cuts", ",".join(CUT_TENSORS),
                  "--exits", ",".join("%d:%s" % (i + 1, n) for i, n in enumerate(EXIT_OUTPUTS)),
                  "--final", FINAL_OUTPUT, "--name", "fashion-mnist-4stage", "--out", bundle_dir])
    if status:
        return status
    return cli(["profile", "--bundle", bundle_dir, "--data", replay_path])


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
    sys.exit(main())
