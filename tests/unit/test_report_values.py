"""`edge-agent report` on run folders whose values are of the right type but impossible.

A records line whose times put the answer before the task, or overflow, or a ``correct`` that
is not true, false or null, is a damaged line (a warning naming it, exit 1), never a negative
or infinite mean delay. A run.json whose rate, task counts or stats cannot be a run's leaves
its (policy, rate) out with a warning naming the file and the field; a testbed.json with
impossible rates, duration or faults is one error line naming it, exit 2.
"""

from __future__ import annotations

import json

import pytest

from agent.testbed.phases import phase_stats
from agent.testbed.report import MAX_DELAY_S, is_record, summarise_records
from tests.unit.test_report_damaged import _cam1, _report, make_run


@pytest.fixture
def run(tmp_path):
    """A readable run folder, as in test_report_damaged: testbed.json and two (policy, rate)s."""
    return make_run(tmp_path)


def _rec(**kw):
    rec = {"id": "cam1-0", "source": "cam1", "status": "completed", "created_mono": 100.0,
           "finished_mono": 100.05, "created_wall": 1e9, "finished_wall": 1e9 + 0.05,
           "correct": True, "resends": 0}
    rec.update(kw)
    return rec


def _edit_line(path, n, **kw):
    lines = path.read_text().splitlines(True)
    rec = json.loads(lines[n - 1])
    rec.update(kw)
    lines[n - 1] = json.dumps(rec) + "\n"
    path.write_text("".join(lines))


def _rows(out):
    return {l.split()[1]: l.split() for l in out.splitlines() if l.startswith("cf ")}


@pytest.mark.parametrize("kw", [
    {"finished_mono": -1}, {"created_mono": 1e308}, {"finished_mono": 1e308},
    {"finished_mono": 100.0 + MAX_DELAY_S + 1}, {"created_mono": -1e308, "finished_mono": 1e308},
    {"correct": "x"}, {"correct": 1}], ids=str)
def test_a_completed_record_answered_before_it_was_made_or_with_overflowing_times_is_damaged(
        kw):
    """Rule: a completed record whose delay (finished - created) is negative, infinite or over
    MAX_DELAY_S, or whose ``correct`` is not true/false/null, is no task record."""
    assert is_record(_rec()) and not is_record(_rec(**kw))


@pytest.mark.parametrize("kw", [{"finished_mono": 99.0}, {"correct": None}, {"correct": False}])
def test_a_crash_lost_record_may_end_before_it_began_and_correct_may_be_null_or_false(kw):
    """Rule: a task recorded lost at the start after a crash (reason ``crash``) may end before
    it began (its times come from two monotonic clocks), and ``correct`` null or false is a
    record."""
    status = "lost" if "finished_mono" in kw else "completed"
    assert is_record(_rec(status=status, reason="crash", **kw))


@pytest.mark.parametrize("kw", [{"finished_mono": -1}, {"created_mono": 1e308},
                                {"finished_mono": 1e308}, {"correct": "x"}], ids=str)
def test_report_names_a_record_with_impossible_times_and_keeps_the_delay_finite(
        run, capsys, kw):
    """Rule: report warns "line N is not a task record" for a completed line answered before it
    was made, with overflowing times or a ``correct`` that is no boolean, exit 1, and the mean
    delay stays a real delay (it printed -311632.6 ms, -inf or inf with exit 0)."""
    _edit_line(_cam1(run), 2, **kw)
    rc, out, err = _report(capsys, run, "--json", run / "r.json")
    assert rc == 1 and err == ["edge-agent report: warning: %s: line 2 is not a task record; "
                               "its (policy, rate) is summarised without it" % _cam1(run)]
    assert _rows(out)["1.0"][2:5] == ["7", "6", "1"], out  # created, completed, lost
    for row in json.loads((run / "r.json").read_text())["runs"]:
        assert row["mean_delay_s"] is None or 0 <= row["mean_delay_s"] < 1.0


def test_accuracy_counts_only_a_correct_of_true():
    """Rule: accuracy counts tasks whose ``correct`` is true; null (no label) and false do
    not count as correct (a string used to, being truthy)."""
    recs = [_rec(id="a", correct=True), _rec(id="b", correct=None), _rec(id="c", correct=False)]
    assert summarise_records(recs, "cf", 1.0, False).accuracy == pytest.approx(1 / 3)


def test_a_phase_mean_leaves_out_a_delay_that_cannot_be():
    """Rule: phase statistics take only delays in [0, MAX_DELAY_S], whatever their caller
    checked: a task answered before it was made cannot pull a phase's mean below zero."""
    stats = phase_stats([_rec(id="a"), _rec(id="b", finished_mono=-1.0)])
    assert stats["completed"] == 2 and stats["mean_delay_s"] == pytest.approx(0.05)


def _edit_run_json(folder, **kw):
    path = folder / "cf" / "rate-1" / "run.json"
    obj = json.loads(path.read_text())
    obj.update(kw)
    path.write_text(json.dumps(obj))
    return path


@pytest.mark.parametrize("kw,says", [
    ({"rate": 0}, "rate: must be a rate in [0.01, 1e+06] tasks/s, got 0"),
    ({"rate": -2.0}, "rate: must be a rate in [0.01, 1e+06] tasks/s, got -2.0"),
    ({"rate": 1e-12}, "rate: must be a rate in [0.01, 1e+06] tasks/s, got 1e-12"),
    ({"stats": {"cam1": {"counters": "x"}}},
     "stats.cam1.counters: must be an object {name: number} or null, got 'x'"),
    ({"stats": {"cam1": {"counters": {"sent_to_w1a": "7"}}}},
     "stats.cam1.counters: must be an object {name: number} or null"),
    ({"stats": {"cam1": {"routing": [0.5, 0.5]}}},
     "stats.cam1.routing: must be an object {name: number} or null, got [0.5, 0.5]"),
    ({"expected": {"cam1": 10 ** 18, "cam2": 3}},
     "expected: must be an object {source: tasks created, at most 1000000000}"),
], ids=["rate-0", "rate-negative", "rate-tiny", "counters-string", "counter-string",
        "routing-list", "expected-huge"])
def test_a_run_json_with_an_impossible_rate_count_or_stats_is_a_damaged_rate(
        run, capsys, kw, says):
    """Rule: a run.json whose rate is not in [0.01, MAX_RATE] tasks/s, whose stats a summary
    cannot read, or whose source made over 10**9 tasks leaves that (policy, rate) out with one
    warning line naming the file and the field, the rest reported, exit 1 (a rate of 0 was an
    error naming only an internal field; counters "x" an AttributeError; 10**18 tasks a table
    of 10**18 lost)."""
    path = _edit_run_json(run, **kw)
    rc, out, err = _report(capsys, run)
    assert rc == 1 and len(err) == 1, err
    assert err[0].startswith("edge-agent report: warning: %s: %s" % (path, says)), err
    assert err[0].endswith("; this (policy, rate) is left out")
    assert list(_rows(out)) == ["2.0"], out


def test_stats_with_null_parts_and_numeric_counters_are_read(run, capsys):
    """Rule: stats as the testbed writes them (a node's stats null, counters and routing of
    numbers) are a readable rate: exit 0, nothing on stderr."""
    _edit_run_json(run, stats={"cam1": None, "cam2": {"counters": {"sent_to_w1a": 3},
                                                      "routing": {"w1a": 1.0}}})
    rc, out, err = _report(capsys, run)
    assert rc == 0 and err == [] and list(_rows(out)) == ["1.0", "2.0"]


@pytest.mark.parametrize("key,value,says", [
    ("rates", ["x"], "rates: must be a list of rates in [0.01, 1e+06] tasks/s, got ['x']"),
    ("rates", [0], "rates: must be a list of rates in [0.01, 1e+06] tasks/s, got [0]"),
    ("rates", 5, "rates: must be a list of rates in [0.01, 1e+06] tasks/s, got 5"),
    ("duration_s", -1, "duration_s: must be seconds in (0, 86400], got -1"),
    ("duration_s", "6", "duration_s: must be seconds in (0, 86400], got '6'"),
    ("faults", "x", "faults: must be a list of fault labels, got 'x'"),
    ("faults", [1], "faults: must be a list of fault labels, got [1]"),
])
def test_a_testbed_json_with_impossible_rates_duration_or_faults_is_one_error_line(
        run, capsys, key, value, says):
    """Rule: testbed.json's rates, duration_s and faults are checked like its other fields: a
    wrong one is one error line naming the file and the field, exit 2 (they were ignored,
    exit 0)."""
    info = json.loads((run / "testbed.json").read_text())
    info[key] = value
    (run / "testbed.json").write_text(json.dumps(info))
    rc, out, err = _report(capsys, run)
    assert rc == 2 and out == ""
    assert err == ["edge-agent report: error: %s: %s" % (run / "testbed.json", says)]


def test_a_value_the_summariser_refuses_is_named_with_the_run_json(run, capsys,
                                                                    monkeypatch):
    """Rule: an error of the summariser that names no file of the rate (a value the model's
    scenario refuses) is a warning naming that rate's run.json, not an internal field alone."""
    import agent.testbed.history as history

    def refuse(*args):
        raise history.UsageError("sources[0].rate: must be in [1e-09, 1e+24], got 0.0")

    monkeypatch.setattr(history, "summarise_rate", refuse)
    rc, _, err = _report(capsys, run)
    assert rc == 2 and len(err) == 1  # both rates refused: no rate left
    assert "%s: cannot redo this summary from it (sources[0].rate: must be in" % (
        run / "cf" / "rate-1" / "run.json") in err[0]
