"""The delay per phase of a run with faults agrees with the summary: the same warm-up, and
rejected tasks counted.

Rejected tasks (an overloaded or absent stage refuses them) are neither completed nor lost:
each phase of results.json has a ``rejected`` count and the table a column for them when any
phase has one. The warm-up starts once for a rate, at the first task any source created, for
the summary's delay and accuracy and the phases alike, so the completed tasks of the phases
add up to the summary's measured ones. Real run folders, read back by ``edge-agent report``.
"""

from __future__ import annotations

import json

from agent.testbed.faultlog import FAULT_LOG
from agent.testbed.phases import PHASES
from tests.unit.test_report_damaged import _records
from tests.unit.test_report_faults import _json, _run

# the fault runs from 100.35 to 100.65 on the records' monotonic clock (the load from 100.0)
LOG = {"started_mono": 100.0, "log": [{"index": 0, "fault": "kill w2a at 0.35s for 0.3s",
                                       "kind": "kill", "target": "w2a", "began_mono": 100.35,
                                       "ended_mono": 100.65}]}


def _faulty_run(tmp_path, warmup_s=0.0):
    run, rate = _run(tmp_path)
    topo = json.loads((run / "topology.json").read_text())
    topo["warmup_s"] = warmup_s
    (run / "topology.json").write_text(json.dumps(topo))
    (rate / FAULT_LOG).write_text(json.dumps(LOG))
    return run, rate


def test_rejected_tasks_are_counted_per_phase_and_shown_in_the_phase_table(tmp_path, capsys):
    """Rule: a phase's stats have ``rejected`` (tasks refused, not lost) and the phase table
    has a ``rejected`` column per phase once any phase rejected a task; lost stays 0."""
    run, rate = _faulty_run(tmp_path)
    lines = (rate / "cam1" / "records.jsonl").read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    for r in recs[2:]:  # created at 100.6 (during the fault) and 100.9 (after it)
        r.update(status="rejected", exit_stage=0, cls=-1, correct=None, reason="overloaded")
    (rate / "cam1" / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    rc, text, err, res = _json(tmp_path, capsys, run)
    assert rc == 0 and err == []
    ph = res["phases"]
    assert [ph[p]["rejected"] for p in PHASES] == [0, 1, 1]
    assert [ph[p]["lost"] for p in PHASES] == [0, 0, 0]
    table = text[text.index("delay per phase"):].splitlines()
    head, row = table[1].split(), table[2].split()
    assert head.count("rejected") == 3
    # columns per phase: mean ms, p95, lost, rejected; the row's last cell is the recovery
    assert row[2:-1][3::4] == ["0", "1", "1"]


def test_a_table_without_rejected_tasks_has_no_rejected_column(tmp_path, capsys):
    """Rule: the phase table keeps its width when no phase rejected a task; the JSON still has
    ``rejected`` 0 in each phase."""
    run, _ = _faulty_run(tmp_path)
    rc, text, err, res = _json(tmp_path, capsys, run)
    assert rc == 0 and "rejected" not in text[text.index("delay per phase"):]
    assert [res["phases"][p]["rejected"] for p in PHASES] == [0, 0, 0]


def test_the_phases_and_the_summary_start_the_warm_up_at_the_same_time(tmp_path, capsys):
    """Rule: with a source whose first task comes later than the other's, the warm-up still
    ends ``warmup_s`` after the first task of the rate for both the summary and the phases:
    the phases' completed tasks add up to the summary's measured ones."""
    run, rate = _faulty_run(tmp_path, warmup_s=0.2)
    # cam2's arrivals begin 0.2 s after cam1's: 100.2, 100.5, 100.8
    (rate / "cam2" / "records.jsonl").write_text(_records("cam2", 3, t0=100.2))
    rc, text, err, res = _json(tmp_path, capsys, run)
    assert rc == 0 and err == []
    # the warm-up ends at 100.2: only cam1's task at 100.0 is left out
    assert sum(res["exit_counts"].values()) == 6
    assert [res["phases"][p]["completed"] for p in PHASES] == [2, 2, 2]
