"""MAC counting (alpha): hand-computed counts and an independent counter (onnx-tool) agree."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engines.build import build_bundle
from engines.flops import count_macs, macs_by_node
from engines.tiny_model import (
    CUTS,
    EXITS,
    HAND_MACS,
    HAND_STAGE_MACS,
    make_tiny_multi_exit,
)


def test_tiny_graph_macs_match_hand_count():
    """Conv/Gemm/MatMul MACs (+1 per output for a fused bias) per node equal the hand count; every
    other op counts zero."""
    per_node = {name: macs for name, _, macs in macs_by_node(make_tiny_multi_exit())}
    for name, macs in per_node.items():
        assert macs == HAND_MACS.get(name, 0), name


def test_bundle_stage_flops_match_hand_count(tmp_path):
    """build writes per-stage flops equal to the hand-counted stage sums."""
    src = str(tmp_path / "tiny.onnx")
    onnx.save(make_tiny_multi_exit(), src)
    bundle = build_bundle(src, list(CUTS), EXITS, str(tmp_path / "b"))
    assert tuple(s.flops for s in bundle.stages) == HAND_STAGE_MACS


def _single(op, x_shape, w_shape, **attrs):
    w = numpy_helper.from_array(np.zeros(w_shape, dtype=np.float32), "w")
    node = helper.make_node(op, ["x", "w"], ["y"], name="n", **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_grouped_strided_conv_and_transpose_conv_hand_counts():
    """Grouped conv: out elements * (C_in/group) * k*k; ConvTranspose: in elements * (M/group) * k*k
    (no bias inputs here)."""
    grouped = _single("Conv", [1, 8, 10, 10], [16, 2, 3, 3], group=4, strides=[2, 2], pads=[1, 1, 1, 1])
    assert count_macs(grouped) == (16 * 5 * 5) * (2 * 3 * 3)
    deconv = _single("ConvTranspose", [1, 4, 5, 5], [4, 6, 2, 2], strides=[2, 2])
    assert count_macs(deconv) == (4 * 5 * 5) * (6 * 2 * 2)
    matmul = _single("MatMul", ["N", 7, 5], [5, 3])
    assert count_macs(matmul) == 7 * 3 * 5  # batch dimension fixed to 1


def _onnx_tool_macs(path):
    onnx_tool = pytest.importorskip("onnx_tool", reason="onnx-tool (dev extra) not installed")
    m = onnx_tool.Model(path)
    g = m.graph
    name = g.input[0]
    g.shape_infer({name: np.zeros([1] + list(g.tensormap[name].shape[1:]), dtype=np.float32)})
    g.profile()
    macs = {}
    for name in g.nodemap:
        node = g.nodemap[name]
        if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            macs[name] = int(np.sum(node.macs))
    return macs


def test_stage_flops_agree_with_onnx_tool_within_5_percent(tmp_path):
    """Per-stage flops of the shipped demo bundle and the tiny bundle agree with onnx-tool's count
    of the same MAC operators within 5%."""
    from engines.bundle import load_bundle
    from engines.demo import DEMO_BUNDLE_DIR

    src = str(tmp_path / "tiny.onnx")
    onnx.save(make_tiny_multi_exit(), src)
    bundles = [build_bundle(src, list(CUTS), EXITS, str(tmp_path / "b")), load_bundle(DEMO_BUNDLE_DIR)]
    for bundle in bundles:
        for stage in bundle.stages:
            theirs = sum(_onnx_tool_macs(stage.onnx_path).values())
            assert theirs > 0
            assert abs(stage.flops - theirs) <= 0.05 * theirs, (bundle.name, stage.index, stage.flops, theirs)


def _resnet101_graph():
    """ResNet-101 (torchvision layout: stride in the 3x3 conv) with weights as shaped graph inputs,
    so the graph carries shapes but no weight data."""
    nodes, inputs = [], [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 224, 224])]
    count = [0]

    def conv(x, cin, cout, k, stride=1, relu=True):
        count[0] += 1
        w, y = "w%d" % count[0], "t%d" % count[0]
        inputs.append(helper.make_tensor_value_info(w, TensorProto.FLOAT, [cout, cin, k, k]))
        nodes.append(helper.make_node("Conv", [x, w], [y], strides=[stride, stride], pads=[k // 2] * 4))
        if relu:
            nodes.append(helper.make_node("Relu", [y], [y + "r"]))
            return y + "r"
        return y

    t = conv("x", 3, 64, 7, 2)
    nodes.append(helper.make_node("MaxPool", [t], ["pool"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4))
    t, cin = "pool", 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 23, 2), (512, 3, 2)):
        for b in range(blocks):
            s = stride if b == 0 else 1
            y = conv(conv(conv(t, cin, width, 1), width, width, 3, s), width, width * 4, 1, relu=False)
            short = conv(t, cin, width * 4, 1, s, relu=False) if b == 0 else t
            nodes.append(helper.make_node("Add", [y, short], [y + "a"]))
            nodes.append(helper.make_node("Relu", [y + "a"], [y + "o"]))
            t, cin = y + "o", width * 4
    nodes.append(helper.make_node("GlobalAveragePool", [t], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"]))
    inputs += [helper.make_tensor_value_info("fc_w", TensorProto.FLOAT, [1000, 2048]),
               helper.make_tensor_value_info("fc_b", TensorProto.FLOAT, [1000])]
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1))
    g = helper.make_graph(nodes, "resnet101", inputs,
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_resnet101_counts_about_7_8_giga_macs():
    """The documented convention: ResNet-101 at 224x224 is about 7.8 G MACs (the DTO-EE paper's
    stage costs sum to that)."""
    macs = count_macs(_resnet101_graph())
    assert abs(macs - 7.8e9) <= 0.01 * 7.8e9, macs
