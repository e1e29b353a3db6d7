"""A model's weights kept in side files, for ``edge-agent build``: which tensors are there, how
large the model is with them, and writing a stage that reads only its own.

A source past protobuf's 2 GB limit must keep its weights in side files, and no protobuf
message that large can be serialized (not even sized: ``ByteSize`` fails), so ``build`` reads
the graph without them, sizes a model by its graph plus the side files' byte ranges, and writes
each stage from the source's side files: inline up to the limit (the stage's weights read into
memory), past it copied a chunk at a time into the stage's own side file (never held whole).
"""

from __future__ import annotations

import math
import os
from typing import List

import numpy as np
import onnx
from onnx import external_data_helper as xdata
from onnx import helper

COPY_CHUNK_BYTES = 16 << 20  # a weight is copied into a stage's side file this much at a time


def _graphs(model: onnx.ModelProto) -> List[onnx.GraphProto]:
    """``model``'s graph and every subgraph (of control-flow nodes, in functions too)."""
    found: List[onnx.GraphProto] = []

    def walk(nodes) -> None:
        for n in nodes:
            for a in n.attribute:
                subs = list(a.graphs) + ([a.g] if a.HasField("g") else [])
                found.extend(subs)
                for sub in subs:
                    walk(sub.node)

    found.append(model.graph)
    walk(model.graph.node)
    for f in model.functions:
        walk(f.node)
    return found


def _nodes(model: onnx.ModelProto):
    for g in _graphs(model):
        yield from g.node
    for f in model.functions:
        yield from f.node


def all_tensors(model: onnx.ModelProto) -> List[onnx.TensorProto]:
    """Every tensor of ``model``: initializers (sparse ones' values and indices too) and
    attribute tensors, in subgraphs and functions as well."""
    found: List[onnx.TensorProto] = []
    for g in _graphs(model):
        found.extend(g.initializer)
        for sp in g.sparse_initializer:
            found.extend((sp.values, sp.indices))
    for n in _nodes(model):
        for a in n.attribute:
            if a.HasField("t"):
                found.append(a.t)
            found.extend(a.tensors)
            sparse = list(a.sparse_tensors) + ([a.sparse_tensor] if a.HasField("sparse_tensor") else [])
            for sp in sparse:
                found.extend((sp.values, sp.indices))
    return found


def external_tensors(model: onnx.ModelProto) -> List[onnx.TensorProto]:
    """The tensors of ``model`` whose data is in a side file."""
    return [t for t in all_tensors(model) if xdata.uses_external_data(t)]


def stored_bytes(tensor: onnx.TensorProto) -> int:
    """Bytes of a side-file tensor's data: its ``length``, else what its type and shape take."""
    length = xdata.ExternalDataInfo(tensor).length
    if length:
        return int(length)
    itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    return int(np.prod(list(tensor.dims), dtype=np.int64)) * itemsize


def model_bytes(model: onnx.ModelProto) -> int:
    """What ``model`` would take as one protobuf message with its side files' data inline."""
    return model.ByteSize() + sum(stored_bytes(t) for t in external_tensors(model))


def load_small(model: onnx.ModelProto, base_dir: str, max_bytes: float) -> None:
    """Read into ``model`` the side-file data of each tensor of at most ``max_bytes`` (all of
    them with ``math.inf``); raises OSError or ValueError as ``read_tensor`` does."""
    for tensor in external_tensors(model):
        if stored_bytes(tensor) <= max_bytes:
            read_tensor(tensor, base_dir)


def read_tensor(tensor: onnx.TensorProto, base_dir: str) -> None:
    """Read a side-file tensor's data into it, which then reads as inline (as ``onnx.load``
    leaves it). Checked here, not left to onnx's reader, which in onnx 1.17 (the newest for
    Python 3.8) takes a side file cut short for the whole tensor: OSError when the file cannot
    be read, ValueError when it lies outside ``base_dir`` or ends before the tensor does."""
    src, info = _open_at(tensor, base_dir)
    with src:
        want = stored_bytes(tensor)
        data = src.read(want)
    if len(data) != want:
        raise _short(tensor, info, want - len(data))
    tensor.raw_data = data
    tensor.data_location = onnx.TensorProto.DEFAULT
    del tensor.external_data[:]


def save_stage(stage: onnx.ModelProto, source_dir: str, path: str, side_file: str,
               inline_max_bytes: int) -> None:
    """Write ``stage`` at ``path`` with its weights, read from the source's side files in
    ``source_dir``: inline up to ``inline_max_bytes``, else in ``side_file`` beside ``path``:
    each tensor the source keeps in a side file copied there a chunk at a time, then (by onnx's
    own ``save_model``) each inline initializer of 1 kB or more, as ``extract_model`` writes a
    stage past protobuf's limit. Raises OSError or ValueError when a source side file cannot
    give a tensor its bytes."""
    if model_bytes(stage) <= inline_max_bytes:
        load_small(stage, source_dir, math.inf)
        onnx.save_model(stage, path)
        return
    external = external_tensors(stage)
    if external:  # (a file only where a tensor goes: save_model makes one for the inline ones)
        with open(os.path.join(os.path.dirname(path), side_file), "wb") as out:
            for tensor in external:
                offset = out.tell()
                _copy_range(tensor, source_dir, out)
                _refer(tensor, side_file, offset, out.tell() - offset)
    # save_model appends the inline ones to the same file and leaves those without data as
    # they are (they point at the side file already)
    onnx.save_model(stage, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=side_file)


def _refer(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    """Point ``tensor`` at ``length`` bytes of ``location`` from ``offset`` (the entries onnx
    writes; its ``set_external_data`` takes only a tensor holding its data inline)."""
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, str(value)
    tensor.data_location = onnx.TensorProto.EXTERNAL


def _copy_range(tensor: onnx.TensorProto, source_dir: str, out) -> None:
    """Append a side-file tensor's bytes (its location's offset and length) to ``out``."""
    src, info = _open_at(tensor, source_dir)
    with src:
        left = stored_bytes(tensor)
        while left > 0:
            chunk = src.read(min(left, COPY_CHUNK_BYTES))
            if not chunk:
                raise _short(tensor, info, left)
            out.write(chunk)
            left -= len(chunk)


def _open_at(tensor: onnx.TensorProto, base_dir: str):
    """(The side file of ``tensor`` open at its offset, its ExternalDataInfo)."""
    info = xdata.ExternalDataInfo(tensor)
    location = os.path.normpath(info.location)
    if os.path.isabs(location) or location.split(os.sep)[0] == os.pardir:
        raise ValueError("tensor %r: side file %r lies outside the model's folder"
                         % (tensor.name, info.location))
    src = open(os.path.join(base_dir, location), "rb")
    src.seek(info.offset or 0)
    return src, info


def _short(tensor: onnx.TensorProto, info, missing: int) -> ValueError:
    return ValueError("tensor %r: side file %s ends %d bytes before the tensor does"
                      % (tensor.name, info.location, missing))
