"""A run that could not put the board's original power mode back names that mode's id in its
one error line's fix (``sudo nvpmodel -m 1``), not a placeholder the engineer must look up."""

from __future__ import annotations

from agent.commands.calibrate import mode_said
from calibration.runner import CalibrationInterrupted, CalibrationResult


def test_a_failed_restore_names_the_mode_id_to_set_by_hand():
    """Rule: the fix in the failed-restore line is the exact nvpmodel command."""
    exc = CalibrationInterrupted(15)
    exc.result = CalibrationResult(switched=True, restore_error="jtop service stopped",
                                   original_mode_id=1)
    said = mode_said(exc)
    assert said.endswith("or set it with sudo nvpmodel -m 1"), said
    assert "jtop service stopped" in said
