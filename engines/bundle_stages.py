"""How the stages of a bundle fit together, once each has been read on its own.

A stage takes, as it is, the tensor the stage before hands it: a worker refuses a task whose
input is not its stage's dtype and shape (reason ``bad_shape``), so a bundle whose stage h
feature and stage h+1 input disagree would load and then lose every task at stage h+1. These
rules are checked by ``engines.bundle.parse_bundle`` (so by ``load_bundle`` and by ``build``
before it writes a manifest); each returns the fault as one line without the manifest's path.

``numpy`` only, and nothing of ``engines.bundle``: that module imports this one.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def tensor_bytes(shape, dtype: str) -> int:
    """Bytes of one tensor of ``shape`` and numpy ``dtype``."""
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def stages_problem(stages: Sequence[Any], num_classes: int) -> str:
    """Why the parsed ``stages`` (``StageSpec``s in order from 1) do not make one model
    ("" when they do): the final stage answers (logits, no feature, no early exit); every head
    has ``num_classes`` classes; every ``input_bytes`` is its input's size; and each stage's
    feature is the next stage's input in shape and dtype."""
    last = stages[-1]
    if last.feature_output is not None or last.logits_output is None or last.has_exit:
        return ("the final stage %d must have logits_output, no feature_output and has_exit "
                "false" % last.index)
    for s in stages:
        if s.has_exit and s.logits_output is None:
            return "stage %d has_exit but no logits_output" % s.index
        if s.logits_output is not None and s.num_classes != num_classes:
            return ("stage %d logits have %d classes, num_classes is %d"
                    % (s.index, s.num_classes, num_classes))
        if s.input_bytes != tensor_bytes(s.input_shape, s.input_dtype):
            return ("stage %d input_bytes %d does not match shape %r %s"
                    % (s.index, s.input_bytes, s.input_shape, s.input_dtype))
    for prev, nxt in zip(stages[:-1], stages[1:]):
        if prev.feature_output is None:
            return "stage %d has no feature_output for stage %d" % (prev.index, nxt.index)
        if prev.feature_shape != nxt.input_shape:
            return ("stage %d feature shape %r != stage %d input shape %r"
                    % (prev.index, prev.feature_shape, nxt.index, nxt.input_shape))
        if prev.feature_dtype != nxt.input_dtype:  # the worker would refuse every such task
            return ("stage %d feature_output %s is %s but stage %d input %s is %s: a stage takes "
                    "the tensor the one before hands it; rebuild the bundle so that they agree"
                    % (prev.index, prev.feature_output, prev.feature_dtype, nxt.index,
                       nxt.input_name, nxt.input_dtype))
    return ""
