"""SIGHUP (the SSH session that started ``calibrate`` closing) during a measurement in a
mode other than the board's own is handled like SIGINT/SIGTERM: the original power mode is
restored, the saved-mode file in the state directory is removed, the stages finished so far
stay in the profile and the run ends as interrupted by signal 1 (the command exits 129).
Before, SIGHUP's default action killed the run and left the board in the other mode until
the next calibrate run. The board is the FAKE jetson-stats client of
``tests.unit.test_jtop_adapter`` (one that really switches); engines, the signal and the
process are real."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from calibration.modes import ORIGINAL_MODE_FILE
from tests.unit.test_jtop_adapter import new_board, read_board

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Runs one calibration through the fake jtop; the progress stream sends this process a real
# SIGHUP when the first stage is being measured, i.e. with the board switched to mode 0.
SCRIPT = r'''
import io, json, os, signal, sys
from calibration import runner
from engines.demo import DEMO_BUNDLE_DIR
from tests.unit.test_jtop_adapter import fake_module

board, work, out = sys.argv[1:4]

class HangUpWhenMeasuring(io.StringIO):
    def write(self, text):
        if "measuring" in text and not getattr(self, "sent", False):
            self.sent = True
            with open(os.path.join(work, "mode-at-signal.txt"), "w") as f:
                f.write(str(json.load(open(board))["mode"]))
            os.kill(os.getpid(), signal.SIGHUP)
        return super().write(text)

cfg = runner.CalibrationConfig(
    bundle_dir=DEMO_BUNDLE_DIR, profile_path=os.path.join(work, "profile.json"),
    state_dir=os.path.join(work, "state"), stages=(1,), modes="0", seconds=600.0,
    warmup_s=0.02, switch_timeout_s=30.0, jtop_interval_s=0.005)
try:
    runner.calibrate(cfg, jtop_module=fake_module(board), stream=HangUpWhenMeasuring())
    said = {"ended": "normally"}
except runner.CalibrationInterrupted as exc:
    said = {"ended": "interrupted", "signum": exc.signum, "switched": exc.result.switched,
            "restore_error": exc.result.restore_error}
with open(out, "w") as f:
    json.dump(said, f)
'''


def test_sighup_in_another_mode_restores_the_original_and_removes_the_saved_mode(tmp_path):
    """Rule: a hang-up while a stage is measured in mode 0 (board's own: 1) puts mode 1
    back, deletes calibration-original-mode.json and ends the run as interrupted by
    signal 1; it never leaves the board silently in mode 0."""
    board = new_board(tmp_path / "board.json", mode=1)
    out = tmp_path / "said.json"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(board), str(tmp_path), str(out)],
                          cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=300)
    assert (tmp_path / "mode-at-signal.txt").read_text() == "0", proc.stdout[-3000:]
    assert proc.returncode == 0, "killed by the signal (rc %d): %s" % (proc.returncode,
                                                                      proc.stdout[-3000:])
    said = json.loads(out.read_text())
    assert said == {"ended": "interrupted", "signum": signal.SIGHUP, "switched": True,
                    "restore_error": None}
    assert read_board(board)["mode"] == 1
    assert not (tmp_path / "state" / ORIGINAL_MODE_FILE).exists()
