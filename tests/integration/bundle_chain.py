"""Run a bundle's stages in a chain, as a pipeline of workers would, for tests that compare
two builds of one model."""

from __future__ import annotations

import numpy as np

from engines.loader import load_engine


def chain_logits(bundle):
    """Every head's logits of the stage chain on one input of ones (onnxruntime, 1 thread)."""
    x = np.ones(bundle.stage(1).input_shape, dtype=bundle.stage(1).input_dtype)
    logits = []
    for spec in bundle.stages:
        engine = load_engine(spec, backend="onnxruntime", threads=1)
        try:
            out = engine.run(x)
        finally:
            engine.close()
        logits.append(out.logits)
        x = out.features
    return logits
