"""The ONNX side of ``edge-agent heads``: reading intermediate tensors, pooling them, head nodes.

A head sits on one intermediate tensor of the backbone, by its rank:

* (batch, channels, height, width): average pooled to a ``grid`` x ``grid`` map (global average
  pooling when ``grid`` is 1; otherwise ``AveragePool`` with kernel = stride = size // grid after a
  ``Slice`` that leaves out the remainder of rows/columns at the bottom/right, if any);
* (batch, tokens, features): mean over the tokens (``ReduceMean`` on axis 1);
* (batch, features): used as it is.

Then ``linear`` (Flatten + Gemm), ``mlp`` (Flatten + Gemm + Relu + Gemm) or ``conv`` (1x1 Conv +
Relu on the pooled map, Flatten + Gemm; images only). The numpy pooling used for training
(``pool``) computes exactly what the head's first nodes compute in the graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from agent.errors import UsageError, first_line
from engines.flops import count_macs
from engines.heads_weights import session_weights

HEAD_KINDS = ("linear", "mlp", "conv")


class HeadsError(UsageError):
    """The backbone, the tensors named for heads or the labelled data are unusable."""


@dataclass(frozen=True)
class HeadSpec:
    """What every head looks like."""

    kind: str = "linear"  # linear | mlp | conv
    grid: int = 1  # pooled map of grid x grid cells (1 = global average pooling)
    hidden: int = 32  # hidden units (mlp) or 1x1-conv channels (conv)


def check_poolable(name: str, shape: Sequence[int], spec: HeadSpec) -> None:
    """Refuse a tensor (per-sample ``shape`` with batch first) that a head cannot pool."""
    rank = len(shape)
    if rank not in (2, 3, 4) or any(int(d) < 1 for d in shape[1:]):
        raise HeadsError("tensor %r has shape %s: a head needs (batch, features), (batch, tokens, "
                         "features) or (batch, channels, height, width)" % (name, tuple(shape)))
    if spec.kind == "conv" and rank != 4:
        raise HeadsError("--head conv needs a (batch, channels, height, width) tensor; %r has shape %s"
                         % (name, tuple(shape)))
    if rank == 4 and spec.grid > min(shape[2], shape[3]):
        raise HeadsError("--grid %d is larger than tensor %r's %dx%d map"
                         % (spec.grid, name, shape[2], shape[3]))


def pool(t: np.ndarray, grid: int) -> np.ndarray:
    """What a head's pooling nodes compute: (N, C, g, g) for an image tensor, (N, D) otherwise."""
    if t.ndim == 4:
        if grid == 1:
            return t.mean(axis=(2, 3), keepdims=True, dtype=np.float64).astype(np.float32)
        n, c, h, w = t.shape
        kh, kw = h // grid, w // grid
        cut = t[:, :, :grid * kh, :grid * kw].reshape(n, c, grid, kh, grid, kw)
        return cut.mean(axis=(3, 5), dtype=np.float64).astype(np.float32)
    if t.ndim == 3:
        return t.mean(axis=1, dtype=np.float64).astype(np.float32)
    return t.astype(np.float32, copy=False)


def fit_input(pooled: np.ndarray, kind: str) -> np.ndarray:
    """Pooled features in the layout ``engines.heads_fit`` trains on: (N, D) flattened in ONNX
    ``Flatten`` order for linear/mlp, (N, cells, C) for conv."""
    n = pooled.shape[0]
    if kind == "conv":
        return pooled.transpose(0, 2, 3, 1).reshape(n, -1, pooled.shape[1])
    return pooled.reshape(n, -1)


def with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """Copy of ``model`` whose graph outputs are exactly ``names`` (intermediate tensors exposed)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    known = {vi.name: vi for vi in list(model.graph.value_info) + list(model.graph.output)}
    del out.graph.output[:]
    for name in names:
        if name in known:
            out.graph.output.append(known[name])
        else:
            out.graph.output.append(helper.make_empty_tensor_value_info(name))
    return out


def run_tensors(model: onnx.ModelProto, names: Sequence[str], x: np.ndarray, threads: int,
                batch: int, fixed: bool, path: str, on_batch,
                weights_dir: Optional[str] = None, session=None):
    """Run ``x`` through ``model`` in batches with ``names`` as the outputs; calls
    ``on_batch(start, [arrays])`` per batch and returns the onnxruntime session, which a later
    call on the same model and names takes as ``session`` (a backbone's weights are then loaded
    once). A graph with a ``fixed`` batch size gets its last batch padded (and the padding
    dropped). A graph with a dynamic batch that still runs only at batch 1 (a batch size fixed
    inside, as by a Reshape to (1, ...)) is run one sample at a time. With ``weights_dir``, the
    weights ``model`` keeps in side files (there) are given to onnxruntime mapped from them
    (``engines.heads_weights``), never serialized with the graph. onnxruntime failures and side
    files that cannot give a weight become one-line HeadsErrors."""
    sess = session if session is not None else _session(model, names, threads, path, weights_dir)
    feed = sess.get_inputs()[0].name
    one_by_one = False
    for start in range(0, len(x), batch):
        chunk = x[start:start + batch]
        n = len(chunk)
        if fixed and n < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])
        if one_by_one:
            arrays = _one_by_one(sess, names, feed, chunk, path, start, None)
        else:
            try:
                arrays = sess.run(list(names), {feed: chunk})
            except Exception as exc:
                if fixed or len(chunk) == 1:
                    raise HeadsError("onnxruntime cannot run %s on samples %d..%d: %s"
                                     % (path, start, start + n - 1, first_line(exc)))
                # a graph that runs only at batch 1 still gives every sample's tensors
                arrays = _one_by_one(sess, names, feed, chunk, path, start, exc)
                one_by_one = True
        for name, a in zip(names, arrays):
            if a.ndim == 0 or a.shape[0] != len(chunk):
                raise HeadsError("tensor %r has shape %s for a batch of %d: it has no batch "
                                 "dimension a head can read" % (name, a.shape, len(chunk)))
        on_batch(start, [a[:n] for a in arrays])
    return sess


def _session(model: onnx.ModelProto, names: Sequence[str], threads: int, path: str,
             weights_dir: Optional[str]):
    """An onnxruntime session (CPU) of ``model`` with ``names`` as its outputs."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 4  # a failed run is reported as one line; onnxruntime's own block only repeats it
    graph = with_outputs(model, names)
    weights: list = []
    if weights_dir is not None:
        try:
            weight_names, weights = session_weights(graph, weights_dir)
        except (OSError, ValueError) as exc:  # a side file unreadable or cut short
            raise HeadsError("%s: cannot read the model (%s)" % (path, first_line(exc)))
        if weights:
            so.add_external_initializers(weight_names, weights)
    try:
        return ort.InferenceSession(graph.SerializeToString(), sess_options=so,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NotImplemented types
        raise HeadsError("onnxruntime cannot load %s: %s" % (path, first_line(exc)))


def _one_by_one(sess, names: Sequence[str], feed: str, chunk: np.ndarray, path: str, start: int,
                batch_exc: Optional[Exception]) -> List[np.ndarray]:
    """``chunk`` run one sample at a time, joined. Should the first sample fail after
    ``batch_exc`` (the whole batch's failure), the graph fails at any batch size: that error."""
    rows = []
    for i in range(len(chunk)):
        try:
            rows.append(sess.run(list(names), {feed: chunk[i:i + 1]}))
        except Exception as exc:
            first = i == 0 and batch_exc is not None
            lo, hi = (start, start + len(chunk) - 1) if first else (start + i, start + i)
            raise HeadsError("onnxruntime cannot run %s on samples %d..%d: %s"
                             % (path, lo, hi, first_line(batch_exc if first else exc)))
    return [np.concatenate([r[k] for r in rows]) for k in range(len(names))]


def only_output(model: onnx.ModelProto, final: str) -> onnx.ModelProto:
    """Copy of ``model`` whose one graph output is ``final``, without the nodes, initializers and
    shape annotations nothing leads from to it any more (such as other exit heads)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    keep_vi = [o for o in g.output if o.name == final]
    del g.output[:]
    g.output.extend(keep_vi)
    producer = {o: i for i, n in enumerate(g.node) for o in n.output if o}
    needed, kept, todo = set(), set(), [final]
    while todo:
        t = todo.pop()
        if t in needed:
            continue
        needed.add(t)
        i = producer.get(t)
        if i is not None and i not in kept:
            kept.add(i)
            todo.extend(list(g.node[i].input) + _subgraph_inputs(g.node[i]))
    nodes = [n for i, n in enumerate(g.node) if i in kept]
    inits = [t for t in g.initializer if t.name in needed]
    vis = [v for v in g.value_info if v.name in needed]
    consts = {t.name for t in g.initializer}
    inputs = [i for i in g.input if i.name not in consts or i.name in needed]
    for field, items in ((g.node, nodes), (g.initializer, inits), (g.value_info, vis), (g.input, inputs)):
        kept_items = list(items)
        del field[:]
        field.extend(kept_items)
    return out


def _subgraph_inputs(node: onnx.NodeProto) -> List[str]:
    """Outer tensors a node's subgraphs (If, Loop, Scan bodies) read."""
    names: List[str] = []
    for a in node.attribute:
        for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
            for n in sub.node:
                names.extend(n.input)
                names.extend(_subgraph_inputs(n))
    return names


def opset_of(model: onnx.ModelProto) -> int:
    """The graph's version of the default ONNX operator set."""
    return max([o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] or [1])


class _Builder:
    """Collects one head's nodes and initializers under unique names."""

    def __init__(self, prefix: str, opset: int):
        self.prefix, self.opset = prefix, opset
        self.nodes: List[onnx.NodeProto] = []
        self.inits: List[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        full = "%s.%s" % (self.prefix.strip("/").replace("/", "."), name)
        self.inits.append(numpy_helper.from_array(value, full))
        return full

    def node(self, op: str, inputs: List[str], output: str = "", **attrs) -> str:
        out = output or "%s/%s_%d_output_0" % (self.prefix, op, len(self.nodes))
        name = "%s/%s_%d" % (self.prefix, op, len(self.nodes))
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out


def head_nodes(tensor: str, shape: Sequence[int], spec: HeadSpec, params: Dict[str, np.ndarray],
               output: str, opset: int) -> _Builder:
    """Nodes and initializers of one head from ``tensor`` (per-batch ``shape``) to ``output``."""
    b = _Builder("/heads/" + output, opset)
    t = tensor
    if len(shape) == 4:
        if spec.grid == 1:
            t = b.node("GlobalAveragePool", [t])
        else:
            k = [int(shape[2]) // spec.grid, int(shape[3]) // spec.grid]
            if k[0] * spec.grid != shape[2] or k[1] * spec.grid != shape[3]:
                # leave out the remainder rows/columns, so the map is exactly grid x grid
                ends = np.array([k[0] * spec.grid, k[1] * spec.grid], dtype=np.int64)
                t = b.node("Slice", [t, b.const("starts", np.zeros(2, np.int64)), b.const("ends", ends),
                                     b.const("axes", np.array([2, 3], dtype=np.int64))])
            t = b.node("AveragePool", [t], kernel_shape=k, strides=k)
        if spec.kind == "conv":
            w1 = params["W1"].reshape(params["W1"].shape + (1, 1))
            t = b.node("Conv", [t, b.const("conv.weight", w1), b.const("conv.bias", params["b1"])],
                       kernel_shape=[1, 1])
            t = b.node("Relu", [t])
        t = b.node("Flatten", [t], axis=1)
    elif len(shape) == 3:
        if opset >= 18:
            t = b.node("ReduceMean", [t, b.const("axes", np.array([1], dtype=np.int64))], keepdims=0)
        else:
            t = b.node("ReduceMean", [t], axes=[1], keepdims=0)
    if spec.kind == "mlp":
        t = b.node("Gemm", [t, b.const("fc1.weight", params["W1"]), b.const("fc1.bias", params["b1"])],
                   transB=1)
        t = b.node("Relu", [t])
    w, bias = ("W2", "b2") if spec.kind != "linear" else ("W", "b")
    b.node("Gemm", [t, b.const("fc.weight", params[w]), b.const("fc.bias", params[bias])],
           output=output, transB=1)
    return b


def head_macs(tensor: str, shape: Sequence[int], elem_type: int, head: _Builder, output: str,
              opset: int) -> int:
    """Multiply-accumulates the head adds per task (batch 1), counted by ``engines.flops``."""
    graph = helper.make_graph(head.nodes, "head", [helper.make_tensor_value_info(tensor, elem_type,
                                                                                  [1] + list(shape[1:]))],
                              [helper.make_empty_tensor_value_info(output)], initializer=head.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return count_macs(model)


def attach(model: onnx.ModelProto, heads: Sequence[Tuple[str, _Builder]], final: str,
           num_classes: int, sample_shape: Sequence[int]) -> onnx.ModelProto:
    """Copy of the backbone with every head added; graph outputs = the heads' then ``final``.
    Symbolic sizes of the data input other than the batch are fixed to ``sample_shape`` (the
    data's), so that ``build`` finds every shape at batch 1."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    consts = {t.name for t in g.initializer}
    dims = [i for i in g.input if i.name not in consts][0].type.tensor_type.shape.dim
    for d, size in zip(list(dims)[1:], sample_shape):
        if not d.HasField("dim_value"):
            d.Clear()
            d.dim_value = int(size)
    batch = dims[0] if len(dims) else None
    final_vi = [o for o in model.graph.output if o.name == final]
    del g.output[:]
    for name, head in heads:
        g.node.extend(head.nodes)
        g.initializer.extend(head.inits)
        vi = helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", num_classes])
        if batch is not None:
            vi.type.tensor_type.shape.dim[0].CopyFrom(batch)
        g.output.append(vi)
    g.output.extend(final_vi)
    return out


def fresh_name(base: str, taken: set) -> str:
    """``base``, or ``base_2``, ``base_3``... whichever is not already a tensor name."""
    name, i = base, 1
    while name in taken:
        i += 1
        name = "%s_%d" % (base, i)
    return name


def tensor_names(model: onnx.ModelProto) -> set:
    """Every tensor name of the graph: inputs, initializers, node outputs."""
    g = model.graph
    return ({i.name for i in g.input} | {t.name for t in g.initializer}
            | {o for n in g.node for o in n.output if o})
