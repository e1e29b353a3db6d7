"""The inference thread, keeping each head's logits for a policy that decides on them (MLCI).

``LogitsInferenceThread`` is ``inference.InferenceThread`` with every stage engine wrapped so
that the logits of the head it just ran are kept, and handed back on the ``Done`` as
``logits``: a (C,) float32 copy, or None for a headless stage. The worker passes them to the
policy's ``on_head`` (``policies.api.HeadInfo.logits``). Only a policy with ``wants_logits``
gets this thread, so every other policy runs exactly the plain one.

The thread runs one job at a time, so the engine's last logits are the job's own.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from agent.node.inference import Done, InferenceThread


class _KeepLogits:
    """A stage engine whose ``run`` also stores the head's logits in ``store[stage]``; every
    other attribute (``info``, ``close``) is the engine's."""

    def __init__(self, engine: Any, store: Dict[int, Optional[np.ndarray]], stage: int):
        self._engine = engine
        self._store = store
        self._stage = stage

    def run(self, x: np.ndarray) -> Any:
        out = self._engine.run(x)
        self._store[self._stage] = (None if out.logits is None else
                                    np.array(out.logits, dtype=np.float32).reshape(-1))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


class LogitsInferenceThread(InferenceThread):
    """``InferenceThread`` whose ``Done`` objects carry ``logits`` (module docstring)."""

    def __init__(self, engines: Any, flops: Any, emulate_capacity_flops: float = 0.0,
                 **kw: Any):
        self._logits: Dict[int, Optional[np.ndarray]] = {}
        if not isinstance(engines, dict):
            engines = {0: engines}
        super().__init__({h: _KeepLogits(e, self._logits, h) for h, e in engines.items()},
                         flops, emulate_capacity_flops, **kw)

    def run_one(self, x: np.ndarray, stage: int = 0, pad: bool = True) -> Done:
        self._logits.pop(stage, None)
        done = super().run_one(x, stage, pad)
        done.logits = self._logits.pop(stage, None)  # type: ignore[attr-defined]
        return done
