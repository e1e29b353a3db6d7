"""`edge-agent report` on records whose times or exit stage cannot be a task's, whatever its fate.

Every time of a record is checked, not only a completed task's delay: an absolute time below
zero or past MAX_CLOCK_S, or a lost or rejected task that ended before it began (unless it was
recorded lost after a crash, from two boots' clocks), makes its line a damaged line (a warning
naming the file and the line, exit 1). An ``exit_stage`` of JSON true or false is no stage.
"""

from __future__ import annotations

import json

import pytest

from agent.testbed.bounds import MAX_STAGES
from agent.testbed.report import MAX_CLOCK_S, is_record, read_records, summarise_records
from tests.unit.test_report_damaged import _cam1, _report, make_run
from tests.unit.test_report_values import _rec as _values_rec


@pytest.fixture
def run(tmp_path):
    return make_run(tmp_path)  # testbed.json and two (policy, rate)s


def _rec(**kw):
    """test_report_values' record with a delay and an exit stage."""
    return _values_rec(**dict({"delay_s": 0.05, "exit_stage": 2}, **kw))


def _lost(**kw):
    return _rec(**dict({"status": "lost", "correct": None, "exit_stage": None,
                        "reason": "timeout"}, **kw))


@pytest.mark.parametrize("kw", [
    {"finished_mono": 99.0}, {"finished_wall": 1e9 - 5, "created_mono": None},
    {"created_mono": 1e300, "finished_mono": 1e300}, {"created_mono": -50.0},
    {"created_wall": MAX_CLOCK_S * 2, "finished_wall": MAX_CLOCK_S * 2},
    {"finished_mono": -1.0, "reason": "crash"}, {"created_wall": 1e300, "reason": "crash"},
    {"delay_s": -1e300, "reason": "crash"}], ids=str)
def test_a_lost_record_with_impossible_times_is_damaged(kw):
    """Rule: a lost record's times are checked like a completed one's: each absolute time in
    [0, MAX_CLOCK_S], and its finish not before its creation (on the clock the delay is taken
    from); only a lost record of reason ``crash`` may end before it began, on its monotonic
    clock (two boots), and its times must still be in range."""
    assert is_record(_lost()) and not is_record(_lost(**kw))


@pytest.mark.parametrize("kw", [
    {"finished_mono": 99.0}, {"created_mono": 1e300, "finished_mono": 1e300 + 1}], ids=str)
def test_a_rejected_record_with_impossible_times_is_damaged(kw):
    """Rule: a rejected record's times are checked too (it was refused after it was made)."""
    rej = _lost(status="rejected", reason="overload")
    assert is_record(rej) and not is_record(dict(rej, **kw))


@pytest.mark.parametrize("kw", [
    {"finished_mono": 50.0, "delay_s": -50.0}, {"finished_wall": 5.0},
    {"created_mono": 9e9, "finished_mono": 1.0}], ids=str)
def test_a_crash_lost_record_from_two_boots_is_a_record(kw):
    """Rule: a task recorded lost at the next start after a crash may have a finish before its
    creation (times of two boots' monotonic clocks, or a wall clock set back meanwhile)."""
    assert is_record(_lost(reason="crash", **kw))


@pytest.mark.parametrize("stage", [True, False, "2", 2.0, 0, -1, MAX_STAGES + 1, [2], {}],
                         ids=repr)
def test_a_completed_record_with_an_exit_stage_that_is_no_stage_is_damaged(stage):
    """Rule: a completed record's ``exit_stage`` is null or a whole number in [1, MAX_STAGES];
    JSON true (a Python int) is no stage 1, and false no stage 0."""
    assert not is_record(_rec(exit_stage=stage))


@pytest.mark.parametrize("status,stage", [("completed", None), ("completed", 1),
                                          ("completed", MAX_STAGES), ("lost", 0),
                                          ("lost", None)], ids=str)
def test_an_exit_stage_of_null_or_a_stage_is_a_record(status, stage):
    """Rule: null and a stage number are exit stages; a lost task may carry 0 (the wire's
    "no stage" on an answer that is no result)."""
    rec = _rec(status=status, exit_stage=stage)
    if status == "lost":
        rec["correct"] = None
    assert is_record(rec)


def test_summaries_count_no_boolean_exit_stage():
    """Rule: summarise_records counts exits at whole-number stages only (a record built in
    process, not read from a file, with exit_stage true is not a stage-1 exit)."""
    recs = [_rec(id="a", exit_stage=True), _rec(id="b", exit_stage=2)]
    assert summarise_records(recs, "cf", 1.0, False).exit_counts == {2: 1}


def _append(path, rec):
    path.write_text(path.read_text() + json.dumps(rec) + "\n")


def _row(out):
    return [l.split() for l in out.splitlines() if l.startswith("cf ") and " 1.0 " in l][0]


@pytest.mark.parametrize("kw", [
    {"created_mono": -50.0, "finished_mono": 60.0}, {"created_mono": 1e300,
                                                     "finished_mono": 1e300},
    {"created_mono": 100.0, "finished_mono": 90.0}], ids=str)
def test_report_names_a_lost_line_with_impossible_times_and_keeps_the_warm_up(run, capsys, kw):
    """Rule: report warns "line N is not a task record" for a lost line with an absolute time
    out of range or a finish before its creation, exit 1, and the summary leaves it out: a
    lost task made at -50 s no longer moves the warm-up's start, so every completed task stays
    inside the 3.5 s warm-up (measured 0; it printed measured 7 with exit 0)."""
    _append(_cam1(run), _lost(id="cam1-9", **kw))
    rc, out, err = _report(capsys, run)
    assert rc == 1 and err == ["edge-agent report: warning: %s: line 5 is not a task record; "
                               "its (policy, rate) is summarised without it" % _cam1(run)]
    assert _row(out)[2:6] == ["7", "7", "0", "0"], out  # created, completed, lost, measured


def test_report_names_a_line_with_a_boolean_exit_stage(run, capsys, tmp_path):
    """Rule: report warns "line N is not a task record" for a completed line whose exit_stage
    is JSON true, exit 1; its task is not counted as a stage-1 exit (``exit_counts`` in
    --json had {"1": 1} for it)."""
    lines = _cam1(run).read_text().splitlines(True)
    rec = json.loads(lines[1])
    rec["exit_stage"] = True
    lines[1] = json.dumps(rec) + "\n"
    _cam1(run).write_text("".join(lines))
    rc, _, err = _report(capsys, run, "--json", tmp_path / "r.json")
    assert rc == 1 and err == ["edge-agent report: warning: %s: line 2 is not a task record; "
                               "its (policy, rate) is summarised without it" % _cam1(run)]
    assert len(read_records(str(_cam1(run)))) == 3
    for row in json.loads((tmp_path / "r.json").read_text())["runs"]:
        assert "1" not in row["exit_counts"]


@pytest.mark.parametrize("kind,says", [("folder", "a folder"),
                                       ("dangling", "a link to a missing file")])
def test_a_testbed_json_that_is_no_file_is_named_so(run, capsys, kind, says):
    """Rule: a run folder whose testbed.json is a folder or a link to nothing is one error line
    naming that path and what it is, exit 2 (it said "no testbed.json", which is there)."""
    info = run / "testbed.json"
    info.unlink()
    if kind == "folder":
        info.mkdir()
    else:
        info.symlink_to(run / "gone.json")
    rc, _, err = _report(capsys, run)
    assert rc == 2 and err == ["edge-agent report: error: %s: not a run's settings file (%s)"
                               % (info, says)]
