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
