"""An interrupted ``calibrate`` says "original power mode restored" only where it switched a
mode: on the CPU path (no jtop: nothing is switched) the line is the signal alone (it said
the mode was restored though none had been switched); through jtop (the FAKE jetson-stats
client of ``tests.unit.test_jtop_adapter``, a board that really switches) it says so once
the board is back. Real engines, a real SIGINT, and for the command line a real process."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import pytest

from agent.commands.calibrate import mode_said
from calibration import runner
from engines.demo import DEMO_BUNDLE_DIR
from tests.unit.test_jtop_adapter import fake_module, new_board, read_board

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _SignalWhenMeasuring(io.StringIO):
    """The progress stream: the first "measuring" line sends this process a real SIGINT,
    so the signal lands while a stage is timed (the run's handler records it)."""

    def write(self, text):
        if "measuring" in text and not getattr(self, "sent", False):
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)
        return super().write(text)


def _interrupted(tmp_path, jtop_module):
    cfg = runner.CalibrationConfig(
        bundle_dir=DEMO_BUNDLE_DIR, profile_path=str(tmp_path / "profile.json"),
        state_dir=str(tmp_path / "state"), stages=(1,), modes="all", seconds=600.0,
        warmup_s=0.02, switch_timeout_s=30.0, jtop_interval_s=0.005)
    with pytest.raises(runner.CalibrationInterrupted) as err:
        runner.calibrate(cfg, jtop_module=jtop_module, stream=_SignalWhenMeasuring())
    return err.value


def test_cpu_path_interrupt_names_no_power_mode(tmp_path):
    """Rule: on the CPU path (jtop unreachable: no board file) an interrupted run reports
    that no mode was switched, and the command's words add nothing about a power mode."""
    exc = _interrupted(tmp_path, fake_module(str(tmp_path / "no-board.json")))
    assert exc.signum == signal.SIGINT and exc.result.switched is False
    assert mode_said(exc) == ""


def test_jetson_path_interrupt_says_the_mode_was_restored(tmp_path):
    """Rule: through jtop, a run interrupted after switching restores the board's mode and
    says "original power mode restored"."""
    board = new_board(tmp_path / "board.json", mode=1)
    exc = _interrupted(tmp_path, fake_module(board))
    assert read_board(board)["mode"] == 1 and exc.result.switched is True
    assert mode_said(exc) == "; original power mode restored"


def test_the_command_line_of_an_interrupted_cpu_path_run(tmp_path):
    """Rule: the real command, interrupted with SIGINT while it measures on the CPU path,
    exits 130 with the line "interrupted by signal 2" and nothing about a power mode."""
    stderr_path = str(tmp_path / "stderr.txt")
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "calibrate", "--bundle", DEMO_BUNDLE_DIR,
             "--state-dir", str(tmp_path / "state"), "--stages", "1", "--seconds", "600",
             "--warmup", "0.02"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr,
            env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO))
    try:
        deadline = time.monotonic() + 120.0  # engine loading on a loaded machine
        while "measuring" not in open(stderr_path).read():
            assert proc.poll() is None and time.monotonic() < deadline, open(stderr_path).read()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = open(stderr_path).read()
    assert rc == 128 + signal.SIGINT, text
    assert text.strip().splitlines()[-1] == "edge-agent calibrate: interrupted by signal 2"
    assert "power mode" not in text.strip().splitlines()[-1]
