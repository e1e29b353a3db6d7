"""Start-up checks of a node config and its replay set against the bundle
(``agent.node.preflight.check_against_bundle``), on real config objects, the real demo bundle
and real .npz files: a peer at a stage the bundle lacks, or replay labels outside the classes
of the bundle's heads, is refused in one line before anything is loaded."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from agent.errors import UsageError
from agent.node.book import ReplaySet
from agent.node.preflight import preflight
from agent.testbed.local import node_configs
from agent.testbed.topology import parse_topology
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR, REPLAY_PATH


def _configs(run_dir):
    topo = parse_topology({
        "sources": [{"id": "s1", "share": 1.0}],
        "workers": [{"id": "w%d" % h, "stage": h} for h in range(1, 5)],
        "links": [{"from": a, "to": b} for a, b in
                  zip(["s1", "w1", "w2", "w3"], ["w1", "w2", "w3", "w4"])]})
    return node_configs(topo, load_bundle(DEMO_BUNDLE_DIR).path, "fixed", 1.0, 1.0, str(run_dir))


def _with_peer(cfg, **change):
    """``cfg`` with one more peer: a copy of its first one, ``change``d."""
    extra = dataclasses.replace(cfg.peers[0], id="w7", **change)
    return dataclasses.replace(cfg, peers=tuple(cfg.peers) + (extra,))


def _replay(tmp_path, y):
    """A real replay set of len(y) demo images and the labels ``y``."""
    with np.load(REPLAY_PATH) as data:
        x = data["x"][:len(y)]
    path = str(tmp_path / "replay.npz")
    np.savez(path, x=x, y=np.asarray(y))
    return path


def test_a_peer_at_a_stage_past_the_bundles_last_is_refused_at_preflight(tmp_path):
    """Rule: a [[peers]] entry at stage 7 of the 4-stage demo bundle is refused at preflight,
    one line naming the peer's index, id, stage, the bundle's stages and the fix."""
    cfg = _with_peer(_configs(tmp_path)["w1"], stage=7, last_stage=0)
    with pytest.raises(UsageError) as info:
        preflight(cfg)
    line = str(info.value)
    assert "\n" not in line
    assert line.startswith("peers[%d].stage: peer w7 serves stage 7, but the bundle (%s) has "
                           "stages 1..4; give it a stage in 1..4 (0: a source), or remove the "
                           "peer" % (len(cfg.peers) - 1, DEMO_BUNDLE_DIR)), line


def test_a_peer_whose_last_stage_is_past_the_bundles_last_is_refused_naming_last_stage(
        tmp_path):
    """Rule: a peer holding stages 3..5 of a 4-stage bundle is refused at its last_stage."""
    cfg = _with_peer(_configs(tmp_path)["s1"], stage=3, last_stage=5)
    with pytest.raises(UsageError, match=r"^peers\[\d+\]\.last_stage: peer w7 serves stage "
                                         r"3\.\.5, but the bundle .* has stages 1\.\.4"):
        preflight(cfg)


def test_peers_within_the_bundles_stages_pass_preflight(tmp_path):
    """Rule: every node of a topology whose peers serve stages 0..4 passes preflight."""
    for cfg in _configs(tmp_path).values():
        preflight(cfg)


def test_replay_labels_outside_the_bundles_classes_are_refused_at_preflight(tmp_path):
    """Rule: replay labels outside 0..classes-1 (the demo bundle's heads: 10 classes) are
    refused at preflight in one line naming replay_path, the file, how many labels are out of
    how many, the range found and the classes expected; the replay set's own reader accepted
    the same file (every accuracy figure would have been wrong)."""
    y = np.arange(40) % 10
    y[::4] += 10  # 10 of 40 labels at 10..18
    path = _replay(tmp_path, y)
    ReplaySet(path, (1, 1, 28, 28), "float32")  # read without the bundle: no class count
    cfg = dataclasses.replace(_configs(tmp_path)["s1"], replay_path=path)
    with pytest.raises(UsageError) as info:
        preflight(cfg)
    assert str(info.value) == (
        "replay_path: %s: 10 of 40 labels lie outside 0..9, the 10 classes of the bundle's "
        "heads (labels found: 0..18); give labels 0..9 (-1: none), or the bundle the set was "
        "made for" % path)


def test_replay_labels_within_the_classes_or_without_a_label_pass_preflight(tmp_path):
    """Rule: labels 0..9 and -1 (no label) pass, as does the demo replay set (the default)."""
    cfg = _configs(tmp_path)["s1"]
    preflight(dataclasses.replace(cfg, replay_path=_replay(tmp_path, [-1, 0, 9, 3])))
    preflight(dataclasses.replace(cfg, replay_path=""))


def test_a_client_sources_replay_labels_are_not_checked(tmp_path):
    """Rule: a source with arrival = "client" reads its replay set only for the input's shape
    and scale (its tasks carry no label), so labels outside the classes do not stop it: a
    few-class model's client source with the demo set (or none: the demo set) starts."""
    y = np.arange(40) % 10
    y[::4] += 10
    cfg = dataclasses.replace(_configs(tmp_path)["s1"], arrival="client",
                              client_bind="ipc://%s" % (tmp_path / "client.sock"),
                              replay_path=_replay(tmp_path, y))
    preflight(cfg)
    with pytest.raises(UsageError):  # the same set under Poisson arrivals is refused
        preflight(dataclasses.replace(cfg, arrival="poisson", client_bind=""))


def test_a_worker_does_not_read_a_replay_set(tmp_path):
    """Rule: only a source's replay set is read; a worker names none (its labels are unused)."""
    cfg = _configs(tmp_path)["w2"]
    assert cfg.role == "worker" and not cfg.replay_path
    preflight(cfg)


def test_a_bundle_that_does_not_load_is_left_to_load_bundle(tmp_path):
    """Rule: preflight does not report a broken manifest itself: the next start-up step,
    load_bundle, names its fault (the peers are then checked by nobody earlier)."""
    cfg = _with_peer(_configs(tmp_path)["w1"], stage=7, last_stage=0)
    empty = tmp_path / "nobundle"
    empty.mkdir()
    preflight(dataclasses.replace(cfg, bundle=str(empty)))
    assert not os.listdir(str(empty))


def test_a_replay_set_not_shaped_for_stage_1_is_named_by_its_reader_not_by_its_labels(
        tmp_path):
    """Rule: a replay set whose rows are not stage 1's input (8x8 images for the demo's 28x28)
    is refused with the replay set's own shape line, also when its labels are out of range:
    the labels are checked only for a set the stage-1 engine could be fed."""
    path = str(tmp_path / "small.npz")
    np.savez(path, x=np.zeros((4, 1, 8, 8), np.float32), y=np.array([0, 1, 2, 30]))
    cfg = dataclasses.replace(_configs(tmp_path)["s1"], replay_path=path)
    preflight(cfg)  # not refused here: its reader (below) names what is wrong
    with pytest.raises(UsageError, match="stage 1 needs x"):
        ReplaySet(path, (1, 1, 28, 28), "float32")
