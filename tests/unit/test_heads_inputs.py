"""edge-agent heads on backbones that are not plain float graphs with a dynamic batch: a fixed
batch other than 1 is refused up front, uint8 inputs get the bytes, a graph that only runs at
batch 1 is run one sample at a time, existing exit heads are dropped with their nodes, and the
backbone file is never the output."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from agent.cli import main as cli
from engines.build import build_bundle
from engines.heads import make_heads
from engines.heads_graph import HeadsError
from engines.profile import profile_bundle
from engines.tiny_model import FINAL, INPUT, make_tiny_multi_exit
from tests.unit.blob_images import blob_images  # the blob images every heads test learns


def _backbone(tmp_path, name="backbone.onnx", keep_exits=False, seed=3):
    """The tiny graph, as a ModelProto and saved; without its exit heads unless ``keep_exits``."""
    full, path = str(tmp_path / "full.onnx"), str(tmp_path / name)
    onnx.save(make_tiny_multi_exit(seed=seed), full)
    if keep_exits:
        onnx.save(onnx.load(full), path)
    else:
        onnx.utils.extract_model(full, path, [INPUT], [FINAL])
    return onnx.load(path), path


def _cli_error(capsys, argv):
    rc = cli(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    return err[0]


def test_a_fixed_batch_other_than_1_is_refused_before_training(tmp_path, capsys):
    """A backbone exported with a fixed batch of 4 is refused in one line that names the input
    and says to export with batch 1 or a dynamic batch; nothing is written."""
    model, path = _backbone(tmp_path)
    for vi in list(model.graph.input) + list(model.graph.output):
        vi.type.tensor_type.shape.dim[0].Clear()
        vi.type.tensor_type.shape.dim[0].dim_value = 4
    onnx.save(model, path)
    x, y = blob_images(60)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    out = tmp_path / "me.onnx"
    err = _cli_error(capsys, ["heads", "--onnx", path, "--at", "c1", "--data",
                              str(tmp_path / "d.npz"), "--out", str(out)])
    assert err.startswith("edge-agent heads: error: the ONNX input 'x' has a fixed batch "
                          "dimension of 4 (shape [4, 1, 8, 8])")
    assert "export the model with batch 1 or a dynamic batch dimension" in err
    assert not out.exists()


def test_uint8_input_gets_the_bytes_so_heads_train_and_profile_well_above_chance(tmp_path):
    """A backbone whose input is uint8 (a Cast inside) gets the data file's bytes as they are,
    not bytes scaled to [0, 1] and cast back to 0: its heads and profile are far above the 1/3
    of chance, and equal to those of the float backbone fed the same images."""
    model, float_path = _backbone(tmp_path, "float.onnx")
    g = model.graph
    g.input[0].name = "x_u8"
    g.input[0].type.tensor_type.elem_type = TensorProto.UINT8
    g.initializer.extend([numpy_helper.from_array(np.array(1 / 60, np.float32), "scale"),
                          numpy_helper.from_array(np.array(-1.0, np.float32), "shift")])
    g.node.insert(0, helper.make_node("Add", ["x_scaled", "shift"], [INPUT]))
    g.node.insert(0, helper.make_node("Mul", ["x_f", "scale"], ["x_scaled"]))
    g.node.insert(0, helper.make_node("Cast", ["x_u8"], ["x_f"], to=TensorProto.FLOAT))
    u8_path = str(tmp_path / "u8.onnx")
    onnx.save(model, u8_path)
    x, y = blob_images()
    data = str(tmp_path / "d.npz")
    np.savez(data, x=np.clip(x * 60 + 60, 0, 255).astype(np.uint8), y=y)
    me = str(tmp_path / "me.onnx")
    assert cli(["heads", "--onnx", u8_path, "--at", "c1,c2", "--data", data, "--out", me]) == 0
    from engines.profile import load_dataset
    xs, ys = load_dataset(data, scale_uint8=False)
    assert xs.dtype == np.uint8
    res = make_heads(u8_path, ["c1", "c2"], xs, ys, me)
    ref = make_heads(float_path, ["c1", "c2"], xs.astype(np.float32) / 60 - 1, ys,
                     str(tmp_path / "ref.onnx"))
    assert res.heads[1].holdout_accuracy >= 0.9
    assert [h.holdout_accuracy for h in res.heads] == pytest.approx(
        [h.holdout_accuracy for h in ref.heads], abs=0.02)
    bundle = build_bundle(me, ["c1", "c2"], {1: "exit1", 2: "exit2"}, str(tmp_path / "b"))
    assert bundle.stages[0].input_dtype == "uint8"
    prof = profile_bundle(bundle, xs, ys, embedding="none")
    assert prof.correct[:, 1].mean() >= 0.9


def _flatten_batch_fixed_at(tmp_path, batch):
    """The backbone with its Reshape to (batch, 128) instead of (-1, 128): a batch size fixed
    inside a dynamic-batch graph."""
    model, path = _backbone(tmp_path)
    for t in model.graph.initializer:
        if t.name == "flat_shape":
            t.CopyFrom(numpy_helper.from_array(np.array([batch, 128], np.int64), "flat_shape"))
    onnx.save(model, path)
    return path


def test_a_graph_that_runs_only_at_batch_1_is_run_one_sample_at_a_time(tmp_path, capsys):
    """A dynamic-batch graph that fixes batch 1 inside (a Reshape to (1, 128)) fails at a batch
    of 128; its tensors are then read one sample at a time, and the heads train as on the
    same graph without the fixed batch."""
    path = _flatten_batch_fixed_at(tmp_path, 1)
    x, y = blob_images(300)
    res = make_heads(path, ["c1", "c2"], x, y, str(tmp_path / "me.onnx"))
    _, plain = _backbone(tmp_path, "plain.onnx")
    ref = make_heads(plain, ["c1", "c2"], x, y, str(tmp_path / "ref.onnx"))
    assert res.heads[1].holdout_accuracy >= 0.9
    assert [h.holdout_accuracy for h in res.heads] == [h.holdout_accuracy for h in ref.heads]
    assert capsys.readouterr().err == ""


def test_existing_exit_heads_are_dropped_with_their_nodes_and_weights(tmp_path):
    """With --final on a graph that already has exit heads, the old heads' nodes and weights go
    with their outputs: the new heads get the names exit1, exit2, and the backbone's MACs are
    those of the graph without the old heads."""
    model, path = _backbone(tmp_path, keep_exits=True)
    assert [o.name for o in model.graph.output] == ["e1", "e2", FINAL]
    for o, new in zip(model.graph.output, ("exit1", "exit2")):  # old heads under the new names
        for n in model.graph.node:
            n.output[:] = [new if t == o.name else t for t in n.output]
        o.name = new
    onnx.save(model, path)
    x, y = blob_images()
    out = str(tmp_path / "me.onnx")
    res = make_heads(path, ["c1", "c2"], x, y, out, final=FINAL)
    assert [h.output for h in res.heads] == ["exit1", "exit2"]
    written = onnx.load(out).graph
    assert not {"gemm1", "gemm2", "gap1", "gap2"} & {n.name for n in written.node}
    assert not {"we1", "be1", "we2", "be2"} & {t.name for t in written.initializer}
    bare, _ = _backbone(tmp_path / "..", "bare.onnx")
    from engines.flops import count_macs
    assert res.backbone_macs == count_macs(bare)


def test_out_equal_to_the_backbone_is_refused(tmp_path, capsys):
    """--out naming the --onnx file would overwrite the backbone: refused before anything runs."""
    _, path = _backbone(tmp_path)
    before = open(path, "rb").read()
    x, y = blob_images(60)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    err = _cli_error(capsys, ["heads", "--onnx", path, "--at", "c1", "--data",
                              str(tmp_path / "d.npz"), "--out",
                              os.path.join(str(tmp_path), ".", "backbone.onnx")])
    assert "is the --onnx backbone" in err
    assert open(path, "rb").read() == before


def test_batch_one_failure_on_every_sample_is_still_one_line(tmp_path):
    """A graph that fails at batch 1 too is refused with onnxruntime's first line of the batch."""
    path = _flatten_batch_fixed_at(tmp_path, 2)
    x, y = blob_images(60)
    with pytest.raises(HeadsError, match="onnxruntime cannot run .* on samples 0..0"):
        make_heads(path, ["c1"], x, y, str(tmp_path / "me.onnx"))
