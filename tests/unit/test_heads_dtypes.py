"""Bundles of models other than float32 classifiers: a float16 graph's features keep their type
on every backend, ``build`` refuses a one-logit head and class indices as a head, and an
overflowed (+inf) logit is a confident answer, not a lost task."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engines.build import BuildError, build_bundle
from engines.exit_profile import softmax_confidence
from engines.loader import load_engine
from engines.trt_backend import feature_as_manifest


def _model(path, classes=3, half=False, final_scale=1.0):
    """x (N, 1, 8, 8) -> Conv = "c1" -> GAP -> Flatten -> Gemm = "out" (``classes`` logits);
    float16 throughout with ``half``."""
    dt, elem = (np.float16, TensorProto.FLOAT16) if half else (np.float32, TensorProto.FLOAT)
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((4, 1, 3, 3)) * 0.5).astype(dt), "w1"),
             numpy_helper.from_array((rng.standard_normal((classes, 4)) * final_scale)
                                     .astype(dt), "wf")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c1"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "wf"], ["out"], transB=1)]
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", elem, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("out", elem, ["N", classes])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def test_build_refuses_a_head_with_one_logit(tmp_path):
    """Rule: a head of width 1 (a binary classifier's single logit) would give every task
    confidence 1 and class 0; build refuses it and says how to export the head."""
    src = _model(tmp_path / "one.onnx", classes=1)
    with pytest.raises(BuildError, match="has 1 class.*one logit per class"):
        build_bundle(src, ["c1"], {}, str(tmp_path / "bundle"))
    assert not (tmp_path / "bundle").exists()


def test_build_refuses_class_indices_as_the_final_head(tmp_path):
    """Rule: a head must give float logits; a graph's TopK indices (int64, (batch, k)) named as
    the final head would read as logits and answer nonsense, so build refuses them."""
    src = _model(tmp_path / "topk.onnx")
    model = onnx.load(src)
    model.graph.initializer.append(numpy_helper.from_array(np.array([2], np.int64), "k"))
    model.graph.node.append(helper.make_node("TopK", ["out", "k"], ["top_v", "top_i"], axis=1))
    model.graph.output.append(helper.make_tensor_value_info("top_i", TensorProto.INT64, ["N", 2]))
    onnx.save(model, src)
    with pytest.raises(BuildError, match="'top_i' is int64, not logits"):
        build_bundle(src, ["c1"], {}, str(tmp_path / "bundle"), final_output="top_i")
    assert not (tmp_path / "bundle").exists()


def test_float16_features_keep_their_type_for_the_next_stage(tmp_path):
    """Rule: a float16 graph's cut tensor reaches the next stage as float16 (the manifest's
    feature dtype, which is that stage's input dtype); a float32 graph's features that an FP16
    TensorRT plan hands back in half precision become float32 again."""
    bundle = build_bundle(_model(tmp_path / "half.onnx", half=True), ["c1"], {},
                          str(tmp_path / "bundle"))
    s1, s2 = bundle.stages
    assert s1.feature_dtype == s2.input_dtype == "float16"
    features = load_engine(s1, accelerator="none").run(np.ones(s1.input_shape, np.float16)).features
    kept = feature_as_manifest(features, s1.feature_dtype)
    assert kept.dtype == np.float16
    assert load_engine(s2, accelerator="none").run(kept).logits.shape == (1, 3)
    assert feature_as_manifest(features, "float32").dtype == np.float32
    assert feature_as_manifest(features, None).dtype == np.float32  # no dtype recorded


@pytest.mark.filterwarnings("ignore:invalid value encountered in subtract")  # inf - inf, then mended
def test_an_overflowed_logit_is_a_confident_answer(tmp_path):
    """Rule: a logit past its type's range (+inf, a float16 head above 65504) answers its class
    with confidence 1, shared among the classes at +inf, never NaN (which loses the task);
    finite rows, NaN rows and all -inf rows are as before."""
    bundle = build_bundle(_model(tmp_path / "big.onnx", half=True, final_scale=1e4), ["c1"], {},
                          str(tmp_path / "bundle"))
    s1, s2 = bundle.stages
    x = np.random.default_rng(1).standard_normal(s1.input_shape).astype(np.float16) * 30
    logits = load_engine(s2, accelerator="none").run(
        load_engine(s1, accelerator="none").run(x).features).logits
    assert np.isposinf(logits).any(), logits  # the graph really overflows
    conf, cls = softmax_confidence(logits)
    assert conf.tolist() == [1.0 / np.isposinf(logits).sum()]
    assert cls.tolist() == [int(np.argmax(np.isposinf(logits[0])))]
    inf = np.inf
    conf, cls = softmax_confidence(np.array([[1.0, inf, 2.0], [inf, -inf, inf], [0.0, 2.0, 1.0]]))
    assert conf[:2].tolist() == [1.0, 0.5] and cls.tolist() == [1, 0, 1]
    assert conf[2] == 1.0 / np.exp([-2.0, 0.0, -1.0]).sum()
    with np.errstate(invalid="ignore"):
        conf, _ = softmax_confidence(np.array([[np.nan, inf, 1.0], [-inf, -inf, -inf]]))
    assert np.isnan(conf).all()
