"""The files a bundle stage loads beyond its ``.onnx``: ONNX external-data side files.

A stage over protobuf's 2 GB limit keeps its weights in a side file: ``onnx`` writes
``stageH.onnx.data`` beside ``stageH.onnx`` and the stage's tensors name it in the ``location``
entry of their ``external_data``, relative to the folder of the ``.onnx`` file (where
onnxruntime reads it from). A stage's ``sha256`` covers only its ``.onnx``, which holds no weight
of such a tensor, so the manifest lists every side file of a stage with its own SHA-256 (the
stage's optional ``external_data``: ``[{"file", "sha256"}]``, ``file`` relative to the bundle,
like the stage's ``file``). ``check_side_files`` is the loader's rule for them:

* every side file a stage refers to lies inside the bundle folder (no absolute location, no
  ``..`` out of it) and exists;
* with ``external_data`` in the manifest, the files it lists are exactly those the stage refers
  to, and each matches its SHA-256;
* without it (a bundle of an older ``build``, or made by hand), the stage loads with one WARNING
  that its side files are not covered: older bundles keep working.

A stage's ``.onnx`` is scanned for its locations only when its bytes hold the word ``location``
(``engines.bundle.sha256_and_finds`` looks while it hashes the file), so a stage without side
files costs no more than its hash; the scan (``external_locations``) reads the protobuf fields
that lead to tensors and skips the weights unread. Files are read and hashed by
``engines.bundle``, the one reader of a bundle's files.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

log = logging.getLogger("engines.bundle")

LOCATION_KEY = b"location"  # the external_data key naming a tensor's side file
EXTERNAL_DATA_KEYS = ("file", "sha256")  # the fields of one stage.external_data entry


def mismatch_line(where: str, label: str, rel: str, actual: str, expected: str) -> str:
    """The loader's one line for a bundle file whose SHA-256 is not the manifest's."""
    return ("%s: %s %s has sha256 %s..., manifest says %s... (file changed after build?); copy "
            "the bundle again (edge-agent doctor --bundle checks it)"
            % (where, label, rel, actual[:12], expected[:12]))


# Where tensors sit in an ONNX model, by protobuf field number: message kind -> {field: kind of
# the message it holds} (onnx.proto: ModelProto.graph 7 and .functions 25, GraphProto.node 1,
# .initializer 5 and .sparse_initializer 15, FunctionProto.node 7, NodeProto.attribute 5,
# AttributeProto.t 5, .g 6, .tensors 10, .graphs 11, .sparse_tensor 22, .sparse_tensors 23,
# SparseTensorProto.values 1 and .indices 2). Read from the bytes, not through the ``onnx``
# package: an agent's device need not have it, and the weights are skipped unread.
_HOLDS = {
    "model": {7: "graph", 25: "function"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "function": {7: "node"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
}
_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION, _EXTERNAL = 13, 14, 1  # TensorProto fields, EXTERNAL
_MAX_NESTING = 64  # subgraphs within subgraphs, at most (a deeper file is not a model of ours)


def _varint(buf, pos: int, end: int) -> Tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise ValueError("malformed varint at byte %d" % pos)
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(buf, pos: int, end: int) -> Iterator[Tuple[int, int, Any]]:
    """(field number, wire type, value) of each field of the message in ``buf[pos:end]``: a
    varint's value, the (start, end) of a length-delimited field, None for fixed-size ones."""
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end)
        elif wire == 2:
            size, pos = _varint(buf, pos, end)
            value, pos = (pos, pos + size), pos + size
        elif wire in (1, 5):
            value, pos = None, pos + (8 if wire == 1 else 4)
        else:
            raise ValueError("unknown protobuf wire type %d at byte %d" % (wire, pos))
        if pos > end:
            raise ValueError("a field runs past the end of its message")
        yield number, wire, value


def _text(buf, span: Tuple[int, int]) -> str:
    return bytes(buf[span[0]:span[1]]).decode("utf-8")


def _tensor_location(buf, start: int, end: int) -> Optional[str]:
    """The ``location`` of a TensorProto whose data is external; None when it is inline."""
    external, location = False, ""
    for number, wire, value in _fields(buf, start, end):
        if number == _TENSOR_DATA_LOCATION and wire == 0:
            external = value == _EXTERNAL
        elif number == _TENSOR_EXTERNAL_DATA and wire == 2:
            entry = {n: _text(buf, v) for n, w, v in _fields(buf, *value) if w == 2 and n in (1, 2)}
            if entry.get(1) == "location":
                location = entry.get(2, "")
    return location if external else None


def external_locations(buf) -> List[str]:
    """The ``location`` of every tensor whose data is external in the serialized ONNX model
    ``buf`` (bytes or an mmap; initializers, sparse ones, attribute tensors, those of subgraphs
    and functions), in order of first use. ``ValueError`` when ``buf`` is no protobuf."""
    found: List[str] = []
    todo = [(0, len(buf), "model", 0)]
    while todo:
        start, end, kind, depth = todo.pop()
        if depth > _MAX_NESTING:
            raise ValueError("messages nested over %d deep" % _MAX_NESTING)
        if kind == "tensor":
            location = _tensor_location(buf, start, end)
            if location is not None and location not in found:
                found.append(location)
            continue
        inner = [(value[0], value[1], _HOLDS[kind][number], depth + 1)
                 for number, wire, value in _fields(buf, start, end)
                 if wire == 2 and number in _HOLDS[kind]]
        todo.extend(reversed(inner))  # depth first, in file order
    return found


def side_file(onnx_path: str, directory: str, location: str) -> str:
    """The side file ``location`` of the stage file ``onnx_path`` names, relative to the bundle
    folder ``directory`` ('/'-separated); ``ValueError`` (why, in words) when it is empty,
    absolute or leaves the folder."""
    if not location:
        raise ValueError("an empty location")
    if os.path.isabs(location) or location.startswith(("/", "\\")):
        raise ValueError("an absolute location %r" % location)
    path = os.path.normpath(os.path.join(os.path.dirname(onnx_path), location))
    rel = os.path.relpath(path, directory)
    if rel == os.curdir or rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise ValueError("location %r, outside the bundle folder" % location)
    return rel.replace(os.sep, "/")


def side_files(onnx_path: str, directory: str, locations: Sequence[str]) -> List[str]:
    """``side_file`` of each of the stage file's tensor ``locations``."""
    return [side_file(onnx_path, directory, location) for location in locations]


def check_side_files(where: str, ctx: str, rel: str, onnx_path: str, directory: str,
                     listed: Optional[Sequence[Tuple[str, str]]], locations: Sequence[str],
                     hash_file: Callable[[str], str], error: Any) -> None:
    """Apply the module's rules to stage ``ctx`` (manifest ``where``, stage file ``rel`` at
    ``onnx_path``, whose tensors name the side files ``locations``) whose manifest lists
    ``listed`` ((file, sha256) pairs; None: the manifest has no such field); ``hash_file``: a
    file's hex SHA-256. Raises ``error`` with one line."""
    try:
        referred = side_files(onnx_path, directory, locations)
    except ValueError as exc:
        raise error("%s: %s.file %s refers to external data by %s; a stage's side files must "
                    "lie in the bundle folder" % (where, ctx, rel, exc)) from None
    for name in referred:
        if not os.path.isfile(os.path.join(directory, name)):
            raise error("%s: %s.file %s refers to external data %s, which does not exist; copy "
                        "the whole bundle folder (side files included)" % (where, ctx, rel, name))
    if listed is None:
        if referred:
            log.warning("%s: %s.file %s refers to external data %s that the manifest does not "
                        "cover (no external_data: an older build or a hand-made bundle), so a "
                        "changed or truncated copy is not detected; run `edge-agent build` again "
                        "to cover it", where, ctx, rel, ", ".join(referred))
        return
    names = [name for name, _ in listed]
    if sorted(names) != sorted(referred) or len(set(names)) != len(names):
        raise error("%s: %s.external_data lists %s but %s refers to %s; rebuild the bundle"
                    % (where, ctx, names or "nothing", rel, referred or "no external data"))
    for i, (name, expected) in enumerate(listed):
        actual = hash_file(os.path.join(directory, name))
        if actual != expected:
            raise error(mismatch_line(where, "%s.external_data[%d].file" % (ctx, i), name,
                                      actual, expected))
