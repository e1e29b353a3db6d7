"""onnxruntime backend: TensorRT EP -> CUDA EP -> CPU, with the providers actually used checked.

onnxruntime silently drops a provider it cannot initialise (missing CUDA libraries, a CPU-only
wheel), so a deployment can believe it runs on the GPU while it runs on the CPU. This backend
requests providers in the preferred order, then compares the request with
``InferenceSession.get_providers()`` and logs every provider that was not used.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from engines.accelerator import fallback
from engines.bundle import StageSpec
from engines.engine import Engine, StageOutput

log = logging.getLogger("engines.onnxruntime")

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def choose_providers(available: Sequence[str], wanted: Sequence[str] = PREFERRED_PROVIDERS
                     ) -> Tuple[List[str], List[str]]:
    """Split ``wanted`` into (present in ``available``, missing); CPU is always appended."""
    use = [p for p in wanted if p in available]
    missing = [p for p in wanted if p not in available]
    if "CPUExecutionProvider" not in use:
        use.append("CPUExecutionProvider")
    return use, missing


def provider_options(providers: Sequence[str], precision: str, cache_dir: Optional[str]) -> List[Dict[str, str]]:
    """Per-provider options: FP16 and engine caching for the TensorRT EP, none for the others."""
    opts: List[Dict[str, str]] = []
    for p in providers:
        if p == "TensorrtExecutionProvider":
            o = {"trt_fp16_enable": "True" if precision == "fp16" else "False"}
            if cache_dir:
                o.update({"trt_engine_cache_enable": "True", "trt_engine_cache_path": cache_dir})
            opts.append(o)
        else:
            opts.append({})
    return opts


def providers_missing(ort: Any, missing: Sequence[str]) -> str:
    """Why a stage would not get the GPU providers ``missing`` from the build ``ort``."""
    return "%s not in this onnxruntime build (onnxruntime %s, device %s)" % (
        ", ".join(missing), ort.__version__, ort.get_device())


class OrtEngine(Engine):
    """One stage on an ``onnxruntime.InferenceSession``."""

    def __init__(self, stage: StageSpec, threads: int = 1, precision: str = "fp32",
                 providers: Optional[Sequence[str]] = None, cache_dir: Optional[str] = None,
                 expect_gpu: bool = True):
        """``expect_gpu``: a stage off the GPU is a fallback (WARNING, ``info["fallbacks"]``);
        False when the CPU is chosen on purpose (accelerator = "none")."""
        super().__init__(stage)
        import onnxruntime as ort

        wanted = tuple(providers) if providers else PREFERRED_PROVIDERS
        use, missing = choose_providers(ort.get_available_providers(), wanted)
        causes = []
        if missing and expect_gpu:
            # a CPU-only wheel (the index's onnxruntime) has no GPU provider at all; on a Jetson
            # that usually means it shadows NVIDIA's build: `edge-agent doctor` says which
            causes.append(("provider_missing", providers_missing(ort, missing)))
            log.warning("stage %d: %s; falling back to %s", stage.index, causes[-1][1], use[0])
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3  # onnxruntime's own warnings would bypass our logging
        self._session = ort.InferenceSession(stage.onnx_path, sess_options=so, providers=use,
                                             provider_options=provider_options(use, precision, cache_dir))
        used = list(self._session.get_providers())
        dropped = [p for p in use if p not in used]
        for p in dropped:
            causes.append(("provider_failed", "onnxruntime could not initialise %s" % p))
            log.warning("stage %d: %s; it runs on %s", stage.index, causes[-1][1], ", ".join(used))
        log.info("stage %d: onnxruntime %s, providers used: %s", stage.index, ort.__version__, ", ".join(used))
        effective = precision if (precision == "fp32" or "TensorrtExecutionProvider" in used) else "fp32"
        if effective != precision:
            causes.append(("precision", "%s needs the TensorRT provider; running fp32" % precision))
            log.warning("stage %d: %s", stage.index, causes[-1][1])
        self._outputs = [n for n in (stage.feature_output, stage.logits_output) if n is not None]
        self.info = {
            "backend": "onnxruntime",
            "version": ort.__version__,
            "providers": used,
            "providers_requested": list(wanted),
            "precision": effective,
            "device": "GPU" if any(p != "CPUExecutionProvider" for p in used) else "CPU",
            "threads": threads,
        }
        for reason, detail in causes:
            fallback(self.info, reason, detail)

    def run(self, x: np.ndarray) -> StageOutput:
        """Run the stage; returns the cut tensor (None at the final stage) and the logits."""
        if self._session is None:
            raise RuntimeError("stage %d engine is closed" % self.stage.index)
        x = self.check_input(x)
        values = dict(zip(self._outputs, self._session.run(self._outputs, {self.stage.input_name: x})))
        return StageOutput(features=values.get(self.stage.feature_output),
                           logits=values.get(self.stage.logits_output))

    def close(self) -> None:
        self._session = None
