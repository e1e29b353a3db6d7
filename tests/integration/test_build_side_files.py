"""edge-agent build: a stage written with its weights in a side file is covered by the manifest.

Production moves a stage's weights out past protobuf's 2 GB limit; the tests lower that limit
(``inline_max_bytes``) so the tiny graph's stages take the same path.
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest

from engines.build import STAGE_INLINE_MAX_BYTES, build_bundle
from engines.bundle import MANIFEST_NAME, BundleError, load_bundle, sha256_file
from engines.tiny_model import CUTS, EXITS, make_tiny_multi_exit
from tests.integration.bundle_chain import chain_logits


@pytest.fixture()
def source(tmp_path):
    path = str(tmp_path / "tiny.onnx")
    onnx.save(make_tiny_multi_exit(seed=3), path)
    return path


def _build(source, out, inline_max_bytes=STAGE_INLINE_MAX_BYTES):
    return build_bundle(source, list(CUTS), dict(EXITS), out, inline_max_bytes=inline_max_bytes)


def test_production_limit_is_protobufs():
    """Stages are written inline up to protobuf's 2 GB message limit, as extract_model does."""
    assert STAGE_INLINE_MAX_BYTES == onnx.checker.MAXIMUM_PROTOBUF


def test_build_records_every_side_file_it_writes(source, tmp_path):
    """A build whose stages go over the inline limit writes stageH.onnx.data side files and
    lists each in the stage's external_data with its sha256; stages without one have no field;
    the bundle loads and its chain gives the inline build's logits and MAC counts."""
    inline = _build(source, str(tmp_path / "inline"))
    side = _build(source, str(tmp_path / "side"), inline_max_bytes=0)
    names = sorted(f for f in os.listdir(side.path) if f.endswith(".onnx.data"))
    assert names  # the tiny graph's larger weights (>= 1 kB) go out; others stay inline
    with open(os.path.join(side.path, MANIFEST_NAME)) as f:
        stages = json.load(f)["stages"]
    listed = []
    for st in stages:
        for entry in st.get("external_data", []):
            assert entry["sha256"] == sha256_file(os.path.join(side.path, entry["file"]))
            listed.append(entry["file"])
        assert st.get("external_data", None) != []  # absent, never empty
    assert sorted(listed) == names
    with open(os.path.join(inline.path, MANIFEST_NAME)) as f:
        assert all("external_data" not in st for st in json.load(f)["stages"])
    assert [s.flops for s in side.stages] == [s.flops for s in inline.stages]
    for a, b in zip(chain_logits(side), chain_logits(inline)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_built_side_file_changed_after_build_is_refused(source, tmp_path):
    """A side file of a built bundle changed afterwards fails load_bundle (the manifest covers
    it), naming the file."""
    bundle = _build(source, str(tmp_path / "b"), inline_max_bytes=0)
    spec = next(s for s in bundle.stages if s.external_data)
    entry = spec.external_data[0][0]
    path = os.path.join(bundle.path, entry)
    with open(path, "r+b") as f:
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 0xFF]))
    with pytest.raises(BundleError, match=r"stages\[%d\]\.external_data\[0\]\.file %s has "
                       r"sha256" % (spec.index - 1, entry.replace(".", r"\."))):
        load_bundle(bundle.path)


def test_rebuild_over_a_bundle_with_side_files(source, tmp_path):
    """Building again into a bundle folder holding side files replaces the bundle (the side
    files are the bundle's own, not foreign files) and leaves none of the old side files."""
    out = str(tmp_path / "b")
    _build(source, out, inline_max_bytes=0)
    assert any(f.endswith(".onnx.data") for f in os.listdir(out))
    bundle = _build(source, out)
    assert not any(f.endswith(".onnx.data") for f in os.listdir(out))
    assert all(s.external_data == () for s in bundle.stages)
