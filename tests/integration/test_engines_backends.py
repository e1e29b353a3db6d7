"""Engines: input checking, onnxruntime provider fallback logging, TensorRT availability."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from agent.errors import UsageError
from engines.bundle import load_bundle
from engines.engine import EngineInputError, EngineUnavailable
from engines.loader import load_engine
from engines.demo import DEMO_BUNDLE_DIR
from engines.loader import tensorrt_available
from engines.ort_backend import choose_providers
from engines.tiny_model import build_tiny_bundle
from engines.trt_backend import plan_cache_key


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    return build_tiny_bundle(str(tmp_path_factory.mktemp("tiny")))


def test_wrong_shape_or_dtype_names_expected_and_got(tiny_bundle):
    """Engine.run refuses a wrong shape or dtype with EngineInputError naming both."""
    engine = load_engine(tiny_bundle.stages[1], backend="onnxruntime", threads=1)
    with pytest.raises(EngineInputError, match=r"expected shape \(N,4,8,8\), got \(1, 4, 8, 9\)"):
        engine.run(np.zeros((1, 4, 8, 9), dtype=np.float32))
    with pytest.raises(EngineInputError, match="expected dtype float32, got float64"):
        engine.run(np.zeros((1, 4, 8, 8)))
    with pytest.raises(EngineInputError, match="numpy array"):
        engine.run([[0.0]])
    out = engine.run(np.zeros((2, 4, 8, 8), dtype=np.float32))
    assert out.features.shape == (2, 8, 4, 4) and out.logits.shape == (2, 3)
    engine.close()


def test_onnxruntime_logs_providers_requested_and_used(tiny_bundle, caplog):
    """Requested GPU providers missing from this onnxruntime build are logged as a fallback, and
    Engine.info reports the providers the session really uses."""
    import onnxruntime as ort

    caplog.set_level(logging.INFO, logger="engines")
    engine = load_engine(tiny_bundle.stages[0], backend="onnxruntime", threads=1)
    used = engine.info["providers"]
    assert engine.info["backend"] == "onnxruntime" and used[-1] == "CPUExecutionProvider"
    text = caplog.text
    assert "providers used: " + ", ".join(used) in text
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert ("TensorrtExecutionProvider, CUDAExecutionProvider not in this onnxruntime build "
                "(onnxruntime %s, device CPU); falling back to CPUExecutionProvider" % ort.__version__) in text
        assert engine.info["device"] == "CPU"
        assert [f["reason"] for f in engine.info["fallbacks"]] == ["provider_missing"]
        assert any(r.levelname == "WARNING" and "falling back" in r.getMessage() for r in caplog.records)


def test_choose_providers_keeps_preferred_order_and_cpu_last():
    """Provider order is TensorRT EP -> CUDA EP -> CPU among those available; CPU is always kept."""
    assert choose_providers(["CPUExecutionProvider"])[0] == ["CPUExecutionProvider"]
    use, missing = choose_providers(["CUDAExecutionProvider", "CPUExecutionProvider", "TensorrtExecutionProvider"])
    assert use == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"] and not missing
    use, missing = choose_providers(["CUDAExecutionProvider"], ["CUDAExecutionProvider"])
    assert use == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_fp16_on_cpu_is_reported_as_fp32(tiny_bundle, caplog):
    """Asking for fp16 without the TensorRT provider logs it and reports the precision really used."""
    import onnxruntime as ort

    if "TensorrtExecutionProvider" in ort.get_available_providers():
        pytest.skip("TensorRT provider present: fp16 is honoured here")
    engine = load_engine(tiny_bundle.stages[0], backend="onnxruntime", precision="fp16")
    assert engine.info["precision"] == "fp32" and "needs the TensorRT provider" in caplog.text


def test_bad_backend_arguments_are_usage_errors(tiny_bundle):
    """Unknown backend/precision/threads values are refused with a UsageError naming the value."""
    stage = tiny_bundle.stages[0]
    for kwargs, message in (({"backend": "tpu"}, "'tpu'"), ({"precision": "int4"}, "'int4'"),
                            ({"threads": -1}, "-1")):
        with pytest.raises(UsageError, match=message):
            load_engine(stage, **kwargs)


def test_auto_backend_runs_the_demo_bundle():
    """backend=auto gives a working engine for every demo stage (TensorRT if present, else onnxruntime)."""
    bundle = load_bundle(DEMO_BUNDLE_DIR)
    x = np.zeros(bundle.stages[0].input_shape, dtype=np.float32)
    for stage in bundle.stages:
        engine = load_engine(stage)
        out = engine.run(x)
        assert (out.logits is not None) == (stage.logits_output is not None)
        x = out.features
        engine.close()


def test_tensorrt_backend_absent_is_a_clear_error(tiny_bundle):
    """backend=tensorrt without the tensorrt package fails with one line saying so."""
    if tensorrt_available():
        pytest.skip("tensorrt is installed here")
    with pytest.raises(EngineUnavailable, match="tensorrt Python package is not installed"):
        load_engine(tiny_bundle.stages[0], backend="tensorrt")


def test_plan_cache_key_covers_every_identity_field():
    """The plan cache key changes with ONNX hash, TensorRT version, GPU name, compute capability,
    SM count, precision, max batch and the side files' hashes, and is stable otherwise."""
    base = ("ab" * 32, "10.3.0", "Orin", "8.7", 16, "fp16", 1, ["ef" * 32])
    key = plan_cache_key(*base)
    assert key == plan_cache_key(*base) and key.endswith(".plan") and "/" not in key
    for i, other in enumerate(("cd" * 32, "8.5.2", "Xavier", "7.2", 8, "fp32", 4, ["01" * 32])):
        changed = list(base)
        changed[i] = other
        assert plan_cache_key(*changed) != key


@pytest.mark.hardware
def test_tensorrt_engine_matches_onnxruntime(tiny_bundle, tmp_path):
    """On a GPU with TensorRT: the native plan reproduces onnxruntime's outputs and is cached."""
    if not tensorrt_available():
        pytest.skip("TensorRT is not installed on this machine (needs a Jetson or a CUDA GPU)")
    x = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)
    stage = tiny_bundle.stages[0]
    trt_engine = load_engine(stage, backend="tensorrt", cache_dir=str(tmp_path))
    ref = load_engine(stage, backend="onnxruntime").run(x)
    got = trt_engine.run(x)
    assert np.max(np.abs(got.logits - ref.logits)) < 1e-3
    assert len(list(tmp_path.glob("*.plan"))) == 1
    trt_engine.close()
