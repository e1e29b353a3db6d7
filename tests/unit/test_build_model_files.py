"""``edge-agent build`` on the model files and folders an exporter or a deployment gives it:
weights in an external-data side file, a batch dimension written as -1, 'N' or 1, and an --out
folder that is a bind mount."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import onnx
import pytest

from agent import cli
from engines.bundle import load_bundle
from tests.unit.test_build_cut_checks import PREFIX, assert_chain_matches_whole, make_resnet

ARGS = ["--cuts", "a,b", "--exits", "1:e1", "--final", "out"]


def _save_external(path: str) -> None:
    onnx.save_model(make_resnet(skip_from="b"), path, save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.data", size_threshold=0)


def test_weights_in_a_side_file_give_self_contained_stage_files(tmp_path):
    """Rule: a model saved with external data is read with its side file, and every stage file
    holds its own weights: the bundle still loads and computes the whole model's logits once
    the source folder is gone."""
    src = tmp_path / "src"
    src.mkdir()
    _save_external(str(src / "m.onnx"))
    out = str(tmp_path / "bundle")
    assert cli.main(["build", "--onnx", str(src / "m.onnx"), "--out", out] + ARGS) == 0
    assert sorted(os.listdir(out)) == ["bundle.json", "stage1.onnx", "stage2.onnx", "stage3.onnx"]
    kept = str(tmp_path / "whole")
    shutil.move(str(src), kept)
    for f in ("stage1.onnx", "stage2.onnx", "stage3.onnx"):
        m = onnx.load(os.path.join(out, f), load_external_data=False)
        assert not [t.name for t in m.graph.initializer
                    if t.data_location == onnx.TensorProto.EXTERNAL], f
    assert_chain_matches_whole(out, os.path.join(kept, "m.onnx"))


def test_a_missing_side_file_is_one_line_naming_it(tmp_path, capsys):
    """Rule: a model whose external-data file is missing is refused in one line naming that
    file, exit 2, nothing written."""
    src = tmp_path / "src"
    src.mkdir()
    _save_external(str(src / "m.onnx"))
    os.remove(str(src / "weights.data"))
    out = str(tmp_path / "bundle")
    assert cli.main(["build", "--onnx", str(src / "m.onnx"), "--out", out] + ARGS) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(PREFIX), err
    assert str(src / "weights.data") in err[0], err
    assert not os.path.exists(out)


def _with_batch(batch):
    model = make_resnet(batch="N" if batch == -1 else batch, skip_from="b")
    if batch == -1:  # helper writes a negative size as unknown; exporters that say -1 write it
        for vi in list(model.graph.input) + list(model.graph.output):
            dim = vi.type.tensor_type.shape.dim[0]
            dim.Clear()
            dim.dim_value = -1
    return model


@pytest.mark.parametrize("batch,dynamic", [(-1, True), ("N", True), (1, False)],
                         ids=["minus-1", "symbolic", "fixed-1"])
def test_a_dynamic_batch_as_minus_1_or_a_name_and_a_fixed_batch_of_1_build(tmp_path, batch,
                                                                            dynamic):
    """Rule: a batch dimension written -1 is dynamic, as onnxruntime and TensorRT read it (and
    as a symbolic 'N' is): the build accepts it and marks every stage dynamic_batch; a fixed
    batch of 1 builds with dynamic_batch false. Every bundle computes the whole model's
    logits."""
    path = str(tmp_path / "m.onnx")
    onnx.save(_with_batch(batch), path)
    out = str(tmp_path / "bundle")
    assert cli.main(["build", "--onnx", path, "--out", out] + ARGS) == 0
    with open(os.path.join(out, "bundle.json")) as f:
        stages = json.load(f)["stages"]
    assert [s["dynamic_batch"] for s in stages] == [dynamic] * 3
    assert [s["input"]["shape"] for s in stages] == [[1, 1, 8, 8], [1, 4, 8, 8], [1, 4, 8, 8]]
    assert_chain_matches_whole(out, path)


@pytest.fixture
def bind_mount(tmp_path):
    """An empty folder that is a bind mount of another folder on the same file system (as a
    container volume is); skipped where this process may not mount."""
    src, dst = tmp_path / "volume", tmp_path / "bundle"
    src.mkdir()
    dst.mkdir()
    try:
        done = subprocess.run(["mount", "--bind", str(src), str(dst)], capture_output=True)
    except OSError:
        done = None
    if done is None or done.returncode != 0:
        pytest.skip("cannot make a bind mount here (needs root)")
    try:
        yield str(dst), str(src)
    finally:
        subprocess.run(["umount", str(dst)], check=True)


def test_an_out_folder_that_is_a_bind_mount_is_built_and_rebuilt_in_place(bind_mount, tmp_path):
    """Rule: --out on a bind mount (which os.path.ismount misses and which cannot be renamed)
    is written inside the mount: the first build and a rebuild succeed, and the bundle lands
    in the mounted folder, with nothing left beside it."""
    out, volume = bind_mount
    path = str(tmp_path / "m.onnx")
    onnx.save(make_resnet(skip_from="b"), path)
    for cuts in ("a,b", "b"):
        assert cli.main(["build", "--onnx", path, "--out", out, "--cuts", cuts, "--exits", "1:e1",
                         "--final", "out"]) == 0
        assert load_bundle(volume).num_stages == len(cuts.split(",")) + 1
    assert sorted(os.listdir(volume)) == ["bundle.json", "stage1.onnx", "stage2.onnx"]
    assert sorted(os.listdir(str(tmp_path))) == ["bundle", "m.onnx", "volume"]
