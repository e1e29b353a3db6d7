"""edge-agent build on a source that keeps its weights in side files, one past protobuf's 2 GB
limit included: the graph is read without its weights, and each stage reads only its own.

A source over the limit is made here without writing gigabytes: a tensor no stage uses, whose
bytes lie in a sparse side file (a hole the file system stores in no block). Whoever reads the
source whole reads those gigabytes and cannot check or size it; a build that reads only what
each stage needs never touches them.
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest

from engines import build as build_mod
from engines.build import BuildError, build_bundle
from engines.bundle import MANIFEST_NAME, load_bundle, sha256_file
from engines.heads import load_backbone
from engines.tiny_model import CUTS, EXITS, make_tiny_multi_exit
from tests.integration.bundle_chain import chain_logits
from tests.integration.sparse_weights import OVER_LIMIT_BYTES, add_unused_weight



def _save_external(path, model=None):
    """The tiny model with every tensor in the side file ``<name>.data``."""
    model = model or make_tiny_multi_exit(seed=3)
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=os.path.basename(path) + ".data", size_threshold=0)
    return path


@pytest.fixture()
def inline(tmp_path):
    path = str(tmp_path / "inline" / "tiny.onnx")
    os.makedirs(os.path.dirname(path))
    onnx.save(make_tiny_multi_exit(seed=3), path)
    return build_bundle(path, list(CUTS), dict(EXITS), str(tmp_path / "inline" / "b"))


def _build(source, out, **kw):
    return build_bundle(source, list(CUTS), dict(EXITS), out, **kw)


def _stages(bundle):
    """The manifest's stage entries without what names the files' bytes."""
    with open(os.path.join(bundle.path, MANIFEST_NAME)) as f:
        stages = json.load(f)["stages"]
    return [{k: v for k, v in st.items() if k not in ("sha256", "external_data")} for st in stages]


def _same_model(a, b):
    assert _stages(a) == _stages(b)
    for x, y in zip(chain_logits(a), chain_logits(b)):
        # the same weights and nodes; a stage's graph may carry more inferred shapes, which can
        # let onnxruntime fuse other kernels, so equal to rounding, not bit for bit
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_a_source_with_its_weights_in_side_files_builds_the_same_bundle_as_inline(inline,
                                                                                 tmp_path):
    """A source with every tensor (shape constants too) in a side file builds the bundle of the
    same model kept inline: the same stage entries and, stage by stage, the same logits."""
    source = _save_external(str(tmp_path / "tiny.onnx"))
    _same_model(_build(source, str(tmp_path / "b")), inline)


def test_a_source_past_protobufs_limit_is_built_without_reading_what_no_stage_needs(inline,
                                                                                   tmp_path):
    """A source whose side files make it larger than protobuf's 2 GiB limit is checked, sized
    and cut without being read whole: the build succeeds, gives the bundle of the same model
    inline, and no stage holds the tensor that none uses."""
    source = _save_external(str(tmp_path / "big.onnx"))
    add_unused_weight(source, OVER_LIMIT_BYTES)
    bundle = _build(source, str(tmp_path / "b"))
    _same_model(bundle, inline)
    for spec in bundle.stages:
        names = {t.name for t in onnx.load(spec.onnx_path, load_external_data=False).graph.initializer}
        assert "unused" not in names


def test_heads_reads_a_backbone_past_protobufs_limit_without_its_weights(tmp_path):
    """``heads`` reads a backbone past protobuf's 2 GiB limit with its side files as ``build``
    does: the graph with only its small side-file tensors, the weights over
    GRAPH_DATA_MAX_BYTES left where they are (to be mapped when it runs), so the sparse
    gigabytes are never read."""
    source = _save_external(str(tmp_path / "big.onnx"))
    add_unused_weight(source, OVER_LIMIT_BYTES)
    model, external = load_backbone(source)
    assert external
    left = {t.name for t in model.graph.initializer
            if t.data_location == onnx.TensorProto.EXTERNAL}
    assert left == {"unused"}


def test_weights_larger_than_shape_constants_stay_out_of_the_graph_the_build_reads(
        inline, tmp_path, monkeypatch):
    """The graph is read with only the side-file tensors of at most GRAPH_DATA_MAX_BYTES (the
    reshape's 16-byte shape, which shape inference needs to know the head's shape); larger
    ones are read by the stages that hold them. At 0, the reshape's output is unknown and the
    build is refused for it, so the small tensors are what make the shapes known."""
    source = _save_external(str(tmp_path / "tiny.onnx"))
    monkeypatch.setattr(build_mod, "GRAPH_DATA_MAX_BYTES", 100)
    graph = build_mod.load_checked_graph(source)
    external = {t.name for t in graph.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL}
    assert {"w1", "w2", "w3", "flat_shape"} & external == {"w1", "w2", "w3"}
    _same_model(_build(source, str(tmp_path / "b")), inline)
    monkeypatch.setattr(build_mod, "GRAPH_DATA_MAX_BYTES", 0)
    with pytest.raises(BuildError, match="shape of exit output 'out' is unknown"):
        _build(source, str(tmp_path / "b0"))


@pytest.mark.parametrize("inline_max_bytes", [build_mod.STAGE_INLINE_MAX_BYTES, 0])
def test_a_stage_is_written_from_the_sources_side_file(inline, tmp_path, inline_max_bytes):
    """Each stage reads its weights from the source's side file: inline under the limit, and
    past it (lowered here) copied into the stage's own side file, which the manifest lists; the
    source's side file is named by no stage."""
    source = _save_external(str(tmp_path / "tiny.onnx"))
    bundle = _build(source, str(tmp_path / "b"), inline_max_bytes=inline_max_bytes)
    _same_model(bundle, inline)
    files = sorted(os.listdir(bundle.path))
    assert "tiny.onnx.data" not in files
    with open(os.path.join(bundle.path, MANIFEST_NAME)) as f:
        listed = [e for st in json.load(f)["stages"] for e in st.get("external_data", [])]
    assert sorted(e["file"] for e in listed) == [f for f in files if f.endswith(".data")]
    assert all(e["sha256"] == sha256_file(os.path.join(bundle.path, e["file"])) for e in listed)
    assert bool(listed) == (inline_max_bytes == 0)


def _w3_last(tmp_path):
    """The tiny model in a side file whose last tensor is w3 (1536 bytes, stage 3's weight)."""
    model = make_tiny_multi_exit(seed=3)
    inits = sorted(model.graph.initializer, key=lambda t: t.name == "w3")
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)
    return _save_external(str(tmp_path / "src" / "tiny.onnx"), model)


@pytest.mark.parametrize("graph_max_bytes,inline_max_bytes,refusal", [
    (1024, build_mod.STAGE_INLINE_MAX_BYTES, "cannot write stage 3's weights: tensor 'w3'"),
    (1024, 0, "cannot write stage 3's weights: tensor 'w3'"),
    (1 << 20, build_mod.STAGE_INLINE_MAX_BYTES, "cannot read the model (tensor 'w3'"),
])
def test_a_source_side_file_cut_short_is_refused_in_one_line_and_leaves_no_folder(
        tmp_path, monkeypatch, graph_max_bytes, inline_max_bytes, refusal):
    """A source side file that ends before a weight does (a copy cut short) is refused with one
    line naming the tensor, whether the weight is read with the graph or by its stage (inline or
    copied into a side file), and the build leaves no folder behind. (onnx 1.17's own reader, the
    newest for Python 3.8, took the short data for the tensor and wrote the stage with it.)"""
    os.makedirs(str(tmp_path / "src"))
    source = _w3_last(tmp_path)
    data = source + ".data"
    os.truncate(data, os.path.getsize(data) - 100)
    monkeypatch.setattr(build_mod, "GRAPH_DATA_MAX_BYTES", graph_max_bytes)
    with pytest.raises(BuildError) as err:
        _build(source, str(tmp_path / "out" / "b"), inline_max_bytes=inline_max_bytes)
    line = str(err.value)
    assert "\n" not in line and refusal in line and "ends 100 bytes before the tensor does" in line
    assert not (tmp_path / "out").exists()


def test_a_missing_source_side_file_is_refused_in_one_line(tmp_path):
    """A source whose side file is missing is refused in one line naming the model."""
    source = _save_external(str(tmp_path / "tiny.onnx"))
    os.remove(source + ".data")
    with pytest.raises(BuildError) as err:
        _build(source, str(tmp_path / "b"))
    line = str(err.value)
    assert "\n" not in line and line.startswith(source + ": not a valid ONNX model")
    assert not (tmp_path / "b").exists()


def test_a_bundle_built_from_a_source_past_the_limit_loads_from_its_own_folder(tmp_path):
    """The bundle owes nothing to the source's folder: removed after the build, the bundle
    still loads and runs."""
    os.makedirs(str(tmp_path / "src"))
    source = _save_external(str(tmp_path / "src" / "big.onnx"))
    add_unused_weight(source, OVER_LIMIT_BYTES)
    out = str(tmp_path / "b")
    _build(source, out)
    for f in os.listdir(str(tmp_path / "src")):
        os.remove(str(tmp_path / "src" / f))
    assert len(chain_logits(load_bundle(out))) == len(CUTS) + 1
