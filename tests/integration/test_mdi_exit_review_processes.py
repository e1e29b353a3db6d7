"""MDI-Exit's Alg. 3 in a real source process (real ZeroMQ, real records and state files) while
the stage-1 node it feeds is not there."""

from __future__ import annotations

import json
import os

import pytest

from tests.integration.agent_cluster import Cluster, build_two_stage_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("tiny_mdi_review")))


def test_mdi_exit_source_keeps_mu_while_the_node_it_feeds_is_gone(bundle, tmp_path):
    """Rule: Alg. 3 adapts mu from the queues of the node the source feeds; a source whose
    stage-1 node is not alive (here never started) has no such queues, so its mu stays at
    ``initial_interarrival_s`` however many adaptation periods pass (it fell by alpha every
    period, towards 1 ms, as if the queues were empty). Every arrival still has its record."""
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "w1": 1}, policy="mdi-exit",
                policy_knobs={"admission_control": True, "initial_interarrival_s": 0.5,
                              "adapt_interval_s": 0.05},
                thresholds=(0.9, 1.0))
    try:
        c.start("s1", max_tasks=150, arrival_rate_tasks_s=100.0)
        c.wait_for(lambda: c.finished("s1", 150), 120, "150 tasks settled at s1")
    finally:
        c.stop_all()
    recs = c.records("s1")
    # each arrival has one record: refused by Alg. 3, or admitted and then lost (no route)
    assert len({r["id"] for r in recs}) == 150, len(recs)
    assert all(r["status"] in ("rejected", "lost") for r in recs), \
        sorted({(r["status"], r["reason"]) for r in recs})
    with open(os.path.join(str(tmp_path), "s1", "state.json"), encoding="utf-8") as f:
        state = json.load(f)["state"]
    assert state["interarrival_s"] == 0.5, state
