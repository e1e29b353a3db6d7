"""doctor warns where an interrupted calibration left the power mode switched: the saved
original mode (``calibration-original-mode.json``) still in the state directory with no
calibration running; nothing while a calibration holds its lock, or with no such file."""

from __future__ import annotations

import json
import os

import pytest

from agent.ops.doctor import WARN, Context, check_mode_left
from calibration import device_lock
from calibration.modes import ORIGINAL_MODE_FILE
from calibration.runner import RUN_LOCK_FILE
from tests.unit.lock_holder import held_elsewhere


@pytest.fixture(autouse=True)
def _own_board_lock(tmp_path, monkeypatch):
    """The board lock is this test's file: a calibration elsewhere on the machine holding the
    real one would silence every line (doctor says nothing while a board is switched)."""
    monkeypatch.setattr(device_lock, "DEVICE_LOCK_PATH", str(tmp_path / "board.lock"))


def _left(state_dir, obj) -> None:
    with open(os.path.join(str(state_dir), ORIGINAL_MODE_FILE), "w") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))


def test_a_saved_mode_left_by_a_killed_calibration_is_a_warn_naming_it_and_the_fix(tmp_path):
    """Rule: the file left with no calibration running is one WARN naming the file, the mode
    and id it saved, and the fix: calibrate (which restores it first) or nvpmodel -m ID."""
    assert check_mode_left(Context(state_dir=str(tmp_path))) == []
    _left(tmp_path, {"id": 1, "name": "30W"})
    (line,) = check_mode_left(Context(state_dir=str(tmp_path), bundle="/opt/b"))
    assert line.status == WARN and line.name == "power mode"
    assert "%s: a calibration ended without restoring the power mode it found, 30W (id 1)" % (
        tmp_path / ORIGINAL_MODE_FILE) in line.detail
    assert line.fix == ("edge-agent calibrate --bundle /opt/b --state-dir %s restores it before "
                        "it measures (or sudo nvpmodel -m 1)" % tmp_path)


def test_a_running_calibrations_own_saved_mode_is_no_warning(tmp_path):
    """Rule: while a calibration holds the state directory's run lock the file is its own (it
    restores the mode when it ends): no line; an unreadable file is still named."""
    _left(tmp_path, {"id": 2, "name": "15W"})
    with held_elsewhere(str(tmp_path / RUN_LOCK_FILE)):  # a calibration running there
        assert check_mode_left(Context(state_dir=str(tmp_path))) == []
    assert len(check_mode_left(Context(state_dir=str(tmp_path)))) == 1  # lock let go
    _left(tmp_path, "{not json")
    (line,) = check_mode_left(Context(state_dir=str(tmp_path)))
    assert "its saved mode (unreadable)" in line.detail and "nvpmodel" not in line.fix
