"""Checks on input arrays and class labels read from a file (a replay set, ``submit``'s
inputs): one rule for every reader, a ``UsageError`` in one line naming the file.

``numpy`` only; the wire's tensor types come from ``agent.protocol.wire.DTYPES``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from agent.errors import UsageError
from agent.protocol.wire import DTYPES


def checked_inputs(x: Any, where: str) -> np.ndarray:
    """``x`` as an array of inputs, one per row, of a type the wire carries."""
    if not isinstance(x, np.ndarray) or x.ndim == 0:
        raise UsageError("%s: x must be an array of inputs, one per row, got a single value"
                         % where)
    if x.dtype.name not in DTYPES:  # a source refuses any other tensor type
        raise UsageError("%s: x has dtype %s; inputs must be one of %s"
                         % (where, x.dtype.name, ", ".join(DTYPES)))
    return x


LABEL_MIN, LABEL_MAX = -1, 2 ** 53  # -1: no label; past 2**53 a float label is not exact


def checked_labels(y: Any, n: int, where: str) -> np.ndarray:
    """``y`` as ``n`` whole-number class labels (int64) in LABEL_MIN..LABEL_MAX (-1 is an
    input without a label): one per input, nothing that a cast would silently change (2.5,
    NaN, 1e20, text)."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise UsageError("%s: y must hold one label per input (x has %d inputs, y is shaped %s)"
                         % (where, n, tuple(y.shape)))
    if y.dtype.kind not in "iuf":
        raise UsageError("%s: y must hold whole-number class labels, got dtype %s"
                         % (where, y.dtype.name))
    odd = [v for v in y.tolist()
           if not (math.isfinite(v) and v == int(v) and LABEL_MIN <= v <= LABEL_MAX)]
    if odd:
        raise UsageError("%s: y must hold whole-number class labels (-1: none), got %r"
                         % (where, odd[0]))
    return y.astype(np.int64)


def check_label_classes(y: np.ndarray, classes: int, where: str) -> None:
    """Refuse labels (checked by ``checked_labels``) outside 0..classes-1, -1 (no label) apart:
    the model's heads answer one of ``classes`` classes, so such a label is never matched and
    every accuracy figure of the set would be wrong. One line: how many labels are out, the
    range of the labels found and the classes expected."""
    labelled = y[y != -1]
    out = int(np.count_nonzero((labelled < 0) | (labelled >= classes)))
    if out:
        raise UsageError("%s: %d of %d labels lie outside 0..%d, the %d classes of the "
                         "bundle's heads (labels found: %d..%d); give labels 0..%d (-1: none), "
                         "or the bundle the set was made for"
                         % (where, out, len(y), classes - 1, classes, int(labelled.min()),
                            int(labelled.max()), classes - 1))
