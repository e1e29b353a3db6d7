"""`edge-agent calibrate` when jetson-stats' service goes away mid-run, on the emulated Orin
with the real service (``emulated_orin.py``): the service is stopped while a mode is being
measured and not started again within ``--switch-timeout`` (a restart within it is
``test_calibrate_jtop_restart.py``'s). The run ends with one error line saying the jtop connection was lost and where the measurements are, puts the
original mode back with nvpmodel itself, and exits 1, instead of calling the lost connection a
profile write fault ("cannot write ...: Broken pipe") and claiming a restore that never
happened. Root only (mount namespace); this file is also the script run inside it."""

from __future__ import annotations

import os
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# after the board left its mode: long enough for the switch to be verified (2 updates of
# 0.5 s) and the measurement to begin, far below the measurement's --seconds
STOP_AFTER_S = 4.0
MEASURE_S = "20"
# how long calibrate waits for the service to answer again (the switch's own verification
# takes about 1 s of it)
WAIT_S = "10"


def main(out_dir: str, bundle: str) -> int:
    """Inside the namespace: the board, its service, and a run that loses it for good."""
    sys.path.insert(0, REPO)
    from calibration.modes import ORIGINAL_MODE_FILE
    from tests.integration.calibration_fixtures import Board

    with Board(out_dir) as board:
        def stop():
            time.sleep(STOP_AFTER_S)
            board.eo.stop_service(board.service)

        state = os.path.join(out_dir, "stopped")
        # the wait for the service to answer again is bounded by --switch-timeout
        run = board.eo.calibrate(board.env, state, bundle, ["--seconds", MEASURE_S,
                                                           "--switch-timeout", WAIT_S],
                                 after_switch=stop)
        run["saved_mode_file"] = os.path.exists(os.path.join(state, ORIGINAL_MODE_FILE))
        board.result["stopped"] = run
    return 0


@pytest.fixture(scope="module")
def lost(tmp_path_factory):
    """Runs this file in a private mount namespace once; its result.json."""
    from tests.integration.calibration_fixtures import board_run

    return board_run(__file__, tmp_path_factory, "orin-jtop-stop")


def test_jtop_service_lost_mid_measurement_is_one_line_exit_1(lost):
    """Rule: the jtop service stopped while a mode is measured, and not back within
    ``--switch-timeout``, ends calibrate with exit 1 and one error line -- the connection lost, where the measurements are, the
    original mode restored -- and no traceback or write-fault wording."""
    run = lost["stopped"]
    assert run["switched"], run["stderr"]
    assert "mode MAXN | stage 1 (1/1): measuring" in run["stderr"], run["stderr"]
    last = run["stderr"].strip().splitlines()[-1]
    assert run["rc"] == 1, run["stderr"]
    assert last.startswith("edge-agent calibrate: error: the connection to the jtop service "
                           "was lost ("), last
    assert "measurements so far are in " in last and last.endswith(
        "; original power mode restored"), last
    assert "Traceback" not in run["stderr"] and "cannot write" not in run["stderr"]


def test_original_mode_is_restored_by_nvpmodel_when_jtop_is_gone(lost):
    """Rule: with the jtop service gone the original mode is set with `nvpmodel -m ID` (never
    forced: nothing on stdin) and verified, so the board is back in it and the saved-mode file
    is removed."""
    from tests.integration.emulated_orin import START_MODE

    run = lost["stopped"]
    assert run["mode_after"] == START_MODE and not run["saved_mode_file"], run["stderr"]
    sets = [c for c in run["nvpmodel_calls"] if c.startswith("-m ")]
    assert sets[-1] == "-m %d | stdin=''" % START_MODE, sets


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
