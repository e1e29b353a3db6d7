"""MDI-Exit in real agent processes on loopback (real ZeroMQ, real onnxruntime engines)."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from tests.integration.agent_cluster import Cluster, build_two_stage_bundle, stage_flops


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("tiny_mdi")))


def load_source(c, n, **source):
    """Start source ``s1`` with ``source`` settings; wait until its ``n`` tasks are settled."""
    c.start("s1", max_tasks=n, **source)
    c.wait_for(lambda: c.finished("s1", n), 120, "%d tasks settled at s1" % n)


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
        load_source(c, 60, arrival_rate_tasks_s=30.0)
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


def test_mdi_exit_two_nodes_holding_every_stage_keep_or_offload_and_lose_nothing(bundle,
                                                                                 tmp_path):
    """The paper's 2-node topology: n1 has the data and both stages, n2 both stages. n1 (slow)
    keeps a task's next stage when its input queue is empty (Alg. 1) and otherwise offloads it
    to n2 by Alg. 2; every task is answered."""
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "n1": 1, "n2": 1}, policy="mdi-exit",
                thresholds=(0.99, 1.0))

    def both(node):
        return dataclasses.replace(c.peer(node), last_stage=2)

    try:
        c.start("n1", last_stage=2, peers=(c.peer("s1"), both("n2")),
                emulate_capacity_flops=stage_flops(bundle, 1) * 40.0)  # 25 ms per stage-1 task
        c.start("n2", last_stage=2, peers=(c.peer("s1"), both("n1")))
        c.wait_for(lambda: c.alive_at("n1", ["n2"]), 60, "n1 sees n2")
        load_source(c, 80, arrival_rate_tasks_s=40.0, peers=(both("n1"),))
    finally:
        c.stop_all()
    tasks = c.tasks("s1")
    assert tasks["completed"] == 80 and tasks["lost"] == 0, tasks
    n1, n2 = c.stats("n1")["counters"], c.stats("n2")["counters"]
    assert n1.get("kept_local", 0) > 0 and n2.get("tasks_in", 0) > 0, (n1, n2)
    # D_nm is measured from n1's ACKed transfers to n2 (saved with the policy state)
    with open(os.path.join(str(tmp_path), "n1", "state.json"), encoding="utf-8") as f:
        measured = json.load(f)["state"]["transfer_delay_s"]
    assert measured.get("n2") and all(s > 0 for s in measured["n2"].values()), measured


def test_mdi_exit_source_admits_one_arrival_per_mu_and_records_the_rest_as_rejected(bundle,
                                                                                    tmp_path):
    """Alg. 3 in a real source: the camera keeps its 100 tasks/s, the source admits an arrival
    only when mu (0.5 s at the start, at least 0.5 * 0.8^k after k seconds of short queues) has
    passed since the last admitted one; the others are recorded as rejected, none is lost."""
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "w1": 1, "w2": 2}, policy="mdi-exit",
                policy_knobs={"admission_control": True, "initial_interarrival_s": 0.5},
                thresholds=(0.9, 1.0))
    try:
        c.start("w1")
        c.start("w2")
        c.wait_for(lambda: c.alive_at("w1", ["w2"]), 60, "w1 sees w2")
        load_source(c, 150, arrival_rate_tasks_s=100.0)
    finally:
        c.stop_all()
    tasks = c.tasks("s1")
    assert tasks["created"] == 150 and tasks["lost"] == 0, tasks
    assert tasks["completed"] + tasks["rejected"] == 150 and tasks["rejected"] > 100, tasks
    recs = sorted(c.records("s1"), key=lambda r: r["created_mono"])
    admitted = [r["created_mono"] for r in recs if r["status"] == "completed"]
    assert len(recs) == 150 and len(admitted) == tasks["completed"] >= 2
    span_s = admitted[-1] - admitted[0]
    assert all(b - a >= 0.5 * 0.8 ** (span_s + 1) for a, b in zip(admitted, admitted[1:]))
