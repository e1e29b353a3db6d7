"""A worker's start-up warns where an interrupted calibration left the power mode switched:
the saved original mode (``calibration-original-mode.json``) in its state_dir with no
calibration running is one WARNING in doctor's words, naming the mode and the fix, and the
worker starts; nothing without the file, nor while a calibration holds the state directory's
run lock or the board lock."""

from __future__ import annotations

import json
import logging
import os

from agent.node import modeleft
from calibration import device_lock
from calibration.modes import ORIGINAL_MODE_FILE
from calibration.runner import RUN_LOCK_FILE
from tests.unit.built_worker import built_worker
from tests.unit.lock_holder import held_elsewhere


def _start(tmp_path, caplog):
    """The WARNINGs naming the saved-mode file logged while the worker w1a is built (it is
    built: the line never stops it)."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="agent.run"):
        built = built_worker(str(tmp_path / "run"), state_dir=str(tmp_path / "state"))
    built.close()
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and ORIGINAL_MODE_FILE in r.getMessage()]


def _leave(tmp_path, obj) -> str:
    os.makedirs(str(tmp_path / "state"), exist_ok=True)
    path = str(tmp_path / "state" / ORIGINAL_MODE_FILE)
    with open(path, "w") as f:
        json.dump(obj, f)
    return path


def test_a_saved_mode_no_calibration_owns_is_one_start_up_warning_in_doctors_words(
        tmp_path, caplog, monkeypatch):
    """Rule: without the file no line; with it and no lock held, exactly one WARNING at the
    worker's start naming the file, the saved mode and id, and the fix, word for word
    doctor's "power mode" line; the worker still starts."""
    monkeypatch.setattr(device_lock, "DEVICE_LOCK_PATH", str(tmp_path / "board.lock"))
    assert _start(tmp_path, caplog) == []
    path = _leave(tmp_path, {"id": 1, "name": "30W"})
    (line,) = _start(tmp_path, caplog)
    assert line.startswith("%s: a calibration ended without restoring the power mode it found, "
                           "30W (id 1)" % path)
    assert line.endswith("--state-dir %s restores it before it measures (or sudo nvpmodel -m 1)"
                         % (tmp_path / "state"))
    what, fix = modeleft.mode_left_text(str(tmp_path / "state"), "CMD")
    assert what in line and fix.replace("CMD", "") in line


def test_no_start_up_warning_while_a_calibration_holds_the_run_lock_or_the_board_lock(
        tmp_path, caplog, monkeypatch):
    """Rule: a calibration running in the state directory (its run lock) owns the file, and
    one holding the board lock is switching the modes now: the worker says nothing then, and
    warns once the lock is let go."""
    board = str(tmp_path / "board.lock")
    monkeypatch.setattr(device_lock, "DEVICE_LOCK_PATH", board)
    _leave(tmp_path, {"id": 2, "name": "15W"})
    with held_elsewhere(str(tmp_path / "state" / RUN_LOCK_FILE)):  # a calibration there
        assert _start(tmp_path, caplog) == []
    with held_elsewhere(board, "board"):  # one switching the board's modes
        assert _start(tmp_path, caplog) == []
    assert len(_start(tmp_path, caplog)) == 1
