"""edge-agent heads on a backbone that keeps its weights in side files, one past protobuf's 2 GB
limit included: the graph is read without its weights, onnxruntime gets them mapped from the
side files, and a multi-exit graph over the limit gets its own side file beside --out.

A backbone over the limit is made without writing gigabytes, as in test_build_big_source: a
tensor no node uses, whose bytes lie in a sparse hole of the side file. The limit is lowered
(``inline_max_bytes``) for the tiny backbone to take the path of a large one.
"""

from __future__ import annotations

import os
import re

import numpy as np
import onnx
import pytest

from engines.build import build_bundle
from engines.heads import INLINE_MAX_BYTES, make_heads
from engines.heads_graph import HeadsError
from engines.tiny_model import CUTS, FINAL, INPUT, make_tiny_multi_exit
from tests.integration.bundle_chain import chain_logits
from tests.integration.sparse_weights import OVER_LIMIT_BYTES, add_unused_weight
from tests.unit.blob_images import blob_images

EXITS = {1: "exit1", 2: "exit2"}


def _backbone():
    """The tiny graph without its exit heads (only what ``out`` needs)."""
    model = make_tiny_multi_exit(seed=3)
    return onnx.utils.Extractor(model).extract_model([INPUT], [FINAL])


def _save(path, location=None):
    """The backbone at ``path``: inline, or every tensor in the side file ``location``."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if location is None:
        onnx.save_model(_backbone(), path)
    else:
        onnx.save_model(_backbone(), path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=location, size_threshold=0)
    return path


def _heads(source, out, **kw):
    x, y = blob_images(120)
    return make_heads(source, list(CUTS), x, y, out, seed=4, **kw)


def _same_heads(res, ref):
    assert [(h.tensor, h.output, h.macs, h.iterations) for h in res.heads] == \
        [(h.tensor, h.output, h.macs, h.iterations) for h in ref.heads]
    np.testing.assert_allclose([h.holdout_accuracy for h in res.heads],
                               [h.holdout_accuracy for h in ref.heads])
    assert res.final_holdout_accuracy == ref.final_holdout_accuracy


def _same_bundle(a, b):
    for x, y in zip(chain_logits(a), chain_logits(b)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.fixture()
def inline(tmp_path):
    """Heads on the inline backbone and the bundle built from them."""
    out = str(tmp_path / "ref" / "multi.onnx")
    res = _heads(_save(str(tmp_path / "ref" / "backbone.onnx")), out)
    return res, build_bundle(out, list(CUTS), EXITS, str(tmp_path / "ref" / "b"))


def test_a_backbone_past_protobufs_limit_gets_heads_that_build_and_run(inline, tmp_path):
    """A backbone whose side file makes it larger than protobuf's 2 GiB limit gets the heads of
    the same backbone inline (its weights mapped, the unused gigabytes never read), and the
    written graph builds into a bundle with the same logits."""
    source = _save(str(tmp_path / "src" / "big.onnx"), "big.onnx.data")
    add_unused_weight(source, OVER_LIMIT_BYTES)
    out = str(tmp_path / "out" / "multi.onnx")
    res = _heads(source, out)
    _same_heads(res, inline[0])
    bundle = build_bundle(out, list(CUTS), EXITS, str(tmp_path / "b"))
    _same_bundle(bundle, inline[1])
    assert "unused" not in {t.name for t in onnx.load(out, load_external_data=False).graph.initializer}


def test_a_backbone_over_the_limit_gets_heads_written_with_a_side_file_beside_out(inline,
                                                                                 tmp_path):
    """Past the limit (lowered here) the backbone runs with its weights left in its side file,
    and the multi-exit graph is written with its weights in ``OUT.data`` beside ``--out``: the
    same heads and bundle logits as the inline backbone's, and nothing else left in the folder."""
    source = _save(str(tmp_path / "src" / "backbone.onnx"), "weights.bin")
    out = str(tmp_path / "out" / "multi.onnx")
    res = _heads(source, out, inline_max_bytes=0)
    _same_heads(res, inline[0])
    assert res.side_file == out + ".data"  # which the command prints, to keep with --out
    assert sorted(os.listdir(str(tmp_path / "out"))) == ["multi.onnx", "multi.onnx.data"]
    written = onnx.load(out, load_external_data=False)
    assert {e.value for t in written.graph.initializer for e in t.external_data
            if e.key == "location"} == {"multi.onnx.data"}
    onnx.checker.check_model(out)
    _same_bundle(build_bundle(out, list(CUTS), EXITS, str(tmp_path / "b")), inline[1])


def test_a_backbone_under_the_limit_in_side_files_gets_the_inline_output(inline, tmp_path):
    """Under the limit a backbone in side files is read whole, as before: its multi-exit graph
    is written inline, with the inline backbone's heads."""
    source = _save(str(tmp_path / "src" / "backbone.onnx"), "weights.bin")
    out = str(tmp_path / "out" / "multi.onnx")
    res = _heads(source, out, inline_max_bytes=INLINE_MAX_BYTES)
    _same_heads(res, inline[0])
    assert os.listdir(str(tmp_path / "out")) == ["multi.onnx"] and res.side_file is None


@pytest.mark.parametrize("inline_max_bytes", [INLINE_MAX_BYTES, 0])
def test_a_backbone_side_file_cut_short_is_refused_in_one_line(tmp_path, inline_max_bytes):
    """A backbone side file that ends before a weight does is refused with one line naming the
    model and the tensor, under the limit (weights read) and past it (weights mapped), before
    anything is written."""
    source = _save(str(tmp_path / "src" / "backbone.onnx"), "weights.bin")
    data = str(tmp_path / "src" / "weights.bin")
    os.truncate(data, os.path.getsize(data) - 100)
    with pytest.raises(HeadsError) as err:
        _heads(source, str(tmp_path / "out" / "multi.onnx"), inline_max_bytes=inline_max_bytes)
    line = str(err.value)
    assert "\n" not in line and line.startswith(source + ": cannot read the model (tensor ")
    assert re.search(r"side file weights\.bin ends \d+ bytes before the tensor does\)$", line)
    assert not (tmp_path / "out").exists()


def test_an_out_whose_side_file_is_the_backbones_is_refused_and_leaves_nothing(tmp_path):
    """An --out whose side file would replace the backbone's own is refused in one line; no
    file or staging folder is left beside it and the backbone's side file is as it was."""
    source = _save(str(tmp_path / "backbone.onnx"), "multi.onnx.data")
    data = str(tmp_path / "multi.onnx.data")
    before = open(data, "rb").read()
    with pytest.raises(HeadsError) as err:
        _heads(source, str(tmp_path / "multi.onnx"), inline_max_bytes=0)
    assert "\n" not in str(err.value) and "one of the backbone's own" in str(err.value)
    assert sorted(os.listdir(str(tmp_path))) == ["backbone.onnx", "multi.onnx.data"]
    assert open(data, "rb").read() == before


def test_an_inline_output_over_an_earlier_one_past_the_limit_removes_its_side_file(tmp_path):
    """An output written inline over one written past the limit (same --out) removes the side
    file only that earlier output named; an ``OUT.data`` the replaced file did not name (not
    ours), or one of the backbone's own, stays."""
    source = _save(str(tmp_path / "src" / "backbone.onnx"), "weights.bin")
    out = str(tmp_path / "out" / "multi.onnx")
    assert _heads(source, out, inline_max_bytes=0).side_file == out + ".data"
    res = _heads(source, out)  # under the limit now: inline
    assert res.side_file is None and os.listdir(str(tmp_path / "out")) == ["multi.onnx"]
    onnx.checker.check_model(out)
    # a file of that name the replaced output never named is someone else's
    with open(out + ".data", "wb") as f:
        f.write(b"not the heads' weights")
    _heads(source, out)
    assert open(out + ".data", "rb").read() == b"not the heads' weights"
    # --out beside the backbone, its side file the backbone's: read, so never removed
    inside = _save(str(tmp_path / "in" / "backbone.onnx"), "multi.onnx.data")
    onnx.save_model(onnx.load(inside), str(tmp_path / "in" / "multi.onnx"),
                    save_as_external_data=True, all_tensors_to_one_file=True,
                    location="multi.onnx.data", size_threshold=0)
    _heads(inside, str(tmp_path / "in" / "multi.onnx"))
    assert sorted(os.listdir(str(tmp_path / "in"))) == ["backbone.onnx", "multi.onnx",
                                                         "multi.onnx.data"]
    onnx.checker.check_model(inside)
