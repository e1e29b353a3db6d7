"""The configured neighbour silence, ``neighbour_timeout_rounds`` heartbeat periods, is computed
in one place, the node config's ``neighbour_silence_s``: the loop's
start-up grace and every neighbour's silence limit start from it (and with the limits, the wait
for a successor not heard yet: ``test_start_joining``)."""

from __future__ import annotations

import dataclasses

import pytest

from agent.node.build import build
from agent.testbed.local import node_configs
from agent.testbed.topology import parse_topology
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR

BUNDLE = load_bundle(DEMO_BUNDLE_DIR)


def _config(tmp_path, **over):
    """The real node config of worker w1 of a source -> w1 -> w2 chain, with ``over``."""
    topo = parse_topology({
        "sources": [{"id": "s1", "share": 1.0}],
        "workers": [{"id": "w1", "stage": 1, "last_stage": 2}, {"id": "w2", "stage": 3,
                                                                  "last_stage": 4}],
        "links": [{"from": "s1", "to": "w1"}, {"from": "w1", "to": "w2"}]})
    cfg = node_configs(topo, BUNDLE.path, "fixed", 1.0, 1.0, str(tmp_path))["w1"]
    return dataclasses.replace(cfg, **over)


@pytest.mark.parametrize("interval_s,rounds", [(0.5, 4), (1.5, 4), (0.25, 9)])
def test_the_loop_and_the_neighbour_limits_start_from_the_configured_silence(tmp_path,
                                                                             interval_s, rounds):
    """Rule: the configured silence is rounds x heartbeat interval; a built node's start-up
    grace is the larger of it and the configured start_grace_s, and a neighbour the config
    does not name is gone after exactly that silence."""
    cfg = _config(tmp_path, heartbeat_interval_s=interval_s, neighbour_timeout_rounds=rounds)
    assert cfg.neighbour_silence_s == pytest.approx(interval_s * rounds)
    built = build(cfg)
    try:
        node = built.node
        assert node._grace_s == max(cfg.start_grace_s, cfg.neighbour_silence_s)
        assert node._silence.base_s == cfg.neighbour_silence_s
        assert node._silence.limit_s("not-in-the-config") == cfg.neighbour_silence_s
    finally:
        built.close()
