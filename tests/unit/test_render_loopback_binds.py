"""`fleet render` on a rehearsal inventory that gives every node a loopback address of its
own (127.0.0.N) and the same ports, as separate devices would have: the inventory takes it
(the ports are on different hosts), so the rendered agents must be able to run side by side
on this machine: each binds its own address, not every interface. A device's node (not a
loopback host) still binds every interface. Real ZeroMQ sockets bind the rendered endpoints."""

from __future__ import annotations

import zmq

from agent.cli import main
from agent.config.node import load_config
from agent.testbed.ports import free_ports

NODES = ["cam1", "cam2", "w1a", "w1b", "w2a", "w2b", "w3a", "w3b", "w4a", "w4b"]


def _render(tmp_path, host_of, ports=(47400, 47401, 47402)):
    """Every node's config rendered with the same ``ports`` (control, data, client)."""
    line = "control=%d data=%d client=%d metrics=0" % tuple(ports)
    inv = tmp_path / "hosts.txt"
    inv.write_text("".join("%s %s %s\n" % (n, host_of(i), line) for i, n in enumerate(NODES)))
    assert main(["fleet", "render", "--topology", "default", "--inventory", str(inv), "--out",
                 str(tmp_path / "out"), "--root", str(tmp_path / "root")]) == 0
    return {n: load_config(str(tmp_path / "out" / "devices" / n / "etc" / "edge-agent" /
                               (n + ".toml"))) for n in NODES}


def test_nodes_on_loopback_addresses_of_their_own_bind_side_by_side(tmp_path, capsys):
    """Rule: a node on a loopback inventory host binds its endpoints on that address, so
    nodes on 127.0.0.N sharing port numbers all start on one machine."""
    # ports below the kernel's ephemeral range, held by nobody: a fixed one inside it (47400)
    # was once held (an even port: most likely another test's outgoing connection's)
    control, data, client = free_ports(3)
    cfgs = _render(tmp_path, lambda i: "127.0.0.%d" % (i + 1), (control, data, client))
    assert cfgs["w1b"].control_bind == "tcp://127.0.0.4:%d" % control
    assert cfgs["cam2"].client_bind == "tcp://127.0.0.2:%d" % client
    ctx = zmq.Context()
    bound = []
    try:
        for cfg in cfgs.values():
            for ep in (cfg.control_bind, cfg.data_bind, cfg.client_bind):
                if ep:
                    s = ctx.socket(zmq.ROUTER)
                    s.setsockopt(zmq.LINGER, 0)
                    bound.append(s)
                    s.bind(ep)  # EADDRINUSE when two nodes bind every interface
        assert len(bound) == 2 * len(NODES) + 2
    finally:
        for s in bound:
            s.close()
        ctx.term()


def test_a_device_node_binds_every_interface(tmp_path, capsys):
    """Rule: a node on a device's address or name binds every interface (its peers reach it
    at the inventory's address, whichever interface that is)."""
    cfgs = _render(tmp_path, lambda i: "10.0.0.%d" % (i + 1) if i % 2 else "jetson-%d.lan" % i)
    for cfg in cfgs.values():
        assert cfg.control_bind == "tcp://*:47400" and cfg.data_bind == "tcp://*:47401"
    assert cfgs["cam1"].client_bind == "tcp://*:47402"
