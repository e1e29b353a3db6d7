"""A stage file this onnxruntime cannot load is one line that gives the reason and what to do:
onnxruntime's C++ source place and signature are dropped (they had used up the line before the
reason), a model of a newer ONNX IR version says so with its fix (rebuilding alone would not
help), and `calibrate` says it as `run` does, never with a traceback."""

from __future__ import annotations

import json
import os
import shutil

import onnx
import onnxruntime as ort
import pytest

from engines.bundle import sha256_file
from engines.demo import DEMO_BUNDLE_DIR
from engines.loader import load_failure
from tests.unit.test_calibrate_field import _calibrate


def _newer_ir_bundle(tmp_path) -> str:
    """A copy of the demo bundle whose stage 1 is saved at IR version 99 (hashes updated)."""
    directory = str(tmp_path / "bundle")
    shutil.copytree(DEMO_BUNDLE_DIR, directory)
    with open(os.path.join(directory, "bundle.json")) as f:
        manifest = json.load(f)
    path = os.path.join(directory, manifest["stages"][0]["file"])
    model = onnx.load(path)
    model.ir_version = 99
    onnx.save(model, path)
    manifest["stages"][0]["sha256"] = sha256_file(path)
    with open(os.path.join(directory, "bundle.json"), "w") as f:
        json.dump(manifest, f)
    return directory


def test_onnxruntimes_own_error_keeps_its_reason_and_drops_its_cpp_noise(tmp_path):
    """Rule: the real error of onnxruntime for a newer IR version comes out without the C++
    place and signature, with the reason and a fix naming the IR version it reads."""
    path = os.path.join(_newer_ir_bundle(tmp_path), "stage1.onnx")
    with pytest.raises(Exception) as err:
        ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    why, fix = load_failure(err.value)
    assert "Unsupported model IR version: 99" in why
    assert "onnxruntime::" not in why and "onnxruntime_src" not in why, why
    assert fix.startswith("this onnxruntime reads ONNX IR up to ") and "newer onnxruntime" in fix


def test_a_long_error_keeps_its_end_and_any_other_error_says_rebuild():
    """Rule: past the limit the start is cut (the reason comes last); a load error that is not
    about the IR version keeps the fix "rebuild the bundle"."""
    why, fix = load_failure(ValueError("x" * 500 + " the reason"), limit=100)
    assert why.startswith("ValueError: ...") and why.endswith(" the reason")
    assert len(why) == len("ValueError: ") + 100 and fix == "rebuild the bundle (edge-agent build)"


def test_calibrate_names_an_unloadable_stage_in_one_line(tmp_path):
    """Rule: `calibrate` on a bundle whose stage this onnxruntime cannot load exits 2 with one
    line (stage, file, reason, fix), before measuring anything."""
    bundle = _newer_ir_bundle(tmp_path)
    proc = _calibrate(tmp_path, "--bundle", bundle, "--state-dir", str(tmp_path / "st"),
                      "--backend", "onnxruntime", "--stages", "1")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "measuring" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("edge-agent calibrate: error: stage 1: ") and (
        "cannot be loaded as an engine" in last and "IR version: 99" in last), last


def test_doctor_gives_the_same_reason_and_fix_for_an_unloadable_stage(tmp_path):
    """Rule: `doctor --bundle` FAILs the bundle check with the reason `run` gives (onnxruntime's
    noise dropped) and the fix for a newer IR version, not "rebuild"."""
    from agent.ops.doctor import Context, check_bundle

    check = check_bundle(Context(bundle=_newer_ir_bundle(tmp_path)))
    assert check.status == "FAIL" and "stage 1 (stage1.onnx) does not run: " in check.detail
    assert "IR version: 99" in check.detail and "onnxruntime::" not in check.detail
    assert check.fix.startswith("this onnxruntime reads ONNX IR up to "), check.fix
