"""A ResNet-18-shaped backbone written with ``onnx.helper`` (random weights, no exits).

Used by the ``heads`` tests and ``bench/heads.py`` as a stand-in for a torchvision export: the
same layer layout and skip connections, any width and input size. Block outputs are named
``layerL.B`` (``layer2.1`` ends layer 2; block boundaries are valid cuts); inside a block the
first ReLU is ``layerL.B.relu1`` (crossed by the block's skip connection: not a valid cut).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CLASSES = 10  # width of the classifier ``logits`` by default


def make_resnet18(size: int = 32, widths=(8, 16, 32, 64), seed: int = 0,
                  classes: int = CLASSES) -> onnx.ModelProto:
    """ResNet-18's layout with random weights (narrow layers by default): 7x7/2 stem + BN + ReLU + 3x3/2
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
    fc = [const("fc.weight", rng.normal(0, 0.1, (classes, cin))), const("fc.bias", np.zeros(classes))]
    nodes.append(helper.make_node("Gemm", ["flat"] + fc, ["logits"], transB=1))
    graph = helper.make_graph(nodes, "resnet18_shaped",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                             ["batch", 3, size, size])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                             ["batch", classes])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
