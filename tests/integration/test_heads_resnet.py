"""heads + build on a ResNet-18-shaped backbone: heads at block boundaries build, a cut inside a
residual block is refused, by `heads` with the very message `build` gives."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from agent.cli import main as cli
from engines.bundle import load_bundle
from engines.heads_resnet import CLASSES, make_resnet18


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    """The backbone file and a labelled set (balanced random labels, 20 per class)."""
    d = tmp_path_factory.mktemp("resnet")
    onnx.save(make_resnet18(), str(d / "resnet18.onnx"))
    rng = np.random.default_rng(1)
    np.savez(d / "data.npz", x=rng.integers(0, 256, size=(200, 3, 32, 32)).astype(np.uint8),
             y=np.arange(200) % CLASSES)
    return d


def test_heads_at_block_boundaries_build(resnet, capsys):
    """Heads after layer 1 and layer 2 (block boundaries, no skip connection crossing): `heads`
    writes a graph that `build` cuts as printed into 3 stages with exits at stages 1 and 2."""
    out = resnet / "multi_exit.onnx"
    assert cli(["heads", "--onnx", str(resnet / "resnet18.onnx"), "--at", "layer1.1,layer2.1",
                "--data", str(resnet / "data.npz"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    line = [ln for ln in printed.splitlines() if ln.startswith("next: ")][0]
    argv = line[len("next: edge-agent "):].replace("BUNDLE", str(resnet / "bundle")).split()
    assert argv[:2] == ["build", "--onnx"]
    assert cli(argv) == 0
    bundle = load_bundle(str(resnet / "bundle"))
    assert bundle.num_stages == 3 and bundle.early_exit_stages == (1, 2)
    assert [s.feature_output for s in bundle.stages] == ["layer1.1", "layer2.1", None]
    assert [s.logits_output for s in bundle.stages] == ["exit1", "exit2", "logits"]


def test_a_cut_inside_a_residual_block_is_refused_as_build_refuses_it(resnet, capsys):
    """A head inside a block (after its first ReLU, crossed by the block's skip connection) is
    refused by `heads` before any training, with the message `build` gives for the same cut
    (naming the tensor that crosses it), ``--at`` for ``--cuts``."""
    out = resnet / "inside.onnx"
    assert cli(["heads", "--onnx", str(resnet / "resnet18.onnx"), "--at", "layer2.0.relu1",
                "--data", str(resnet / "data.npz"), "--out", str(out)]) == 2
    heads_err = capsys.readouterr().err.strip().splitlines()
    assert cli(["build", "--onnx", str(resnet / "resnet18.onnx"), "--cuts", "layer2.0.relu1",
                "--out", str(resnet / "inside_bundle")]) == 2
    build_err = capsys.readouterr().err.strip().splitlines()
    assert len(heads_err) == len(build_err) == 1
    assert "crosses the cut 'layer2.0.relu1'" in heads_err[0] and "a skip connection" in heads_err[0]
    # the same line, each naming its own option
    assert (heads_err[0].split(": error: ", 1)[1].replace("--at:", "--cuts:")
            == build_err[0].split(": error: ", 1)[1])
    assert not out.exists()
