"""`edge-agent calibrate` through a restart of jetson-stats' jtop service (an apt upgrade of
jetson-stats, or systemd's Restart=on-failure after a crash), on the emulated Orin with the
real service (``emulated_orin.py``, jetson_clocks on before the run). While the first mode is
being measured the run is held (SIGSTOP), the service is stopped, the board is put back in its
start mode with ``nvpmodel -m`` (as a service that resets the mode leaves it: jetson_clocks
unlocked) and the service is started again; then the run goes on. It waits for the service,
reconnects, switches to the mode again (jetson_clocks on again), measures that mode anew (the
measurement that spanned the restart is dropped) and measures the remaining mode: every mode
once, exit 0, the original mode restored. Root only (mount namespace); this file is also
the script run inside it."""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODES = "0,2"  # MAXN, then 30W: both settable from the start mode (15W)
MEASURE_S = "2"  # the timed phase; the run is held inside the first one
MEASURING = "mode MAXN | stage 1 (1/1): measuring"
WAIT_S = 120.0


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def calibrate_through_restart(board, state: str, bundle: str) -> dict:
    """One `edge-agent calibrate --modes 0,2` run whose first measurement spans a restart of
    the jtop service (see the module docstring); its exit status, output, profile, the times
    the service was stopped and answered again (wall clock, s) and the nvpmodel calls.
    ``board``: ``calibration_fixtures.Board``."""
    eo, env = board.eo, board.env
    calls_before = len(_read(env["NVPMODEL_LOG"]).splitlines())
    cmd = [sys.executable, "-m", "agent", "calibrate", "--bundle", bundle, "--modes", MODES,
           "--stages", "1", "--seconds", MEASURE_S, "--warmup", "0.05", "--switch-timeout",
           "30", "--state-dir", state]
    run_env = dict(env, PYTHONPATH=os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p),
                   OMP_NUM_THREADS="1")
    run_env.pop("JTOP_TESTING")
    err_path = os.path.join(os.path.dirname(state), "calibrate.stderr")
    with open(err_path, "w") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=run_env, stdout=subprocess.PIPE, stderr=err,
                                universal_newlines=True)
    deadline = time.monotonic() + WAIT_S
    while proc.poll() is None and MEASURING not in _read(err_path):
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    held = proc.poll() is None
    if held:
        proc.send_signal(signal.SIGSTOP)
    stopped_at = time.time()
    eo.stop_service(board.service)
    # the board back in its start mode while the service is down
    subprocess.run(["nvpmodel", "-m", str(eo.START_MODE)], env=env, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, check=True)
    board.restart()
    back_at = time.time()
    if held:
        proc.send_signal(signal.SIGCONT)
    out, _ = proc.communicate(timeout=WAIT_S * 3)
    profile_path = os.path.join(state, "calibration.json")
    return {"rc": proc.returncode, "stdout": out, "stderr": _read(err_path)[-6000:],
            "held": held, "stopped_at": stopped_at, "back_at": back_at,
            "mode_after": int(_read(env["NVPMODEL_STATE"])),
            "profile": json.loads(_read(profile_path)) if os.path.exists(profile_path) else None,
            "nvpmodel_calls": _read(env["NVPMODEL_LOG"]).splitlines()[calls_before:]}


def main(out_dir: str, bundle: str) -> int:
    """Inside the namespace: the board, its service and the run through its restart."""
    sys.path.insert(0, REPO)
    from tests.integration.calibration_fixtures import Board

    with Board(out_dir, jetson_clocks=True) as board:
        board.eo.set_jetson_clocks(True)
        run = calibrate_through_restart(board, os.path.join(out_dir, "state"), bundle)
        run["clocks_after"] = board.eo.gpu_clocks(board.env)
        board.result["run"] = run
    return 0


@pytest.fixture(scope="module")
def restarted(tmp_path_factory):
    """Runs this file in a private mount namespace once; the run of its result.json."""
    from tests.integration.calibration_fixtures import board_run

    return board_run(__file__, tmp_path_factory, "orin-jtop-restart")["run"]


def _epoch(utc: str) -> float:
    when = datetime.datetime.strptime(utc, "%Y-%m-%dT%H:%M:%SZ")
    return when.replace(tzinfo=datetime.timezone.utc).timestamp()


def test_run_goes_on_through_a_jtop_restart_with_every_mode_measured_once(restarted):
    """Rule: the jtop service restarting while a mode is measured does not end the run: it
    waits for the service, reconnects, says so in one line, and measures every requested mode
    exactly once (exit 0), the original mode restored at the end."""
    run = restarted
    assert run["held"], run["stderr"]
    assert run["rc"] == 0, run["stderr"]
    said = [line for line in run["stderr"].splitlines() if "jtop service answered again" in line]
    assert len(said) == 1, run["stderr"]
    assert "while calibrating power mode MAXN (id 0)" in said[0], said[0]
    assert "2 entries written" in run["stdout"], run["stdout"]
    entries = run["profile"]["entries"]
    assert sorted((e["power_mode"], e["stage"]) for e in entries) == [("30W", 1), ("MAXN", 1)]
    assert run["mode_after"] == 1 and "Traceback" not in run["stderr"], run["stderr"]


def test_measurement_spanning_the_restart_is_dropped_and_the_mode_measured_again(restarted):
    """Rule: a measurement the restart cut is dropped, never half-counted: MAXN's first
    measurement ends without a result, the mode is switched to again through jtop (the board
    was back in its start mode) and its entry is a measurement taken after the service
    answered again, at MAXN's GPU clock cap."""
    run = restarted
    lines = run["stderr"].splitlines()
    maxn = [i for i, line in enumerate(lines) if line.startswith("mode MAXN | stage 1 (1/1)")]
    said = [i for i, line in enumerate(lines) if "jtop service answered again" in line]
    # measuring (cut), the reconnect line, measuring again, its result
    assert [lines[i].endswith(": measuring") for i in maxn] == [True, True, False], lines
    assert maxn[0] < said[0] < maxn[1], lines
    sets = [c for c in run["nvpmodel_calls"] if c.startswith("-m ")]
    assert sets == ["-m 0 | stdin=''", "-m 1 | stdin=''", "-m 0 | stdin=''",
                    "-m 2 | stdin=''", "-m 1 | stdin=''"], sets
    entry = [e for e in run["profile"]["entries"] if e["power_mode"] == "MAXN"][0]
    assert entry["clocks"]["gpu_max_khz"] == 1300500.0, entry["clocks"]
    # measured with jetson_clocks on, as before the run, though the reset had unlocked it
    assert [e["jetson_clocks"] for e in run["profile"]["entries"]] == [True, True], entry
    assert run["clocks_after"][0] == run["clocks_after"][1], run["clocks_after"]
    # measured_at is the end, to the second: the timed phase began after the service stopped
    assert _epoch(entry["measured_at"]) + 1 - entry["measured_seconds"] >= run["stopped_at"], \
        (entry, run["stopped_at"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
