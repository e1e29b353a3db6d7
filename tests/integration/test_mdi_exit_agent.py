"""MDI-Exit in real agent processes on loopback (real ZeroMQ, real onnxruntime engines)."""

from __future__ import annotations

import pytest

from tests.integration.agent_cluster import Cluster, build_tiny_bundle, stage_flops


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_tiny_bundle(str(tmp_path_factory.mktemp("tiny_mdi")))


def test_mdi_exit_agents_answer_every_task_and_offload_to_both_workers(bundle, tmp_path):
    """Source -> 2 stage-1 workers -> 1 stage-2 worker under ``mdi-exit`` with threshold
    adaptation: tasks held while no worker's queue is shorter are sent later, none is lost, and
    both stage-1 workers get work (one emulated 4x slower)."""
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "w1a": 1, "w1b": 1, "w2": 2}, policy="mdi-exit",
                policy_knobs={"threshold_adaptation": True, "threshold": 0.9},
                thresholds=(0.9, 1.0))
    try:
        c.start("w1a", emulate_capacity_flops=stage_flops(bundle, 1) * 25.0)  # 40 ms per task
        c.start("w1b", emulate_capacity_flops=stage_flops(bundle, 1) * 100.0)  # 10 ms per task
        c.start("w2")
        c.wait_for(lambda: c.alive_at("w1a", ["w2"]) and c.alive_at("w1b", ["w2"]), 60,
                   "workers see w2")
        c.start("s1", arrival_rate_tasks_s=30.0, max_tasks=60)
        c.wait_for(lambda: c.finished("s1", 60), 120, "60 tasks answered")
    finally:
        c.stop_all()
    tasks = c.tasks("s1")
    assert tasks["completed"] == 60 and tasks["lost"] == 0, tasks
    recs = c.records("s1")
    assert len({r["id"] for r in recs}) == 60 and all(r["status"] == "completed" for r in recs)
    served = {w: c.stats(w)["counters"].get("tasks_in", 0) for w in ("w1a", "w1b")}
    assert c.stats("s1")["policy"] == "mdi-exit"
    assert served["w1a"] > 0 and served["w1b"] > 0 and sum(served.values()) >= 60, served
    assert all(r["worker"] in ("w1a", "w1b", "w2") for r in recs)
