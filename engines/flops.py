"""Compute per task (alpha) counted from an ONNX graph.

Convention: ``flops`` in this project are **multiply-accumulates (MACs) at batch 1** of the
operators that carry the arithmetic of a CNN or transformer: Conv, ConvTranspose, Gemm and
MatMul, plus one per output element for a bias fused into Conv/ConvTranspose/Gemm (as onnx-tool
counts them). Activations, pooling, normalisation and separate element-wise operators count
zero. This is the convention behind the usual "ResNet-101: 7.8 G" figure (its convolutions have
no bias; the DTO-EE paper's stages sum to about that), so published stage costs and ours can be
compared directly. One MAC is one multiply plus one add; multiply by 2 for "floating-point
operations".
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, shape_inference

from agent.errors import UsageError, first_line

MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")

Shape = Tuple[int, ...]


def fix_batch(model: onnx.ModelProto, batch: int = 1) -> onnx.ModelProto:
    """Copy of ``model`` whose graph inputs have a fixed first (batch) dimension.

    Only dimensions that are dynamic (``batch_is_dynamic``) are fixed; shape inference then gives
    concrete shapes for every tensor whose size depends only on the batch.
    """
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    init_names = {t.name for t in fixed.graph.initializer}
    for inp in fixed.graph.input:
        if inp.name in init_names or not inp.type.HasField("tensor_type"):
            continue
        dims = inp.type.tensor_type.shape.dim
        if len(dims) and batch_is_dynamic(dims[0]):
            dims[0].Clear()
            dims[0].dim_value = batch
    for vi in list(fixed.graph.output) + list(fixed.graph.value_info):
        # a declared -1 is an unknown size: left to shape inference, as 'N' would be
        for d in vi.type.tensor_type.shape.dim if vi.type.HasField("tensor_type") else ():
            if d.HasField("dim_value") and d.dim_value < 0:
                d.Clear()
    return fixed


def batch_is_dynamic(dim) -> bool:
    """Whether an ONNX input's first dimension takes any batch size: symbolic ('N'), unknown,
    or -1 (some exporters write that; onnxruntime and TensorRT read it as dynamic)."""
    return not dim.HasField("dim_value") or dim.dim_value < 0


def tensor_types(model: onnx.ModelProto) -> Dict[str, Tuple[Optional[Shape], int]]:
    """Map every tensor name to (shape or None when not fully known, ONNX element type).

    Runs ONNX shape inference on the model as given (call ``fix_batch`` first for batch 1).
    """
    try:
        inferred = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as exc:  # onnx raises several types here; all mean "cannot infer"
        raise UsageError("shape inference failed on the ONNX graph: %s" % first_line(exc))
    out: Dict[str, Tuple[Optional[Shape], int]] = {}
    for init in inferred.graph.initializer:
        out[init.name] = (tuple(int(d) for d in init.dims), init.data_type)
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        if not vi.type.HasField("tensor_type"):
            continue
        tt = vi.type.tensor_type
        shape: Optional[Shape] = None
        if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            shape = tuple(int(d.dim_value) for d in tt.shape.dim)
        if vi.name not in out or out[vi.name][0] is None:
            out[vi.name] = (shape, tt.elem_type)
    return out


def numpy_dtype(elem_type: int) -> str:
    """numpy dtype name of an ONNX element type (e.g. ``TensorProto.FLOAT`` -> "float32")."""
    if elem_type == TensorProto.UNDEFINED:
        raise UsageError("tensor has no element type")
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name


def _need(shapes, name: str, node: onnx.NodeProto) -> Shape:
    shape = shapes.get(name, (None, 0))[0]
    if shape is None:
        raise UsageError("cannot count MACs of %s node %r: shape of tensor %r is unknown"
                         % (node.op_type, node.name or node.output[0], name))
    return shape


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _bias(node: onnx.NodeProto, y: Shape, position: int) -> int:
    """One accumulate per output element when the node has a bias input at ``position``."""
    has_bias = len(node.input) > position and node.input[position] != ""
    return int(np.prod(y, dtype=np.int64)) if has_bias else 0


def node_macs(node: onnx.NodeProto, shapes) -> int:
    """Multiply-accumulates of one node (0 for operators outside ``MAC_OPS``)."""
    op = node.op_type
    if op == "Conv":
        # every output element: (C_in / group) * prod(kernel) MACs; W is (M, C/group, k...)
        y = _need(shapes, node.output[0], node)
        w = _need(shapes, node.input[1], node)
        return int(np.prod(y, dtype=np.int64) * np.prod(w[1:], dtype=np.int64)) + _bias(node, y, 2)
    if op == "ConvTranspose":
        # every input element is scattered into (M / group) * prod(kernel) outputs; W is (C, M/group, k...)
        x = _need(shapes, node.input[0], node)
        w = _need(shapes, node.input[1], node)
        y = _need(shapes, node.output[0], node)
        return int(np.prod(x, dtype=np.int64) * np.prod(w[1:], dtype=np.int64)) + _bias(node, y, 2)
    if op == "Gemm":
        a = _need(shapes, node.input[0], node)
        y = _need(shapes, node.output[0], node)
        k = a[0] if _attr(node, "transA", 0) else a[1]
        return int(np.prod(y, dtype=np.int64) * k) + _bias(node, y, 2)
    if op == "MatMul":
        a = _need(shapes, node.input[0], node)
        y = _need(shapes, node.output[0], node)
        return int(np.prod(y, dtype=np.int64) * a[-1])
    return 0


def macs_by_node(model: onnx.ModelProto, batch: int = 1) -> List[Tuple[str, str, int]]:
    """(node name, op type, MACs) for every node of ``model`` at the given batch size."""
    shapes = tensor_types(fix_batch(model, batch))
    return [(n.name or n.output[0], n.op_type, node_macs(n, shapes)) for n in model.graph.node]


def count_macs(model: onnx.ModelProto, batch: int = 1) -> int:
    """Total multiply-accumulates of ``model`` per call at ``batch`` (default 1 = per task)."""
    return sum(m for _, _, m in macs_by_node(model, batch))

