"""edge-agent build: the stage chain reproduces the unsplit graph, and bad input fails in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from agent.cli import main as cli
from engines.bundle import load_bundle
from engines.loader import load_engine
from engines.demo import DEMO_BUNDLE_DIR, MULTI_EXIT_ONNX, REPLAY_PATH
from engines.tiny_model import CUTS, FINAL, INPUT, make_tiny_multi_exit

MAX_ABS_DIFF = 1e-5


def _session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])


def _chain(bundle, x):
    """Run the bundle's stages one after another; returns the logits of every head, in order."""
    logits = []
    engines = [load_engine(s, backend="onnxruntime", threads=1) for s in bundle.stages]
    t = x
    for e in engines:
        out = e.run(t)
        if out.logits is not None:
            logits.append(out.logits)
        t = out.features
        e.close()
    return logits


@pytest.fixture()
def tiny_onnx(tmp_path):
    path = str(tmp_path / "tiny.onnx")
    onnx.save(make_tiny_multi_exit(), path)
    return path


def test_tiny_chain_reproduces_unsplit_graph(tiny_onnx, tmp_path):
    """Chained stages give the unsplit graph's exit and final outputs (max abs diff <= 1e-5)."""
    assert cli(["build", "--onnx", tiny_onnx, "--cuts", ",".join(CUTS),
                "--exits", "1:e1,2:e2", "--out", str(tmp_path / "b")]) == 0
    bundle = load_bundle(str(tmp_path / "b"))
    x = np.random.default_rng(1).standard_normal((64, 1, 8, 8)).astype(np.float32)
    want = _session(tiny_onnx).run(["e1", "e2", FINAL], {INPUT: x})
    got = _chain(bundle, x)
    assert len(got) == 3
    for w, g in zip(want, got):
        assert np.max(np.abs(w - g)) <= MAX_ABS_DIFF


def test_demo_chain_reproduces_shipped_multi_exit_graph_on_replay_set():
    """The demo bundle's chained stages reproduce the shipped unsplit ONNX on the whole replay set."""
    bundle = load_bundle(DEMO_BUNDLE_DIR)
    with np.load(REPLAY_PATH) as z:
        x = z["x"]
    sess = _session(MULTI_EXIT_ONNX)
    heads = [s.logits_output for s in bundle.stages if s.logits_output]
    want = sess.run(heads, {bundle.stages[0].input_name: x})
    got = _chain(bundle, x)
    assert len(x) >= 2000 and len(got) == len(heads) == 4
    for w, g in zip(want, got):
        assert np.max(np.abs(w - g)) <= MAX_ABS_DIFF


def test_rebuild_removes_stale_profile_and_extra_stages(tiny_onnx, tmp_path):
    """Rebuilding into a bundle directory drops the old exit profile and stage files it no longer has."""
    out = str(tmp_path / "b")
    assert cli(["build", "--onnx", tiny_onnx, "--cuts", "c1,c2", "--exits", "1:e1,2:e2", "--out", out]) == 0
    open(os.path.join(out, "exit_profile.npz"), "wb").close()
    assert cli(["build", "--onnx", tiny_onnx, "--cuts", "c2", "--exits", "1:e2", "--final", "out",
                "--out", out]) == 0
    assert sorted(os.listdir(out)) == ["bundle.json", "stage1.onnx", "stage2.onnx"]
    assert load_bundle(out).num_stages == 2


@pytest.mark.parametrize("args, message", [
    (["--cuts", "c1,nope"], "unknown tensor name 'nope'"),
    (["--cuts", "c2,c1"], "does not separate the graph"),
    (["--cuts", "c1,c2", "--exits", "3:e2"], "stage 3 is out of range"),
    (["--cuts", "c1,c2", "--exits", "1:e1,2:zz"], "unknown tensor name 'zz'"),
    (["--cuts", "c1,c2", "--exits", "one:e1"], "expected STAGE:OUTPUT"),
    (["--cuts", "c1,,c2"], "comma-separated"),
    (["--cuts", "c1,c2", "--exits", "1:e2", "--final", "out"], "exit head 'e2' of stage 1 is computed after the cut 'c1'"),
])
def test_bad_cut_or_exit_specs_fail_with_one_line(tiny_onnx, tmp_path, capsys, args, message):
    """Unknown names, misordered cuts and bad exit specs print one line and exit 2, writing nothing."""
    out = tmp_path / "b"
    argv = ["build", "--onnx", tiny_onnx, "--out", str(out)] + args
    if "--exits" not in args:
        argv += ["--exits", "1:e1,2:e2"]
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("edge-agent build: error:")
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--cuts", "c2", "--exits", "1:gap1", "--final", "out"],
     "exit output 'gap1' must have shape (batch, classes)"),
    (["--cuts", "c2", "--exits", "1:flat1", "--final", "out"],
     "exit output 'out' has 3 classes, an earlier head has 4"),
])
def test_heads_refused_by_their_shapes_leave_no_out_folder(tiny_onnx, tmp_path, capsys, args,
                                                          message):
    """Every input check, the heads' shapes and classes included, comes before --out is made:
    a refused build prints one line and leaves no new folder (nor its new parents)."""
    out = tmp_path / "new" / "b"
    assert cli(["build", "--onnx", tiny_onnx, "--out", str(out)] + args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "new").exists()


def _break_stage2_extraction(monkeypatch):
    """Make onnx's extraction of each build's second stage fail, as a graph onnx cannot cut
    would (a build makes one extractor and cuts its stages in order)."""
    real = onnx.utils.Extractor.extract_model

    def extract(self, inputs, outputs):
        self.cuts_made = getattr(self, "cuts_made", 0) + 1
        if self.cuts_made == 2:
            raise ValueError("extraction broke")
        return real(self, inputs, outputs)

    monkeypatch.setattr(onnx.utils.Extractor, "extract_model", extract)


def test_a_stage_that_fails_to_extract_removes_the_folder_the_build_made(tiny_onnx, tmp_path,
                                                                         monkeypatch):
    """Should extraction still fail after the folder was made, the build removes the folders it
    made (and nothing of an --out that existed before)."""
    from engines.build import BuildError, build_bundle

    _break_stage2_extraction(monkeypatch)
    with pytest.raises(BuildError, match="cannot extract stage 2"):
        build_bundle(tiny_onnx, ["c1", "c2"], {1: "e1", 2: "e2"}, str(tmp_path / "new" / "b"))
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(BuildError, match="cannot extract stage 2"):
        build_bundle(tiny_onnx, ["c1", "c2"], {1: "e1", 2: "e2"}, str(tmp_path / "kept"))
    assert (tmp_path / "kept").is_dir()


def test_skip_connection_across_a_cut_is_refused(tmp_path, capsys):
    """A cut jumped over by a skip connection does not separate the graph: refused, one line."""
    path = str(tmp_path / "skip.onnx")
    onnx.save(make_tiny_multi_exit(skip=True), path)
    assert cli(["build", "--onnx", path, "--cuts", "c1,c2", "--exits", "1:e1,2:e2",
                "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stage 3" in err[0] and "bypasses 'c2'" in err[0]


def test_missing_or_corrupt_onnx_file_fails_with_one_line(tmp_path):
    """A missing or non-ONNX file is named in a single stderr line from the real console entry point."""
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    for path, message in ((str(tmp_path / "absent.onnx"), "does not exist"), (str(bad), "not a valid ONNX")):
        proc = subprocess.run([sys.executable, "-m", "agent", "build", "--onnx", path, "--cuts", "a",
                               "--out", str(tmp_path / "b")], capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and path in lines[0]


def test_rebuilding_the_demo_bundle_from_its_source_gives_the_same_manifest(tmp_path):
    """The shipped bundle is exactly what `build` makes from the shipped multi-exit ONNX with the
    cuts and exits recorded in its manifest (names, shapes, flops, input_bytes)."""
    with open(os.path.join(DEMO_BUNDLE_DIR, "bundle.json")) as f:
        source = json.load(f)["source"]
    out = str(tmp_path / "again")
    assert cli(["build", "--onnx", MULTI_EXIT_ONNX, "--cuts", ",".join(source["cuts"]),
                "--exits", ",".join("%s:%s" % kv for kv in sorted(source["exits"].items())),
                "--final", source["final"], "--name", load_bundle(DEMO_BUNDLE_DIR).name, "--out", out]) == 0
    shipped, again = load_bundle(DEMO_BUNDLE_DIR), load_bundle(out)
    assert shipped.name == again.name and shipped.num_classes == again.num_classes
    assert len(shipped.stages) == len(again.stages)
    for a, b in zip(shipped.stages, again.stages):
        assert replace(a, onnx_path="", sha256="") == replace(b, onnx_path="", sha256="")


def _good_bundle(tiny_onnx, out):
    """A bundle at ``out`` with an exit profile; returns its files' bytes."""
    assert cli(["build", "--onnx", tiny_onnx, "--cuts", "c1,c2", "--exits", "1:e1,2:e2", "--out", out]) == 0
    with open(os.path.join(out, "exit_profile.npz"), "wb") as f:
        f.write(b"profile of these stages")
    return {f: open(os.path.join(out, f), "rb").read() for f in os.listdir(out)}


def test_fixed_batch_above_1_is_refused_before_the_existing_bundle_is_touched(tiny_onnx, tmp_path,
                                                                             capsys):
    """A model with a fixed batch of 4 is refused in one line naming the ONNX input and saying to
    export with batch 1 or a dynamic batch, before --out is written: the bundle there stays."""
    out = str(tmp_path / "b")
    before = _good_bundle(tiny_onnx, out)
    model = onnx.load(tiny_onnx)
    for vi in list(model.graph.input) + list(model.graph.output):
        vi.type.tensor_type.shape.dim[0].Clear()
        vi.type.tensor_type.shape.dim[0].dim_value = 4
    b4 = str(tmp_path / "b4.onnx")
    onnx.save(model, b4)
    assert cli(["build", "--onnx", b4, "--cuts", "c1,c2", "--exits", "1:e1,2:e2", "--out", out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["edge-agent build: error: the ONNX input 'x' has a fixed batch dimension of 4 "
                   "(shape [4, 1, 8, 8]); a bundle's stages run one sample at a time: export the "
                   "model with batch 1 or a dynamic batch dimension"]
    assert {f: open(os.path.join(out, f), "rb").read() for f in os.listdir(out)} == before
    assert sorted(os.listdir(str(tmp_path))) == ["b", "b4.onnx", "tiny.onnx"]


def test_a_build_failing_after_writing_leaves_the_previous_bundle_as_it_was(tiny_onnx, tmp_path,
                                                                            monkeypatch):
    """The new stages are written next to --out and swapped in only once they load: a build that
    fails midway (here: the second stage cannot be extracted) leaves the bundle that was at --out
    loading, with its stage files and exit profile, and no folder of its own behind."""
    from engines.build import BuildError, build_bundle

    out = str(tmp_path / "b")
    before = _good_bundle(tiny_onnx, out)
    _break_stage2_extraction(monkeypatch)
    with pytest.raises(BuildError, match="cannot extract stage 2"):
        build_bundle(tiny_onnx, ["c2"], {1: "e2"}, out, final_output=FINAL)
    assert {f: open(os.path.join(out, f), "rb").read() for f in os.listdir(out)} == before
    assert load_bundle(out).num_stages == 3
    assert sorted(os.listdir(str(tmp_path))) == ["b", "tiny.onnx"]


def test_a_stage_without_conv_gemm_or_matmul_is_refused_naming_its_cuts(tiny_onnx, tmp_path, capsys):
    """A cut that leaves a stage no Conv/Gemm/MatMul (0 MACs, which calibrate and serving
    cannot time) is refused before writing, naming the stage and the cuts to move."""
    out = tmp_path / "b"
    assert cli(["build", "--onnx", tiny_onnx, "--cuts", "conv1_out,c1", "--final", "out",
                "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["edge-agent build: error: stage 2 (conv1_out -> c1) has no Conv, ConvTranspose, "
                   "Gemm or MatMul, so its MAC count is 0 and it cannot be calibrated or served: "
                   "move the cut 'conv1_out' or 'c1' so that the stage holds some of that work"]
    assert not out.exists()


def test_a_batch_fixed_inside_the_graph_is_refused_naming_the_tensor(tiny_onnx, tmp_path, capsys):
    """A dynamic input whose graph fixes another batch size inside (a Reshape to (2, 128)) is
    refused naming the tensor whose first dimension is not the batch, before writing."""
    model = onnx.load(tiny_onnx)
    for t in model.graph.initializer:
        if t.name == "flat_shape":
            t.CopyFrom(onnx.numpy_helper.from_array(np.array([2, 128], np.int64), "flat_shape"))
    path = str(tmp_path / "b2.onnx")
    onnx.save(model, path)
    out = tmp_path / "b"
    assert cli(["build", "--onnx", path, "--cuts", "flat3", "--exits", "1:e2", "--final", "out",
                "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cut tensor 'flat3' has shape [2, 128] when the input has batch 1" in err[0]
    assert not out.exists()


def test_rebuilding_the_working_folder_replaces_its_files_in_place(tiny_onnx, tmp_path, monkeypatch):
    """When --out is the working folder (which cannot be moved aside), the new files replace the
    old ones in it, the manifest last, and the old extra stage and profile go."""
    out = str(tmp_path / "b")
    _good_bundle(tiny_onnx, out)
    monkeypatch.chdir(out)
    assert cli(["build", "--onnx", tiny_onnx, "--cuts", "c2", "--exits", "1:e2", "--final", "out",
                "--out", "."]) == 0
    assert sorted(os.listdir(out)) == ["bundle.json", "stage1.onnx", "stage2.onnx"]
    assert load_bundle(out).num_stages == 2 and os.getcwd() == os.path.realpath(out)


def test_rebuilding_a_mount_point_stages_inside_it(tiny_onnx, tmp_path, monkeypatch):
    """A --out that is a mount point (or in a folder that takes no new entry) cannot be
    replaced by renaming a sibling into its place: the new bundle is made inside it and its
    files replace the old ones there, the manifest last (staging beside it failed: another
    file system). Python is told the folder is a mount point; the rest is real."""
    out = str(tmp_path / "b")
    _good_bundle(tiny_onnx, out)
    real = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: os.path.abspath(p) == out or real(p))
    assert cli(["build", "--onnx", tiny_onnx, "--cuts", "c2", "--exits", "1:e2", "--final", "out",
                "--out", out]) == 0
    assert sorted(os.listdir(out)) == ["bundle.json", "stage1.onnx", "stage2.onnx"]
    assert load_bundle(out).num_stages == 2
    assert sorted(os.listdir(str(tmp_path))) == ["b", "tiny.onnx"]  # nothing staged beside


def test_a_rank_0_output_is_one_line(tiny_onnx, tmp_path, capsys):
    """A final output without a batch dimension (a scalar) is refused in one line naming it,
    not with an IndexError."""
    model = onnx.load(tiny_onnx)
    g = model.graph
    g.node.append(onnx.helper.make_node("ReduceMax", [FINAL], ["s"], keepdims=0))
    g.output.append(onnx.helper.make_tensor_value_info("s", onnx.TensorProto.FLOAT, []))
    path = str(tmp_path / "scalar.onnx")
    onnx.save(model, path)
    rc = cli(["build", "--onnx", path, "--cuts", "c2", "--exits", "1:e2", "--final", "s",
              "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "'s'" in err[0] and "Traceback" not in err[0], err
    assert not (tmp_path / "b").exists()
