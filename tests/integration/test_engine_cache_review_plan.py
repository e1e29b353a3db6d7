"""TensorRT plan cache after a power cut or on a full disk: a cached plan cut short, zero bytes
or garbage is rebuilt and replaced (one WARNING naming the file), never a start-up fault; a
cache whose writes fail still serves from a plan built in memory. TensorRT and CUDA are the
stand-ins of test_engines_tensorrt_fake.py; onnxruntime, files and processes are real."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import types

import pytest

from engines.tiny_model import build_tiny_bundle

from .agent_cluster import REPO
from .test_engines_tensorrt_fake import _fake_cudart, _fake_tensorrt


def _stand_in(version="10.3.0"):
    """tensorrt and cuda-python stand-ins; ``deserialize_cuda_engine`` returns None for a plan
    it cannot read, as NVIDIA documents for TensorRT (it logs the reason)."""
    trt, rt = _fake_tensorrt(version), _fake_cudart()
    base = trt.Runtime

    class Runtime(base):
        def deserialize_cuda_engine(self, plan):
            try:
                return base.deserialize_cuda_engine(self, plan)
            except Exception:
                return None

    trt.Runtime = Runtime
    cuda, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
    cuda.bindings, bindings.runtime = bindings, rt
    return {"tensorrt": trt, "cuda": cuda, "cuda.bindings": bindings, "cuda.bindings.runtime": rt}


@pytest.fixture
def trt(monkeypatch):
    modules = _stand_in()
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return modules["tensorrt"]


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    return build_tiny_bundle(str(tmp_path_factory.mktemp("tiny"))).stages[0]


@pytest.mark.parametrize("damage", ["cut short", "zero bytes", "garbage"])
def test_a_damaged_cached_plan_is_rebuilt_with_one_warning(stage, trt, tmp_path, caplog, damage):
    """Rule: a cached TensorRT plan that a power cut left cut short, zero bytes or garbage is
    rebuilt and written over (one WARNING naming the file); backend tensorrt still loads, so
    the agent neither exits 78 nor falls back to the CPU."""
    from engines.loader import load_engine

    load_engine(stage, backend="tensorrt", cache_dir=str(tmp_path)).close()
    (plan,) = tmp_path.glob("*.plan")
    good = plan.read_bytes()
    plan.write_bytes({"cut short": good[:len(good) // 2], "zero bytes": b"",
                      "garbage": bytes(range(256)) * 4}[damage])
    built = trt.Builder.built
    caplog.set_level(logging.INFO, logger="engines")
    engine = load_engine(stage, backend="tensorrt", cache_dir=str(tmp_path))
    assert engine.info["backend"] == "tensorrt" and not engine.info.get("fallbacks")
    engine.close()
    assert trt.Builder.built == built + 1
    assert plan.read_bytes() == good
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and str(plan) in warnings[0] and "rebuilding" in warnings[0], warnings


def test_auto_backend_rebuilds_a_damaged_plan_rather_than_leaving_the_gpu(stage, trt, tmp_path):
    """Rule: backend auto with a garbage cached plan stays on TensorRT (rebuilt plan), with no
    tensorrt_failed fallback to onnxruntime."""
    from engines.loader import load_engine

    load_engine(stage, backend="auto", cache_dir=str(tmp_path)).close()
    (plan,) = tmp_path.glob("*.plan")
    plan.write_bytes(b"\0" * 100)
    engine = load_engine(stage, backend="auto", cache_dir=str(tmp_path))
    assert engine.info["backend"] == "tensorrt" and not engine.info.get("fallbacks")
    engine.close()


_FULL_DISK = r"""
import resource, sys
sys.path.insert(0, %(repo)r)
from tests.integration.test_engine_cache_review_plan import _stand_in
sys.modules.update(_stand_in())
from engines.bundle import load_bundle
from engines.loader import load_engine
stage = load_bundle(%(bundle)r).stages[0]
resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))  # writes past 64 bytes fail, as on a full disk
engine = load_engine(stage, backend="tensorrt", cache_dir=%(cache)r)
print("BACKEND", engine.info["backend"])
"""


def test_a_cache_that_cannot_be_written_still_serves(tmp_path):
    """Rule: a plan cache whose writes fail (the file-size limit stands in for a full disk)
    logs one WARNING and serves from the plan built in memory; no plan or temporary is left."""
    (tmp_path / "tiny").mkdir()
    bundle = build_tiny_bundle(str(tmp_path / "tiny"))
    cache = tmp_path / "cache"
    cache.mkdir()
    code = _FULL_DISK % {"repo": REPO, "bundle": bundle.path, "cache": str(cache)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "BACKEND tensorrt" in proc.stdout
    assert "cannot cache the TensorRT plan" in proc.stderr
    assert [p for p in os.listdir(str(cache)) if not p.endswith(".lock")] == []
