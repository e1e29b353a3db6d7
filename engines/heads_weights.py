"""A backbone's weights kept in side files, for ``edge-agent heads``: running it in onnxruntime
and writing the multi-exit graph without ever building it, weights and all, as one message.

A backbone past protobuf's 2 GB limit must keep its weights in side files, and no protobuf
message that large can be serialized, so ``heads`` reads its graph without them (as ``build``
does, ``engines.build.load_checked_graph``):

* onnxruntime gets the graph alone and each side-file weight as a view mapped from its file
  (``SessionOptions.add_external_initializers``, which replaces an initializer kept in a side
  file by the value given; in onnxruntime 1.19 and later alike, where a model loaded from
  bytes has no folder to find its side files in);
* the multi-exit graph is written with the backbone's weights copied, a chunk at a time, into
  the side file ``OUT.data`` beside ``--out`` once it is over ``inline_max_bytes``; under it,
  inline as for a backbone without side files.
"""

from __future__ import annotations

import math
import os
import shutil
from typing import List, Sequence, Tuple

import onnx

from agent.ops.atomic import atomic_open, fsync_dir
from engines import build_weights
from engines.bundle import tensor_locations



def session_weights(model: onnx.ModelProto, base_dir: str) -> Tuple[List[str], list]:
    """The names and onnxruntime values of ``model``'s graph initializers kept in side files
    (in ``base_dir``), mapped from them, for ``add_external_initializers``. A side-file tensor
    elsewhere (in a subgraph, an attribute) is read into ``model`` instead, which onnxruntime
    then finds inline. Raises OSError or ValueError when a side file cannot give a tensor its
    bytes (``build_weights.map_tensor``)."""
    import onnxruntime as ort

    kept = list(model.graph.initializer)  # alive while ids are compared (build_weights)
    top = {id(t) for t in kept}
    names, values = [], []
    for tensor in build_weights.external_tensors(model):
        if id(tensor) in top:
            names.append(tensor.name)
            values.append(ort.OrtValue.ortvalue_from_numpy(
                build_weights.map_tensor(tensor, base_dir)))
        else:
            build_weights.read_tensor(tensor, base_dir)
    return names, values


def side_file_path(out_path: str) -> str:
    """``out_path``'s side file, beside it."""
    return out_path + build_weights.SIDE_FILE_SUFFIX


def _own_side_file(out_path: str, source_files: Sequence[str]) -> str:
    """The side file beside ``out_path`` that the model now at ``out_path`` keeps its weights
    in (an earlier output past the limit), if any and not one of the backbone's; else ""."""
    target = side_file_path(out_path)
    if not os.path.isfile(target) or os.path.realpath(target) in {
            os.path.realpath(p) for p in source_files}:
        return ""
    try:
        named = tensor_locations(out_path)
    except (OSError, ValueError):  # not a model (or unreadable): what it names is unknown
        return ""
    return target if os.path.basename(target) in named else ""


def write_model(model: onnx.ModelProto, source_dir: str, out_path: str, inline_max_bytes: int,
                source_files: Sequence[str] = ()) -> bool:
    """Write ``model`` (its weights partly in the side files of ``source_dir``) at ``out_path``;
    returns whether it has a side file. Up to ``inline_max_bytes`` the weights are read and
    written inline (``atomic_open``), and the side file beside ``out_path`` that the replaced
    output named (not one of the backbone's) is removed. Past it, the ``.onnx`` and its side file are written into
    a new folder beside ``out_path``, checked by path (so with the weights), and renamed into
    place, the side file first: a failed run leaves neither half-written. ``source_files``, the
    paths of the backbone's side files, are not replaced. Raises OSError or ValueError when a
    source side file cannot give a tensor its bytes; ``model`` holds its weights (inline) or
    points at the new side file afterwards."""
    if build_weights.model_bytes(model) <= inline_max_bytes:
        build_weights.load_small(model, source_dir, math.inf)
        onnx.checker.check_model(model)
        stale = _own_side_file(out_path, source_files)
        with atomic_open(out_path, "wb") as f:
            f.write(model.SerializeToString())
        if stale:  # the replaced output's weights: nothing names them any longer
            try:
                os.unlink(stale)
                fsync_dir(os.path.dirname(os.path.abspath(out_path)))
            except OSError:  # not ours to remove after all: a stale file, no failed run
                pass
        return False
    out_dir = os.path.dirname(os.path.abspath(out_path))
    target = side_file_path(os.path.abspath(out_path))
    side = os.path.basename(target)  # its location, as the model names it
    if os.path.realpath(target) in {os.path.realpath(p) for p in source_files}:
        raise ValueError("the side file %s of --out is one of the backbone's own: name --out "
                         "otherwise" % target)
    new = os.path.join(out_dir, ".%s.heads-%d-%s" % (os.path.basename(out_path), os.getpid(),
                                                     os.urandom(4).hex()))
    os.mkdir(new)
    try:
        with open(os.path.join(new, side), "wb") as f:
            build_weights.move_to_side_file(model, source_dir, f, side)
            f.flush()
            os.fsync(f.fileno())
        staged = os.path.join(new, "model.onnx")  # a name onnx reads as protobuf, whatever --out's
        with open(staged, "wb") as f:
            f.write(model.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        onnx.checker.check_model(staged)  # by path: with its side file
        os.replace(os.path.join(new, side), target)
        os.replace(staged, out_path)
        fsync_dir(out_dir)
    finally:
        shutil.rmtree(new, ignore_errors=True)
    return True
