"""A node missing from its peers' configs says so (real agents on loopback).

``w2x`` lists its peers, so it hears them; theirs do not list it, so none connects to its data
socket and no task could reach it. It logs one WARNING naming its node id and data address
(``agent.node.reach``); ``w2``, listed by its predecessor, logs none.
"""

from __future__ import annotations

import time

import pytest

from tests.integration.agent_cluster import Cluster, build_two_stage_bundle

WARNING = "no peer has connected to this node's data socket"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("tiny")))


def test_a_node_its_peers_do_not_list_warns_once_and_a_listed_one_does_not(bundle, tmp_path):
    """Peers heard, none connected after the grace: one WARNING in the unlisted node's log
    naming its id and data address; the listed node of the same stage has none."""
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "w1": 1, "w2": 2, "w2x": 2}, policy="fixed")
    try:
        # a short start-up grace (warning after 2 x 1 s of peers heard, not 2 x 5 s): still
        # four times w1's longest reconnect interval (0.5 s) for it to connect to w2
        c.start("w1", peers=tuple(p for p in c.config("w1").peers if p.id != "w2x"),
                start_grace_s=1.0)
        c.start("w2", start_grace_s=1.0)
        c.start("w2x", start_grace_s=1.0)
        c.wait_for(lambda: WARNING in c.tail("w2x", 200), 60, "w2x's warning")
        time.sleep(1.0)  # a status interval or two: a second line would show by now
        lines = [l for l in c.tail("w2x", 400).splitlines() if WARNING in l]
        assert len(lines) == 1, lines
        assert "'w2x'" in lines[0] and c.config("w2x").data_bind in lines[0]
        assert "w1" in lines[0]
        assert WARNING not in c.tail("w2", 400)
    finally:
        c.stop_all()
