"""Native TensorRT backend: plan built from the stage ONNX on first load, then cached.

Written against NVIDIA's documented Python API: ``tensorrt`` (Builder, OnnxParser,
IBuilderConfig, Runtime, ICudaEngine, IExecutionContext) and ``cuda-python``'s runtime bindings
(``cudaMalloc``, ``cudaMemcpyAsync``, ``cudaStreamSynchronize`` ...). TensorRT 10 uses the
tensor-name API (``num_io_tensors``, ``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``); TensorRT 8.5 (JetPack 5) falls back to the bindings API
(``num_bindings``, ``set_binding_shape``, ``execute_async_v2``).

The plan cache key covers everything that makes a plan unusable elsewhere: the ONNX file's
SHA-256, the TensorRT version, the GPU name, compute capability and SM count, the precision and
the largest batch of the optimisation profile.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from agent.ops.atomic import write_atomic
from engines.bundle import StageSpec
from engines.engine import Engine, EngineUnavailable, StageOutput

log = logging.getLogger("engines.tensorrt")

WORKSPACE_BYTES = 1 << 30  # builder scratch memory; Jetson Orin Nano has 8 GB shared
PLAN_LOCK_TIMEOUT_S = 3600.0  # another agent building the same plan: wait this long for it

# TensorRT data type name -> numpy dtype. Not ``trt.nptype``: TensorRT 8.5's uses ``np.bool``,
# which numpy 1.24 removed, so it raises on the first run.
_NUMPY_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32,
                 "INT64": np.int64, "BOOL": np.bool_, "UINT8": np.uint8}


def numpy_dtype(trt_dtype: Any) -> Any:
    """The numpy dtype of a TensorRT ``DataType`` (``DataType.FLOAT`` -> float32)."""
    name = str(getattr(trt_dtype, "name", trt_dtype)).rsplit(".", 1)[-1].upper()
    try:
        return _NUMPY_DTYPES[name]
    except KeyError:
        raise RuntimeError("TensorRT tensor type %s has no numpy equivalent here" % name)


def feature_as_manifest(feats: np.ndarray, dtype: Optional[str]) -> np.ndarray:
    """``feats`` in the manifest's feature ``dtype``, the next stage's input dtype: a plan may
    hand back another type than the graph's (half precision from an FP16 plan); a float16
    graph's features stay float16. Without a recorded dtype, half precision becomes float32."""
    want = np.dtype(dtype) if dtype else np.dtype(np.float32 if feats.dtype == np.float16
                                                  else feats.dtype)
    return feats.astype(want, copy=False)


def default_cache_dir(environ: Any = None) -> str:
    """Where plans go without ``cache_dir``: systemd's ``$CACHE_DIRECTORY`` (the unit's
    CacheDirectory=, writable under ProtectSystem=strict) + ``/trt``, else
    ``~/.cache/edge-agent/trt``."""
    env = os.environ if environ is None else environ
    first = (env.get("CACHE_DIRECTORY") or "").split(":")[0]
    if first:
        return os.path.join(first, "trt")
    return os.path.join(os.path.expanduser("~"), ".cache", "edge-agent", "trt")


def plan_cache_key(onnx_sha256: str, trt_version: str, device_name: str, compute_capability: str,
                   sm_count: int, precision: str, max_batch: int = 1,
                   side_sha256: Sequence[str] = ()) -> str:
    """File-name-safe key of a TensorRT plan (pure; identical inputs give the same key).
    ``side_sha256``: the stage's external-data side files' hashes, which hold weights its
    ``.onnx`` does not (none: the key of a stage without side files, as before they counted)."""
    ident = "|".join([onnx_sha256, trt_version, device_name, compute_capability, str(sm_count),
                      precision, str(max_batch)] + list(side_sha256))
    return "%s-%s.plan" % (onnx_sha256[:16], hashlib.sha256(ident.encode("utf-8")).hexdigest()[:24])


def _cudart():
    """cuda-python's runtime module (new ``cuda.bindings`` layout first, then the old one)."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            raise EngineUnavailable("TensorRT backend needs cuda-python (pip install cuda-python "
                                    "matching the CUDA of this JetPack)")
    return cudart


def _check(result):
    """Unpack a cuda-python ``(err, *values)`` tuple, raising on a CUDA error."""
    err, rest = result[0], result[1:]
    if int(err) != 0:
        raise RuntimeError("CUDA error %s" % (err,))
    return rest[0] if len(rest) == 1 else (rest or None)


def device_identity(cudart, device: int = 0) -> Dict[str, Any]:
    """Name, compute capability and SM count of CUDA ``device``."""
    prop = _check(cudart.cudaGetDeviceProperties(device))
    name = prop.name.decode("utf-8", "replace").rstrip("\x00") if isinstance(prop.name, bytes) else str(prop.name)
    return {"name": name, "compute_capability": "%d.%d" % (prop.major, prop.minor),
            "sm_count": int(prop.multiProcessorCount)}


class TensorRTEngine(Engine):
    """One stage as a TensorRT engine (plan cached on disk)."""

    def __init__(self, stage: StageSpec, precision: str = "fp32", cache_dir: Optional[str] = None,
                 max_batch: int = 1, device: int = 0):
        super().__init__(stage)
        import tensorrt as trt

        self._trt = trt
        self._cudart = cudart = _cudart()
        _check(cudart.cudaSetDevice(device))
        ident = device_identity(cudart, device)
        self.max_batch = max_batch if stage.dynamic_batch else 1
        cache_dir = cache_dir or default_cache_dir()
        key = plan_cache_key(stage.sha256, trt.__version__, ident["name"], ident["compute_capability"],
                             ident["sm_count"], precision, self.max_batch,
                             [sha for _, sha in stage.external_data])
        plan_path = os.path.join(cache_dir, key)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._cached_engine(plan_path, precision)
        self._context = self._engine.create_execution_context()
        self._stream = _check(cudart.cudaStreamCreate())
        self._named = hasattr(self._engine, "num_io_tensors")  # TensorRT >= 8.5 tensor-name API
        self._buffers: Dict[str, Any] = {}  # tensor name -> (device pointer, capacity bytes)
        self.info = {"backend": "tensorrt", "version": trt.__version__, "providers": ["TensorRT"],
                     "precision": precision, "device": ident["name"],
                     "compute_capability": ident["compute_capability"], "plan": plan_path,
                     "api": "tensor-name" if self._named else "bindings",
                     "max_batch": self.max_batch}

    def _cached_engine(self, plan_path: str, precision: str) -> Any:
        """The engine of the cached plan, or of one built and written there under a lock (agents
        sharing the folder build each plan once). A cached plan TensorRT cannot read (cut short
        or zero bytes by a power cut, damaged on disk) is rebuilt and replaced, with one WARNING
        naming the file; a cache that cannot be locked (read-only, not a folder) is still read,
        and a plan missing there is built in memory; a plan that cannot be written (disk full)
        is logged and kept in memory."""
        import filelock

        try:
            os.makedirs(os.path.dirname(plan_path), exist_ok=True)
            lock = filelock.FileLock(plan_path + ".lock", timeout=PLAN_LOCK_TIMEOUT_S)
            lock.acquire()
        except (OSError, filelock.Timeout) as exc:
            engine = self._engine_from_file(plan_path)
            if engine is not None:
                log.info("stage %d: TensorRT plan from cache %s (cache not lockable: %s)",
                         self.stage.index, plan_path, exc)
                return engine
            log.warning("stage %d: TensorRT plan cache %s unusable (%s); building without it",
                        self.stage.index, os.path.dirname(plan_path), exc)
            return self._engine_from_plan(self._build_plan(precision), plan_path)
        try:
            engine = self._engine_from_file(plan_path)
            if engine is not None:
                log.info("stage %d: TensorRT plan from cache %s", self.stage.index, plan_path)
                return engine
            plan = self._build_plan(precision)
            try:
                write_atomic(plan_path, plan)
                log.info("stage %d: built TensorRT plan %s", self.stage.index, plan_path)
            except OSError as exc:
                log.warning("stage %d: cannot cache the TensorRT plan in %s (%s)",
                            self.stage.index, plan_path, exc)
            return self._engine_from_plan(plan, plan_path)
        finally:
            lock.release()

    def _engine_from_file(self, plan_path: str) -> Any:
        """The engine of the plan cached at ``plan_path``; None when there is none, or when it
        cannot be read or deserialized (logged once, naming the file: it is rebuilt)."""
        try:
            with open(plan_path, "rb") as f:
                plan = f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("stage %d: cannot read the cached TensorRT plan %s (%s); rebuilding it",
                        self.stage.index, plan_path, exc)
            return None
        engine = None
        if plan:  # zero bytes: a write cut short; TensorRT is not asked to read it
            try:
                engine = self._runtime.deserialize_cuda_engine(plan)
            except Exception:  # TensorRT reports an unreadable plan through its logger
                engine = None
        if engine is None:
            log.warning("stage %d: cached TensorRT plan %s is unusable (%d bytes, cut short or "
                        "damaged); rebuilding it", self.stage.index, plan_path, len(plan))
        return engine

    def _engine_from_plan(self, plan: bytes, plan_path: str) -> Any:
        """The engine of a plan just built (one TensorRT cannot read is an error)."""
        engine = self._runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise RuntimeError("cannot deserialize TensorRT plan %s" % plan_path)
        return engine

    def _build_plan(self, precision: str) -> bytes:
        trt = self._trt
        builder = trt.Builder(self._logger)
        major = int(trt.__version__.split(".")[0])
        # explicit batch is the only mode in TensorRT 10; 8.x needs the flag
        flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self._logger)
        with open(self.stage.onnx_path, "rb") as f:
            # the path lets the parser read the weights of a stage kept in side files
            if not parser.parse(f.read(), self.stage.onnx_path):
                errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
                raise RuntimeError("TensorRT cannot parse %s: %s" % (self.stage.onnx_path, "; ".join(errors)))
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        if precision == "fp16":
            if not builder.platform_has_fast_fp16:
                log.warning("stage %d: this GPU has no fast FP16; building FP16 anyway", self.stage.index)
            config.set_flag(trt.BuilderFlag.FP16)
        if self.stage.dynamic_batch:
            profile = builder.create_optimization_profile()
            one = tuple(self.stage.input_shape)
            most = (self.max_batch,) + one[1:]
            profile.set_shape(self.stage.input_name, one, one, most)
            config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError("TensorRT failed to build a plan for %s" % self.stage.onnx_path)
        return bytes(serialized)

    def _device_buffer(self, name: str, nbytes: int):
        ptr, cap = self._buffers.get(name, (None, 0))
        if ptr is None or cap < nbytes:
            if ptr is not None:
                _check(self._cudart.cudaFree(ptr))
            ptr = _check(self._cudart.cudaMalloc(max(nbytes, 1)))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def _io_names(self) -> List[str]:
        if self._named:
            return [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        return [self._engine.get_binding_name(i) for i in range(self._engine.num_bindings)]

    def run(self, x: np.ndarray) -> StageOutput:
        """Copy ``x`` to the GPU, run the plan, copy the outputs back."""
        x = self.check_input(x)
        if x.shape[0] > self.max_batch:
            raise RuntimeError("stage %d: batch %d exceeds the plan's maximum %d"
                               % (self.stage.index, x.shape[0], self.max_batch))
        trt, cudart, eng, ctx = self._trt, self._cudart, self._engine, self._context
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        names = self._io_names()
        if self._named:
            is_input = [eng.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names]
        else:
            is_input = [eng.binding_is_input(i) for i in range(len(names))]
        pointers: Dict[str, int] = {}
        # inputs first: output shapes are only known once every input shape is set
        for i, name in enumerate(names):
            if not is_input[i]:
                continue
            if self._named:
                ctx.set_input_shape(name, tuple(x.shape))
            else:
                ctx.set_binding_shape(i, tuple(x.shape))
            ptr = self._device_buffer(name, x.nbytes)
            _check(cudart.cudaMemcpyAsync(ptr, x.ctypes.data, x.nbytes, h2d, self._stream))
            pointers[name] = int(ptr)
        outputs: Dict[str, np.ndarray] = {}
        for i, name in enumerate(names):
            if is_input[i]:
                continue
            if self._named:
                shape, dtype = ctx.get_tensor_shape(name), eng.get_tensor_dtype(name)
            else:
                shape, dtype = ctx.get_binding_shape(i), eng.get_binding_dtype(i)
            host = np.empty(tuple(shape), dtype=numpy_dtype(dtype))
            pointers[name] = int(self._device_buffer(name, host.nbytes))
            outputs[name] = host
        if self._named:
            for name in names:
                ctx.set_tensor_address(name, pointers[name])
        bindings = [pointers[name] for name in names]
        ok = ctx.execute_async_v3(self._stream) if self._named else ctx.execute_async_v2(bindings, self._stream)
        if not ok:
            raise RuntimeError("stage %d: TensorRT execution failed" % self.stage.index)
        for name, host in outputs.items():
            ptr = self._buffers[name][0]
            _check(cudart.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, d2h, self._stream))
        _check(cudart.cudaStreamSynchronize(self._stream))
        feats = outputs.get(self.stage.feature_output) if self.stage.feature_output else None
        logits = outputs.get(self.stage.logits_output) if self.stage.logits_output else None
        if feats is not None:
            feats = feature_as_manifest(feats, self.stage.feature_dtype)
        if logits is not None:
            logits = logits.astype(np.float32, copy=False)
        return StageOutput(features=feats, logits=logits)

    def close(self) -> None:
        for ptr, _ in self._buffers.values():
            self._cudart.cudaFree(ptr)
        self._buffers = {}
        if getattr(self, "_stream", None) is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None
        self._context = None
        self._engine = None
