"""Ctrl-C during the second policy's run: the final line counts the first policy's finished
run (a report of "0 of 2 runs finished" would send a user looking for nothing). Real agent
processes on loopback, run as the `edge-agent testbed` command a user types."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from tests.integration.agent_cluster import build_two_stage_bundle
from tests.integration.test_testbed import write_topology

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_ctrl_c_in_the_second_policys_load_counts_the_first_policys_run(tmp_path):
    """Rule: SIGINT while the second of two policies is under load exits 130 saying 1 of 2
    runs finished (the cut-short one under "partial"), and results.json holds the first
    policy's run with the second under "partial"."""
    bundle = build_two_stage_bundle(str(tmp_path / "tiny"))
    topo, _ = write_topology(tmp_path, bundle)
    out = str(tmp_path / "out")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    p = subprocess.Popen([sys.executable, "-m", "agent", "testbed", "--topology", topo,
                          "--policies", "cf,bf", "--rates", "5", "--duration", "4",
                          "--no-plots", "--out", out], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, universal_newlines=True)
    deadline = time.monotonic() + 300
    loaded = False
    while time.monotonic() < deadline and p.poll() is None and not loaded:
        runs = sorted(d for d in os.listdir(out) if d != "latest") if os.path.isdir(out) else []
        recs = os.path.join(out, runs[0], "bf", "cam", "records.jsonl") if runs else ""
        # bf's source has recorded tasks: its load is under way (4.5 s, then its drain)
        loaded = bool(recs) and os.path.exists(recs) and os.path.getsize(recs) > 0
        time.sleep(0.1)
    assert loaded, p.communicate()[1][-2000:]
    p.send_signal(signal.SIGINT)
    _, stderr = p.communicate(timeout=120)
    results = os.path.join(out, runs[0], "results.json")
    assert p.returncode == 130, stderr[-3000:]
    assert ("interrupted: 1 of 2 runs finished, kept in %s (the run cut short: under "
            "\"partial\")" % results) in stderr, stderr[-3000:]
    run = json.loads(open(results).read())
    assert run["complete"] is False and run["runs_planned"] == 2
    assert [r["policy"] for r in run["runs"]] == ["cf"]
    assert [r["policy"] for r in run["partial"]] == ["bf"]
