"""Bundle side files: the manifest covers the ONNX external-data files a stage loads.

Stage 3 of the tiny bundle is saved the way ``onnx`` saves a stage over 2 GB (its weights in
``stage3.onnx.data`` beside it), and its manifest entry lists the side file with its SHA-256.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import onnx
import pytest

from engines.bundle import (MANIFEST_NAME, BundleError, load_bundle, sha256_and_finds,
                            sha256_file, tensor_locations)
from engines.loader import load_engine
from engines.tiny_model import build_tiny_bundle

SIDE = "stage3.onnx.data"


def _manifest(bundle_dir):
    with open(os.path.join(bundle_dir, MANIFEST_NAME)) as f:
        return json.load(f)


def _write_manifest(bundle_dir, obj):
    with open(os.path.join(bundle_dir, MANIFEST_NAME), "w") as f:
        json.dump(obj, f)


def _externalise_stage3(bundle_dir, location=SIDE, covered=True):
    """Save stage 3 with its weights in a side file at ``location`` (relative to the stage
    file), update its sha256 and, when ``covered``, list the side file in ``external_data``."""
    path = os.path.join(bundle_dir, "stage3.onnx")
    onnx.save_model(onnx.load(path), path, save_as_external_data=True,
                    all_tensors_to_one_file=True, location=location)
    obj = _manifest(bundle_dir)
    stage = obj["stages"][2]
    stage["sha256"] = sha256_file(path)
    if covered:
        side = os.path.normpath(os.path.join(bundle_dir, location))
        stage["external_data"] = [{"file": location, "sha256": sha256_file(side)}]
    _write_manifest(bundle_dir, obj)
    return path


@pytest.fixture()
def bundle_dir(tmp_path):
    return build_tiny_bundle(str(tmp_path)).path


def _refused(bundle_dir, match):
    with pytest.raises(BundleError, match=match) as info:
        load_bundle(bundle_dir)
    assert "\n" not in str(info.value)
    return str(info.value)


def _logits(stage):
    engine = load_engine(stage, backend="onnxruntime", threads=1)
    try:
        return engine.run(np.ones(stage.input_shape, dtype=stage.input_dtype)).logits
    finally:
        engine.close()


def test_covered_side_file_loads_and_the_stage_runs_from_the_bundle(bundle_dir):
    """A stage with a covered side file loads, records it, and onnxruntime finds the side file
    next to the stage file (from any working folder), giving the inline stage's logits."""
    before = _logits(load_bundle(bundle_dir).stage(3))
    _externalise_stage3(bundle_dir)
    stage = load_bundle(bundle_dir).stage(3)
    assert [f for f, _ in stage.external_data] == [SIDE]
    np.testing.assert_array_equal(_logits(stage), before)


def test_changed_side_file_is_refused_like_a_changed_stage_file(bundle_dir):
    """A side file whose bytes changed after build (other weights, same size) is refused with
    the stage file's sha256-mismatch wording, naming the stage and the file."""
    _externalise_stage3(bundle_dir)
    side = os.path.join(bundle_dir, SIDE)
    with open(side, "r+b") as f:
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 0xFF]))
    why = _refused(bundle_dir, r"stages\[2\]\.external_data\[0\]\.file stage3\.onnx\.data has "
                               r"sha256 .*manifest says .*copy the bundle again")
    assert MANIFEST_NAME in why


def test_truncated_side_file_is_refused(bundle_dir):
    """A side file cut short in a copy is refused by its sha256."""
    _externalise_stage3(bundle_dir)
    side = os.path.join(bundle_dir, SIDE)
    with open(side, "r+b") as f:
        f.truncate(os.path.getsize(side) // 2)
    _refused(bundle_dir, r"stage3\.onnx\.data has sha256")


def test_missing_side_file_is_refused_naming_stage_and_file(bundle_dir):
    """A side file left behind when the bundle was copied is refused at load, in one line
    naming the stage and the file (not an onnxruntime error at the engine's start)."""
    _externalise_stage3(bundle_dir)
    os.remove(os.path.join(bundle_dir, SIDE))
    _refused(bundle_dir, r"stages\[2\]\.file stage3\.onnx refers to external data "
                         r"stage3\.onnx\.data, which does not exist")


def test_missing_side_file_is_refused_without_the_manifest_field(bundle_dir):
    """An older manifest (no external_data) still has a missing side file refused."""
    _externalise_stage3(bundle_dir, covered=False)
    os.remove(os.path.join(bundle_dir, SIDE))
    _refused(bundle_dir, r"refers to external data stage3\.onnx\.data, which does not exist")


def _relocate(bundle_dir, location):
    """Stage 3 with its side file moved to ``location`` (as the stage file names it), listed in
    the manifest: onnx refuses to save such a location, so the stage file is rewritten."""
    path = _externalise_stage3(bundle_dir)
    model = onnx.load(path, load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(model, path)
    target = os.path.normpath(os.path.join(bundle_dir, location))
    os.replace(os.path.join(bundle_dir, SIDE), target)
    obj = _manifest(bundle_dir)
    obj["stages"][2]["sha256"] = sha256_file(path)
    obj["stages"][2]["external_data"] = [{"file": location, "sha256": sha256_file(target)}]
    _write_manifest(bundle_dir, obj)
    return target


@pytest.mark.parametrize("location", ["../outside.data", "sub/../../outside.data"])
def test_location_outside_the_bundle_folder_is_refused(bundle_dir, location):
    """A stage whose tensors name a side file outside the bundle folder (by '..') is refused,
    even though the file exists there and the manifest lists it."""
    assert os.path.isfile(_relocate(bundle_dir, location))
    assert not os.path.isfile(os.path.join(bundle_dir, SIDE))
    _refused(bundle_dir, r"stages\[2\]\.file stage3\.onnx refers to external data by location "
                         r".*outside the bundle folder")


def test_absolute_location_is_refused(bundle_dir, tmp_path):
    """A tensor location that is an absolute path is refused, even one naming a file that
    exists (onnx itself refuses to save one)."""
    assert os.path.isfile(_relocate(bundle_dir, str(tmp_path / "abs.data")))
    _refused(bundle_dir, "by an absolute location")


def test_older_manifest_without_the_field_loads_with_one_warning(bundle_dir, caplog):
    """A manifest without external_data (an older build) loads; a stage with side files then
    logs one WARNING that they are not covered, and a bundle without side files logs none."""
    with caplog.at_level(logging.WARNING, logger="engines.bundle"):
        load_bundle(bundle_dir)
    assert not caplog.records
    _externalise_stage3(bundle_dir, covered=False)
    with caplog.at_level(logging.WARNING, logger="engines.bundle"):
        stage = load_bundle(bundle_dir).stage(3)
    assert stage.external_data == ()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "stage3.onnx.data" in warnings[0] and "does not cover" in warnings[0]


def test_listed_files_must_be_the_ones_the_stage_refers_to(bundle_dir):
    """external_data listing another file than the stage's side file is refused."""
    _externalise_stage3(bundle_dir)
    obj = _manifest(bundle_dir)
    obj["stages"][2]["external_data"][0]["file"] = "stage2.onnx"
    _write_manifest(bundle_dir, obj)
    _refused(bundle_dir, r"external_data lists \['stage2\.onnx'\] but stage3\.onnx refers to")


def test_external_data_entry_fields_are_checked(bundle_dir):
    """An external_data entry with a misspelt field is refused as an unknown field."""
    _externalise_stage3(bundle_dir)
    obj = _manifest(bundle_dir)
    obj["stages"][2]["external_data"][0]["sha"] = obj["stages"][2]["external_data"][0].pop("sha256")
    _write_manifest(bundle_dir, obj)
    _refused(bundle_dir, "sha")


def test_locations_are_read_without_the_weights(bundle_dir):
    """tensor_locations reads a stage's side file names even when the side file is gone
    (it loads the graph only), and the hash pass finds the word 'location' across blocks."""
    path = _externalise_stage3(bundle_dir)
    os.remove(os.path.join(bundle_dir, SIDE))
    assert tensor_locations(path) == [SIDE]
    edge = os.path.join(bundle_dir, "edge.bin")
    with open(edge, "wb") as f:
        f.write(b"\0" * ((1 << 20) - 4) + b"location" + b"\0" * 8)
    assert sha256_and_finds(edge, b"location") == (sha256_file(edge), True)
    assert not sha256_and_finds(os.path.join(bundle_dir, "stage1.onnx"), b"location")[1]


def _nested_model():
    """A graph whose external tensors sit in an initializer, a Constant's attribute and the
    initializer of an If branch (a subgraph): every place a tensor may hold weights."""
    from onnx import TensorProto, helper, numpy_helper

    def big(name, value):
        return numpy_helper.from_array(np.full((16, 16), value, dtype=np.float32), name)

    branch = helper.make_graph(
        [helper.make_node("Add", ["x", "wb"], ["yb"])], "branch", [],
        [helper.make_tensor_value_info("yb", TensorProto.FLOAT, [16, 16])],
        initializer=[big("wb", 2.0)])
    nodes = [helper.make_node("Constant", [], ["c"], value=big("wc", 3.0)),
             helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["cond"]),
             helper.make_node("If", ["cond"], ["yi"], then_branch=branch, else_branch=branch),
             helper.make_node("Add", ["yi", "c"], ["y0"]),
             helper.make_node("Add", ["y0", "wi"], ["y"])]
    graph = helper.make_graph(
        nodes, "nested", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [16, 16])],
        initializer=[big("wi", 1.0), numpy_helper.from_array(np.float32(0), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_location_scan_agrees_with_onnx_on_nested_tensors(tmp_path):
    """The byte scan of a stage file finds the same side files as the onnx package's reading,
    for initializers, Constant attributes and subgraph initializers, one side file per tensor;
    onnxruntime runs the model from its folder."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    path = str(tmp_path / "nested.onnx")
    onnx.save_model(_nested_model(), path, save_as_external_data=True,
                    all_tensors_to_one_file=False, convert_attribute=True)
    model = onnx.load(path, load_external_data=False)
    expected = {e.value for t in _get_all_tensors(model) if uses_external_data(t)
                for e in t.external_data if e.key == "location"}
    assert expected == {"wi", "wc", "wb"}
    assert sorted(tensor_locations(path)) == sorted(expected)
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": np.ones((16, 16), np.float32)})
    assert float(y[0, 0]) == 1.0 + 2.0 + 3.0 + 1.0


def test_unreadable_stage_file_naming_a_location_is_refused(bundle_dir):
    """A stage file (matching its sha256) that holds the word 'location' but is no protobuf is
    refused in one line naming it, not read as naming no side file."""
    path = os.path.join(bundle_dir, "stage3.onnx")
    with open(path, "wb") as f:
        f.write(b"\xff\xff location")
    obj = _manifest(bundle_dir)
    obj["stages"][2]["sha256"] = sha256_file(path)
    _write_manifest(bundle_dir, obj)
    _refused(bundle_dir, r"stages\[2\]\.file stage3\.onnx is not a readable ONNX model")
