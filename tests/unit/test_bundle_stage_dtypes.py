"""A bundle's stage h feature and stage h+1 input agree in dtype (as in shape), or the bundle is
refused at load: a worker refuses every task whose input is not its stage's dtype (bad_shape)."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from engines.bundle import (MANIFEST_NAME, BundleError, load_bundle, parse_bundle,
                            read_manifest, sha256_file, tensor_bytes)
from engines.tiny_model import build_tiny_bundle


def _half_input_stage2(bundle):
    """Make stage 2's ONNX file take a float16 input (cast to float32 inside) and record it in
    the manifest, file hash and input_bytes included: a bundle consistent in every field but
    the hand-over from stage 1, whose feature stays float32."""
    spec = bundle.stage(2)
    model = onnx.load(spec.onnx_path)
    graph = model.graph
    inner = graph.input[0].name
    graph.input[0].name = inner + "_half"
    graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    graph.node.insert(0, helper.make_node("Cast", [inner + "_half"], [inner],
                                          to=TensorProto.FLOAT))
    onnx.checker.check_model(model)
    onnx.save(model, spec.onnx_path)
    path = os.path.join(bundle.path, MANIFEST_NAME)
    with open(path) as f:
        obj = json.load(f)
    stage = obj["stages"][1]
    stage["input"].update(name=inner + "_half", dtype="float16")
    stage["input_bytes"] = tensor_bytes(stage["input"]["shape"], "float16")
    stage["sha256"] = sha256_file(spec.onnx_path)
    with open(path, "w") as f:
        json.dump(obj, f)
    return spec


def test_stage_feature_dtype_not_the_next_input_dtype_is_refused_naming_both(tmp_path):
    """Stage 1 hands a float32 feature to a stage 2 whose ONNX input is float16: load_bundle
    refuses the bundle in one line naming both stages, both tensors and both dtypes."""
    bundle = build_tiny_bundle(str(tmp_path))
    spec1 = bundle.stage(1)
    _half_input_stage2(bundle)
    # the real stage-1 engine's feature is float32: a stage-2 worker would refuse it
    feat = ort.InferenceSession(spec1.onnx_path, providers=["CPUExecutionProvider"]).run(
        [spec1.feature_output], {spec1.input_name: np.zeros(spec1.input_shape, np.float32)})[0]
    assert feat.dtype == np.float32
    with pytest.raises(BundleError) as info:
        load_bundle(bundle.path)
    line = str(info.value)
    assert "\n" not in line and line.startswith(os.path.join(bundle.path, MANIFEST_NAME))
    assert ("stage 1 feature_output c1 is float32 but stage 2 input c1_half is float16"
            in line), line


def test_build_checks_refuse_a_manifest_whose_stage_dtypes_disagree(tmp_path):
    """parse_bundle without the files (what `build` runs before it writes a manifest) refuses
    a feature dtype that is not the next stage's input dtype, as load_bundle does."""
    bundle = build_tiny_bundle(str(tmp_path))
    directory, obj = read_manifest(bundle.path)
    obj["stages"][1]["feature_output"]["dtype"] = "float64"
    with pytest.raises(BundleError, match="stage 2 feature_output c2 is float64 but stage 3 "
                                          "input c2 is float32"):
        parse_bundle(obj, directory, verify_files=False)


def test_stages_that_agree_in_dtype_and_shape_load(tmp_path):
    """A built bundle (features and next inputs the same tensors) loads, its dtypes equal."""
    b = load_bundle(build_tiny_bundle(str(tmp_path)).path)
    assert [(p.feature_dtype, p.feature_shape) for p in b.stages[:-1]] == [
        (n.input_dtype, n.input_shape) for n in b.stages[1:]]
