"""What the inference thread is handed and hands back: ``Job`` and ``Done``.

Kept apart from ``agent.node.inference`` (the thread) and ``agent.node.batching`` (several jobs
in one engine call), which both make them. ``WARM_RUNS`` and the rule behind ``Done.warm`` are
explained in ``agent.node.inference``'s docstring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

WARM_RUNS = 3  # runs back to back before a run that measures capacity (agent.node.inference)


@dataclass
class Job:
    """One task to run: its metadata (opaque to the thread), the input tensor, the stage."""

    meta: Any
    x: np.ndarray
    stage: int = 0  # 0 = the worker's only stage
    expires: float = 0.0  # clock() time past which it is not run (0: no deadline)
    queued_at: float = math.inf  # clock() time it began to wait (``submit`` stamps it if unset)


@dataclass
class Done:
    """A finished job: features for the next stage, head confidence/class when there is a head."""

    meta: Any
    features: Optional[np.ndarray]
    confidence: Optional[float]
    cls: Optional[int]
    service_time_s: float  # time the task kept the engine busy (agent.node.inference)
    engine_time_s: float = 0.0  # the real engine call's share of it, same clock
    error: str = ""  # non-empty when the job failed (the exception's type name)
    reason: str = ""  # why it failed, the drop counter's suffix: engine_error, unknown_stage
    # or deadline
    streak: int = 0  # runs the engine made back to back right before this one (0: it was idle,
    # or its last run was a batched call: agent.node.batching)
    padded: bool = False  # service_time_s is an emulated device's padded time
    batch: int = 1  # jobs the engine call ran together (>1: agent.node.batching), this one's
    # times are its share of the call

    @property
    def warm(self) -> bool:
        """The engine ran ``WARM_RUNS`` jobs back to back right before this one."""
        return self.streak >= WARM_RUNS

    @property
    def capacity_sample_s(self) -> float:
        """This run's service time as the online capacity estimate takes it: the engine call
        (``engine_time_s``), or an emulated device's padded time; 0 (none) unless warm, and
        for a share of a batched call (faster per task than the one-task calls mu is
        calibrated on: ``agent.node.batching``)."""
        if self.streak < WARM_RUNS or self.batch > 1:
            return 0.0
        return self.service_time_s if self.padded else self.engine_time_s
