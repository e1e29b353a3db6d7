"""TensorRT backend plumbing against a stand-in for ``tensorrt`` and cuda-python's runtime.

TensorRT and CUDA cannot exist on this machine, so this file fakes exactly the calls the
backend makes, following NVIDIA's documented Python API (TensorRT 10 tensor-name API, the 8.x
bindings API, cuda-python's ``(err, value)`` tuples). The fake "plan" is the ONNX bytes, and
"executing" it runs onnxruntime on host memory that the fake cudaMalloc hands out, so the
backend's buffer handling, shape ordering, copies and plan cache are exercised for real. The
test on real TensorRT lives in test_engines_backends.py and skips here.
"""

from __future__ import annotations

import ctypes
import os
import sys
import types

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx.external_data_helper import load_external_data_for_model, uses_external_data

from engines.tiny_model import build_tiny_bundle


def _fake_tensorrt(version):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version

    class Logger:
        WARNING = 2

        def __init__(self, severity):
            self.severity = severity

    class TensorIOMode:
        INPUT, OUTPUT = "INPUT", "OUTPUT"

    class Network:
        onnx_bytes = b""

    class Parser:
        num_errors = 0

        def __init__(self, network, logger):
            self.network = network

        def parse(self, model, path=None):
            # as TensorRT documents it: ``path`` is needed only where weights are stored in
            # side files, which the parser then reads relative to it (the plan holds them all)
            m = onnx.load_model_from_string(bytes(model))
            if any(uses_external_data(t) for t in m.graph.initializer):
                if path is None:
                    self.num_errors = 1
                    return False
                load_external_data_for_model(m, os.path.dirname(path))
            self.network.onnx_bytes = m.SerializeToString()
            return True

        def get_error(self, i):
            return "external weights without the model's path"

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            assert lo[0] == 1 and hi[0] >= lo[0]
            Builder.profiles.append((tuple(lo), tuple(opt), tuple(hi)))  # what plans were for

    class Config:
        def __init__(self):
            self.flags = set()

        def set_memory_pool_limit(self, pool, size):
            assert pool == "WORKSPACE" and size > 0

        def set_flag(self, flag):
            self.flags.add(flag)

        def add_optimization_profile(self, profile):
            return 0

    class Builder:
        platform_has_fast_fp16 = True
        built = 0
        profiles = []  # (min, opt, max) input shape of each optimization profile built

        def __init__(self, logger):
            pass

        def create_network(self, flags):
            # TensorRT 10 takes 0 (explicit batch is implied); 8.x needs the EXPLICIT_BATCH bit
            assert flags == (0 if version.startswith("10.") else 1)
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            Builder.built += 1
            return network.onnx_bytes

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses = engine, {}, {}

        def _infer_shapes(self, name, shape):
            self.shapes[name] = tuple(shape)
            outs = self.engine.session.run(None, {name: np.zeros(shape, dtype=np.float32)})
            for meta, value in zip(self.engine.session.get_outputs(), outs):
                self.shapes[meta.name] = value.shape

        def _run(self, address_of):
            inp = self.engine.session.get_inputs()[0].name
            shape = self.shapes[inp]
            buf = (ctypes.c_float * int(np.prod(shape))).from_address(address_of(inp))
            x = np.ctypeslib.as_array(buf).reshape(shape).copy()
            for meta, value in zip(self.engine.session.get_outputs(), self.engine.session.run(None, {inp: x})):
                value = np.ascontiguousarray(value, dtype=np.float32)
                ctypes.memmove(address_of(meta.name), value.ctypes.data, value.nbytes)
            return True

        # TensorRT 10 (and 8.5+) tensor-name API
        def set_input_shape(self, name, shape):
            self._infer_shapes(name, shape)
            return True

        def get_tensor_shape(self, name):
            return self.shapes[name]

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = ptr
            return True

        def execute_async_v3(self, stream_handle):
            return self._run(lambda n: self.addresses[n])

        # TensorRT 8.x bindings API
        def set_binding_shape(self, index, shape):
            self._infer_shapes(self.engine.names[index], shape)
            return True

        def get_binding_shape(self, index):
            return self.shapes[self.engine.names[index]]

        def execute_async_v2(self, bindings, stream_handle):
            return self._run(lambda n: bindings[self.engine.names.index(n)])

    class Engine:
        def __init__(self, plan):
            self.session = ort.InferenceSession(plan, providers=["CPUExecutionProvider"])
            self.inputs = [i.name for i in self.session.get_inputs()]
            outputs = [o.name for o in self.session.get_outputs()]
            # an output listed before the input: TensorRT does not promise inputs come first
            self.names = outputs[-1:] + self.inputs + outputs[:-1]

        def create_execution_context(self):
            return Context(self)

    class Engine10(Engine):
        @property
        def num_io_tensors(self):
            return len(self.names)

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_mode(self, name):
            return TensorIOMode.INPUT if name in self.inputs else TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return "FLOAT"

    class Engine8(Engine):
        @property
        def num_bindings(self):
            return len(self.names)

        def get_binding_name(self, i):
            return self.names[i]

        def binding_is_input(self, i):
            return self.names[i] in self.inputs

        def get_binding_dtype(self, i):
            return "FLOAT"

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, plan):
            return (Engine10 if version.startswith("10.") else Engine8)(plan)

    trt.Logger, trt.TensorIOMode, trt.Builder, trt.OnnxParser, trt.Runtime = (
        Logger, TensorIOMode, Builder, Parser, Runtime)
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16")
    def nptype(dtype):  # TensorRT 8.5 on numpy >= 1.24: np.bool is gone
        raise AttributeError("module 'numpy' has no attribute 'bool'")

    trt.nptype = nptype
    return trt


def _fake_cudart():
    rt = types.ModuleType("cuda.bindings.runtime")
    memory = {}

    def malloc(nbytes):
        buf = np.zeros(nbytes, dtype=np.uint8)
        memory[buf.ctypes.data] = buf
        return 0, buf.ctypes.data

    def memcpy(dst, src, count, kind, stream):
        ctypes.memmove(dst, src, count)
        return (0,)

    rt.cudaSetDevice = lambda device: (0,)
    rt.cudaGetDeviceProperties = lambda device: (0, types.SimpleNamespace(
        name=b"Fake Orin", major=8, minor=7, multiProcessorCount=16))
    rt.cudaStreamCreate = lambda: (0, object())
    rt.cudaStreamSynchronize = lambda stream: (0,)
    rt.cudaStreamDestroy = lambda stream: (0,)
    rt.cudaMalloc = malloc
    rt.cudaFree = lambda ptr: (0 if memory.pop(ptr, None) is not None else 1,)
    rt.cudaMemcpyAsync = memcpy
    rt.cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
    rt.memory = memory
    return rt


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    return build_tiny_bundle(str(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(params=["10.3.0", "8.4.1"])
def fake_trt(request, monkeypatch):
    trt, rt = _fake_tensorrt(request.param), _fake_cudart()
    cuda = types.ModuleType("cuda")
    bindings = types.ModuleType("cuda.bindings")
    cuda.bindings, bindings.runtime = bindings, rt
    for name, module in (("tensorrt", trt), ("cuda", cuda), ("cuda.bindings", bindings),
                         ("cuda.bindings.runtime", rt)):
        monkeypatch.setitem(sys.modules, name, module)
    return trt, rt


def test_tensorrt_backend_matches_onnxruntime_and_caches_the_plan(tiny_bundle, fake_trt, tmp_path):
    """Tensor-name API (TensorRT 10) and bindings API (8.x): chained stages give onnxruntime's
    outputs; the plan is built once per stage and reused from the cache; buffers are freed."""
    from engines.loader import load_engine

    trt, rt = fake_trt
    x = np.random.default_rng(3).standard_normal((1, 1, 8, 8)).astype(np.float32)
    for _ in range(2):
        t, r = x, x
        for stage in tiny_bundle.stages:
            engine = load_engine(stage, backend="tensorrt", cache_dir=str(tmp_path))
            assert engine.info["backend"] == "tensorrt" and engine.info["device"] == "Fake Orin"
            assert engine.info["api"] == ("tensor-name" if trt.__version__.startswith("10.") else "bindings")
            ref = load_engine(stage, backend="onnxruntime").run(r)
            out = engine.run(t)
            for got, want in ((out.features, ref.features), (out.logits, ref.logits)):
                assert (got is None) == (want is None)
                if got is not None:
                    assert np.max(np.abs(got - want)) <= 1e-6
            engine.close()
            t, r = out.features, ref.features
        assert trt.Builder.built == len(tiny_bundle.stages)  # second round: all from the cache
    assert len(list(tmp_path.glob("*.plan"))) == len(tiny_bundle.stages)
    assert rt.memory == {}


def test_auto_prefers_tensorrt_when_installed(tiny_bundle, fake_trt, tmp_path):
    """backend=auto picks TensorRT when the package imports; fp16 is passed to the builder key."""
    from engines.loader import load_engine

    engine = load_engine(tiny_bundle.stages[0], backend="auto", precision="fp16", cache_dir=str(tmp_path))
    assert engine.info["backend"] == "tensorrt" and engine.info["precision"] == "fp16"
    engine.close()


def test_a_stage_with_side_files_is_parsed_with_its_path_and_keyed_by_them(fake_trt, tmp_path):
    """A stage whose weights are in external-data side files: the parser is given the stage
    file's path (TensorRT reads side files relative to it; without it parsing fails), the plan
    gives onnxruntime's outputs, and the plan's cache key covers the side files' hashes."""
    from engines.build import build_bundle
    from engines.loader import load_engine
    from engines.tiny_model import CUTS, EXITS, make_tiny_multi_exit
    from engines.trt_backend import plan_cache_key

    trt, rt = fake_trt
    source = str(tmp_path / "tiny.onnx")
    onnx.save(make_tiny_multi_exit(seed=3), source)
    bundle = build_bundle(source, list(CUTS), dict(EXITS), str(tmp_path / "side"),
                          inline_max_bytes=0)
    stage = next(s for s in bundle.stages if s.external_data)
    x = np.random.default_rng(3).standard_normal(stage.input_shape).astype(np.float32)
    cache = tmp_path / "cache"
    engine = load_engine(stage, backend="tensorrt", cache_dir=str(cache))
    try:
        out = engine.run(x)
    finally:
        engine.close()
    ref = load_engine(stage, backend="onnxruntime").run(x)
    assert np.max(np.abs(out.logits - ref.logits)) <= 1e-6
    side = [sha for _, sha in stage.external_data]
    key = plan_cache_key(stage.sha256, trt.__version__, "Fake Orin", "8.7", 16, "fp32", 1, side)
    assert [p.name for p in cache.glob("*.plan")] == [key]
    assert key != plan_cache_key(stage.sha256, trt.__version__, "Fake Orin", "8.7", 16, "fp32", 1)


def test_a_plan_built_for_batches_runs_one_as_onnxruntime_does_and_is_cached_apart(
        tiny_bundle, fake_trt, tmp_path):
    """``max_batch`` (a worker's ``engine_batch_max``) builds the plan's optimization profile up
    to that batch, in a cache entry of its own beside the batch-1 plan; a batch gives each row
    onnxruntime's outputs, a larger one is refused, and engine batching takes the plan's
    limit (``agent.node.batching.batch_limit``)."""
    from agent.node.batching import batch_limit
    from engines.loader import load_engine

    trt, rt = fake_trt
    stage = tiny_bundle.stages[0]
    assert stage.dynamic_batch
    one = load_engine(stage, backend="tensorrt", cache_dir=str(tmp_path))
    eight = load_engine(stage, backend="tensorrt", cache_dir=str(tmp_path), max_batch=8)
    try:
        assert (one.max_batch, eight.max_batch, eight.info["max_batch"]) == (1, 8, 8)
        assert trt.Builder.profiles[-1][2][0] == 8 and trt.Builder.profiles[-2][2][0] == 1
        assert len(list(tmp_path.glob("*.plan"))) == 2
        x = np.random.default_rng(5).standard_normal((8, 1, 8, 8)).astype(np.float32)
        out = eight.run(x)
        ref = load_engine(stage, backend="onnxruntime")
        for i in range(8):
            want = ref.run(x[i:i + 1])
            assert np.max(np.abs(out.features[i:i + 1] - want.features)) <= 1e-5
            assert np.max(np.abs(out.logits[i:i + 1] - want.logits)) <= 1e-5
        with pytest.raises(RuntimeError, match="exceeds the plan's maximum 8"):
            eight.run(np.concatenate([x, x[:1]]))
        assert (batch_limit(eight, 8), batch_limit(eight, 4), batch_limit(one, 8)) == (8, 4, 1)
    finally:
        one.close()
        eight.close()
