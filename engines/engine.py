"""Stage engines: one interface over onnxruntime and native TensorRT.

The interface every backend implements (``Engine``: ``run(x) -> StageOutput``, ``info``,
``close()``); ``engines.loader.load_engine`` picks the backend. The input is checked before it reaches a backend, so a wrong tensor fails with
``EngineInputError`` naming the expected and the received shape/dtype instead of a backend
stack trace.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, NamedTuple, Optional

import numpy as np

from agent.errors import UsageError
from engines.bundle import StageSpec

log = logging.getLogger("engines")

BACKENDS = ("auto", "tensorrt", "onnxruntime")
PRECISIONS = ("fp32", "fp16")


class EngineInputError(UsageError):
    """A tensor handed to ``Engine.run`` does not match the stage's input."""


class EngineUnavailable(UsageError):
    """The requested backend cannot run here (library or device missing)."""


class StageOutput(NamedTuple):
    """What one stage produces: the cut tensor for the next stage and/or exit logits."""

    features: Optional[np.ndarray]  # None at the final stage
    logits: Optional[np.ndarray]  # None at a stage without a head


class Engine:
    """Base class: input checking and the common ``info``/``close`` surface."""

    def __init__(self, stage: StageSpec):
        self.stage = stage
        self.info: Dict[str, Any] = {}
        self._expected = tuple(stage.input_shape[1:])
        self._dtype = np.dtype(stage.input_dtype)

    def check_input(self, x) -> np.ndarray:
        """Return ``x`` as a C-contiguous array or raise ``EngineInputError``."""
        if not isinstance(x, np.ndarray):
            raise EngineInputError("stage %d input %r: expected a numpy array, got %s"
                                   % (self.stage.index, self.stage.input_name, type(x).__name__))
        batch_ok = x.ndim >= 1 and (x.shape[0] >= 1 if self.stage.dynamic_batch else x.shape[0] == 1)
        if x.ndim != len(self.stage.input_shape) or tuple(x.shape[1:]) != self._expected or not batch_ok:
            want = ("N," if self.stage.dynamic_batch else "1,") + ",".join(str(d) for d in self._expected)
            raise EngineInputError("stage %d input %r: expected shape (%s), got %s"
                                   % (self.stage.index, self.stage.input_name, want, tuple(x.shape)))
        if x.dtype != self._dtype:
            raise EngineInputError("stage %d input %r: expected dtype %s, got %s"
                                   % (self.stage.index, self.stage.input_name, self._dtype.name, x.dtype.name))
        return np.ascontiguousarray(x)

    def run(self, x: np.ndarray) -> StageOutput:
        """Run the stage on ``x`` (batch first)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the backend's resources; the engine cannot run afterwards."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
