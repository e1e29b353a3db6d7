"""``fleet render`` refuses an inventory where a node on one machine has a peer on a loopback
host (``localhost``, ``127.0.0.1``, ``::1``): the node's connects would reach its own machine,
never the peer. A fleet whose hosts are all loopback (a rehearsal on one machine) renders."""

from __future__ import annotations

import pytest

from agent.cli import main
from tests.unit.fleet_files import two_node_fleet


def _render(tmp_path, inventory: str, out: str = "out") -> int:
    topo, inv = two_node_fleet(tmp_path, inventory)
    return main(["fleet", "render", "--topology", topo, "--inventory", inv, "--out",
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



def test_a_name_the_rendering_machines_hosts_file_maps_to_loopback_is_no_loopback_peer(
        tmp_path, capsys):
    """Rule: the check reads no hosts file: a device's own hostname, which its ``/etc/hosts``
    maps to loopback (127.0.1.1 on Debian), is a name the other devices resolve their own way,
    so a render on that machine is not refused; a loopback address is."""
    from agent.config.addr_machine import LOCAL_NAMES, canonical_address, is_this_machine
    from agent.fleet.hosts_file import read_hosts_table

    names = sorted(n for n, addrs in read_hosts_table().items() if n not in LOCAL_NAMES
                   and not canonical_address(n) and any(is_this_machine(a) for a in addrs))
    if not names:
        pytest.skip("no name in this machine's /etc/hosts maps to a loopback address")
    assert _render(tmp_path, "cam %s\nw1 10.0.0.11\n" % names[0], "named") == 0
    assert _render(tmp_path, "cam 127.0.1.1\nw1 10.0.0.11\n", "address") == 2
    assert "w1 (10.0.0.11) has peer cam at 127.0.1.1" in capsys.readouterr().err
