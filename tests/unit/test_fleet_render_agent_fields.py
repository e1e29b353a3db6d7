"""`fleet render` writes a topology's `agent` fields into every device's node config, as the
docs say `agent` is applied to every agent: the values the local testbed sets for itself
(records flushed every 0.2 s, never rotated) are not written, but the topology's own are (a
small eMMC's `records_max_bytes` had been dropped without a word; `max_tasks` is the testbed's
and refused in a topology)."""

from __future__ import annotations

import json
import os

from agent.cli import main
from agent.config.node import NodeConfig, load_config


def _render(tmp_path, capsys, agent):
    topo = tmp_path / "topo.json"
    topo.write_text(json.dumps({
        "bundle": "demo", "agent": agent, "sources": [{"id": "cam", "share": 1.0}],
        "workers": [{"id": "w1", "stage": 1}], "links": [{"from": "cam", "to": "w1"}]}),
        encoding="utf-8")
    inv = tmp_path / "hosts.txt"
    inv.write_text("cam 10.0.0.10\nw1 10.0.0.11\n", encoding="utf-8")
    out = tmp_path / "out"
    rc = main(["fleet", "render", "--topology", str(topo), "--inventory", str(inv),
               "--out", str(out), "--root", str(tmp_path / "root")])
    assert rc == 0, capsys.readouterr().err
    etc = os.path.join(str(out), "devices", "cam", "etc", "edge-agent")
    return load_config(os.path.join(etc, "cam.toml"))


def test_the_topologys_records_settings_reach_the_rendered_configs(tmp_path, capsys):
    """Rule: records_max_bytes, records_keep_files and records_flush_interval_s set in the
    topology's agent object are in the rendered config."""
    cfg = _render(tmp_path, capsys, {"records_max_bytes": 2000000, "records_keep_files": 3,
                                     "records_flush_interval_s": 2.0})
    assert (cfg.records_max_bytes, cfg.records_keep_files, cfg.records_flush_interval_s) == (
        2000000, 3, 2.0)


def test_the_testbeds_own_records_settings_are_not_rendered(tmp_path, capsys):
    """Rule: without them in the topology, a device gets the node config's defaults, not the
    local testbed's (0.2 s flushes, no rotation)."""
    cfg = _render(tmp_path, capsys, {})
    defaults = NodeConfig.__dataclass_fields__
    assert cfg.records_max_bytes == defaults["records_max_bytes"].default > 0
    assert cfg.records_flush_interval_s == defaults["records_flush_interval_s"].default
