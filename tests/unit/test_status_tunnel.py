"""``status --fleet`` on a real inventory: a node whose metrics listen on its device's loopback
(``fleet.json``'s ``metrics_tunnel``, written by ``fleet render``) and that does not answer is
named with the ssh tunnel that reaches it and the ``--endpoints`` to read it with."""

from __future__ import annotations

import json

from agent.cli import main
from agent.testbed.ports import free_ports
from tests.unit.test_fleet_render_metrics_tunnel import _render


def _closed_port():
    """A loopback port nothing listens on, below the ephemeral range (no outgoing connection
    takes it): a connection is refused."""
    return free_ports(1)[0]


def test_status_names_the_tunnel_of_a_node_that_does_not_answer(tmp_path, capsys):
    """Rule: `status --fleet` on a manifest whose node has a metrics_tunnel and does not answer
    says its metrics listen on the device's loopback, with the tunnel and the --endpoints to
    use; a node without one keeps the plain line; the exit status is 1."""
    _, man = _render(tmp_path, capsys, "cam 10.0.0.10\nw1 10.0.0.11 user=jetson\n")
    port = _closed_port()
    man["nodes"]["cam"]["metrics"] = "http://127.0.0.1:%d/metrics" % port  # refused at once
    man["nodes"]["w1"]["metrics"] = "http://127.0.0.1:%d/metrics" % port
    del man["nodes"]["cam"]["metrics_tunnel"]
    (tmp_path / "out" / "fleet.json").write_text(json.dumps(man), encoding="utf-8")
    assert main(["status", "--fleet", str(tmp_path / "out"), "--timeout", "5"]) == 1
    lines = capsys.readouterr().out.splitlines()
    w1 = [ln for ln in lines if ln.startswith("w1: ")]
    assert len(w1) == 1
    assert w1[0].endswith("(http://127.0.0.1:%d/metrics); its metrics listen on the device's "
                          "loopback only: tunnel (ssh -N -L 9502:127.0.0.1:9464 jetson@10.0.0.11)"
                          " and use --endpoints 127.0.0.1:9502" % port)
    cam = [ln for ln in lines if ln.startswith("cam: ")]
    assert len(cam) == 1 and cam[0].endswith("(http://127.0.0.1:%d/metrics)" % port)


def test_status_reads_a_node_through_its_open_tunnel_and_never_takes_another_nodes_answer(
        tmp_path, capsys):
    """Rule: `status --fleet` reads a node whose metrics listen on its device's loopback
    through the local end of its tunnel (`metrics_local`) when that answers, so an operator
    who opened the tunnels needs no --endpoints; an endpoint that answers as another node
    (a stale tunnel, a wrong address) is no answer, named with the node it answered as."""
    from agent.ops.metrics import AgentMetrics

    _, man = _render(tmp_path, capsys, "cam 10.0.0.10\nw1 10.0.0.11 user=jetson\n")
    port = _closed_port()
    served = []
    try:
        for node, role, stage in (("w1", "worker", 1), ("cam", "source", 0)):
            m = AgentMetrics(node)
            m.node_info(role, stage, "dtoee")
            served.append((m, m.serve("127.0.0.1", 0)))
        (w1, w1_port), (cam, cam_port) = served
        man["nodes"]["w1"]["metrics"] = "http://127.0.0.1:%d/metrics" % port  # the device's
        man["nodes"]["w1"]["metrics_local"] = "127.0.0.1:%d" % w1_port  # the open tunnel
        man["nodes"]["cam"]["metrics"] = "http://127.0.0.1:%d/metrics" % w1_port  # w1's
        del man["nodes"]["cam"]["metrics_tunnel"]
        (tmp_path / "out" / "fleet.json").write_text(json.dumps(man), encoding="utf-8")
        assert main(["status", "--fleet", str(tmp_path / "out"), "--json"]) == 1
        got = json.loads(capsys.readouterr().out)
    finally:
        for m, _ in served:
            m.close()
    assert got["w1"]["alive"] and got["w1"]["url"] == "http://127.0.0.1:%d/metrics" % w1_port
    assert not got["cam"]["alive"]
    assert got["cam"]["error"] == ("answered as node w1, not cam (a tunnel or endpoint of "
                                   "another node?)")
