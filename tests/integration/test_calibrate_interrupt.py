"""`edge-agent calibrate` keeps every finished stage when SIGINT or SIGTERM arrives in the middle
of a mode (the profile is written per stage, not per mode)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.integration.calibration_fixtures import REPO, calibration_bundle

WAIT_S = 180.0  # generous: a loaded 2-core machine


def _entries(path):
    try:
        with open(path) as f:
            return json.load(f).get("entries", [])
    except (OSError, ValueError):
        return []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_stage_two_keeps_stage_one(tmp_path, signum):
    """Stage 1 finished, stage 2 still timing (4 s): the signal ends the run with 128+signal
    and the profile holds stage 1."""
    bundle = calibration_bundle(str(tmp_path))
    state = tmp_path / "state"
    profile = state / "calibration.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    proc = subprocess.Popen([sys.executable, "-m", "agent", "calibrate", "--bundle", bundle,
                             "--stages", "1,2", "--seconds", "4", "--warmup", "0.1",
                             "--state-dir", str(state)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True)
    try:
        deadline = time.monotonic() + WAIT_S
        while not _entries(str(profile)) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        got = _entries(str(profile))
        if proc.poll() is not None:
            pytest.fail("calibrate ended before the signal: %s" % proc.communicate()[1][-2000:])
        assert [e["stage"] for e in got] == [1]
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signum, err
    assert [e["stage"] for e in _entries(str(profile))] == [1]
