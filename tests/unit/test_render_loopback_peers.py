"""``fleet render`` refuses an inventory where a node on one machine has a peer on a loopback
host (``localhost``, ``127.0.0.1``, ``::1``): the node's connects would reach its own machine,
never the peer. A fleet whose hosts are all loopback (a rehearsal on one machine) renders."""

from __future__ import annotations

import json

import pytest

from agent.cli import main


def _render(tmp_path, inventory: str, out: str = "out") -> int:
    topo = tmp_path / "topo.json"
    topo.write_text(json.dumps({
        "bundle": "demo", "sources": [{"id": "cam", "share": 1.0}],
        "workers": [{"id": "w1", "stage": 1, "last_stage": 4}],
        "links": [{"from": "cam", "to": "w1"}]}), encoding="utf-8")
    inv = tmp_path / "hosts.txt"
    inv.write_text(inventory, encoding="utf-8")
    return main(["fleet", "render", "--topology", str(topo), "--inventory", str(inv), "--out",
                 str(tmp_path / out), "--root", str(tmp_path / "root"), "--policy", "mdi-exit"])


@pytest.mark.parametrize("inventory,node,peer", [
    ("cam localhost control=5561 data=5562 client=5563 metrics=9470\nw1 10.0.0.11\n", "w1", "cam"),
    ("cam 10.0.0.10\nw1 127.0.0.1\n", "cam", "w1"),
    ("cam jetson-cam\nw1 ::1\n", "cam", "w1"),
])
def test_a_peer_on_a_loopback_host_of_a_node_on_another_machine_is_refused(
        tmp_path, capsys, inventory, node, peer):
    """Rule: a node whose host is not loopback with a peer whose host is stops the render in
    one line naming both nodes, the loopback host and the fix; nothing is written."""
    assert _render(tmp_path, inventory) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("%s (" % node) in err[0] and ("has peer %s at" % peer) in err[0]
    assert "give %s an address %s can reach" % (peer, node) in err[0]
    assert not (tmp_path / "out").exists()


def test_a_fleet_on_one_machine_and_a_fleet_of_devices_render(tmp_path, capsys):
    """Rule: every host loopback (one machine, ports apart) or none loopback renders."""
    assert _render(tmp_path, "cam localhost\nw1 127.0.0.1 control=5561 data=5562 "
                             "metrics=9470\n", "one") == 0
    assert _render(tmp_path, "cam 10.0.0.10\nw1 10.0.0.11\n", "devices") == 0
    capsys.readouterr()
