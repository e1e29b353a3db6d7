"""`fleet render` refuses, before anything is written, a topology whose workers serve a stage
its bundle (readable on the rendering machine) lacks, with or without --emulate, and goes on
with one line when the bundle is not readable there; and it refuses two nodes that are one
machine under different host text (localhost and 127.0.0.1, ::1, 0.0.0.0, a name and its
address in the hosts file) binding one port, with one line naming both."""

from __future__ import annotations

import dataclasses
import json

import pytest
import zmq

from agent.cli import main
from agent.config.node import load_config
from agent.errors import UsageError
from agent.fleet.inventory import parse_inventory
from agent.fleet.render_ports import check_port_clashes
from agent.config.addr_machine import binds_clash, same_machine
from agent.fleet.hosts_file import read_hosts_table
from agent.testbed.ports import free_ports
from tests.unit.endpoints import has_ipv6_loopback


def _topology(tmp_path, last_stage=4, bundle="demo"):
    path = tmp_path / "topo.json"
    path.write_text(json.dumps({
        "bundle": bundle, "sources": [{"id": "cam", "share": 1.0}],
        "workers": [{"id": "n1", "stage": 1, "last_stage": last_stage},
                    {"id": "n2", "stage": 1, "last_stage": last_stage}],
        "links": [{"from": "cam", "to": "n1"}, {"from": "n1", "to": "n2"}]}), encoding="utf-8")
    return str(path)


def _render(tmp_path, topo, hosts, *extra):
    inv = tmp_path / "hosts.txt"
    inv.write_text("".join("%s %s\n" % item for item in hosts.items()), encoding="utf-8")
    return main(["fleet", "render", "--topology", topo, "--inventory", str(inv), "--out",
                 str(tmp_path / "out"), "--root", str(tmp_path / "root"),
                 "--policy", "mdi-exit"] + list(extra))


DEVICES = {"cam": "10.0.0.10", "n1": "10.0.0.11", "n2": "10.0.0.12"}


@pytest.mark.parametrize("emulate", [(), ("--emulate",)])
def test_a_topology_with_more_stages_than_its_readable_bundle_is_refused(tmp_path, capsys,
                                                                         emulate):
    """Rule: workers serving stage 5 of the 4-stage demo bundle (readable here) stop the
    render with the testbed's one line, --emulate or not, and nothing is written."""
    assert _render(tmp_path, _topology(tmp_path, last_stage=5), DEVICES, *emulate) == 2
    err = capsys.readouterr().err
    assert "workers serve stages 1..5 but the bundle has 4 stages" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_bundle_not_readable_here_is_said_in_one_line_and_the_render_goes_on(tmp_path,
                                                                               capsys):
    """Rule: a bundle that lives only on the devices (not readable on the rendering machine)
    is not checked: the render writes every file and says so in one line."""
    missing = str(tmp_path / "only-on-devices" / "bundle")
    assert _render(tmp_path, _topology(tmp_path, last_stage=5, bundle=missing), DEVICES) == 0
    out = capsys.readouterr().out
    note = [line for line in out.splitlines() if line.startswith("bundle: ")]
    assert note == ["bundle: %s is not readable on this machine, so the topology's stages "
                    "(1..5) were not checked against it; each device's `run` checks its own "
                    "copy" % missing]
    assert (tmp_path / "out" / "devices" / "n2").is_dir()


def test_a_readable_bundle_that_fits_prints_no_bundle_line(tmp_path, capsys):
    """Rule: a topology whose stages the readable bundle has renders without a bundle line."""
    assert _render(tmp_path, _topology(tmp_path), DEVICES) == 0
    assert "bundle: " not in capsys.readouterr().out


@pytest.mark.parametrize("cam, n2", [
    ("localhost", "127.0.0.1"), ("localhost", "::1"), ("0.0.0.0", "127.0.0.2"),
    ("::ffff:127.0.0.1", "127.0.0.1"), ("10.0.0.13", "::ffff:10.0.0.13"),
    ("JETSON-1.lan", "jetson-1.lan"), ("fd00:0:0::2", "fd00::2")])
def test_one_machine_under_two_host_texts_may_not_give_one_port_twice(tmp_path, capsys,
                                                                      cam, n2):
    """Rule: nodes whose hosts are one machine (loopback, localhost, unspecified, the same
    address written two ways, a name in other case) with the same ports are refused with one
    line naming both nodes and the port; nothing is written."""
    hosts = dict(DEVICES, cam=cam, n2=n2)
    # the inventory compares host text alone: it takes them
    parse_inventory("".join("%s %s\n" % h for h in hosts.items()), list(hosts), "inv", ["cam"])
    assert _render(tmp_path, _topology(tmp_path), hosts) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "inventory: cam (%s) and n2 (%s) are one machine" % (cam, n2) in err
    assert "both bind port 5551 there" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback (::1) on this machine")
def test_a_wildcard_bind_and_a_loopback_bind_of_one_port_do_not_both_start(tmp_path):
    """Rule (why the render refuses localhost next to ::1): a node on `localhost` binds
    tcp://*:P (dual stack, as an agent binds it), so a node bound on [::1]:P or 127.0.0.1:P
    of the same machine fails to bind: real ZeroMQ sockets."""
    port = free_ports(1)[0]
    ctx = zmq.Context()
    socks = [ctx.socket(zmq.ROUTER) for _ in range(3)]
    try:
        for s in socks:
            s.setsockopt(zmq.LINGER, 0)
        socks[0].setsockopt(zmq.IPV6, 1)
        socks[0].bind("tcp://*:%d" % port)
        socks[1].setsockopt(zmq.IPV6, 1)
        for s, ep in ((socks[1], "tcp://[::1]:%d"), (socks[2], "tcp://127.0.0.1:%d")):
            with pytest.raises(zmq.ZMQError):
                s.bind(ep % port)
    finally:
        for s in socks:
            s.close()
        ctx.term()
    assert binds_clash("*", "::1", {}) and binds_clash("*", "127.0.0.1", {})


def test_a_name_and_its_address_in_the_hosts_file_are_one_machine(tmp_path):
    """Rule: a name the hosts file lists is its addresses (read as a file, no resolver): a
    node on it and one on its address may not share a port; names not listed are their own
    text, and distinct addresses two machines."""
    hosts_file = tmp_path / "hosts"
    hosts_file.write_text("# fleet\n10.0.0.11  jetson-1 jetson-1.lan\nfd00::11 jetson-1\n"
                          "127.0.1.1 laptop\nbad-line\n", encoding="utf-8")
    table = read_hosts_table(str(hosts_file))
    assert same_machine("Jetson-1", "10.0.0.11", table)[0]
    assert same_machine("jetson-1", "fd00::11", table)[0]
    assert same_machine("laptop", "::1", table)[0]
    assert not same_machine("jetson-2", "10.0.0.11", table)[0]
    assert not same_machine("10.0.0.11", "10.0.0.12", table)[0]
    assert read_hosts_table(str(tmp_path / "none")) == {}
    topo = _topology(tmp_path)
    assert _render(tmp_path, topo, dict(DEVICES, n2="jetson-1")) == 0  # /etc/hosts: unknown
    cfgs = {n: dataclasses.asdict(load_config(str(
        tmp_path / "out" / "devices" / n / "etc" / "edge-agent" / (n + ".toml"))))
        for n in DEVICES}  # the rendered configs' fields, as the render checks them
    hosts = parse_inventory("cam 10.0.0.10\nn1 10.0.0.11\nn2 jetson-1\n", list(DEVICES), "inv",
                            ["cam"])
    with pytest.raises(UsageError) as exc:
        check_port_clashes(hosts, cfgs, table)
    assert str(exc.value).startswith(
        "inventory: n1 (10.0.0.11) and n2 (jetson-1) are one machine (jetson-1 is 10.0.0.11 and "
        "fd00::11 in /etc/hosts) and both bind port 5551 there")
    check_port_clashes(hosts, cfgs, {})  # without the listing: two machines


def test_nodes_on_loopback_addresses_of_their_own_and_on_other_ports_pass(tmp_path, capsys):
    """Rule: the check refuses clashes only: loopback addresses of their own (127.0.0.N,
    ::1) each bound alone, or one machine with other ports, render."""
    hosts = {"cam": "127.0.0.1", "n1": "127.0.0.2", "n2": "::1"}
    assert _render(tmp_path, _topology(tmp_path), hosts) == 0
    hosts = {"cam": "localhost control=43510 data=43511 client=43512 metrics=43513",
             "n1": "127.0.0.1", "n2": "::1 control=43520 data=43521 metrics=43522"}
    assert _render(tmp_path, _topology(tmp_path), hosts) == 0
