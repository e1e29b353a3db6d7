"""testbed options that name nothing usable are refused before anything starts: one error
line naming the option (or the topology file's key) and what to give instead, exit 2, and no
run folder made anywhere. An empty --out, --json or --topology is no default; an --out that
is a run folder itself would nest the new run inside the old one."""

from __future__ import annotations

import json
import os

from agent.cli import main
from agent.testbed.rundir import LOCK_NAME, RUN_INFO
from agent.testbed.topology import DEFAULT_TOPOLOGY

SHORT = ["testbed", "--policies", "cf", "--rates", "1", "--duration", "1", "--no-plots"]


def _err(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def _entries(path):
    return sorted(os.listdir(str(path)))


def test_an_empty_out_is_refused_not_the_current_folder(tmp_path, capsys, monkeypatch):
    """Rule: --out "" (an unset variable) exits 2 naming --out; no run lands in the cwd."""
    monkeypatch.chdir(tmp_path)
    for empty in ("", "  "):
        assert main(SHORT + ["--out", empty]) == 2
        assert _err(capsys).startswith("edge-agent testbed: error: --out: empty; give a folder")
    assert _entries(tmp_path) == []


def test_an_empty_json_is_refused_not_silently_skipped(tmp_path, capsys):
    """Rule: --json "" exits 2 naming --json, rather than running and writing no file."""
    out = tmp_path / "runs"
    assert main(SHORT + ["--out", str(out), "--json", ""]) == 2
    assert "--json: empty; give a file name" in _err(capsys)
    assert not out.exists()


def test_an_empty_topology_is_refused_not_the_default(tmp_path, capsys):
    """Rule: --topology "" exits 2 naming --topology and the shipped names; the default
    topology does not run in its place."""
    out = tmp_path / "runs"
    assert main(SHORT + ["--out", str(out), "--topology", ""]) == 2
    line = _err(capsys)
    assert "--topology: '' is neither a file nor a shipped topology (shipped: default" in line
    assert not out.exists()


def test_an_out_that_is_a_run_folder_is_refused(tmp_path, capsys):
    """Rule: --out naming a run folder (its testbed.json, or only its lock when the run
    stopped early) or the latest link to one exits 2 naming the folder the runs go in;
    nothing is made inside it."""
    runs = tmp_path / "runs"
    run = runs / "20260101-000000"
    run.mkdir(parents=True)
    (run / RUN_INFO).write_text("{}")
    os.symlink(run.name, str(runs / "latest"))
    stopped = runs / "20260101-000001"
    stopped.mkdir()
    (stopped / LOCK_NAME).write_text("")
    for given, holds in ((run, RUN_INFO), (runs / "latest", RUN_INFO), (stopped, LOCK_NAME)):
        before = _entries(given)
        assert main(SHORT + ["--out", str(given)]) == 2
        line = _err(capsys)
        assert "--out: %s is a run folder (it holds %s)" % (given, holds) in line, line
        assert line.endswith("give the folder the runs go in, %s" % runs), line
        assert _entries(given) == before


def test_a_missing_bundle_names_the_topology_file_and_key(tmp_path, capsys):
    """Rule: a topology whose "bundle" names no bundle exits 2 with one line naming the
    topology file and its bundle key, then the path and the fix."""
    with open(DEFAULT_TOPOLOGY) as f:
        obj = json.load(f)
    obj["bundle"] = "nosuch-bundle"
    path = tmp_path / "topo.json"
    path.write_text(json.dumps(obj))
    out = tmp_path / "runs"
    assert main(SHORT + ["--out", str(out), "--topology", str(path)]) == 2
    line = _err(capsys)
    assert "%s: bundle: %s: no such bundle directory" % (path, tmp_path / "nosuch-bundle") \
        in line, line
    assert not out.exists()


def _rate_column(rates):
    from agent.testbed.report import format_table, summarise_records

    runs = [summarise_records([], "cf", r, True, expected_created=0) for r in rates]
    return [line.split()[1] for line in format_table(runs).splitlines()[2:]]


def test_the_table_tells_every_rate_apart_and_prints_none_as_zero():
    """Rule: the table's rate/s column keeps one decimal while that tells the runs' rates
    (kept to 0.01 tasks/s) apart, and shows two where one would print two rates alike or a
    rate above 0 as 0.0."""
    assert _rate_column([17.54, 30.07, 40.1]) == ["17.5", "30.1", "40.1"]
    assert _rate_column([10.01, 10.04]) == ["10.01", "10.04"]
    assert _rate_column([0.01, 5.0]) == ["0.01", "5.00"]
