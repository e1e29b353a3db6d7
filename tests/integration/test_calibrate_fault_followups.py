"""`edge-agent calibrate` after a fault, on the emulated Orin with jetson-stats' real service
(``emulated_orin.py``, with its ``jetson_clocks`` stand-in):

- a mode whose switch failed stays marked unavailable by jtop until its service restarts; the
  next run says so (reboot-only or last switch failed, and how to clear it) instead of calling
  the mode reboot-only, and after ``jtop.service`` restarts the mode is measured again;
- jetson_clocks on before a run whose jtop service went away mid-measurement is on again after
  the original mode was set back with ``nvpmodel -m`` (which unlocks the clocks);
- a run killed outright leaves its saved mode; the next run, with the jtop service down,
  restores that mode (and jetson_clocks) with nvpmodel itself before it is refused.

Root only (mount namespace); this file is also the script run inside it."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAILED_MODE = 2  # 30W: settable from the start mode, made to fail once
# after the board left its mode: long enough for the switch to be verified and the
# measurement to begin, far below the measurement's --seconds
STOP_AFTER_S = 4.0


def main(out_dir: str, bundle: str) -> int:
    """Inside the namespace: one board and its service, the runs of the three faults."""
    sys.path.insert(0, REPO)
    from calibration.modes import ORIGINAL_MODE_FILE
    from tests.integration.calibration_fixtures import Board

    def saved(state):
        return os.path.exists(os.path.join(state, ORIGINAL_MODE_FILE))

    with Board(out_dir, jetson_clocks=True, log_tail=True) as board:
        eo, env, result = board.eo, board.env, board.result

        def stop():
            time.sleep(STOP_AFTER_S)
            eo.stop_service(board.service)

        # 1: a failed switch, then the same mode with the fault cleared, then after a restart
        eo.set_faults(env, fail=[FAILED_MODE])
        result["failed"] = eo.calibrate(env, os.path.join(out_dir, "s1"), bundle)
        eo.set_faults(env)
        result["after_failed"] = eo.calibrate(env, os.path.join(out_dir, "s1"), bundle)
        with open(os.path.join(out_dir, "s1", "calibration.json")) as f:
            result["after_failed"]["profile"] = json.load(f)
        eo.stop_service(board.service)
        board.restart()
        result["after_restart"] = eo.calibrate(env, os.path.join(out_dir, "s1"), bundle,
                                               ["--modes", str(FAILED_MODE)])
        # 2: jetson_clocks on, the service stopped mid-measurement
        eo.set_jetson_clocks(True)
        result["clocks_before"] = eo.gpu_clocks(env)
        state = os.path.join(out_dir, "s2")
        # --switch-timeout also bounds the wait for the service to answer again
        result["lost"] = eo.calibrate(env, state, bundle,
                                      ["--seconds", "20", "--switch-timeout", "10"],
                                      after_switch=stop)
        result["lost"]["saved_mode_file"] = saved(state)
        result["lost"]["clocks_after"] = eo.gpu_clocks(env)
        # 3: a run killed after its first switch, the next one with the service down
        board.restart()
        eo.set_jetson_clocks(True)
        state = os.path.join(out_dir, "s3")
        result["killed"] = eo.calibrate(env, state, bundle, ["--seconds", "20"],
                                        sigkill_after_switch=True)
        result["killed"]["saved_mode_file"] = saved(state)
        eo.stop_service(board.service)
        result["recovered"] = eo.calibrate(env, state, bundle)
        result["recovered"]["saved_mode_file"] = saved(state)
        result["recovered"]["clocks_after"] = eo.gpu_clocks(env)
    return 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs this file in a private mount namespace once; its result.json."""
    from tests.integration.calibration_fixtures import board_run

    return board_run(__file__, tmp_path_factory, "orin-fault-followups")


def test_mode_whose_last_switch_failed_is_not_called_reboot_only(runs):
    """Rule: a mode jtop still marks unavailable after its switch failed is reported by the
    next run as marked unavailable by jtop -- reboot-only or its last switch failed -- with
    `sudo systemctl restart jtop` as the way to clear it, never as a mode nvpmodel "can only
    switch ... with a reboot"; once jtop.service restarted, the mode is measured."""
    assert runs["failed"]["rc"] == 1, runs["failed"]["stderr"]
    after = runs["after_failed"]
    reasons = {u["power_mode_id"]: u["reason"] for u in after["profile"]["unavailable"]}
    reason = reasons[FAILED_MODE]
    assert "can only switch to 30W" not in reason, reason  # the claim of a reboot-only mode
    assert reason.startswith("jtop marks mode 30W (id 2) unavailable: "), reason
    assert "or its last switch failed" in reason and "sudo systemctl restart jtop" in reason, reason
    assert after["rc"] == 0 and after["mode_after"] == 1, after["stderr"]
    again = runs["after_restart"]
    assert again["rc"] == 0, again["stderr"]
    assert "1 entries written" in again["stdout"] and "0 modes unavailable" in again["stdout"]


def test_jetson_clocks_is_back_on_after_a_restore_by_nvpmodel(runs):
    """Rule: with jtop gone mid-run, the original mode is set with `nvpmodel -m ID` and
    jetson_clocks, on before the run, is turned on again (the GPU minimum clock locked at the
    maximum, as before); the error line says so."""
    before, lost = runs["clocks_before"], runs["lost"]
    assert before[0] == before[1], before
    assert lost["rc"] == 1 and lost["mode_after"] == 1 and not lost["saved_mode_file"], \
        lost["stderr"]
    assert tuple(lost["clocks_after"]) == tuple(before), (lost["clocks_after"], before)
    last = lost["stderr"].strip().splitlines()[-1]
    assert last.endswith("; original power mode and jetson_clocks restored"), last


def test_next_run_restores_a_killed_runs_mode_by_nvpmodel_without_jtop(runs):
    """Rule: a killed run's saved mode is restored by the next run even with the jtop service
    down -- by `nvpmodel -m ID` (nothing on stdin) and jetson_clocks as before -- and the file
    is removed; that run is still refused (exit 2: no jtop on a Jetson)."""
    killed, rec = runs["killed"], runs["recovered"]
    assert killed["switched"] and killed["rc"] == -9 and killed["saved_mode_file"]
    assert killed["mode_after"] != 1
    assert rec["rc"] == 2, rec["stderr"]
    assert rec["mode_after"] == 1 and not rec["saved_mode_file"], rec["stderr"]
    assert "-m 1 | stdin=''" in rec["nvpmodel_calls"], rec["nvpmodel_calls"]
    assert rec["clocks_after"][0] == rec["clocks_after"][1], rec["clocks_after"]
    assert "Traceback" not in rec["stderr"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
