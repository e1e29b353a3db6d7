"""`edge-agent report` on damaged run folders and wrong output paths: never a traceback.

A damaged run (its testbed.json) is one error line naming the file, exit 2; a damaged
(policy, rate) (its run.json or a records file) is a warning line naming the file, the other
rates are still reported, exit 1; a run with no readable rate left is one error line, exit 2.
Output paths of the wrong kind are refused before anything is read.
"""

from __future__ import annotations

import json
import os

import pytest

from agent.cli import main
from agent.errors import UsageError
from agent.testbed.report import read_records


def _records(source, n, t0=100.0):
    return "".join(json.dumps({
        "id": "%s-%d" % (source, i), "source": source, "status": "completed",
        "created_mono": t0 + 0.3 * i, "finished_mono": t0 + 0.3 * i + 0.05,
        "created_wall": 1e9 + 0.3 * i, "finished_wall": 1e9 + 0.3 * i + 0.05,
        "delay_s": 0.05, "exit_stage": 4, "cls": 0, "label": 0, "correct": True,
        "confidence": 0.9, "hops": 4, "resends": 0, "attempts": 1, "worker": "w4a",
        "reason": None}) + "\n" for i in range(n))


def _rate(run, rate):
    d = run / "cf" / ("rate-%g" % rate)
    for s, n in (("cam1", 4), ("cam2", 3)):
        (d / s).mkdir(parents=True)
        (d / s / "records.jsonl").write_text(_records(s, n))
    (d / "run.json").write_text(json.dumps({
        "kind": "local", "policy": "cf", "rate": rate,
        "records": {"cam1": "cam1/records.jsonl", "cam2": "cam2/records.jsonl"},
        "expected": {"cam1": 4, "cam2": 3}, "stats": {}, "duration_s": 1.0, "load_s": 1.5}))
    return d


@pytest.fixture
def run(tmp_path):
    return make_run(tmp_path)


def make_run(tmp_path):
    """A real run folder as `testbed` leaves it: testbed.json and two (policy, rate)s."""
    run = tmp_path / "20260101-000000"
    run.mkdir()
    (run / "testbed.json").write_text(json.dumps({
        "topology": "default", "mdi_mode": None, "policies": ["cf"], "rates": [1.0, 2.0],
        "duration_s": 1.0, "seed": 1, "network": "loopback", "faults": []}))
    _rate(run, 1.0)
    _rate(run, 2.0)
    return run


def _report(capsys, *argv):
    rc = main(["report"] + [str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err.strip().splitlines()


def test_an_intact_run_reports_both_rates_with_status_0(run, capsys):
    """The fixture itself is a readable run: both rates in the table, nothing on stderr."""
    rc, out, err = _report(capsys, run)
    assert rc == 0 and err == []
    assert "cf" in out and "1.0" in out and "2.0" in out


def test_a_missing_folder_is_named_missing_and_a_folder_without_a_run_is_named_so(
        tmp_path, capsys):
    """Rule: ``report`` on a path that does not exist says so; on an existing folder that is
    no run it says what a run folder holds (it said the latter for both)."""
    rc, _, err = _report(capsys, tmp_path / "nope")
    assert rc == 2 and err == ["edge-agent report: error: %s: no such folder" % (tmp_path / "nope")]
    rc, _, err = _report(capsys, tmp_path)
    assert rc == 2 and len(err) == 1 and "not a testbed run folder (no testbed.json" in err[0]


def test_a_run_stopped_before_its_plan_was_done_is_marked_interrupted(run, capsys):
    """Rule: a run folder with fewer finished (policy, rate)s than its testbed.json planned
    (Ctrl-C, an error) says so in its heading; a finished one does not."""
    rc, out, _ = _report(capsys, run)
    assert "interrupted" not in out
    info = json.loads((run / "testbed.json").read_text())
    info["rates"] = [1.0, 2.0, 3.0]
    (run / "testbed.json").write_text(json.dumps(info))
    rc, out, _ = _report(capsys, run)
    assert rc == 0 and "[interrupted: 2 of 3 (policy, rate) done]" in out.splitlines()[0]


@pytest.mark.parametrize("damage,file,says", [
    (lambda d: (d / "run.json").write_text("[1]"), "run.json", "a JSON object is needed"),
    (lambda d: (d / "run.json").write_bytes(b"\x80\xff{binary\x00"), "run.json",
     "not a UTF-8 text file"),
    (lambda d: (d / "run.json").write_text('{"policy": "cf"}'), "run.json", "rate: must be"),
    (lambda d: (d / "cam1" / "records.jsonl").write_bytes(b"\xff\xfe\x00\x01garbage\n{}\n"),
     "cam1/records.jsonl", "not a records file (line 1 is not UTF-8 text)"),
    (lambda d: ((d / "cam1" / "records.jsonl").unlink(),
                (d / "cam1" / "records.jsonl").mkdir()),
     "cam1/records.jsonl", "not a records file (a folder)"),
])
def test_a_damaged_rate_is_a_warning_naming_its_file_and_the_rest_is_reported(
        run, capsys, damage, file, says):
    """run.json not an object, binary run.json, run.json without its fields, binary records,
    records.jsonl a folder: that (policy, rate) is left out with one warning line naming the
    file; the other rate is still reported; exit status 1."""
    damage(run / "cf" / "rate-1")
    rc, out, err = _report(capsys, run)
    assert rc == 1 and len(err) == 1, err
    assert err[0].startswith("edge-agent report: warning: ")
    assert str(run / "cf" / "rate-1" / file) in err[0] and says in err[0]
    assert "2.0" in out


def test_a_run_with_every_rate_damaged_is_one_error_line(run, capsys):
    """No readable (policy, rate) left: one error line naming a damaged file, exit 2."""
    (run / "cf" / "rate-1" / "run.json").write_text("[1]")
    (run / "cf" / "rate-2" / "run.json").write_bytes(b"\xff\xfe")
    rc, out, err = _report(capsys, run)
    assert rc == 2 and len(err) == 1 and out == ""
    assert "edge-agent report: error: " in err[0] and "run.json" in err[0]
    assert "no (policy, rate) of %s could be read (2 damaged" % run in err[0]


@pytest.mark.parametrize("content,says", [
    (b"[]", "not a run's testbed.json (a JSON object is needed, got list)"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "not a UTF-8 text file"),
    (b'{"topology": 5}', "topology: must be a file or a shipped name"),
    (b'{"mdi_mode": ["x"]}', "mdi_mode: must be one of"),
    (b'{"policies": "cf"}', "policies: must be a list of policy names"),
    (b'{"topology": "no-such-topology"}', "neither a file nor a shipped topology"),
])
def test_a_damaged_testbed_json_is_one_error_line_naming_it(run, capsys, content, says):
    """testbed.json that is binary, not an object or with wrong field types: exit 2, one line
    naming the file (nothing of the run can be summarised without it)."""
    (run / "testbed.json").write_bytes(content)
    rc, out, err = _report(capsys, run)
    assert rc == 2 and len(err) == 1 and out == ""
    assert str(run / "testbed.json") in err[0] and says in err[0]


def test_out_that_is_a_file_is_refused_before_reading(run, tmp_path, capsys):
    """--out names a file (or a folder below a file): one error line, nothing read."""
    base = tmp_path / "base.json"
    base.write_text("{}")
    (run / "testbed.json").write_text("[]")  # would fail if it were read first
    for out in (base, base / "plots"):
        rc, _, err = _report(capsys, run, "--out", out)
        assert rc == 2 and len(err) == 1 and "--out: " in err[0] and "is a file" in err[0]
    assert base.read_text() == "{}"


def test_out_with_a_folder_where_a_plot_goes_is_refused(run, tmp_path, capsys):
    """--out/delay_cdf.png a folder: one error line before any work."""
    (tmp_path / "plots" / "delay_cdf.png").mkdir(parents=True)
    rc, out, err = _report(capsys, run, "--out", tmp_path / "plots")
    assert rc == 2 and len(err) == 1 and "delay_cdf.png" in err[0] and out == ""


def test_json_that_is_a_folder_or_in_a_missing_folder_is_refused(run, tmp_path, capsys):
    """--json names a folder, or a file in a folder that does not exist: one error line."""
    rc, out, err = _report(capsys, run, "--json", tmp_path)
    assert rc == 2 and len(err) == 1 and "--json: %s is a folder" % tmp_path in err[0]
    assert out == ""
    rc, out, err = _report(capsys, run, "--json", tmp_path / "nope" / "r.json")
    assert rc == 2 and len(err) == 1 and "its folder does not exist" in err[0]


def test_json_is_written_with_every_readable_row(run, tmp_path, capsys):
    """A good --json path gets every row (with its run) of the rates that could be read."""
    (run / "cf" / "rate-2" / "run.json").write_text("[1]")
    rc, _, err = _report(capsys, run, "--json", tmp_path / "r.json")
    assert rc == 1 and len(err) == 1
    rows = json.loads((tmp_path / "r.json").read_text())["runs"]
    assert [(r["policy"], r["rate"], r["run"]) for r in rows] == [("cf", 1.0, str(run))]


def test_records_torn_last_line_is_skipped_but_binary_is_an_error(tmp_path):
    """read_records keeps its torn-last-line tolerance (also torn inside a UTF-8 character)
    and refuses binary data anywhere else, naming the file."""
    path = tmp_path / "records.jsonl"
    good = _records("cam1", 2)
    path.write_bytes(good.encode() + b'{"id": "x", "note": "\xc3')
    assert [r["id"] for r in read_records(str(path))] == ["cam1-0", "cam1-1"]
    path.write_bytes(good.encode() + b"\xc3\x28 binary\n" + good.encode())
    with pytest.raises(UsageError, match=r"records.jsonl: not a records file \(line 3"):
        read_records(str(path))
    path.write_bytes(b"\x00\x01\x02\xff")  # one line, no newline, but not a torn record
    with pytest.raises(UsageError, match="not a records file"):
        read_records(str(path))


def _long_run(folder, topology, lost=0):
    """A run folder of one (cf, 1.0) with 20 tasks per source over 6 s (past the warm-up);
    ``lost`` more tasks of cam2 recorded lost."""
    folder.mkdir()
    (folder / "testbed.json").write_text(json.dumps({
        "topology": topology, "mdi_mode": None, "policies": ["cf"], "rates": [1.0],
        "duration_s": 1.0, "seed": 1, "network": "loopback", "faults": []}))
    d = folder / "cf" / "rate-1"
    for s in ("cam1", "cam2"):
        (d / s).mkdir(parents=True)
        text = _records(s, 20)
        if s == "cam2":
            for i in range(lost):
                rec = json.loads(_records(s, 1, t0=103.0 + i).splitlines()[0])
                rec.update(id="%s-lost-%d" % (s, i), status="lost", reason="deadline",
                           delay_s=None, cls=None, correct=None, exit_stage=None)
                text += json.dumps(rec) + "\n"
        (d / s / "records.jsonl").write_text(text)
    (d / "run.json").write_text(json.dumps({
        "kind": "local", "policy": "cf", "rate": 1.0,
        "records": {"cam1": "cam1/records.jsonl", "cam2": "cam2/records.jsonl"},
        "expected": {"cam1": 20, "cam2": 20 + lost}, "stats": {}, "duration_s": 1.0,
        "load_s": 6.0}))
    return folder


def test_side_by_side_warns_when_the_runs_differ_in_topology_and_names_the_losses(
        tmp_path, capsys):
    """Rule: ``report`` of runs made on different topologies (or MDI modes) says so on stderr,
    since side by side is for one setting under changed code or policy; each cell names the
    tasks rejected and lost besides completed/created (84/540 alone hid 456 refusals)."""
    a = _long_run(tmp_path / "20260101-000000", "default")
    b = _long_run(tmp_path / "20260101-000001", "slow-link", lost=1)
    rc, out, err = _report(capsys, a, b)
    assert rc == 0
    assert len(err) == 1 and "differ in topology" in err[0] and "slow-link" in err[0], err
    side = out[out.index("side by side"):]
    row = [l for l in side.splitlines() if l.startswith("cf ")]
    assert row and "40/40" in row[0] and "40/41, 1 lost" in row[0], side
    c = _long_run(tmp_path / "20260101-000002", "default")
    rc, out, err = _report(capsys, a, c)
    assert rc == 0 and err == []


def test_one_run_given_twice_is_refused_and_runs_of_one_name_are_told_apart(tmp_path, capsys):
    """Rule: the same run twice (also as its --out folder's `latest`) is one error line;
    two runs whose folders share a name get columns headed by their paths, not twice the
    same heading."""
    a = _long_run(tmp_path / "20260101-000000", "default")
    (tmp_path / "latest").symlink_to(a.name)
    rc, _, err = _report(capsys, a, tmp_path)
    assert rc == 2 and err == ["edge-agent report: error: %s: the same run as %s, given twice"
                               % (tmp_path, a)]
    (tmp_path / "other").mkdir()
    b = _long_run(tmp_path / "other" / a.name, "default")
    rc, out, err = _report(capsys, a, b)
    assert rc == 0 and err == []
    head = out[out.index("side by side"):].splitlines()[1]
    assert os.path.relpath(str(a)) in head and os.path.relpath(str(b)) in head


def _cam1(run):
    return run / "cf" / "rate-1" / "cam1" / "records.jsonl"


def test_damaged_record_lines_are_a_warning_with_their_numbers_and_the_rate_still_reported(
        run, capsys):
    """Rule: records lines that are no task record (not JSON, an object without id, status and
    creation time, not an object) anywhere but a torn last line give one warning line naming
    the file and the line numbers, exit 1; the rate is still summarised, without them (they
    used to count as lost, or as created, with exit 0)."""
    lines = _cam1(run).read_text().splitlines(True)
    lines[2:2] = ["this is not json\n", '{"id": 5}\n', "[1,2]\n"]
    _cam1(run).write_text("".join(lines))
    rc, out, err = _report(capsys, run)
    assert rc == 1 and len(err) == 1, err
    assert err[0].startswith("edge-agent report: warning: %s: 3 lines are not task records "
                             "(lines 3, 4, 5)" % _cam1(run))
    row = [l.split() for l in out.splitlines() if l.startswith("cf ") and " 1.0 " in l]
    assert row and row[0][2:5] == ["7", "7", "0"], out  # created, completed, lost


def test_many_damaged_record_lines_are_counted_in_one_line(run, capsys):
    """Rule: however many lines are damaged, one warning line per file: the count, the first
    five line numbers and how many more."""
    _cam1(run).write_text(_cam1(run).read_text() + "junk\n" * 9)
    rc, _, err = _report(capsys, run)
    assert rc == 1 and len(err) == 1
    assert "9 lines are not task records (lines 5, 6, 7, 8, 9 and 4 more)" in err[0]


def test_a_torn_last_line_is_tolerated_without_a_warning(run, capsys):
    """Rule: a last line without its newline (the writer was killed mid-line) is passed over
    silently, as are blank lines (no task in them): exit 0, nothing on stderr."""
    _cam1(run).write_text("\n" + _cam1(run).read_text() + '{"id": "cam1-9", "sta')
    rc, _, err = _report(capsys, run)
    assert rc == 0 and err == []


def test_a_records_file_cut_short_reads_as_a_rate_whose_source_stopped_early(run, capsys):
    """Rule: a records file cut inside a line (whole lines for some tasks, then a torn last
    line) cannot be told from one whose source was killed mid-write before the drain timeout
    ended the rate: the tasks without a record count as lost, as the testbed counted them."""
    text = _cam1(run).read_bytes()
    _cam1(run).write_bytes(text[:len(text) // 2])
    rc, out, err = _report(capsys, run)
    assert rc == 0 and err == []
    row = [l.split() for l in out.splitlines() if l.startswith("cf ") and " 1.0 " in l]
    assert row and row[0][2:5] == ["7", "5", "2"], out


def test_read_records_names_the_damaged_lines_it_skips(tmp_path):
    """Rule: read_records returns only task records and, when asked, the numbers of the other
    lines (a torn last line and blank lines are not damage)."""
    path = tmp_path / "records.jsonl"
    good = _records("cam1", 2).splitlines(True)
    path.write_text(good[0] + "\n" + '{"id": "x"}\n' + good[1] + "null\n" + '{"id": "y", "s')
    bad = []
    assert [r["id"] for r in read_records(str(path), bad)] == ["cam1-0", "cam1-1"]
    assert bad == [3, 5]
