"""A model's weights kept in side files, for ``edge-agent build`` and ``heads``: which tensors
are there, how large the model is with them, reading, mapping and copying them, and writing a
stage that reads only its own.

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
# a model file's own side file is its name and this: stageH.onnx.data (the name onnx's
# ``extract_model`` gives one), heads' OUT.onnx.data
SIDE_FILE_SUFFIX = ".data"


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
    ``source_dir``: inline up to ``inline_max_bytes``, else in ``side_file`` beside ``path``
    (``move_to_side_file``: each tensor the source keeps in a side file and each inline one of
    1 kB or more, as ``extract_model`` writes a stage past protobuf's limit). Raises OSError or
    ValueError when a source side file cannot give a tensor its bytes."""
    if model_bytes(stage) <= inline_max_bytes:
        load_small(stage, source_dir, math.inf)
        onnx.save_model(stage, path)
        return
    side_path = os.path.join(os.path.dirname(path), side_file)
    with open(side_path, "wb") as out:
        move_to_side_file(stage, source_dir, out, side_file)
        wrote = out.tell()
    if not wrote:  # no tensor of the stage goes there: no file either
        os.remove(side_path)
    onnx.save_model(stage, path)


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


def check_stored(tensor: onnx.TensorProto, base_dir: str) -> None:
    """Check, without reading it, that a side-file tensor's file holds its bytes; raises
    OSError or ValueError as ``read_tensor`` does."""
    src, info = _open_at(tensor, base_dir)
    with src:
        left = os.fstat(src.fileno()).st_size - (info.offset or 0)
    if left < stored_bytes(tensor):
        raise _short(tensor, info, stored_bytes(tensor) - max(left, 0))


def map_tensor(tensor: onnx.TensorProto, base_dir: str) -> np.ndarray:
    """A read-only view of a side-file tensor's data, mapped from its file (nothing is read
    until used, and the pages stay the file's: a weight of gigabytes costs no copy). Raises
    OSError or ValueError as ``check_stored`` does, or when the bytes do not make the tensor's
    shape, before anything is mapped."""
    check_stored(tensor, base_dir)
    info = xdata.ExternalDataInfo(tensor)
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).newbyteorder("<")
    shape = tuple(int(d) for d in tensor.dims)
    want = stored_bytes(tensor)
    if want != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
        raise ValueError("tensor %r: side file %s gives %d bytes for a %s tensor of shape %s"
                         % (tensor.name, info.location, want, dtype, list(shape)))
    if want == 0:  # an empty range cannot be mapped
        return np.zeros(shape, dtype)
    return np.memmap(os.path.join(base_dir, os.path.normpath(info.location)), dtype=dtype,
                     mode="r", offset=info.offset or 0, shape=shape)


def move_to_side_file(model: onnx.ModelProto, source_dir: str, out, location: str,
                      min_bytes: int = 1024) -> None:
    """Write the weights of ``model`` into the open side file ``out`` (named ``location``
    beside the model file) and point their tensors at it: each tensor kept in a source side file
    (in ``source_dir``) copied a chunk at a time, and each inline initializer of ``min_bytes`` or
    more (onnx's own threshold), every one at a 4 KiB boundary, which a reader can map. So a model
    past protobuf's limit is written without its weights ever held together. Raises OSError or
    ValueError when a source side file cannot give a tensor its bytes."""
    # kept alive while the ids are compared: protobuf hands out a new object for an element
    # whose last one was let go, so an id alone may name another tensor by then
    kept = [t for g in _graphs(model) for t in g.initializer]
    initializers = {id(t) for t in kept}
    for tensor in all_tensors(model):
        external = xdata.uses_external_data(tensor)
        # an inline attribute tensor (a Constant's value) stays: onnx moves initializers only
        if not external and (len(tensor.raw_data) < min_bytes or id(tensor) not in initializers):
            continue
        out.write(b"\0" * (-out.tell() % 4096))
        offset = out.tell()
        if external:
            _copy_range(tensor, source_dir, out)
        else:
            out.write(tensor.raw_data)
            tensor.ClearField("raw_data")
        _refer(tensor, location, offset, out.tell() - offset)
