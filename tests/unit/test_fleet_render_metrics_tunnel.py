"""Metrics that listen on a device's loopback (the default ``metrics_host``) are never answered
at the ``fleet.json`` URL from the workstation: the render gives such a node the ssh tunnel that
reaches them, in its summary, its sheet and ``fleet.json``, and ``status --fleet`` names that
tunnel for a node that does not answer (``test_status_tunnel``). Nodes on this machine or with
public metrics need none."""

from __future__ import annotations

import json

from agent.cli import main


def _render(tmp_path, capsys, inventory, agent=None):
    topo = tmp_path / "topo.json"
    topo.write_text(json.dumps({
        "bundle": "demo", "agent": agent or {}, "sources": [{"id": "cam", "share": 1.0}],
        "workers": [{"id": "w1", "stage": 1}],
        "links": [{"from": "cam", "to": "w1"}]}), encoding="utf-8")
    inv = tmp_path / "hosts.txt"
    inv.write_text(inventory, encoding="utf-8")
    rc = main(["fleet", "render", "--topology", str(topo), "--inventory", str(inv),
               "--out", str(tmp_path / "out"), "--root", str(tmp_path / "root")])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return captured.out, json.loads((tmp_path / "out" / "fleet.json").read_text())


def test_remote_loopback_metrics_get_a_tunnel_in_summary_sheet_and_manifest(tmp_path, capsys):
    """Rule: with the default metrics_host on remote hosts, every node gets its own local port
    (9501 up) and `ssh -N -L LOCAL:127.0.0.1:METRICS [USER@]HOST`, printed with the
    `status --endpoints` line that reads them, on its sheet and in fleet.json."""
    out, man = _render(tmp_path, capsys, "cam 10.0.0.10\nw1 10.0.0.11 metrics=9470 user=jetson\n")
    cam, w1 = man["nodes"]["cam"], man["nodes"]["w1"]
    assert cam["metrics"] == "http://10.0.0.10:9464/metrics"  # what a public endpoint would be
    assert (cam["metrics_tunnel"], cam["metrics_local"]) == (
        "ssh -N -L 9501:127.0.0.1:9464 10.0.0.10", "127.0.0.1:9501")
    assert (w1["metrics_tunnel"], w1["metrics_local"]) == (
        "ssh -N -L 9502:127.0.0.1:9470 jetson@10.0.0.11", "127.0.0.1:9502")
    assert "then `edge-agent status --endpoints 127.0.0.1:9501 127.0.0.1:9502`" in out
    assert "\n   ssh -N -L 9502:127.0.0.1:9470 jetson@10.0.0.11\n" in out
    sheet = (tmp_path / "out" / "devices" / "w1" / "SHEET.txt").read_text()
    assert "its metrics listen on 127.0.0.1:9470 on w1 only" in sheet
    assert sheet.index("ssh -N -L 9502:127.0.0.1:9470 jetson@10.0.0.11") \
        < sheet.index("edge-agent status --endpoints 127.0.0.1:9502")


def test_no_tunnel_for_nodes_on_this_machine_or_with_public_metrics(tmp_path, capsys):
    """Rule: a loopback inventory (a rehearsal) and a public metrics_host need no tunnel: none
    is written or printed."""
    out, man = _render(tmp_path, capsys, "cam 127.0.0.1 metrics=19464\nw1 localhost "
                                         "control=15651 data=15652 metrics=19465\n")
    assert not any("metrics_tunnel" in e for e in man["nodes"].values())
    assert "ssh -N -L" not in out
    out, man = _render(tmp_path, capsys, "cam 10.0.0.10\nw1 10.0.0.11\n",
                       {"metrics_host": "0.0.0.0", "metrics_public": True})
    assert not any("metrics_tunnel" in e for e in man["nodes"].values())
    assert "ssh -N -L" not in out
    assert "ssh -N -L" not in (tmp_path / "out" / "devices" / "cam" / "SHEET.txt").read_text()
