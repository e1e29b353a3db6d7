"""One rule for class labels against a model's classes (``agent.ops.samples``): labels
outside 0..classes-1 are refused in one line (how many, the range found, the classes
expected); -1, no label, is never out of range."""

from __future__ import annotations

import numpy as np
import pytest

from agent.errors import UsageError
from agent.ops.samples import check_label_classes


def test_labels_past_the_last_class_are_refused_with_count_range_and_classes():
    """Rule: 2 of 5 labels at 3 and 7 for 3 classes: named with the found range 0..7."""
    with pytest.raises(UsageError) as info:
        check_label_classes(np.array([0, 1, 3, 7, 2]), 3, "r.npz")
    assert str(info.value) == (
        "r.npz: 2 of 5 labels lie outside 0..2, the 3 classes of the bundle's heads (labels "
        "found: 0..7); give labels 0..2 (-1: none), or the bundle the set was made for")


def test_negative_labels_other_than_minus_one_are_refused():
    """Rule: -1 is no label; -2 is out of range (found range counts labelled rows only)."""
    with pytest.raises(UsageError, match=r"1 of 3 labels lie outside 0\.\.9, .*found: -2\.\.4"):
        check_label_classes(np.array([-1, -2, 4]), 10, "r.npz")


def test_labels_within_the_classes_and_unlabelled_rows_pass():
    """Rule: 0..classes-1 and -1 pass, an all-unlabelled set too."""
    check_label_classes(np.array([0, 9, -1, 5]), 10, "r.npz")
    check_label_classes(np.array([-1, -1]), 10, "r.npz")
