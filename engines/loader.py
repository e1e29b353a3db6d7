"""Choosing and loading a stage's backend (TensorRT or onnxruntime).

Kept apart from ``engines.engine`` (the interface) so that the backends import the interface and
this module imports the backends: no import circle.
"""

from __future__ import annotations

import logging
import re
from typing import Optional, Tuple

from agent.errors import UsageError, first_line
from engines.accelerator import ACCELERATORS, fallback
from engines.bundle import StageSpec
from engines.engine import BACKENDS, PRECISIONS, Engine, EngineInputError, EngineUnavailable

log = logging.getLogger("engines")
TENSORRT_MISSING = "the tensorrt Python package is not installed"  # backend auto: onnxruntime
# backend = "tensorrt" without the tensorrt package: the agent's start-up fault, doctor's line
NO_TENSORRT = ("backend tensorrt: the tensorrt Python package is not installed (JetPack ships "
               "it; use --backend onnxruntime elsewhere)")


def tensorrt_available() -> bool:
    """True when the ``tensorrt`` Python package imports (a GPU is still needed to run)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def check_precision(precision: str) -> None:
    """UsageError unless ``precision`` is one an engine can run; int8, refused as the node config
    refuses it, with the reason."""
    if precision == "int8":
        raise UsageError("precision int8 is not supported (TensorRT INT8 needs a calibration cache, "
                         "which edge-agent does not build); use fp16")
    if precision not in PRECISIONS:
        raise UsageError("precision must be one of %s, got %r" % ("|".join(PRECISIONS), precision))


def load_engine(stage: StageSpec, backend: str = "auto", threads: int = 1, precision: str = "fp32",
                cache_dir: Optional[str] = None, providers=None, accelerator: str = "preferred",
                max_batch: int = 1) -> Engine:
    """Load ``stage`` on ``backend`` (auto | tensorrt | onnxruntime).

    ``auto`` uses native TensorRT when its Python package is installed and falls back to
    onnxruntime otherwise or when building the plan fails. ``threads`` sets onnxruntime's
    intra-op threads; ``precision`` fp16 enables FP16 kernels on TensorRT (native or the
    onnxruntime TensorRT provider); ``cache_dir`` holds TensorRT plans. ``providers`` overrides
    onnxruntime's provider order (default TensorRT EP -> CUDA EP -> CPU). ``accelerator``
    (see ``engines.accelerator``): "none" runs on the CPU provider only, without warnings;
    otherwise every step away from the GPU is logged at WARNING with its cause and recorded in
    ``engine.info["fallbacks"]``. ``max_batch``: the largest batch a native TensorRT plan is
    built for, where the stage's input takes any batch (``dynamic_batch``; a plan of its own in
    the cache); onnxruntime takes any batch such a stage gets.
    """
    if backend not in BACKENDS:
        raise UsageError("backend must be one of %s, got %r" % ("|".join(BACKENDS), backend))
    check_precision(precision)
    if not isinstance(threads, int) or threads < 0:
        raise UsageError("threads must be an integer >= 0 (0 = library default), got %r" % (threads,))
    if not isinstance(max_batch, int) or max_batch < 1:
        raise UsageError("max_batch must be an integer >= 1, got %r" % (max_batch,))
    if accelerator not in ACCELERATORS:
        raise UsageError("accelerator must be one of %s, got %r" % ("|".join(ACCELERATORS), accelerator))
    if accelerator == "none":
        if backend == "tensorrt":
            raise UsageError("backend tensorrt needs the GPU; accelerator = \"none\" runs on the CPU")
        from engines.ort_backend import OrtEngine

        return OrtEngine(stage, threads=threads, precision=precision,
                         providers=providers or ("CPUExecutionProvider",), cache_dir=cache_dir,
                         expect_gpu=False)
    fallbacks = []
    if backend in ("auto", "tensorrt"):
        if tensorrt_available():
            from engines.trt_backend import TensorRTEngine

            try:
                return TensorRTEngine(stage, precision=precision, cache_dir=cache_dir,
                                      max_batch=max_batch)
            except EngineInputError:
                raise
            except Exception as exc:
                first = first_line(exc)
                if backend == "tensorrt":
                    raise EngineUnavailable("stage %d: TensorRT engine failed: %s" % (stage.index, first))
                log.warning("stage %d: TensorRT failed (%s); falling back to onnxruntime", stage.index, first)
                fallbacks.append(("tensorrt_failed", "TensorRT failed: %s" % first))
        elif backend == "tensorrt":
            raise EngineUnavailable(NO_TENSORRT)
        else:
            log.warning("stage %d: %s; falling back to onnxruntime", stage.index, TENSORRT_MISSING)
            fallbacks.append(("tensorrt_missing", TENSORRT_MISSING))
    from engines.ort_backend import OrtEngine

    engine = OrtEngine(stage, threads=threads, precision=precision, providers=providers,
                       cache_dir=cache_dir)
    later = engine.info.pop("fallbacks", [])
    for reason, detail in fallbacks:  # TensorRT's step away comes before onnxruntime's
        fallback(engine.info, reason, detail)
    engine.info.setdefault("fallbacks", []).extend(later)
    return engine


# onnxruntime's load errors carry a C++ source place and function signature before the reason
_ORT_NOISE = re.compile(r"/onnxruntime_src/\S+:\d+\s*|onnxruntime::[\w:~]+\([^()]*\)\s*")
_IR_VERSION = re.compile(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)")
# a model stamped with an opset newer than this onnxruntime's (its words since 1.x)
_OPSET = re.compile(r"support for domain (\S+) is till opset (\d+)")


def load_failure(exc: BaseException, limit: int = 300) -> Tuple[str, str]:
    """``(why, fix)`` for a stage file the runtime could not load: the error on one line, its
    C++ noise dropped and at most ``limit`` characters (the end kept: the reason comes last),
    and what to do. A model of a newer ONNX IR version than this onnxruntime reads (a bundle
    built on a workstation, run on an older JetPack) needs the model saved at the older IR or
    a newer onnxruntime; a model stamped with a newer opset, the model exported at this
    onnxruntime's opset or a newer onnxruntime; anything else, the bundle rebuilt."""
    text = _ORT_NOISE.sub("", " ".join(str(exc).split()))
    opset = _OPSET.search(text)  # before the cut: the line keeps the end, this may be earlier
    if len(text) > limit:
        text = "..." + text[-(limit - 3):]
    why = "%s: %s" % (type(exc).__name__, text)
    ir = _IR_VERSION.search(text)
    if ir:
        return why, ("this onnxruntime reads ONNX IR up to %s: set the model's ir_version to %s "
                     "(onnx: m.ir_version = %s; onnx.save(m, path)) and build the bundle again, "
                     "or install a newer onnxruntime" % ((ir.group(2),) * 3))
    if opset:
        domain = opset.group(1).rstrip(".") or "ai.onnx"
        return why, ("this onnxruntime runs %s up to opset %s: export the model at opset %s or "
                     "lower (torch.onnx.export(..., opset_version=%s)) and build the bundle "
                     "again, or install a newer onnxruntime" % ((domain,) + (opset.group(2),) * 3))
    return why, "rebuild the bundle (edge-agent build)"


def unloadable(stage: StageSpec, exc: BaseException) -> str:
    """The one line for a stage file that ``load_engine`` could not load (``load_failure``)."""
    why, fix = load_failure(exc)
    return "stage %d: %s cannot be loaded as an engine (%s); %s" % (
        stage.index, stage.onnx_path, why, fix)
