"""A testbed run folder keeps the topology it ran (``topology.json``), so ``report`` redoes its
summaries from the folder alone, wherever it is run from and whatever the topology file named
at run time holds now. An older run folder without the copy reads the named file, looked up
from the run folder upwards before the current folder, and says which file it read.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from agent.cli import main
from agent.commands.testbed import with_mdi_mode
from agent.testbed import runtopo
from agent.testbed.history import load_run
from agent.testbed.topology import (DEFAULT_TOPOLOGY, load_topology, parse_topology,
                                    shipped_presets)
from tests.unit.test_report_damaged import _long_run


def _default(warmup_s):
    """The shipped default topology's JSON object with another warm-up."""
    with open(DEFAULT_TOPOLOGY) as f:
        obj = json.load(f)
    obj["warmup_s"] = warmup_s
    return obj


def _run_in(folder, topology):
    """A finished run folder (two sources, 20 tasks each over 6 s) at ``folder``."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    return _long_run(folder, topology)


def _measured(run):
    """How many delays the run's only (policy, rate) counts after its warm-up."""
    (delays,) = load_run(str(run)).delays_s.values()
    return len(delays)


def _report(capsys, *argv):
    rc = main(["report"] + [str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err.strip().splitlines()


@pytest.mark.parametrize("name", shipped_presets() + ["mdi-2-node-noee"])
def test_the_copy_parses_back_to_the_topology_the_run_used(name, tmp_path):
    """Rule: the run folder's copy of any shipped topology (a -noee variant's and --mdi-mode's
    knobs included) parses, from another folder, to the very topology the testbed ran."""
    topo = load_topology(name)
    if "mdi" in name:
        topo = with_mdi_mode(topo, "adapt")
    again = parse_topology(json.loads(json.dumps(runtopo.topology_copy(topo))),
                           str(tmp_path), "copy")
    assert dataclasses.replace(again, path=topo.path) == topo


def test_paths_relative_to_the_topology_file_are_absolute_in_the_copy(tmp_path):
    """Rule: a bundle path, a fleet's keys_dir and the node-config paths of ``agent`` (a
    replay set), relative to the topology file, are read so and made absolute in the copy,
    since the copy lives in another folder (a relative replay_path was looked for in the run
    folder the testbed writes the node configs to)."""
    (tmp_path / "conf").mkdir()
    obj = _default(2.0)
    obj["bundle"] = "../bundles/b1"
    obj["fleet"] = {"policy": "cf", "keys_dir": "keys"}
    obj["agent"] = {"replay_path": "data/val.npz", "engine_cache_dir": "", "heartbeat_interval_s": 0.5}
    (tmp_path / "conf" / "topo.json").write_text(json.dumps(obj))
    topo = load_topology(str(tmp_path / "conf" / "topo.json"))
    copy = runtopo.topology_copy(topo)
    assert copy["bundle"] == str(tmp_path / "bundles" / "b1") == topo.bundle
    assert parse_topology(copy, "/elsewhere").bundle == topo.bundle
    assert copy["fleet"] == {"policy": "cf", "keys_dir": str(tmp_path / "conf" / "keys")}
    assert copy["agent"] == topo.agent == {
        "replay_path": str(tmp_path / "conf" / "data" / "val.npz"), "engine_cache_dir": "",
        "heartbeat_interval_s": 0.5}
    assert parse_topology(copy, "/elsewhere").agent == topo.agent


def test_the_copy_is_written_atomically_before_testbed_json(tmp_path, monkeypatch):
    """Rule: testbed.json is never on disk without its topology copy: the copy goes first,
    both through the project's atomic write."""
    written = []
    monkeypatch.setattr(runtopo, "write_atomic",
                        lambda path, data: written.append((path, json.loads(data))))
    topo = load_topology("default")
    runtopo.write_run_info(str(tmp_path), {"topology": "default"}, topo)
    assert [p for p, _ in written] == [str(tmp_path / "topology.json"),
                                       str(tmp_path / "testbed.json")]
    assert written[0][1] == runtopo.topology_copy(topo)


def test_report_reads_the_copy_not_the_file_named_at_run_time(tmp_path, monkeypatch, capsys):
    """Rule: with topology.json in the run folder, report gives the same numbers from any
    folder, even one holding another file of the recorded name (it used to read ./topo.json:
    another warm-up, other numbers, or "no such topology file" elsewhere)."""
    run = _run_in(tmp_path / "fleet1" / "runs" / "20260101-000000", "topo.json")
    (run / "topology.json").write_text(json.dumps(_default(0.0)))
    (tmp_path / "fleet1" / "topo.json").write_text(json.dumps(_default(5.0)))
    monkeypatch.chdir(tmp_path / "fleet1")
    assert _measured(run) == 40
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path / "other")
    assert _measured(run) == 40
    rc, out, err = _report(capsys, run)
    assert rc == 0 and err == [] and "cf" in out


def test_an_older_run_reads_the_named_file_from_its_own_folders_first_and_says_so(
        tmp_path, monkeypatch, capsys):
    """Rule: a run folder without topology.json reads the recorded relative path from the run
    folder and the folders above it (where the testbed ran) before the current folder, and a
    warning line names the file read; exit status 0 (the run is not damaged)."""
    run = _run_in(tmp_path / "fleet1" / "runs" / "20260101-000000", "topo.json")
    (tmp_path / "fleet1" / "topo.json").write_text(json.dumps(_default(0.0)))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "topo.json").write_text(json.dumps(_default(5.0)))
    monkeypatch.chdir(tmp_path / "other")
    assert _measured(run) == 40
    rc, out, err = _report(capsys, run)
    assert rc == 0 and len(err) == 1 and "cf" in out
    assert err[0].startswith("edge-agent report: warning: %s" % (run / "testbed.json"))
    assert "no topology.json" in err[0] and str(tmp_path / "fleet1" / "topo.json") in err[0]


def test_an_older_run_falls_back_to_the_current_folder_and_then_fails_in_one_line(
        tmp_path, monkeypatch, capsys):
    """Rule: with the recorded file nowhere above the run folder, the current folder's is read
    (named in a warning); with none there either, one error line naming testbed.json, exit 2."""
    run = _run_in(tmp_path / "runs" / "20260101-000000", "topo.json")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    rc, out, err = _report(capsys, run)
    assert rc == 2 and out == "" and len(err) == 1
    assert "%s: topo.json: no such topology file" % (run / "testbed.json") in err[0]
    (tmp_path / "cwd" / "topo.json").write_text(json.dumps(_default(5.0)))
    rc, out, err = _report(capsys, run)
    assert rc == 0 and len(err) == 1 and str(tmp_path / "cwd" / "topo.json") in err[0]


def test_a_damaged_copy_is_one_error_line_naming_it(tmp_path, capsys):
    """Rule: a topology.json in the run folder that does not parse stops the report of that
    run with one line naming the copy, exit 2 (no silent fallback to another file)."""
    run = _long_run(tmp_path / "20260101-000000", "default")
    (run / "topology.json").write_text('{"sources": []}')
    rc, out, err = _report(capsys, run)
    assert rc == 2 and out == "" and len(err) == 1
    assert str(run / "topology.json") in err[0] and "sources" in err[0]
