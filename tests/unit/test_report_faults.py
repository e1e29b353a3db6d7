"""`edge-agent report` on a run with faults redoes the delay per phase the testbed printed.

It printed no per-phase table and its --json had ``faults: []``, ``phases: {}``, ``recovery_s:
null`` while results.json had all three. The rate's ``faults.json`` (monotonic times) is read
back with the testbed's own code; an older run folder has only results.json's relative log,
placed on the records' clock; a run without faults stays as it was.
"""

from __future__ import annotations

import json

from agent.testbed.faultlog import FAULT_LOG
from agent.testbed.topology import load_topology
from tests.unit.test_report_damaged import _rate, _report

# the records of test_report_damaged: cam1 creates a task every 0.3 s from mono 100.0 (wall
# 1e9), 4 tasks, cam2 3 tasks; the fault runs from 100.35 to 100.65: tasks at 100.0 and 100.3 of
# both come before it, 100.6 of both during it, cam1's 100.9 after it
LOG = {"started_mono": 99.0, "log": [{"index": 0, "fault": "kill w2a at 1.35s for 0.3s",
                                      "kind": "kill", "target": "w2a", "began_mono": 100.35,
                                      "ended_mono": 100.65}]}


def _run(tmp_path, faults=True):
    run = tmp_path / "20260101-000000"
    run.mkdir()
    topo = json.load(open(load_topology("default").path))
    topo["warmup_s"] = 0.0  # the warm-up counts from the first task (100.0): none left out
    if faults:
        topo["faults"] = [{"at": 1.35, "duration": 0.3, "kind": "kill", "target": "w2a"}]
    (run / "topology.json").write_text(json.dumps(topo))
    (run / "testbed.json").write_text(json.dumps({
        "topology": "default", "mdi_mode": None, "policies": ["cf"], "rates": [1.0],
        "duration_s": 1.0, "seed": 1, "network": "loopback",
        "faults": ["kill w2a at 1.35s for 0.3s"] if faults else []}))
    return run, _rate(run, 1.0)


def _json(tmp_path, capsys, run):
    out = tmp_path / "r.json"
    rc, text, err = _report(capsys, run, "--json", out)
    return rc, text, err, json.loads(out.read_text())["runs"][0]


def test_report_redoes_the_phases_from_the_rates_fault_log(tmp_path, capsys):
    """Rule: with a fault log the report prints the per-phase table and its --json has the
    faults, phases and recovery time, as the testbed's results.json does."""
    run, rate = _run(tmp_path)
    (rate / FAULT_LOG).write_text(json.dumps(LOG))
    rc, text, err, res = _json(tmp_path, capsys, run)
    assert rc == 0 and err == []
    assert "delay per phase" in text and "recovery s" in text
    assert [f["began_s"] for f in res["faults"]] == [1.35]
    assert res["faults"][0]["ended_s"] == 1.65
    assert [res["phases"][p]["tasks"] for p in ("before", "during", "after")] == [4, 2, 1]


def test_an_older_run_places_results_json_faults_on_the_records_clock(tmp_path, capsys):
    """Rule: without faults.json the relative log of results.json (began_s and began_wall) is
    read, and gives the same phases."""
    run, _ = _run(tmp_path)
    (run / "results.json").write_text(json.dumps({"runs": [{
        "policy": "cf", "rate": 1.0, "faults": [{
            "index": 0, "fault": "kill w2a at 1.35s for 0.3s", "kind": "kill", "target": "w2a",
            "began_wall": 1e9 + 0.35, "ended_wall": 1e9 + 0.65, "began_s": 1.35,
            "ended_s": 1.65}]}]}))
    rc, text, err, res = _json(tmp_path, capsys, run)
    assert rc == 0 and err == [] and "delay per phase" in text
    assert [res["phases"][p]["tasks"] for p in ("before", "during", "after")] == [4, 2, 1]
    assert res["faults"][0]["began_s"] == 1.35


def test_a_damaged_fault_log_is_a_warning_naming_it_and_the_rate_still_reports(
        tmp_path, capsys):
    """Rule: a fault log that is no JSON object of the injector's log is a warning naming the
    file, exit 1; the rate's summary is still printed, without phases."""
    run, rate = _run(tmp_path)
    (rate / FAULT_LOG).write_text("[1, 2]")
    rc, text, err, res = _json(tmp_path, capsys, run)
    assert rc == 1 and len(err) == 1 and str(rate / FAULT_LOG) in err[0]
    assert "delay per phase" not in text and res["phases"] == {} and "cf" in text


def test_a_run_without_faults_reads_no_fault_log(tmp_path, capsys):
    """Rule: a run whose topology has no faults stays as it was: no table, empty fields, even
    with a stray results.json."""
    run, _ = _run(tmp_path, faults=False)
    (run / "results.json").write_text("not json")
    rc, text, err, res = _json(tmp_path, capsys, run)
    assert rc == 0 and err == [] and "delay per phase" not in text
    assert (res["faults"], res["phases"], res["recovery_s"]) == ([], {}, None)
