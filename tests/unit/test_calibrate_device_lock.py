"""One calibration at a time switches a board's power modes, whatever its state directory:
a second run with another ``--state-dir`` is refused at once with one line naming the
first run's pid, and switches nothing (it would save the first run's switched mode as its
"original" and put that back, leaving the board in the wrong mode). The board is the FAKE
jetson-stats client of ``tests.unit.test_jtop_adapter``; engines, flocks and the first
run's process are real."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time

import pytest

from agent.errors import UsageError
from calibration import device_lock, runner
from calibration.modes import ORIGINAL_MODE_FILE
from engines.demo import DEMO_BUNDLE_DIR
from tests.unit.test_jtop_adapter import fake_module, new_board, read_board

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The first run: mode 0 on the board, a stage measured for 600 s; it marks when it measures
# and ends (restoring the board's mode) on SIGINT.
FIRST = r'''
import io, os, sys
from calibration import runner
from engines.demo import DEMO_BUNDLE_DIR
from tests.unit.test_jtop_adapter import fake_module

board, work, lock = sys.argv[1:4]

class MarkWhenMeasuring(io.StringIO):
    def write(self, text):
        if "measuring" in text and not os.path.exists(os.path.join(work, "measuring")):
            open(os.path.join(work, "measuring"), "w").close()
        return super().write(text)

cfg = runner.CalibrationConfig(
    bundle_dir=DEMO_BUNDLE_DIR, profile_path=os.path.join(work, "first.json"),
    state_dir=os.path.join(work, "state-first"), stages=(1,), modes="0", seconds=600.0,
    warmup_s=0.02, switch_timeout_s=30.0, jtop_interval_s=0.005, device_lock_path=lock)
try:
    runner.calibrate(cfg, jtop_module=fake_module(board), stream=MarkWhenMeasuring())
except runner.CalibrationInterrupted:
    pass
'''


def _config(tmp_path, name, lock, modes="2"):
    return runner.CalibrationConfig(
        bundle_dir=DEMO_BUNDLE_DIR, profile_path=str(tmp_path / (name + ".json")),
        state_dir=str(tmp_path / ("state-" + name)), stages=(1,), modes=modes, seconds=0.05,
        warmup_s=0.01, switch_timeout_s=30.0, jtop_interval_s=0.005, device_lock_path=lock)


def test_second_run_with_another_state_dir_is_refused_and_switches_nothing(tmp_path):
    """Rule: while one calibration (board's own mode 1, switched to 0) measures, a second
    one with another state directory is refused at once with one line naming the first's
    pid; it requests no mode and saves no "original", so the first puts mode 1 back."""
    board = new_board(tmp_path / "board.json", mode=1)
    lock = str(tmp_path / "board.lock")
    log = open(str(tmp_path / "first.log"), "w")
    first = subprocess.Popen([sys.executable, "-c", FIRST, board, str(tmp_path), lock],
                             cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                             env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO))
    try:
        deadline = time.monotonic() + 300.0  # engine loading on a loaded machine
        while not (tmp_path / "measuring").exists():
            assert first.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(0.05)
        assert read_board(board)["mode"] == 0
        requests = read_board(board)["requests"]
        with pytest.raises(UsageError) as err:
            runner.calibrate(_config(tmp_path, "second", lock), jtop_module=fake_module(board))
        line = str(err.value)
        assert "\n" not in line
        assert "another calibration (pid %d)" % first.pid in line and lock in line
        assert "systemctl stop edge-agent-calibrate" in line
        assert read_board(board)["requests"] == requests and read_board(board)["mode"] == 0
        assert not (tmp_path / "state-second" / ORIGINAL_MODE_FILE).exists()
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGINT)
        first.wait(timeout=300)
        log.close()
    assert read_board(board)["mode"] == 1


def test_board_lock_is_free_again_once_its_holder_ends(tmp_path):
    """Rule: the board lock is an flock: after a run ends (here, after the refused one's
    holder lets go) the next run takes it, switches and restores the board's mode."""
    board = new_board(tmp_path / "board.json", mode=1)
    lock = str(tmp_path / "board.lock")
    with device_lock.hold(lock):
        with pytest.raises(UsageError, match="pid %d" % os.getpid()):
            runner.calibrate(_config(tmp_path, "a", lock), jtop_module=fake_module(board))
    result = runner.calibrate(_config(tmp_path, "b", lock), jtop_module=fake_module(board))
    assert result.switched and len(result.entries) == 1
    assert read_board(board)["mode"] == 1


def test_cpu_path_runs_without_a_board_lock(tmp_path):
    """Rule: the CPU path (no jtop: one mode, nothing switched) takes no board lock, so it
    runs where the lock's folder cannot be made; the Jetson path there is refused with one
    line naming the folder and the fix, before anything is switched."""
    (tmp_path / "file").write_text("")
    lock = str(tmp_path / "file" / "board.lock")  # its folder is a file: never creatable
    result = runner.calibrate(_config(tmp_path, "cpu", lock, modes="all"),
                              jtop_module=fake_module(str(tmp_path / "no-board.json")))
    assert not result.switched and len(result.entries) == 1
    board = new_board(tmp_path / "board.json", mode=1)
    with pytest.raises(UsageError) as err:
        runner.calibrate(_config(tmp_path, "jetson", lock), jtop_module=fake_module(board))
    assert "\n" not in str(err.value) and "ReadWritePaths=%s" % (tmp_path / "file") in str(err.value)
    assert read_board(board)["requests"] == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the lock file is another user's")
def test_another_users_lock_file_in_a_sticky_folder_is_used(tmp_path):
    """Rule: the board lock opens an existing file read-only, so a file another user made in
    /run/lock (world-writable, sticky; protected_regular refuses opening it for writing,
    even to root) locks as well, and a holder is seen through it."""
    folder = tmp_path / "lock"
    folder.mkdir()
    os.chmod(str(folder), 0o1777)
    path = str(folder / "board.lock")
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.fchown(fd, 65534, 65534)
    os.close(fd)
    with device_lock.hold(path):
        fd = os.open(path, os.O_RDONLY)
        try:
            with pytest.raises(OSError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            assert device_lock.holder_pid(fd) == os.getpid()
        finally:
            os.close(fd)
    with device_lock.hold(path):
        pass
