"""A tiny multi-exit ONNX graph written with ``onnx.helper`` (random weights, no training).

Used to exercise ``build``, the backends and the cut checks without the demo model, and as a
hand-countable graph for the MAC convention. Layout (input ``x``, shape (N, 1, 8, 8))::

    x -> Conv(1->4, 3x3, pad 1) -> Relu = "c1" -> GlobalAveragePool -> Flatten -> Gemm(4->3) = "e1"
    c1 -> Conv(4->8, 3x3, stride 2, pad 1) -> Relu = "c2" -> GAP -> Flatten -> Gemm(8->3) = "e2"
    c2 -> Flatten -> MatMul(128->3) -> Add(bias) = "out"

With ``skip=True`` the final head also adds a projection of ``c1``, so a cut at ``c2`` no
longer separates the graph.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from engines.build import build_bundle

INPUT = "x"
CUTS = ("c1", "c2")
EXITS = {1: "e1", 2: "e2"}
FINAL = "out"

# Multiply-accumulates per node at batch 1, counted by hand (the MAC convention of engines.flops)
# (a fused bias adds one per output element; the separate Add after the MatMul counts zero)
HAND_MACS = {
    "conv1": 8 * 8 * 4 * (1 * 3 * 3 + 1),  # output 4x8x8, each 1*3*3 MACs + bias
    "gemm1": 3 * (4 + 1),
    "conv2": 4 * 4 * 8 * (4 * 3 * 3 + 1),  # output 8x4x4, each 4*3*3 MACs + bias
    "gemm2": 3 * (8 + 1),
    "matmul3": 3 * 128,
}
HAND_STAGE_MACS = (HAND_MACS["conv1"] + HAND_MACS["gemm1"],
                   HAND_MACS["conv2"] + HAND_MACS["gemm2"],
                   HAND_MACS["matmul3"])


def make_tiny_multi_exit(seed: int = 0, skip: bool = False, opset: int = 17) -> onnx.ModelProto:
    """Build the graph above with weights drawn from a seeded normal distribution."""
    rng = np.random.default_rng(seed)

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.5).astype(np.float32), name)

    inits = [w("w1", 4, 1, 3, 3), w("b1", 4), w("we1", 3, 4), w("be1", 3),
             w("w2", 8, 4, 3, 3), w("b2", 8), w("we2", 3, 8), w("be2", 3),
             w("w3", 128, 3), w("b3", 3),
             numpy_helper.from_array(np.array([-1, 128], dtype=np.int64), "flat_shape")]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["conv1_out"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv1_out"], ["c1"], name="relu1"),
        helper.make_node("GlobalAveragePool", ["c1"], ["gap1"], name="gap1"),
        helper.make_node("Flatten", ["gap1"], ["flat1"], name="flat1"),
        helper.make_node("Gemm", ["flat1", "we1", "be1"], ["e1"], name="gemm1", transB=1),
        helper.make_node("Conv", ["c1", "w2", "b2"], ["conv2_out"], name="conv2",
                         pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["conv2_out"], ["c2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["c2"], ["gap2"], name="gap2"),
        helper.make_node("Flatten", ["gap2"], ["flat2"], name="flat2"),
        helper.make_node("Gemm", ["flat2", "we2", "be2"], ["e2"], name="gemm2", transB=1),
        helper.make_node("Reshape", ["c2", "flat_shape"], ["flat3"], name="flat3"),
        helper.make_node("MatMul", ["flat3", "w3"], ["mm3"], name="matmul3"),
    ]
    if skip:
        inits.append(w("ws", 3, 4))
        nodes += [
            helper.make_node("Gemm", ["flat1", "ws"], ["skip"], name="skip_proj", transB=1),
            helper.make_node("Add", ["mm3", "b3"], ["pre"], name="add3"),
            helper.make_node("Add", ["pre", "skip"], [FINAL], name="add_skip"),
        ]
    else:
        nodes.append(helper.make_node("Add", ["mm3", "b3"], [FINAL], name="add3"))
    graph = helper.make_graph(
        nodes, "tiny_multi_exit",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 3]) for n in ("e1", "e2", FINAL)],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="edge-agent tiny")
    model.ir_version = 8  # readable by onnxruntime 1.15+ (the Python 3.8 pin)
    onnx.checker.check_model(model)
    return model


def build_tiny_bundle(directory: str, seed: int = 0):
    """Write the tiny graph to ``directory/tiny.onnx`` and cut it into ``directory/bundle``
    (3 stages, exits at stages 1 and 2); returns the loaded ``Bundle``."""
    src = os.path.join(directory, "tiny.onnx")
    onnx.save(make_tiny_multi_exit(seed=seed), src)
    return build_bundle(src, list(CUTS), dict(EXITS), os.path.join(directory, "bundle"))
