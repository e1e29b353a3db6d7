"""A testbed whose terminal is closed (SIGHUP to its process group, as a shell or sshd sends on
hang-up) cleans up as on Ctrl-C: its default action killed it at once, leaving no results,
its notify folder, and with --network netns every namespace."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile

from tests.integration.agent_cluster import build_two_stage_bundle
from tests.integration.test_testbed import write_topology
from tests.integration.test_testbed_netns import start_under_load
from tests.integration.test_testbed_runs import _agents_under

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_hangup_under_load_keeps_the_partial_result_and_leaves_nothing_running(tmp_path):
    """Rule: SIGHUP to the testbed's process group while a rate is under load exits 129 with
    the `interrupted:` line, keeps that rate's records so far under "partial", and leaves no
    agent process and no notify socket folder behind."""
    bundle = build_two_stage_bundle(str(tmp_path / "tiny"))
    topo, _ = write_topology(tmp_path, bundle)
    out = str(tmp_path / "out")
    tmp = tempfile.mkdtemp()  # short: a unix socket's path has at most 107 bytes
    try:
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO, TMPDIR=tmp)
        p = start_under_load(topo, out, env, start_new_session=True)
        try:
            os.killpg(p.pid, signal.SIGHUP)
        finally:
            _, stderr = p.communicate(timeout=120)
        assert p.returncode == 129, stderr[-3000:]
        assert "interrupted: 0 of 1 runs finished" in stderr and "Traceback" not in stderr
        res = json.loads(open(os.path.join(out, "latest", "results.json")).read())
        assert res["complete"] is False and len(res["partial"]) == 1
        assert res["partial"][0]["completed"] > 0
        assert _agents_under(out) == []
        assert [n for n in os.listdir(tmp) if n.startswith("edge-notify-")] == []
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
