"""A client's input is compared with the source's replay set's values (what the stage-1 engine
is fed): far outside is refused with the fix (0-255 images for a [0, 1] model), within a wide
margin it is served, and a near-constant or all-zero replay set refuses nothing it should
not."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from agent.node.source import SourceSide


def _why(lo, hi, values, dtype=np.float32):
    """``SourceSide._out_of_range`` for a source whose replay set spans [lo, hi]."""
    side = SimpleNamespace(replay=SimpleNamespace(value_range=(lo, hi)))
    return SourceSide._out_of_range(side, np.array(values, dtype=dtype))


@pytest.mark.parametrize("lo,hi,values,dtype", [
    (0.0, 1.0, [0.0, 1.0], np.float32), (0.0, 1.0, [-3.9, 4.9], np.float32),  # the margin
    (0.5, 0.5001, [0.0, 1.0, 2.4], np.float32),  # near-constant: 4 x its magnitude
    (0.0, 0.0, [1e3], np.float32),  # an all-zero set: no range to compare with
    (0.0, 1.0, [250], np.int64),  # not a float input: the dtype check's, not this one's
])
def test_inputs_within_the_margin_are_served(lo, hi, values, dtype):
    """Rule: values within [lo, hi] widened by 4 x max(width, |lo|, |hi|) pass."""
    assert _why(lo, hi, values, dtype) == ""


def test_unscaled_images_are_refused_with_the_fix():
    """Rule: 0-255 values where the replay set is [0, 1] are refused, naming both ranges and
    the usual fix."""
    why = _why(0.0, 1.0, [0.0, 250.0])
    assert why.startswith("input values in [0, 250], far outside the [0, 1] of the source's "
                          "replay set: scale it as the model's inputs are")
    assert why.endswith("(images stored as 0-255? x / 255)")
    assert "far outside" in _why(0.5, 0.5001, [10.0])
