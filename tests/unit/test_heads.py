"""edge-agent heads on the tiny graph: heads trained on a frozen backbone are written into a graph
that computes what was trained, deterministically, and bad input fails in one line."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from agent.cli import main as cli
from agent.errors import UsageError
from engines.heads import make_heads
from engines.heads_fit import _Net, fit_head, split_holdout
from engines.heads_graph import HeadSpec
from engines.tiny_model import FINAL, INPUT, make_tiny_multi_exit
from tests.unit.blob_images import blob_images


def _session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])


@pytest.fixture()
def backbone(tmp_path):
    """The tiny graph with its exit heads stripped (only what ``out`` needs is kept)."""
    full, path = str(tmp_path / "tiny.onnx"), str(tmp_path / "backbone.onnx")
    onnx.save(make_tiny_multi_exit(seed=3), full)
    onnx.utils.extract_model(full, path, [INPUT], [FINAL])
    return path


@pytest.mark.parametrize("kind,cells", [("linear", 1), ("hidden", 1), ("hidden", 4)])
def test_head_gradient_matches_finite_differences(kind, cells):
    """The hand-written gradient of every head shape equals central finite differences."""
    rng = np.random.default_rng(0)
    net = _Net(kind, in_dim=5, cells=cells, hidden=3, classes=4)
    f = rng.normal(size=(7, 5) if kind == "linear" else (7, cells, 5))
    y = rng.integers(0, 4, size=7)
    theta = rng.normal(size=net.init(rng).shape)
    _, grad = net.loss_grad(theta, f, y, 0.1)
    eps = 1e-6
    num = np.array([(net.loss_grad(theta + eps * e, f, y, 0.1)[0]
                     - net.loss_grad(theta - eps * e, f, y, 0.1)[0]) / (2 * eps)
                    for e in np.eye(len(theta))])
    assert np.max(np.abs(num - grad)) < 1e-6


def test_softmax_regression_learns_separable_classes_and_is_deterministic():
    """On linearly separable features the linear head reaches >= 95% held-out accuracy, and two
    fits with the same seed give identical weights."""
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 3, size=(4, 6))
    y = np.arange(400) % 4
    f = (centres[y] + rng.normal(size=(400, 6)) + 50.0).astype(np.float32)  # offset: folded scaling
    train, hold = split_holdout(y, 0.25, seed=0)
    assert len(np.intersect1d(train, hold)) == 0 and len(train) + len(hold) == 400
    assert np.array_equal(np.bincount(y[hold]), [25] * 4)
    a = fit_head(f[train], y[train], f[hold], y[hold], 4)
    b = fit_head(f[train], y[train], f[hold], y[hold], 4)
    assert a.holdout_accuracy >= 0.95
    raw = np.argmax(f[hold] @ a.params["W"].T + a.params["b"], axis=1)
    assert np.mean(raw == y[hold]) == a.holdout_accuracy  # weights apply to raw features
    for k in a.params:
        assert np.array_equal(a.params[k], b.params[k])


@pytest.mark.parametrize("spec", [HeadSpec(), HeadSpec(kind="linear", grid=3),
                                  HeadSpec(kind="mlp", grid=2, hidden=8),
                                  HeadSpec(kind="conv", grid=2, hidden=4)])
def test_written_heads_compute_what_was_trained(backbone, tmp_path, spec):
    """Every head kind: the written graph's exit outputs classify the held-out split exactly as
    the fit reported (the graph pools as the training did, odd map sizes included), the final
    output is the backbone's, and the graph passes build's checks."""
    x, y = blob_images()
    out = str(tmp_path / "me.onnx")
    res = make_heads(backbone, ["c1", "c2"], x, y, out, spec=spec, seed=5)
    assert [h.output for h in res.heads] == ["exit1", "exit2"]
    assert [h.tensor_shape for h in res.heads] == [(1, 4, 8, 8), (1, 8, 4, 4)]
    assert all(h.macs > 0 for h in res.heads)
    hold = split_holdout(y, 0.2, seed=5)[1]
    got = _session(out).run(["exit1", "exit2", FINAL], {INPUT: x[hold]})
    for h, logits in zip(res.heads, got[:2]):
        assert abs(np.mean(np.argmax(logits, 1) == y[hold]) - h.holdout_accuracy) <= 1.0 / len(hold)
    want = _session(backbone).run([FINAL], {INPUT: x[hold]})[0]
    assert np.array_equal(got[2], want)
    assert res.heads[1].holdout_accuracy > 0.6  # the blobs are learnable from c2
    assert res.build_command("B") == ("edge-agent build --onnx %s --cuts c1,c2 --exits 1:exit1,2:exit2 "
                                      "--final out --out B" % out)


def test_same_seed_writes_the_same_graph(backbone, tmp_path):
    """Two runs with the same data and seed write byte-identical graphs."""
    x, y = blob_images()
    a, b = str(tmp_path / "a.onnx"), str(tmp_path / "b.onnx")
    make_heads(backbone, ["c1"], x, y, a, spec=HeadSpec(kind="mlp"), seed=2)
    make_heads(backbone, ["c1"], x, y, b, spec=HeadSpec(kind="mlp"), seed=2)
    with open(a, "rb") as fa, open(b, "rb") as fb:
        assert fa.read() == fb.read()


def test_cli_prints_accuracy_and_flops_per_head_and_the_build_command(backbone, tmp_path, capsys):
    """`edge-agent heads` reads a profile-style .npz (uint8 images scaled), prints one row per head
    with its held-out accuracy and added MACs, and the build command to run next."""
    x, y = blob_images()
    data = tmp_path / "d.npz"
    np.savez(data, x=np.clip(x * 60 + 60, 0, 255).astype(np.uint8), y=y)
    out = tmp_path / "me.onnx"
    assert cli(["heads", "--onnx", backbone, "--at", "c1,c2", "--data", str(data),
                "--out", str(out), "--grid", "2"]) == 0
    printed = capsys.readouterr().out
    rows = [line.split() for line in printed.splitlines() if line.startswith(("1 ", "2 "))]
    assert [r[1:3] for r in rows] == [["c1", "exit1"], ["c2", "exit2"]]
    # c1 (4 channels) pooled 2x2 -> 16 features -> Gemm to 3 classes: 3 * 16 MACs + 3 for the bias
    assert rows[0][5] == str(3 * 16 + 3) and rows[1][5] == str(3 * 32 + 3)
    assert "next: edge-agent build --onnx %s --cuts c1,c2 --exits 1:exit1,2:exit2" % out in printed
    assert out.exists()


def _small_graph(tmp_path, nodes, domains=()):
    """A valid ONNX graph x (N, 4) -> ... -> out (N, 3) with a (1, 3) or (4, 3) weight ``w``."""
    inits = [onnx.numpy_helper.from_array(np.ones((1, 3), np.float32), "w1"),
             onnx.numpy_helper.from_array(np.ones((4, 3), np.float32), "w4"),
             onnx.numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]
                              + [helper.make_opsetid(d, 1) for d in domains])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = str(tmp_path / "small.onnx")
    onnx.save(model, path)
    return path


def _per_sample_scalar(tmp_path):
    """A graph whose tensor ``s`` holds one number per sample: (N,), nothing to pool."""
    return _small_graph(tmp_path, [
        helper.make_node("ReduceSum", ["x", "axis1"], ["s"], keepdims=0),
        helper.make_node("Unsqueeze", ["s", "axis1"], ["s1"]),
        helper.make_node("MatMul", ["s1", "w1"], ["out"])])


def _unrunnable(tmp_path):
    """A valid ONNX graph with an operator of a domain onnxruntime does not know."""
    return _small_graph(tmp_path, [helper.make_node("Mystery", ["x"], ["h"], domain="example.custom"),
                                   helper.make_node("MatMul", ["h", "w4"], ["out"])],
                        domains=["example.custom"])


@pytest.mark.parametrize("case,expected", [
    ("name", "--at: unknown tensor name 'conv2_outt' (no node produces it) (did you mean 'conv2_out'"),
    ("rank", "tensor 's' has shape (1,): a head needs (batch, features)"),
    ("label", "label 3 is out of range: the final output 'out' has 3 classes (labels 0..2)"),
    ("few", "too few samples of class 1: 4 (every class needs at least 5"),
    ("ort", "onnxruntime cannot load"),
    ("conv", "--head conv needs a (batch, channels, height, width) tensor"),
])
def test_bad_input_is_refused_in_one_line(backbone, tmp_path, capsys, case, expected):
    """Unknown tensor (close names suggested), a tensor a head cannot pool, labels out of range,
    too few samples of a class, a graph onnxruntime cannot run: exit 2, one line, nothing written."""
    x, y = blob_images(60)
    onnx_path, at, extra = backbone, "c2", []
    if case == "name":
        at = "conv2_outt"
    elif case == "rank":
        onnx_path, at = _per_sample_scalar(tmp_path), "s"
        x = x[:, 0, 0, :4].copy()
    elif case == "label":
        y = y.copy()
        y[7] = 3
    elif case == "few":
        keep = np.flatnonzero(y != 1)[:40].tolist() + np.flatnonzero(y == 1)[:4].tolist()
        x, y = x[keep], y[keep]
    elif case == "ort":
        onnx_path, at = _unrunnable(tmp_path), "h"
        x = x[:, 0, 0, :4].copy()
    elif case == "conv":
        extra = ["--head", "conv"]
        at = "flat3"
    data = tmp_path / "d.npz"
    np.savez(data, x=x, y=y)
    out = tmp_path / "me.onnx"
    rc = cli(["heads", "--onnx", onnx_path, "--at", at, "--data", str(data), "--out", str(out)] + extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert expected in err[0]
    assert not out.exists()


@pytest.mark.parametrize("opset", [17, 18])
def test_token_tensor_head_averages_over_tokens(tmp_path, opset):
    """A (batch, tokens, features) tensor, as in a transformer, gets a head that averages over
    the tokens (ReduceMean written for the graph's opset) and classifies as the fit reported."""
    rng = np.random.default_rng(4)
    w = onnx.numpy_helper.from_array(rng.normal(size=(6, 6)).astype(np.float32), "w")
    wo = onnx.numpy_helper.from_array(rng.normal(size=(6, 3)).astype(np.float32), "wo")
    reduce = (helper.make_node("ReduceMax", ["hid"], ["pooled"], keepdims=0, axes=[1]) if opset < 18
              else helper.make_node("ReduceMax", ["hid", "ax"], ["pooled"], keepdims=0))
    nodes = [helper.make_node("MatMul", ["x", "w"], ["tok"]), helper.make_node("Relu", ["tok"], ["hid"]),
             reduce, helper.make_node("MatMul", ["pooled", "wo"], ["out"])]
    inits = [w, wo, onnx.numpy_helper.from_array(np.array([1], np.int64), "ax")]
    graph = helper.make_graph(nodes, "tokens",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5, 6])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset < 18 else 9
    path, out = str(tmp_path / "tok.onnx"), str(tmp_path / "me.onnx")
    onnx.save(model, path)
    y = np.arange(150) % 3
    x = rng.normal(size=(150, 5, 6)).astype(np.float32)
    x[np.arange(150), :, y] += 1.5
    res = make_heads(path, ["hid"], x, y, out)
    assert res.heads[0].tensor_shape == (1, 5, 6)
    hold = split_holdout(y, 0.2, seed=0)[1]
    logits = _session(out).run(["exit1"], {"x": x[hold]})[0]
    assert abs(np.mean(np.argmax(logits, 1) == y[hold]) - res.heads[0].holdout_accuracy) <= 1.0 / len(hold)


def test_symbolic_image_sizes_are_fixed_to_the_data_so_build_accepts_the_graph(tmp_path):
    """A backbone exported with symbolic height and width (as optimum does) gets them fixed to
    the data's sample shape in the written graph, so build finds every shape at batch 1."""
    from engines.build import build_bundle

    m = onnx.load_from_string(make_tiny_multi_exit(seed=3).SerializeToString())
    full, path = str(tmp_path / "tiny.onnx"), str(tmp_path / "backbone.onnx")
    onnx.save(m, full)
    onnx.utils.extract_model(full, path, [INPUT], [FINAL])
    b = onnx.load(path)
    dims = b.graph.input[0].type.tensor_type.shape.dim
    for d, name in zip(list(dims)[2:], ("height", "width")):
        d.Clear()
        d.dim_param = name
    del b.graph.value_info[:]
    onnx.save(b, path)
    x, y = blob_images()
    out = str(tmp_path / "me.onnx")
    make_heads(path, ["c1", "c2"], x, y, out)
    written = onnx.load(out).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in written][1:] == [1, 8, 8] and written[0].dim_param == "N"
    bundle = build_bundle(out, ["c1", "c2"], {1: "exit1", 2: "exit2"}, str(tmp_path / "bundle"))
    assert bundle.stages[0].input_shape == (1, 1, 8, 8)


def _count_backbone_runs(monkeypatch):
    """A list that ``make_heads`` appends the number of samples of each backbone run to."""
    import engines.heads as heads

    calls = []
    real = heads.run_tensors

    def counting(model, names, xs, *args):
        calls.append(len(xs))
        return real(model, names, xs, *args)

    monkeypatch.setattr(heads, "run_tensors", counting)
    return calls


def test_feature_cache_is_reused_only_for_the_same_backbone_data_and_grid(backbone, tmp_path, monkeypatch):
    """With a cache folder, a second run on the same backbone, data, tensors and grid reads the
    pooled features instead of running the backbone over the set, and writes the same graph; a
    different grid computes them again."""
    x, y = blob_images()
    cache = str(tmp_path / "cache")
    calls = _count_backbone_runs(monkeypatch)
    a, b, c = (str(tmp_path / n) for n in ("a.onnx", "b.onnx", "c.onnx"))
    make_heads(backbone, ["c1", "c2"], x, y, a, cache_dir=cache)
    make_heads(backbone, ["c1", "c2"], x, y, b, cache_dir=cache)
    make_heads(backbone, ["c1", "c2"], x, y, c, spec=HeadSpec(grid=2), cache_dir=cache)
    assert calls == [1, len(x), 1, 1, len(x)]  # each run probes one sample first
    with open(a, "rb") as fa, open(b, "rb") as fb:
        assert fa.read() == fb.read()


def test_feature_cache_is_not_reused_when_the_backbones_side_file_changes(backbone, tmp_path,
                                                                         monkeypatch):
    """A backbone with its weights in an external-data side file: new weight values change only
    the side file (the .onnx stays the same bytes), and the cached pooled features of the old
    weights are not reused."""
    model = onnx.load(backbone)
    side = str(tmp_path / "side" / "backbone.onnx")
    os.makedirs(os.path.dirname(side))
    onnx.save_model(model, side, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="backbone.onnx.data")
    with open(side, "rb") as f:
        graph_bytes = f.read()
    x, y = blob_images()
    cache = str(tmp_path / "cache")
    calls = _count_backbone_runs(monkeypatch)
    make_heads(side, ["c1", "c2"], x, y, str(tmp_path / "a.onnx"), cache_dir=cache)
    data = side + ".data"
    weights = np.fromfile(data, dtype=np.float32)
    (weights * 0.5).tofile(data)  # other weights, same sizes
    with open(side, "rb") as f:
        assert f.read() == graph_bytes
    make_heads(side, ["c1", "c2"], x, y, str(tmp_path / "b.onnx"), cache_dir=cache)
    assert calls == [1, len(x), 1, len(x)]


def test_a_backbone_ending_in_softmax_is_refused_naming_the_logits_to_give(tmp_path):
    """Rule: a backbone whose output is softmax probabilities (rows >= 0, summing to 1) is
    refused in one line before anything is written: the exit rule applies softmax itself, so
    probabilities gave the final head a mean confidence of 0.2 while every head reported fine."""
    w = onnx.numpy_helper.from_array(np.random.default_rng(1).normal(size=(6, 3))
                                     .astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["hid"]),
             helper.make_node("Softmax", ["hid"], ["probs"], axis=1)]
    graph = helper.make_graph(nodes, "sm", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                          ["N", 6])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])],
                              initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path, out = str(tmp_path / "sm.onnx"), str(tmp_path / "me.onnx")
    onnx.save(model, path)
    y = np.arange(90) % 3
    x = np.random.default_rng(2).normal(size=(90, 6)).astype(np.float32)
    with pytest.raises(UsageError, match=r"output 'probs' looks like softmax probabilities .*"
                                         r"give the logits, the tensor before the Softmax"):
        make_heads(path, ["hid"], x, y, out)
    import os
    assert not os.path.exists(out)
