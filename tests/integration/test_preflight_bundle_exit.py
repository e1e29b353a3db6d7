"""``python -m agent run`` refuses, with one error line and EXIT_CONFIG (78, no restart loop
under systemd), a node config with a peer at a stage the bundle lacks and a source whose replay
labels lie outside the classes of the bundle's heads: real config files, the real demo bundle,
a real process."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np

from agent.config.node import dump_config
from agent.errors import EXIT_CONFIG
from agent.testbed.local import node_configs
from agent.testbed.topology import parse_topology
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR, REPLAY_PATH

from .agent_cluster import REPO

WAIT_S = 300  # ends as soon as the agent exits: only a hung start-up would reach it


def _configs(run_dir):
    topo = parse_topology({
        "sources": [{"id": "s1", "share": 1.0}],
        "workers": [{"id": "w1", "stage": 1}, {"id": "w2", "stage": 2, "last_stage": 4}],
        "links": [{"from": "s1", "to": "w1"}, {"from": "w1", "to": "w2"}]})
    return node_configs(topo, load_bundle(DEMO_BUNDLE_DIR).path, "fixed", 1.0, 1.0, str(run_dir))


def _run(tmp_path, cfg):
    path = tmp_path / ("%s.toml" % cfg.node_id)
    path.write_text(dump_config(cfg))
    proc = subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(path)],
                          cwd=REPO, capture_output=True, text=True, timeout=WAIT_S)
    lines = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    return proc.returncode, lines


def test_run_exits_78_on_a_peer_at_a_stage_the_bundle_lacks(tmp_path):
    """Rule: a worker config naming a peer at stage 7 of the 4-stage demo bundle ends `run`
    with EXIT_CONFIG and one line naming the peer and the bundle's stages."""
    cfg = _configs(tmp_path)["w1"]
    extra = dataclasses.replace(cfg.peers[-1], id="w7", stage=7, last_stage=0)
    rc, lines = _run(tmp_path, dataclasses.replace(cfg, peers=tuple(cfg.peers) + (extra,)))
    assert rc == EXIT_CONFIG and len(lines) == 1, (rc, lines)
    assert "peer w7 serves stage 7, but the bundle (%s) has stages 1..4" % DEMO_BUNDLE_DIR \
        in lines[0]


def test_run_exits_78_on_replay_labels_outside_the_bundles_classes(tmp_path):
    """Rule: a source whose replay set holds labels 10..13 for the demo bundle's 10 classes
    ends `run` with EXIT_CONFIG and one line naming replay_path, the count and the range."""
    with np.load(REPLAY_PATH) as data:
        x, y = data["x"][:20], np.arange(20) % 14
    replay = tmp_path / "replay.npz"
    np.savez(str(replay), x=x, y=y)
    cfg = dataclasses.replace(_configs(tmp_path)["s1"], replay_path=str(replay))
    rc, lines = _run(tmp_path, cfg)
    assert rc == EXIT_CONFIG and len(lines) == 1, (rc, lines)
    assert ("replay_path: %s: 4 of 20 labels lie outside 0..9, the 10 classes of the bundle's "
            "heads (labels found: 0..13)" % replay) in lines[0]
