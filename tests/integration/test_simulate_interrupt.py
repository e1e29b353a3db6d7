"""``edge-agent simulate`` stopped by Ctrl-C keeps what finished: the rate sweep's runs so far
in results.json, marked interrupted, one line saying so, exit 130 (it exited with nothing
written and no word)."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_ctrl_c_mid_sweep_keeps_the_finished_runs(tmp_path):
    """Rule: SIGINT once a run of the sweep has written its records: exit 130, the line
    `interrupted (SIGINT): K of 4 rate-sweep runs finished, kept in ...`, and results.json
    holds those K rows (at least the one whose records came) with "interrupted": "SIGINT"."""
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    scen = str(tmp_path / "s.json")
    subprocess.run([sys.executable, "-m", "agent", "scenario", "paper-resnet101", "--out", scen],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    out = str(tmp_path / "out")
    p = subprocess.Popen([sys.executable, "-m", "agent", "simulate", "--scenario", scen,
                          "--policies", "cf", "--rates", "1,2,3,4", "--duration", "8000",
                          "--no-plots", "--records", "--out", out], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and p.poll() is None and not glob.glob(
            os.path.join(out, "records", "*.npz")):
        time.sleep(0.1)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 130, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted (SIGINT): ") and last.endswith(
        "of 4 rate-sweep runs finished, kept in %s" % os.path.join(out, "results.json")), err
    res = json.load(open(os.path.join(out, "results.json")))
    assert res["interrupted"] == "SIGINT"
    assert 1 <= len(res["rates"]) <= 4 and "Traceback" not in err
    assert int(last.split(": ")[1].split()[0]) == len(res["rates"])
