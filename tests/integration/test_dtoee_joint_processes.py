"""DTO-EE's stage-joint step (``step = "joint"``) among agents as real processes on loopback."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.integration.agent_cluster import Cluster, build_two_stage_bundle, stage_flops

STAGES = {"s1": 0, "s2": 0, "w1a": 1, "w1b": 1, "w2": 2}
SLOT_S = 1.0
MISSING = "sent this node no stage report"


def _missing_after_start(path):
    """(slots warned of a missing stage report, slots run) counted from one slot after the
    node's last neighbour came up: before that a sibling may not have started yet."""
    def at(line):
        return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()

    with open(path) as f:
        lines = [ln for ln in f.read().splitlines() if ln[:2] == "20"]
    up = max(at(ln) for ln in lines if "is alive" in ln) + SLOT_S
    warned = sum(1 for ln in lines if MISSING in ln and at(ln) > up)
    return warned, int((at(lines[-1]) - up) / SLOT_S)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("tiny")))


def test_joint_step_among_real_agents_routes_both_sources_to_the_faster_worker(bundle,
                                                                            tmp_path):
    """Rule: two sources and two stage-1 workers, each listing the others of its stage as
    peers, exchange stage reports over ZeroMQ every round; both sources end up sending most
    tasks to the 10x faster worker, reports do not go missing once all agents are up (a node
    logs a slot whose round went on without a sibling's report; a late one on a loaded machine
    may, but not most slots), and no task is lost while the routing changes."""
    c = Cluster(str(tmp_path), bundle, STAGES, policy="dtoee", slot_length_s=SLOT_S,
                rounds_per_slot=8, round_interval_s=0.1, policy_knobs={"step": "joint"})

    def start(node, **over):
        same = tuple(c.peer(m) for m, h in STAGES.items() if h == STAGES[node] and m != node)
        c.start(node, peers=c.config(node).peers + same, **over)

    try:
        start("w1a", emulate_capacity_flops=stage_flops(bundle, 1) * 20.0)  # 50 ms per task
        start("w1b", emulate_capacity_flops=stage_flops(bundle, 1) * 200.0)  # 5 ms per task
        start("w2")
        start("s1", arrival_rate_tasks_s=8.0, max_tasks=40)
        start("s2", arrival_rate_tasks_s=8.0, max_tasks=40)
        c.wait_for(lambda: c.finished("s1", 40) and c.finished("s2", 40), 120,
                   "40 tasks answered at each source")
    finally:
        c.stop_all()
    for s in ("s1", "s2"):
        routing = c.stats(s)["routing"]  # final stats, written at shutdown
        assert routing["w1b"] > routing["w1a"], (s, routing)
        assert c.tasks(s)["completed"] == 40 and c.tasks(s)["lost"] == 0
        assert c.stats(s)["counters"].get("drop_bad_payload", 0) == 0
    for node, path in c.logs.items():
        warned, slots = _missing_after_start(path)
        assert warned <= slots // 2, (node, warned, slots)
