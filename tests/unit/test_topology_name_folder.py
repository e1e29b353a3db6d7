"""A shipped topology's name still loads it where the current folder holds a folder of that
name (a run's ``--out mlci``): a folder is never a topology file, so the shipped one is meant;
a folder whose name is no shipped topology is refused as before, naming it."""

from __future__ import annotations

import pytest

from agent.testbed.topology import TOPOLOGY_DIR, TopologyError, load_topology


def test_a_folder_named_like_a_shipped_topology_does_not_hide_it(tmp_path, monkeypatch):
    """Rule: with a folder ``mlci`` in the current folder, ``load_topology("mlci")`` loads
    the shipped mlci topology."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlci").mkdir()
    topo = load_topology("mlci")
    assert topo.path.startswith(str(TOPOLOGY_DIR)), topo.path


def test_a_folder_with_no_shipped_name_is_still_refused(tmp_path, monkeypatch):
    """Rule: a folder whose name is no shipped topology is a topology error naming it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(TopologyError, match="runs"):
        load_topology("runs")
