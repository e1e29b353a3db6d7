"""A model past protobuf's 2 GB limit without writing gigabytes, for tests of the commands that
read such models (``build``, ``heads``): a tensor no node uses, whose bytes lie in a sparse hole
at the end of the model's side file (a hole the file system stores in no block). Whoever reads
the model whole reads those gigabytes; a reader that takes only what it uses never does."""

from __future__ import annotations

import os

import onnx

OVER_LIMIT_BYTES = onnx.checker.MAXIMUM_PROTOBUF + (64 << 20)  # 2 GiB and 64 MiB


def add_unused_weight(path, nbytes):
    """Give the model at ``path`` a float tensor no node uses, of ``nbytes`` in a hole at the
    end of its side file."""
    model = onnx.load(path, load_external_data=False)
    data = path + ".data"
    offset = -(-os.path.getsize(data) // 4096) * 4096
    tensor = onnx.TensorProto(name="unused", data_type=onnx.TensorProto.FLOAT, dims=[nbytes // 4])
    for key, value in (("location", os.path.basename(data)), ("offset", offset),
                       ("length", nbytes)):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, str(value)
    tensor.data_location = onnx.TensorProto.EXTERNAL
    model.graph.initializer.append(tensor)
    onnx.save_model(model, path)
    os.truncate(data, offset + nbytes)
