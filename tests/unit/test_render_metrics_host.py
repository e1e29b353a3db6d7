"""A node on a loopback inventory host serves its metrics where ``fleet.json`` says: ``fleet
render`` gives a node on ``::1`` ``metrics_host = "::1"`` (the config's default, 127.0.0.1, is
not where ``http://[::1]:PORT/metrics`` points), and ``status --fleet`` reads the agent's own
metrics endpoint started from the rendered config."""

from __future__ import annotations

import json

import pytest

from agent.cli import main
from agent.config.node import load_config
from agent.ops.metrics import serve_metrics
from agent.testbed.ports import free_ports
from tests.unit.endpoints import has_ipv6_loopback


def _render(tmp_path, inventory, agent=None):
    topo = tmp_path / "topo.json"
    topo.write_text(json.dumps({
        "bundle": "demo", "agent": agent or {}, "sources": [{"id": "cam", "share": 1.0}],
        "workers": [{"id": "w1", "stage": 1}], "links": [{"from": "cam", "to": "w1"}]}),
        encoding="utf-8")
    inv = tmp_path / "hosts.txt"
    inv.write_text(inventory, encoding="utf-8")
    out = tmp_path / "out"
    assert main(["fleet", "render", "--topology", str(topo), "--inventory", str(inv),
                 "--out", str(out), "--root", str(tmp_path / "root")]) == 0
    cfgs = {n: load_config(str(out / "devices" / n / "etc" / "edge-agent" / (n + ".toml")))
            for n in ("cam", "w1")}
    return cfgs, json.loads((out / "fleet.json").read_text())["nodes"]


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback (::1) on this machine")
def test_a_node_on_ipv6_loopback_serves_its_metrics_at_the_fleet_json_url(tmp_path, capsys):
    """Rule: an inventory host ::1 gets metrics_host "::1" and fleet.json's URL
    http://[::1]:PORT/metrics; the agent's metrics endpoint started from that config answers
    `status --fleet` there (no tunnel: the node is on this machine)."""
    c1, c2, m1, m2 = free_ports(4)
    cfgs, nodes = _render(tmp_path, "cam 127.0.0.1 control=%d client=%d metrics=%d\n"
                                    "w1 ::1 control=%d metrics=%d\n" % (c1, c2, m1, c1 + 1, m2))
    assert cfgs["w1"].metrics_host == "::1" and cfgs["cam"].metrics_host == "127.0.0.1"
    assert nodes["w1"]["metrics"] == "http://[::1]:%d/metrics" % m2
    assert nodes["cam"]["metrics"] == "http://127.0.0.1:%d/metrics" % m1
    assert not any("metrics_tunnel" in e for e in nodes.values())
    served = [serve_metrics(cfgs[n]) for n in ("cam", "w1")]
    capsys.readouterr()  # the render's summary
    try:
        rc = main(["status", "--fleet", str(tmp_path / "out"), "--json", "--timeout", "10"])
        got = json.loads(capsys.readouterr().out)
    finally:
        for m in served:
            m.close()
    assert got["w1"]["alive"] and got["w1"]["url"] == "http://[::1]:%d/metrics" % m2, got
    assert got["cam"]["alive"], got
    assert rc in (0, 1)  # the agents' own state (no peers heard) is not this rule's


def test_a_loopback_host_by_name_and_the_topologys_metrics_host_keep_url_and_config_agreeing(
        tmp_path, capsys):
    """Rule: on a loopback host named by name (localhost) the config keeps its default
    metrics_host and fleet.json names that address; a topology's own agent.metrics_host is
    kept (not replaced by the host's address; "0.0.0.0" becomes "::" on an IPv6 host, whose
    address fleet.json names), and a remote host keeps the default with a tunnel."""
    cfgs, nodes = _render(tmp_path, "cam localhost metrics=19464\nw1 ::1 control=15651 "
                                    "data=15652 metrics=19465\n",
                          {"metrics_host": "0.0.0.0", "metrics_public": True})
    assert cfgs["cam"].metrics_host == "0.0.0.0" and cfgs["w1"].metrics_host == "::"
    cfgs, nodes = _render(tmp_path, "cam localhost metrics=19464\nw1 localhost control=15651 "
                                    "data=15652 metrics=19465\n")
    assert cfgs["cam"].metrics_host == "127.0.0.1"
    assert nodes["cam"]["metrics"] == "http://127.0.0.1:19464/metrics"
    # a remote host (a device off this machine: w1 could not reach a source on localhost)
    cfgs, nodes = _render(tmp_path, "cam 10.0.0.10 metrics=19464\nw1 10.0.0.11 metrics=19465\n")
    assert cfgs["w1"].metrics_host == "127.0.0.1" and "metrics_tunnel" in nodes["w1"]
    assert nodes["w1"]["metrics"] == "http://10.0.0.11:19465/metrics"


def test_metrics_host_all_ipv4_addresses_on_an_ipv6_host_becomes_both_families(tmp_path):
    """Rule: a topology's metrics_host "0.0.0.0" (IPv4 only) on a node whose inventory host is
    an IPv6 address is rendered as "::" (both families), since fleet.json's URL for it names
    that IPv6 address; a node on an IPv4 host keeps "0.0.0.0"."""
    c1, c2, m1, m2 = free_ports(4)
    cfgs, nodes = _render(tmp_path, "cam 10.0.0.5 control=%d client=%d metrics=%d\n"
                                    "w1 fd00::12 control=%d metrics=%d\n" % (c1, c2, m1, c1 + 1, m2),
                          agent={"metrics_host": "0.0.0.0", "metrics_public": True})
    assert cfgs["w1"].metrics_host == "::" and cfgs["cam"].metrics_host == "0.0.0.0"
    assert nodes["w1"]["metrics"] == "http://[fd00::12]:%d/metrics" % m2
