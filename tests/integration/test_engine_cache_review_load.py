"""A stage file onnxruntime refuses at load gives one line naming the stage file and the fix:
a model stamped with an opset newer than this onnxruntime's names the opset it runs. Real
onnxruntime, real files."""

from __future__ import annotations

import onnx
import pytest

from engines.tiny_model import build_tiny_bundle


def test_an_unsupported_opset_names_the_stage_file_and_the_opset_to_export_at(tmp_path):
    """Rule: a stage file stamped with opset 99 fails to load with one line that names the
    file and says which opset this onnxruntime runs and how to export at it."""
    from engines.loader import load_engine, unloadable

    stage = build_tiny_bundle(str(tmp_path)).stages[0]
    model = onnx.load(stage.onnx_path)
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = 99
    onnx.save(model, stage.onnx_path)
    with pytest.raises(Exception) as caught:
        load_engine(stage, backend="onnxruntime", accelerator="none")
    line = unloadable(stage, caught.value)
    assert "\n" not in line and stage.onnx_path in line
    assert "runs ai.onnx up to opset" in line and "opset_version=" in line, line
    assert "rebuild the bundle" not in line
