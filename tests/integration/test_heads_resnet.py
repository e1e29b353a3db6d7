"""heads + build on a ResNet-18-shaped backbone: heads at block boundaries build, a cut inside a
residual block is refused, by `heads` with the very message `build` gives."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from agent.cli import main as cli
from engines.bundle import load_bundle

CLASSES = 10


def make_resnet18(size: int = 32, widths=(8, 16, 32, 64), seed: int = 0) -> onnx.ModelProto:
    """ResNet-18's layout with random weights and narrow layers: 7x7/2 stem + BN + ReLU + 3x3/2
    max pool, four layers of two basic blocks (3x3 conv-BN-ReLU, 3x3 conv-BN, + identity or a
    1x1/2 projection, ReLU), global average pooling, a linear classifier ``logits``. Block
    outputs are named ``layerL.B`` (e.g. ``layer2.1`` ends layer 2); inside a block, the first
    ReLU is ``layerL.B.relu1``."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def conv_bn(name, x, cin, cout, k, stride):
        w = const(name + ".weight", rng.normal(0, np.sqrt(2.0 / (cin * k * k)), size=(cout, cin, k, k)))
        nodes.append(helper.make_node("Conv", [x, w], [name + ".conv"], kernel_shape=[k, k],
                                      strides=[stride, stride], pads=[k // 2] * 4))
        bn = [const(name + ".bn." + p, v) for p, v in (
            ("scale", rng.uniform(0.5, 1.5, cout)), ("bias", rng.normal(0, 0.1, cout)),
            ("mean", rng.normal(0, 0.1, cout)), ("var", rng.uniform(0.5, 1.5, cout)))]
        nodes.append(helper.make_node("BatchNormalization", [name + ".conv"] + bn, [name + ".bn"]))
        return name + ".bn"

    t = conv_bn("stem", "image", 3, widths[0], 7, 2)
    nodes.append(helper.make_node("Relu", [t], ["stem.relu"]))
    nodes.append(helper.make_node("MaxPool", ["stem.relu"], ["stem.pool"], kernel_shape=[3, 3],
                                  strides=[2, 2], pads=[1, 1, 1, 1]))
    t, cin = "stem.pool", widths[0]
    for layer, cout in enumerate(widths, start=1):
        for block in range(2):
            name = "layer%d.%d" % (layer, block)
            stride = 2 if layer > 1 and block == 0 else 1
            a = conv_bn(name + ".a", t, cin, cout, 3, stride)
            nodes.append(helper.make_node("Relu", [a], [name + ".relu1"]))
            b = conv_bn(name + ".b", name + ".relu1", cout, cout, 3, 1)
            skip = t if stride == 1 and cin == cout else conv_bn(name + ".down", t, cin, cout, 1, stride)
            nodes.append(helper.make_node("Add", [b, skip], [name + ".add"]))
            nodes.append(helper.make_node("Relu", [name + ".add"], [name]))
            t, cin = name, cout
    nodes.append(helper.make_node("GlobalAveragePool", [t], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"]))
    nodes.append(helper.make_node("Gemm", ["flat", const("fc.weight", rng.normal(0, 0.1, (CLASSES, cin))),
                                           const("fc.bias", np.zeros(CLASSES))], ["logits"], transB=1))
    graph = helper.make_graph(nodes, "resnet18_shaped",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, size, size])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


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
    refused by `heads` before any training, with the message `build` gives for the same cut."""
    out = resnet / "inside.onnx"
    assert cli(["heads", "--onnx", str(resnet / "resnet18.onnx"), "--at", "layer2.0.relu1",
                "--data", str(resnet / "data.npz"), "--out", str(out)]) == 2
    heads_err = capsys.readouterr().err.strip().splitlines()
    assert cli(["build", "--onnx", str(resnet / "resnet18.onnx"), "--cuts", "layer2.0.relu1",
                "--out", str(resnet / "inside_bundle")]) == 2
    build_err = capsys.readouterr().err.strip().splitlines()
    assert len(heads_err) == len(build_err) == 1
    assert "a skip connection crosses it" in heads_err[0]
    assert heads_err[0].split(": error: ", 1)[1] == build_err[0].split(": error: ", 1)[1]
    assert not out.exists()
