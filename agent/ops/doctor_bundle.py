"""Whether each stage of a bundle runs as a worker runs it at start-up: ``doctor``'s bundle line."""

from __future__ import annotations

import os
from typing import Any, Tuple

from agent.errors import missing_module_hint


def unrunnable_stage(bundle: Any) -> Tuple[str, str]:
    """Why a stage of ``bundle`` cannot run as a worker runs it at start-up (onnxruntime on the
    CPU, an input of the manifest's name, shape and dtype), and the fix; "" when it can."""
    import numpy as np

    from engines.loader import load_engine, load_failure

    for spec in bundle.stages:
        try:
            engine = load_engine(spec, backend="onnxruntime", accelerator="none")
            try:
                engine.run(np.zeros(spec.input_shape, dtype=spec.input_dtype))
            finally:
                engine.close()
        except Exception as exc:  # noqa: BLE001 - any failure but a missing runtime: the bundle's
            if isinstance(exc, ModuleNotFoundError) and missing_module_hint(exc):
                raise
            why, fix = load_failure(exc)
            return "stage %d (%s) does not run: %s" % (
                spec.index, os.path.basename(spec.onnx_path), why), fix
    return "", ""
