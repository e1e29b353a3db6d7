"""An inventory that gives one port twice on one host text is refused in one line naming the
file, the line, both nodes (or the node's own two endpoints) and the fix; hosts that are one
machine under other text are left to ``fleet render``'s check of the binds it writes."""

from __future__ import annotations

import pytest

from agent.cli import main
from agent.fleet.inventory import InventoryError, parse_inventory
from tests.unit.fleet_files import two_node_fleet


def test_two_nodes_given_one_port_on_one_host_are_named_with_the_fix():
    """Rule: a second node on a host text with a port another node there already has is
    refused naming the line, both nodes, the port and the fix."""
    with pytest.raises(InventoryError) as err:
        parse_inventory("a h\nb h control=5551\n", ["a", "b"], "inv", sources=["a"])
    assert str(err.value) == ("inv:2: b: port 5551 on h is already a's: give one of them "
                              "other ports")


def test_one_node_given_one_port_twice_is_named_with_the_fix():
    """Rule: a node whose own two endpoints take one port is refused naming it and the fix."""
    with pytest.raises(InventoryError) as err:
        parse_inventory("a h data=5551\nb g\n", ["a", "b"], "inv", sources=["a"])
    assert str(err.value) == ("inv:1: a: port 5551 is given twice: give each of its endpoints "
                              "its own port")


def test_fleet_render_stops_on_a_port_given_twice_in_one_line(tmp_path, capsys):
    """Rule: ``fleet render`` with such an inventory exits 2 with that one line, and writes
    nothing."""
    topo, inv = two_node_fleet(tmp_path, "cam jetson-1\nn1 jetson-1 control=5560\n", "n1")
    rc = main(["fleet", "render", "--topology", topo, "--inventory", inv, "--out",
               str(tmp_path / "out"), "--root", str(tmp_path / "root"), "--policy", "mdi-exit"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].endswith("%s:2: n1: port 5560 on jetson-1 is already cam's: give one of them "
                           "other ports" % inv)
    assert not (tmp_path / "out").exists()


def test_with_rate_a_sources_client_port_is_not_reserved(tmp_path, capsys):
    """Rule: with ``--rate`` a source makes its own load and binds no client port, so another
    node on its host may take that port; without ``--rate`` the same inventory is refused."""
    topo, inv = two_node_fleet(tmp_path, "cam jetson-1\nn1 jetson-1 control=5553 data=5560 "
                                         "metrics=9465\n", "n1")
    base = ["fleet", "render", "--topology", topo, "--inventory", inv,
            "--root", str(tmp_path / "root"), "--policy", "mdi-exit"]
    assert main(base + ["--out", str(tmp_path / "client")]) == 2
    assert "port 5560 on jetson-1 is already cam's" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "rate"), "--rate", "5"]) == 0
    capsys.readouterr()
    etc = tmp_path / "rate" / "devices"
    worker = (etc / "n1" / "etc" / "edge-agent" / "n1.toml").read_text(encoding="utf-8")
    source = (etc / "cam" / "etc" / "edge-agent" / "cam.toml").read_text(encoding="utf-8")
    assert 'data_bind = "tcp://*:5560"' in worker and 'client_bind = ""' in source
