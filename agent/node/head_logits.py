"""The inference thread, keeping each head's logits for a policy that decides on them (MLCI).

``LogitsInferenceThread`` is ``inference.InferenceThread`` whose engine step keeps the logits
of the head it just ran, handed back on the ``Done`` as ``logits``: a (C,) float32 copy, or
None for a headless stage (copied after the engine call is timed, so mu is the engine's alone,
as everywhere: ``engines.timing``). The worker passes them to the
policy's ``on_head`` (``policies.api.HeadInfo.logits``). Only a policy with ``wants_logits``
gets this thread, so every other policy runs exactly the plain one.
"""

from __future__ import annotations

from typing import Any, Tuple

import numpy as np

from agent.node.inference import Done, InferenceThread


class LogitsInferenceThread(InferenceThread):
    """``InferenceThread`` whose ``Done`` objects carry ``logits`` (module docstring)."""

    def _engine_step(self, x: np.ndarray, stage: int) -> Tuple[Done, Any]:
        """The plain step (the engine call alone is timed), with a copy of the head's logits
        kept on the ``Done``."""
        done, logits = super()._engine_step(x, stage)
        done.logits = (None if logits is None else  # type: ignore[attr-defined]
                       np.array(logits, dtype=np.float32).reshape(-1))
        return done, logits
