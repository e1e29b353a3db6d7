"""Choosing and loading a stage's backend (TensorRT or onnxruntime).

Kept apart from ``engines.engine`` (the interface) so that the backends import the interface and
this module imports the backends: no import circle.
"""

from __future__ import annotations

import logging
from typing import Optional

from agent.errors import UsageError
from engines.bundle import StageSpec
from engines.engine import BACKENDS, PRECISIONS, Engine, EngineInputError, EngineUnavailable

log = logging.getLogger("engines")


def tensorrt_available() -> bool:
    """True when the ``tensorrt`` Python package imports (a GPU is still needed to run)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def load_engine(stage: StageSpec, backend: str = "auto", threads: int = 1, precision: str = "fp32",
                cache_dir: Optional[str] = None, providers=None) -> Engine:
    """Load ``stage`` on ``backend`` (auto | tensorrt | onnxruntime).

    ``auto`` uses native TensorRT when its Python package is installed and falls back to
    onnxruntime (logging why) otherwise or when building the plan fails. ``threads`` sets
    onnxruntime's intra-op threads; ``precision`` fp16 enables FP16 kernels on TensorRT (native
    or the onnxruntime TensorRT provider); ``cache_dir`` holds TensorRT plans. ``providers``
    overrides onnxruntime's provider order (default TensorRT EP -> CUDA EP -> CPU).
    """
    if backend not in BACKENDS:
        raise UsageError("backend must be one of %s, got %r" % ("|".join(BACKENDS), backend))
    if precision not in PRECISIONS:
        raise UsageError("precision must be one of %s, got %r" % ("|".join(PRECISIONS), precision))
    if not isinstance(threads, int) or threads < 0:
        raise UsageError("threads must be an integer >= 0 (0 = library default), got %r" % (threads,))
    if backend in ("auto", "tensorrt"):
        if tensorrt_available():
            from engines.trt_backend import TensorRTEngine

            try:
                return TensorRTEngine(stage, precision=precision, cache_dir=cache_dir)
            except EngineInputError:
                raise
            except Exception as exc:
                if backend == "tensorrt":
                    raise EngineUnavailable("stage %d: TensorRT engine failed: %s"
                                            % (stage.index, str(exc).splitlines()[0] if str(exc) else exc))
                log.warning("stage %d: TensorRT failed (%s); falling back to onnxruntime", stage.index, exc)
        elif backend == "tensorrt":
            raise EngineUnavailable("backend tensorrt: the tensorrt Python package is not installed "
                                    "(JetPack ships it; use --backend onnxruntime elsewhere)")
        else:
            log.info("stage %d: tensorrt package not installed; using onnxruntime", stage.index)
    from engines.ort_backend import OrtEngine

    return OrtEngine(stage, threads=threads, precision=precision, providers=providers,
                     cache_dir=cache_dir)
