"""An agent of a local testbed run that dies mid-load (SIGKILLed from outside, or stopped by
someone other than the testbed): `edge-agent testbed` names it once with how it ended and its
log's last lines, ends the run keeping the rate it cut short under "partial" with every task
its sources created counted (completed or lost, none missing), exits 1 and leaves no agent of
the run behind. Real agent processes on loopback, run as the command a user types."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from tests.integration.agent_cluster import build_two_stage_bundle
from tests.integration.test_testbed import run_serving, write_topology
from tests.unit.processes import pids_with

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _ids(path: str, prefix: str = ""):
    """Task ids of a records file's lines (or of a journal's lines starting with ``prefix``)."""
    ids = set()
    if os.path.exists(path):
        for line in open(path, encoding="utf-8"):
            if line.startswith(prefix) and line.strip().endswith("}"):
                ids.add(json.loads(line[len(prefix):])["id"])
    return ids


def _kill_mid_load(tmp_path, node: str, sig: int):
    """Start a one-rate cf testbed, send ``sig`` to agent ``node`` once the source has
    recorded a task, and return (exit status, stderr, run folder)."""
    bundle = build_two_stage_bundle(str(tmp_path / "tiny"))
    topo, _ = write_topology(tmp_path, bundle)
    out = str(tmp_path / "out")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    # a long load: the signal lands while it runs, however slow the machine is
    p = subprocess.Popen([sys.executable, "-m", "agent", "testbed", "--topology", topo,
                          "--policies", "cf", "--rates", "5", "--duration", "60",
                          "--no-plots", "--out", out], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, universal_newlines=True)
    try:
        run = run_serving(out, p, 240)
        pids = pids_with(os.path.join(run, "cf", node + ".toml")) if run else []
        assert len(pids) == 1, (pids, p.poll())
        os.kill(pids[0], sig)
        _, stderr = p.communicate(timeout=240)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return p.returncode, stderr, run


def _check_accounted(run: str, stderr: str):
    """Every task the source created is in the partial result: completed as its records say,
    the rest lost, or rejected with a reason (a draining worker refuses new tasks: shutdown);
    and no agent of the run is left running."""
    res = json.loads(open(os.path.join(run, "results.json")).read())
    assert res["runs"] == [] and res["complete"] is False
    [part] = res["partial"]
    cam = os.path.join(run, "cf", "cam")
    recs = [json.loads(l) for l in open(os.path.join(cam, "records.jsonl")) if l.strip()]
    created = _ids(os.path.join(cam, "records.jsonl")) | _ids(
        os.path.join(cam, "records.jsonl.journal"), "+")
    done = {r["id"] for r in recs if r["status"] == "completed"}
    assert part["created"] == len(created) > 0, (part, len(created))
    assert part["completed"] == len(done), (part, len(done))
    rejected, error = part.get("rejected") or 0, part.get("error") or 0
    assert part["lost"] + rejected + error == part["created"] - part["completed"], part
    assert ("  cut short: cf at 5 tasks/s: %d created, %d completed, %d lost%s%s"
            % (part["created"], part["completed"], part["lost"],
               ", %d rejected" % rejected if rejected else "",
               ", %d error" % error if error else "")) in stderr, stderr
    assert "0 of 1 runs finished, kept in %s" % os.path.join(run, "results.json") in stderr
    assert "Traceback" not in stderr, stderr
    assert pids_with(run) == []


def test_a_worker_sigkilled_mid_load_is_named_once_and_its_rate_accounted(tmp_path):
    """Rule: a worker killed from outside mid-load ends the run with exit status 1 and one
    line naming it, its role and the signal (with its log's last lines under it); the rate it
    cut short counts every task the source created, as its records say after the source's
    stop (none counted lost that its source then answered)."""
    rc, stderr, run = _kill_mid_load(tmp_path, "slow", signal.SIGKILL)
    assert rc == 1, stderr[-3000:]
    line = ("edge-agent testbed: error: agent slow (worker, stage 1) killed by SIGKILL (exit "
            "status 137) during the run")
    assert stderr.count("agent slow (worker") == 1 and line in stderr, stderr[-3000:]
    assert "  last lines of its log:\n    " in stderr
    _check_accounted(run, stderr)


def test_a_source_sigkilled_mid_load_has_its_unrecorded_tasks_counted_lost(tmp_path):
    """Rule: a source killed mid-load (holding tasks it never recorded) ends the run with exit
    status 1 naming it; its journalled tasks without a record count as lost, never missing."""
    rc, stderr, run = _kill_mid_load(tmp_path, "cam-rate-5", signal.SIGKILL)
    assert rc == 1, stderr[-3000:]
    assert ("error: agent cam-rate-5 (source) killed by SIGKILL (exit status 137) during the "
            "run") in stderr, stderr[-3000:]
    _check_accounted(run, stderr)


def test_a_worker_stopped_from_outside_is_a_spoiled_run_not_a_usage_error(tmp_path):
    """Rule: a worker that ends on its own terms mid-load (a SIGTERM not sent by the testbed:
    it drains and exits 0) is reported with its exit status and ends the run with status 1,
    not 2 (a usage error) and not 0."""
    rc, stderr, run = _kill_mid_load(tmp_path, "w2", signal.SIGTERM)
    assert rc == 1, stderr[-3000:]
    assert ("error: agent w2 (worker, stage 2) exited with status 0 during the run: "
            in stderr or "error: agent w2 (worker, stage 2) exited with status 0 during the "
            "run (log " in stderr), stderr[-3000:]
    assert "INFO agent.node.loop: stopped: worker w2" in stderr  # its log's last lines
    _check_accounted(run, stderr)
