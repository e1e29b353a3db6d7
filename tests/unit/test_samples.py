"""One rule for inputs and labels read from a file: the source's replay set, the testbed's
fleet replay and ``submit`` refuse the same bad files in one line (agent.ops.samples)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from agent.errors import UsageError
from agent.node.book import ReplaySet
from agent.ops.samples import checked_inputs, checked_labels
from agent.testbed.fleet import _replay

BAD_LABELS = [
    (np.array([0, 1]), "one label per input (x has 3 inputs, y is shaped (2,))"),
    (np.array([[0, 1, 2]]), "one label per input (x has 3 inputs, y is shaped (1, 3))"),
    (np.array(["a", "b", "c"]), "whole-number class labels, got dtype str"),
    (np.array([0.0, 2.5, 1.0]), "whole-number class labels (-1: none), got 2.5"),
    (np.array([0.0, np.nan, 1.0]), "whole-number class labels (-1: none), got nan"),
    (np.array([0, 2 ** 63, 1], np.uint64),
     "whole-number class labels (-1: none), got 9223372036854775808"),
    (np.array([0.0, 1e20, 1.0]), "whole-number class labels (-1: none), got 1e+20"),
    (np.array([0, -3, 1]), "whole-number class labels (-1: none), got -3"),
]


@pytest.mark.parametrize("y, message", BAD_LABELS)
def test_labels_a_cast_would_change_are_refused_naming_the_file(y, message):
    with pytest.raises(UsageError, match="^" + re.escape("f.npz: y must hold " + message)):
        checked_labels(y, 3, "f.npz")


def test_whole_number_labels_of_any_numeric_type_become_int64():
    for y in (np.array([0, 1, 9], np.uint8), np.array([0.0, 1.0, 9.0]), np.array([0, 1, 9])):
        out = checked_labels(y, 3, "f.npz")
        assert out.dtype == np.int64 and out.tolist() == [0, 1, 9]
    assert checked_labels(np.array([-1, 0, 2]), 3, "f").tolist() == [-1, 0, 2]  # -1: no label


def test_inputs_must_be_rows_of_a_type_the_wire_carries():
    assert checked_inputs(np.zeros((2, 3), np.float32), "f").shape == (2, 3)
    with pytest.raises(UsageError, match="single value"):
        checked_inputs(np.float32(1.0), "f")
    with pytest.raises(UsageError, match="x has dtype complex64"):
        checked_inputs(np.zeros((2, 3), np.complex64), "f")


@pytest.mark.parametrize("y, message", BAD_LABELS[3:5])
def test_the_replay_set_and_the_fleet_replay_refuse_fractional_labels(tmp_path, y, message):
    path = str(tmp_path / "replay.npz")
    np.savez(path, x=np.zeros((3, 1, 4, 4), np.float32), y=y)
    with pytest.raises(UsageError, match="^replay_path: %s: y must hold" % path):
        ReplaySet(path, (1, 1, 4, 4), "float32")
    with pytest.raises(UsageError, match="^fleet.replay: %s: y must hold" % path):
        _replay(path)
