"""A real stage-1 worker node for unit tests (not a test module): built by
``agent.node.build.build`` from a testbed config of a four-stage chain (s1 -> w1a -> w2a ->
w3a -> w4a), its sockets never bound; tests hand its loop messages as its transport would."""

from __future__ import annotations

import dataclasses

from agent.node.build import build
from agent.testbed.local import node_configs
from agent.testbed.topology import parse_topology
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR

CHAIN = ["w1a", "w2a", "w3a", "w4a"]


def built_worker(run_dir: str, node: str = "w1a", **over):
    """The ``BuiltNode`` of ``node`` (its config's fields ``over`` replaced); the caller closes
    it."""
    topo = parse_topology({
        "sources": [{"id": "s1", "share": 1.0}],
        "workers": [{"id": w, "stage": h} for h, w in enumerate(CHAIN, start=1)],
        "links": [{"from": a, "to": b} for a, b in zip(["s1"] + CHAIN, CHAIN)]})
    cfg = node_configs(topo, load_bundle(DEMO_BUNDLE_DIR).path, "fixed", 1.0, 1.0,
                       run_dir)[node]
    return build(dataclasses.replace(cfg, **over))
