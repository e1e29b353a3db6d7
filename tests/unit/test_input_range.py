"""The range of the model's training inputs travels from ``heads`` through ``build`` into the
bundle (stage 1's ``input.value_range``), and a replay or profiling set on another scale is told
with one WARNING naming the file, both ranges and the fix, while it is still served and
profiled as it is."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import onnx
import pytest

from agent.cli import main as cli
from agent.config.node import parse_config
from agent.node.build import build
from engines.build import INPUT_RANGE_KEY, BuildError, build_bundle
from engines.bundle import MANIFEST_NAME, BundleError, load_bundle
from engines.heads import make_heads
from engines.profile import load_dataset, profile_bundle, set_range_problem
from engines.tiny_model import FINAL, INPUT, build_tiny_bundle, make_tiny_multi_exit
from tests.unit.endpoints import loopback_endpoints


def _images(n=120, seed=0):
    """uint8 images whose class (0..2) is where a bright blob sits."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.integers(0, 60, size=(n, 1, 8, 8)).astype(np.uint8)
    for i, k in enumerate(y):
        x[i, 0, 2 * k:2 * k + 3, 2 * k:2 * k + 3] += 180
    return x, y.astype(np.int64)


def _save(path, x, y):
    np.savez(str(path), x=x, y=y)
    return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A backbone with heads trained by ``make_heads`` on uint8 images, and its bundle."""
    d = tmp_path_factory.mktemp("range")
    full, backbone = str(d / "tiny.onnx"), str(d / "backbone.onnx")
    onnx.save(make_tiny_multi_exit(seed=3), full)
    onnx.utils.extract_model(full, backbone, [INPUT], [FINAL])
    x, y = _images()
    result = make_heads(backbone, ["c1", "c2"], x, y, str(d / "multi.onnx"))
    bundle = build_bundle(result.out_path, ["c1", "c2"], {1: "exit1", 2: "exit2"},
                          str(d / "bundle"), final_output=FINAL)
    return {"dir": d, "x": x, "y": y, "result": result, "bundle": bundle}


def _props(path):
    return {p.key: p.value for p in onnx.load(path).metadata_props}


def test_heads_records_the_range_of_its_inputs_as_the_graph_takes_them(trained):
    """Rule: ``heads`` writes the (min, max) of its training inputs, after the x / 255 it gives
    uint8 images for a float input, into the written graph's metadata."""
    x = trained["x"]
    want = [float(np.float32(v) / np.float32(255)) for v in (x.min(), x.max())]
    assert json.loads(_props(trained["result"].out_path)[INPUT_RANGE_KEY]) == want
    assert list(trained["result"].input_range) == want
    assert 0.0 <= want[0] < want[1] <= 1.0


def test_build_carries_the_range_into_stage_1s_input(trained):
    """Rule: ``build`` writes the recorded range as stage 1's ``input.value_range`` and the
    loaded bundle holds it; no other stage has one."""
    b = trained["bundle"]
    want = tuple(json.loads(_props(trained["result"].out_path)[INPUT_RANGE_KEY]))
    assert b.stages[0].input_value_range == want
    assert all(s.input_value_range is None for s in b.stages[1:])
    with open(os.path.join(b.path, MANIFEST_NAME)) as f:
        stages = json.load(f)["stages"]
    assert stages[0]["input"]["value_range"] == list(want)
    assert all("value_range" not in s["input"] for s in stages[1:])


def test_a_bundle_without_a_range_loads_and_warns_of_nothing(tmp_path, caplog):
    """Rule: a bundle built from a graph ``heads`` did not write (older bundles) has no range,
    loads, and no replay set is compared with it."""
    b = build_tiny_bundle(str(tmp_path))
    with open(os.path.join(b.path, MANIFEST_NAME)) as f:
        assert "value_range" not in json.load(f)["stages"][0]["input"]
    assert b.stages[0].input_value_range is None
    x = np.full((4, 1, 8, 8), 250.0, np.float32)
    with caplog.at_level(logging.WARNING):
        profile_bundle(b, x, np.zeros(4, np.int64), embedding="none")
    assert _warnings(caplog) == []


def _edit_range(bundle_dir, value, stage=0):
    path = os.path.join(bundle_dir, MANIFEST_NAME)
    with open(path) as f:
        obj = json.load(f)
    obj["stages"][stage]["input"]["value_range"] = value
    with open(path, "w") as f:
        json.dump(obj, f)


@pytest.mark.parametrize("value,why", [
    ([0.0], "must be two finite numbers"), ([0, 1, 2], "must be two finite numbers"),
    (["0", 1], "must be two finite numbers"), ([True, 1], "must be two finite numbers"),
    ("0,1", "must be two finite numbers"), ([0, float("nan")], "must be two finite numbers"),
    ([2.0, 1.0], "must have lo <= hi"), ([0, 10 ** 400], "must be two finite numbers"),
])
def test_a_bad_value_range_is_refused_in_one_line_naming_the_field(tmp_path, value, why):
    """Rule: ``value_range`` must be two finite numbers with lo <= hi; anything else is one
    BundleError line naming the manifest and ``stages[0].input.value_range``."""
    b = build_tiny_bundle(str(tmp_path))
    _edit_range(b.path, value)
    with pytest.raises(BundleError) as info:
        load_bundle(b.path)
    text = str(info.value)
    assert "\n" not in text and MANIFEST_NAME in text
    assert "field stages[0].input.value_range %s" % why in text


def test_a_value_range_on_a_later_stage_is_an_unknown_field(tmp_path):
    """Rule: only stage 1's input takes a value range (the model's inputs); elsewhere it is
    refused as a field the manifest does not know."""
    b = build_tiny_bundle(str(tmp_path))
    _edit_range(b.path, [0, 1], stage=1)
    with pytest.raises(BundleError, match=r"stages\[1\]\.input\.value_range: unknown field"):
        load_bundle(b.path)


@pytest.mark.parametrize("text", ["[1, 0]", "not json", "[0, 1e400]", "[0, 1%s]" % ("0" * 400)])
def test_build_refuses_a_malformed_recorded_range_naming_the_file_and_key(tmp_path, text):
    """Rule: a graph whose range metadata is not [lo, hi] (finite, lo <= hi) is refused by
    ``build`` in one line naming the ONNX file and the metadata key; nothing is written."""
    model = make_tiny_multi_exit()
    entry = model.metadata_props.add()
    entry.key, entry.value = INPUT_RANGE_KEY, text
    src = str(tmp_path / "m.onnx")
    onnx.save(model, src)
    with pytest.raises(BuildError) as info:
        build_bundle(src, ["c1", "c2"], {1: "e1", 2: "e2"}, str(tmp_path / "b"))
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("%s: metadata %s " % (src, INPUT_RANGE_KEY))
    assert not os.path.exists(str(tmp_path / "b"))


@pytest.mark.parametrize("data,trained_range,hint", [
    ((0.0, 1.0), (-2.118, 2.64), "(the training inputs were normalised: (x - mean) / std"),
    ((-2.118, 2.64), (0.0, 1.0), "(normalised here, the training inputs were not?)"),
    ((0.0, 255.0), (0.0, 1.0), "(images stored as 0-255? x / 255)"),
    ((0.0, 1.0), (0.0, 255.0), "(training images were 0-255? x * 255)"),
    ((0.0, 255.0), (-2.118, 2.64), "(the training inputs were normalised"),
    ((0.0, 1.0), (-1.0, 1.0), "(the training inputs were normalised"),
])
def test_a_set_on_another_scale_is_told_with_the_likely_fix(data, trained_range, hint):
    """Rule: a set is on another scale when its range reaches beyond the training inputs' widened
    by one width (or magnitude) on each side, when theirs reaches beyond its own widened by ten
    (0-255 training images against [0, 1]), or when the training inputs were centred on 0 and
    the set is not (ImageNet-normalised against [0, 1], either way round); the message names
    both ranges and the likely fix."""
    why = set_range_problem(data, trained_range)
    assert why.startswith("values in [%.4g, %.4g], far from the [%.4g, %.4g]"
                          % (data + trained_range))
    assert "scale the set as the training inputs were" in why and hint in why


@pytest.mark.parametrize("data,trained_range", [
    ((0.0, 1.0), (0.0, 1.0)), ((0.02, 0.9), (0.0, 1.0)), ((-1.9, 2.5), (-2.118, 2.64)),
    ((0.0, 0.6), (0.0, 1.0)), ((0.0, 0.0), (0.0, 1.0)), ((0.0, 0.3), (0.0, 1.0)),
    ((0.0, 0.45), (0.0, 1.0)), ((0.3, 0.5), (0.0, 1.0)), ((0.05, 0.2), (0.0, 1.0)),
])
def test_a_set_on_the_training_scale_is_not_told(data, trained_range):
    """Rule: a set of the training inputs' scale, whether narrower (fewer samples, darker
    images) or all zero, passes without a word."""
    assert set_range_problem(data, trained_range) == ""


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
            and "far from the" in r.getMessage()]


def test_profile_warns_of_a_set_on_another_scale_and_profiles_it(trained, tmp_path, caplog,
                                                                 capsys):
    """Rule: ``edge-agent profile`` with a set stored as 0-255 floats for a model trained on
    [0, 1] logs one WARNING naming the set's and the training range and the x / 255 fix, and
    still writes the profile."""
    x, y = trained["x"], trained["y"]
    data = _save(tmp_path / "raw.npz", x[:30].astype(np.float32), y[:30])
    out = str(tmp_path / "p.npz")
    with caplog.at_level(logging.WARNING):
        assert cli(["profile", "--bundle", trained["bundle"].path, "--data", data,
                    "--out", out, "--embedding", "none"]) == 0
    said = _warnings(caplog)
    assert len(said) == 1 and "(images stored as 0-255? x / 255)" in said[0]
    assert "values in [%.4g, %.4g]" % (x[:30].min(), x[:30].max()) in said[0]
    assert os.path.isfile(out)
    caplog.clear()
    xs, ys = load_dataset(data, scale_uint8=False)
    with caplog.at_level(logging.WARNING):
        profile_bundle(trained["bundle"], xs, ys, embedding="none", data_path=data)
    assert _warnings(caplog)[0].startswith("%s: values in" % data)


def test_profile_of_a_set_on_the_training_scale_says_nothing(trained, tmp_path, caplog):
    """Rule: the same images stored as uint8 (scaled x / 255 as in training) give no warning."""
    data = _save(tmp_path / "u8.npz", trained["x"][:30], trained["y"][:30])
    with caplog.at_level(logging.WARNING):
        assert cli(["profile", "--bundle", trained["bundle"].path, "--data", data,
                    "--out", str(tmp_path / "p.npz"), "--embedding", "none"]) == 0
    assert _warnings(caplog) == []


def _source_config(bundle_dir, replay, state_dir):
    ep = loopback_endpoints(("control", "data", "w1 control", "w1 data"))
    return parse_config({
        "node_id": "s1", "role": "source", "bundle": bundle_dir, "state_dir": str(state_dir),
        "control_bind": ep["control"], "data_bind": ep["data"], "replay_path": replay,
        "peers": [{"id": "w1", "stage": 1, "control_address": ep["w1 control"],
                   "data_address": ep["w1 data"]}]})


@pytest.mark.parametrize("stored,warned", [("float-0-255", True), ("uint8", False)])
def test_a_source_warns_at_start_of_a_replay_set_on_another_scale_and_serves_it(
        trained, tmp_path, caplog, stored, warned):
    """Rule: a source starting with a replay set stored as 0-255 floats for a model trained on
    [0, 1] logs one WARNING naming replay_path's file, both ranges and the x / 255 fix, and
    starts all the same; the same images as uint8 start it without a word."""
    x = trained["x"] if stored == "uint8" else trained["x"].astype(np.float32)
    replay = _save(tmp_path / "replay.npz", x, trained["y"])
    cfg = _source_config(trained["bundle"].path, replay, tmp_path / "state")
    with caplog.at_level(logging.WARNING):
        built = build(cfg)
    try:
        assert built.node is not None
    finally:
        built.close()
    said = _warnings(caplog)
    if not warned:
        assert said == []
        return
    assert len(said) == 1
    assert said[0].startswith("replay_path: %s: values in [%.4g, %.4g], far from the [%.4g, %.4g]"
                              % ((replay, x.min(), x.max()) + trained["bundle"].stages[0]
                                 .input_value_range))
    assert "(images stored as 0-255? x / 255)" in said[0]
    assert "the source sends it as it is" in said[0]
