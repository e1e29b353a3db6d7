"""`edge-agent report`: ``--json FILE`` never writes over a file of a run it reads, and a run's
file given for RUN_DIR is named as a file.

`report RUN --json RUN/testbed.json` (a tab completion away from `RUN/report.json`) replaced
the run's testbed.json with the report, and the run could not be reported again. A file of a
run given is refused, one line naming the option and the file, exit 2, before anything is
written; a report an earlier `--json` left in the run folder is still replaced.
"""

from __future__ import annotations

import json
import os

from agent.cli import main
from tests.unit.test_report_damaged import make_run


def _report(capsys, *argv):
    rc = main(["report"] + [str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err.strip().splitlines()


def test_json_naming_the_runs_testbed_json_is_refused_and_the_run_stays_readable(
        tmp_path, capsys):
    """Rule: ``--json`` naming a run's own ``testbed.json`` is a usage error (exit 2) and the
    file is left as it was, so the run still reports."""
    run = make_run(tmp_path)
    before = (run / "testbed.json").read_bytes()
    rc, _, err = _report(capsys, run, "--json", run / "testbed.json")
    assert rc == 2
    assert err == ["edge-agent report: error: --json: %s is a file of run %s, which report "
                   "reads; write the report to a new file, e.g. %s"
                   % (run / "testbed.json", run, run / "report.json")]
    assert (run / "testbed.json").read_bytes() == before
    rc, out, _ = _report(capsys, run)
    assert rc == 0 and "cf" in out


def test_json_naming_a_records_file_of_the_latest_run_of_an_out_folder_is_refused(
        tmp_path, capsys):
    """Rule: the run folder a ``--out`` folder's ``latest`` link names is guarded too: its
    records files are the report's inputs."""
    run = make_run(tmp_path)
    os.symlink(run.name, str(tmp_path / "latest"))
    records = tmp_path / "latest" / "cf" / "rate-1" / "cam1" / "records.jsonl"
    before = records.read_bytes()
    rc, _, err = _report(capsys, tmp_path, "--json", records)
    assert rc == 2 and len(err) == 1 and "--json: %s is a file of run" % records in err[0]
    assert records.read_bytes() == before


def test_a_report_left_by_an_earlier_json_in_the_run_folder_is_replaced(tmp_path, capsys):
    """Rule: writing the report into the run folder under a new name works, and so does doing
    it again (the file then holds a report, not one of the run's inputs)."""
    run = make_run(tmp_path)
    target = run / "report.json"
    for _ in range(2):
        rc, _, err = _report(capsys, run, "--json", target)
        assert rc == 0 and err == []
        rows = json.loads(target.read_text())["runs"]
        assert {r["rate"] for r in rows} == {1.0, 2.0}


def test_a_runs_testbed_json_given_as_the_run_names_its_folder(tmp_path, capsys):
    """Rule: a file given for RUN_DIR is one line saying it is a file and which folder to
    give (it said "not a testbed run folder (no testbed.json ...)" of testbed.json itself)."""
    run = make_run(tmp_path)
    rc, _, err = _report(capsys, run / "testbed.json")
    assert rc == 2 and err == ["edge-agent report: error: %s: a file, not a run folder; give "
                               "its folder, %s" % (run / "testbed.json", run)]
    records = run / "cf" / "rate-1" / "cam1" / "records.jsonl"
    rc, _, err = _report(capsys, records)
    assert rc == 2 and err == ["edge-agent report: error: %s: a file, not a run folder; give a "
                               "run folder (DIR/YYYYmmdd-HHMMSS, the one holding testbed.json)"
                               % records]
