"""Bundle manifest: a built bundle loads, and every kind of damage fails with one clear line."""

from __future__ import annotations

import json
import os

import pytest

from engines.bundle import (EXIT_PROFILE_NAME, MANIFEST_KEYS, MANIFEST_NAME, STAGE_KEYS,
                            TENSOR_KEYS, BundleError, load_bundle, make_manifest, stage_entry,
                            tensor_entry)
from engines.tiny_model import build_tiny_bundle


@pytest.fixture()
def bundle_dir(tmp_path):
    return build_tiny_bundle(str(tmp_path)).path


def _edit(bundle_dir, change):
    path = os.path.join(bundle_dir, MANIFEST_NAME)
    with open(path) as f:
        obj = json.load(f)
    change(obj)
    with open(path, "w") as f:
        json.dump(obj, f)


def _one_line_error(path, match):
    with pytest.raises(BundleError, match=match) as info:
        load_bundle(path)
    assert "\n" not in str(info.value)


def test_built_bundle_has_the_interface_fields(bundle_dir):
    """load_bundle returns stages with 1-based index, absolute paths, batch-1 shapes and heads."""
    b = load_bundle(bundle_dir)
    assert b.num_stages == 3 and b.early_exit_stages == (1, 2) and b.num_classes == 3
    assert b.exit_profile_path is None
    s1, s2, s3 = b.stages
    assert os.path.isabs(s1.onnx_path) and s1.input_name == "x" and s1.input_shape == (1, 1, 8, 8)
    assert s1.input_dtype == "float32" and s1.input_bytes == 8 * 8 * 4
    assert (s1.feature_output, s1.logits_output, s1.has_exit) == ("c1", "e1", True)
    assert s2.input_name == "c1" and s2.input_shape == s1.feature_shape == (1, 4, 8, 8)
    assert (s3.feature_output, s3.logits_output, s3.has_exit) == (None, "out", False)
    assert b.exit_stages == (1, 2, 3)
    # the manifest file itself also loads
    assert load_bundle(os.path.join(bundle_dir, MANIFEST_NAME)).stages == b.stages


def test_missing_directory_or_manifest_is_named(tmp_path):
    """A path that does not exist is named as no bundle directory (a typo), a folder without
    bundle.json as one with no manifest."""
    _one_line_error(str(tmp_path / "nowhere"), "no such bundle directory")
    (tmp_path / "empty").mkdir()
    _one_line_error(str(tmp_path / "empty"), "no bundle manifest")


def test_invalid_json_is_reported(bundle_dir):
    with open(os.path.join(bundle_dir, MANIFEST_NAME), "w") as f:
        f.write("{not json")
    _one_line_error(bundle_dir, "not valid JSON")


def test_unknown_version_is_refused(bundle_dir):
    _edit(bundle_dir, lambda o: o.update(version=99))
    _one_line_error(bundle_dir, "format version 99")


def test_missing_field_names_the_field(bundle_dir):
    _edit(bundle_dir, lambda o: o["stages"][1].pop("flops"))
    _one_line_error(bundle_dir, r"missing field stages\[1\]\.flops")


def test_wrong_type_names_the_field(bundle_dir):
    _edit(bundle_dir, lambda o: o["stages"][0].update(flops="many"))
    _one_line_error(bundle_dir, r"stages\[0\]\.flops has the wrong type")


def test_missing_stage_file_is_named(bundle_dir):
    os.remove(os.path.join(bundle_dir, "stage2.onnx"))
    _one_line_error(bundle_dir, r"stage2\.onnx does not exist")


def test_changed_stage_file_fails_the_hash_check(bundle_dir):
    with open(os.path.join(bundle_dir, "stage3.onnx"), "ab") as f:
        f.write(b"\0")
    _one_line_error(bundle_dir, "sha256")


def test_stage_chain_shapes_must_match(bundle_dir):
    _edit(bundle_dir, lambda o: o["stages"][1]["input"].update(shape=[1, 4, 8, 9]))
    _one_line_error(bundle_dir, "does not match shape|feature shape")


def test_final_stage_must_have_logits(bundle_dir):
    _edit(bundle_dir, lambda o: o["stages"][2].update(logits_output=None))
    _one_line_error(bundle_dir, "final stage 3 must have logits_output")


def test_a_named_exit_profile_that_does_not_exist_is_refused(bundle_dir):
    """``"exit_profile": "nope.npz"`` was read as a bundle without a profile, turning threshold
    tuning off without a word: a named file that is missing is an error naming bundle.json,
    the field and the file."""
    _edit(bundle_dir, lambda o: o.update(exit_profile="nope.npz"))
    _one_line_error(bundle_dir, r"bundle\.json: field exit_profile names nope\.npz, which does "
                                r"not exist \(.*nope\.npz\)")


def test_the_default_exit_profile_may_be_missing_until_profile_writes_it(bundle_dir):
    """build names exit_profile.npz before ``profile`` has written it: that bundle loads, with
    no profile; once the file is there it is the bundle's profile."""
    with open(os.path.join(bundle_dir, MANIFEST_NAME)) as f:
        assert json.load(f)["exit_profile"] == EXIT_PROFILE_NAME
    assert load_bundle(bundle_dir).exit_profile_path is None
    open(os.path.join(bundle_dir, EXIT_PROFILE_NAME), "wb").close()
    assert load_bundle(bundle_dir).exit_profile_path == os.path.join(bundle_dir,
                                                                     EXIT_PROFILE_NAME)


@pytest.mark.parametrize("change,match", [
    (lambda o: o.update(exit_profil="p.npz"),
     r"bundle\.json: exit_profil: unknown field \(did you mean 'exit_profile'\?\)"),
    (lambda o: o["stages"][1].update(has_exits=True),
     r"bundle\.json: stages\[1\]\.has_exits: unknown field \(did you mean 'has_exit'\?\)"),
    (lambda o: o["stages"][0]["input"].update(dtpye="float32"),
     r"bundle\.json: stages\[0\]\.input\.dtpye: unknown field \(did you mean 'dtype'\?\)"),
])
def test_an_unknown_manifest_field_is_refused_with_a_suggestion(bundle_dir, change, match):
    """A misspelt optional field was read as absent (``exit_profil``: no profile): like every
    other file of the project, the manifest refuses a field it does not know."""
    _edit(bundle_dir, change)
    _one_line_error(bundle_dir, match)


def test_the_writer_emits_only_fields_the_reader_knows():
    """make_manifest, stage_entry and tensor_entry write nothing the reader would refuse
    (``source`` is free: it is never read)."""
    t = tensor_entry("x", (1, 2), "float32")
    st = stage_entry(1, "stage1.onnx", "0" * 64, t, t, t, False, 1, False)
    assert set(make_manifest("m", 2, [st])) <= set(MANIFEST_KEYS)
    assert set(st) <= set(STAGE_KEYS) and set(t) <= set(TENSOR_KEYS)
