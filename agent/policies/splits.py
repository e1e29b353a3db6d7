"""Which rows of an exit profile (and of the replay set, row for row) learn and which report.

DIMEE builds its pools and MLCI fits its temperatures "on the validation set"; their numbers are
reported on rows they did not learn from. The split is by parity, so it needs no stored state
and every node, the simulator and ``plan`` agree: even rows validate, odd rows test.
"""

from __future__ import annotations

import numpy as np

from agent.errors import UsageError

ROW_SETS = ("all", "validation", "test")


def validation_rows(n: int) -> np.ndarray:
    """The rows policies learn from: 0, 2, 4, ... < ``n``."""
    return np.arange(0, int(n), 2)


def test_rows(n: int) -> np.ndarray:
    """The rows results are reported on: 1, 3, 5, ... < ``n``."""
    return np.arange(1, int(n), 2)


test_rows.__test__ = False  # type: ignore[attr-defined]  # a function, not a pytest test


def rows_named(name: str, n: int) -> np.ndarray:
    """The rows called ``name`` (``all``, ``validation``, ``test``) of ``n`` rows."""
    if name == "all":
        return np.arange(int(n))
    if name == "validation":
        return validation_rows(n)
    if name == "test":
        return test_rows(n)
    raise UsageError("rows: must be one of %s, got %r" % (", ".join(ROW_SETS), name))


def nonempty_rows(name: str, n: int, what: str, has_profile: bool = True) -> np.ndarray:
    """``rows_named(name, n)`` for tasks to carry: an empty set (the test rows of a one-row
    profile, or of a scenario with no exit profile) is a one-line ``UsageError`` naming
    ``what``, the setting that chose ``name`` (``--rows``, ``sample_rows``, a policy)."""
    rows = rows_named(name, n)
    if not len(rows):
        raise UsageError("%s: the tasks would carry the exit profile's %s rows, but the scenario "
                         "has %s" % (what, name, "%d row(s)" % n if has_profile
                                     else "no exit_profile"))
    return rows
