"""The exit decision: what a worker does with a task once a stage has run on it.

One pure function over the stage's outcome and the node's situation; the worker side calls it
after every inference and carries out the answer.
"""

from __future__ import annotations

import enum
from typing import Callable, Optional

from engines.exit_profile import should_exit


class Step(enum.Enum):
    """What happens to a task after stage h."""

    EXIT = "exit"  # answer the source now (an early exit, or the final stage's result)
    FORWARD = "forward"  # send the features to a stage h+1 successor
    LOCAL = "local"  # run stage h+1 here (this worker holds it and the policy keeps it)
    DROP = "no_output"  # nothing to answer with and nothing to forward: counted and dropped


def next_step(stage: int, final_stage: int, confidence: Optional[float],
              threshold: Optional[float], has_features: bool, serves_next: bool,
              keep_local: Callable[[], bool], answer: Optional[bool] = None) -> Step:
    """The exit decision after ``stage`` ran.

    - EXIT at the final stage (when it has a head: ``final_stage`` is a terminal worker's own
      last stage) or when the head's ``confidence`` reaches this stage's ``threshold``
      (``engines.exit_profile.should_exit``; no threshold: no exit); ``answer`` given (the
      policy's ``on_head`` decided) replaces the threshold comparison;
    - DROP when the task cannot go on: the final stage gave no confidence, or no features;
    - LOCAL when this node serves stage+1 (``serves_next``) and the policy's ``keep_local()``
      says so (asked only then: a policy may draw randomness or read queues for it);
    - FORWARD otherwise.
    """
    last = stage == final_stage
    if answer is None:
        answer = threshold is not None and confidence is not None \
            and should_exit(confidence, threshold)
    if confidence is not None and (last or answer):
        return Step.EXIT
    if not has_features or last:
        return Step.DROP
    if serves_next and keep_local():
        return Step.LOCAL
    return Step.FORWARD
