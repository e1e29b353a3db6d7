"""Whether runs compared side by side ran one setting is said by the topologies they ran (the
run folders' copies, by content: defaults and comments aside, whatever the files were named)
and their MDI modes, naming what differs; an older run folder without a copy by the name its
``testbed.json`` records."""

from __future__ import annotations

import json

from agent.commands.testbed import with_mdi_mode
from agent.testbed import runtopo
from agent.testbed.history import load_run
from agent.testbed.topology import DEFAULT_TOPOLOGY, load_topology
from tests.unit.test_report_damaged import _long_run


def _run(folder, topo_file, mdi_mode=None):
    """A finished run folder holding the copy of ``topo_file`` as the testbed writes it."""
    run = _long_run(folder, "default")
    info = json.loads((run / "testbed.json").read_text())
    info.update(topology=str(topo_file), mdi_mode=mdi_mode)
    runtopo.write_run_info(str(run), info, with_mdi_mode(load_topology(str(topo_file)),
                                                         mdi_mode))
    return load_run(str(run))


def _default(path, change=None, comment=None):
    obj = json.loads(open(DEFAULT_TOPOLOGY).read())
    if change:
        change(obj)
    if comment is not None:
        obj["comment"] = comment
    path.write_text(json.dumps(obj))
    return path


def test_copies_of_one_topology_under_two_names_compare_as_one_setting(tmp_path):
    """Rule: two runs of the same topology from files of different names (one with another
    comment) are one setting: no warning (the names alone used to warn)."""
    a = _run(tmp_path / "20260101-000000", _default(tmp_path / "a.json"))
    b = _run(tmp_path / "20260101-000001", _default(tmp_path / "b.json", comment="a copy"))
    assert runtopo.settings_warning([a, b]) == ""


def test_a_topology_edited_between_two_runs_is_warned_of_naming_the_fields(tmp_path):
    """Rule: two runs of one file edited in between differ (the same name used to compare
    silently): the warning names the run, says the file was edited and names the fields."""
    path = tmp_path / "topo.json"
    a = _run(tmp_path / "20260101-000000", _default(path))

    def edit(t):
        t["knobs"]["dtoee"]["step_scale"] = 2.0
        t["links"][1]["rate_bytes_s"] = 8e4

    b = _run(tmp_path / "20260101-000001", _default(path, edit))
    text = runtopo.settings_warning([a, b])
    assert text.startswith("the runs differ in topology or mdi mode (20260101-000001 vs "
                           "20260101-000000: topology %s edited between them" % path), text
    assert "differing in knobs.dtoee.step_scale, links[1].rate_bytes_s)" in text, text


def test_runs_of_one_topology_in_two_mdi_modes_differ_in_the_mode_only(tmp_path):
    """Rule: an MDI mode's knobs in the copy are said as the mode, not as an edited topology."""
    path = _default(tmp_path / "topo.json")
    a = _run(tmp_path / "20260101-000000", path, "adapt")
    b = _run(tmp_path / "20260101-000001", path, "admission")
    assert runtopo.settings_warning([a, b]) == (
        "the runs differ in topology or mdi mode (20260101-000001 vs 20260101-000000: mdi "
        "mode admission (not adapt)): side by side compares unlike settings")


def test_older_run_folders_without_a_copy_compare_by_name(tmp_path):
    """Rule: a run folder from before the copy is compared by the topology name it records."""
    a = load_run(str(_long_run(tmp_path / "20260101-000000", "default")))
    b = load_run(str(_long_run(tmp_path / "20260101-000001", "slow-link")))
    c = load_run(str(_long_run(tmp_path / "20260101-000002", "default")))
    assert "20260101-000001 vs 20260101-000000: topology slow-link (not default)" in \
        runtopo.settings_warning([a, b])
    assert runtopo.settings_warning([a, c]) == ""
