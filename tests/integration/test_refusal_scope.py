"""A worker's refusal about one source's tasks holds it off at its sender for that source's
tasks alone: the other sources' tasks keep their route (agents over ZeroMQ)."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter

import pytest

from agent.testbed.ports import free_ports

from .agent_cluster import Cluster, build_two_stage_bundle, completed, stage_flops

TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("refusal-scope")))


def test_a_worker_cut_off_from_one_source_leaves_the_other_sources_tasks_their_route(
        bundle, tmp_path):
    """Rule: a stage-2 worker cut off from source s1 (s1 killed while its tasks still queue at
    stage 1; results to it held undelivered) refuses s1's tasks for that source alone: stage-1
    worker w1 keeps sending it source s2's tasks, which complete; none of s2's is rejected
    no_route (w1 held w2 off for every task and refused s2's for want of a stage 2). w2 hears
    no heartbeat of s2 (its control address there leads nowhere), so s2 is no alive source of
    its own that would keep it from refusing s1's tasks at all."""
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "s2": 0, "w1": 1, "w2": 2}, policy="fixed",
                result_timeout_s=30.0)
    nowhere = "tcp://127.0.0.1:%d" % free_ports(1)[0]
    peers = tuple(dataclasses.replace(p, control_address=nowhere) if p.id == "s2" else p
                  for p in c.config("w2").peers)
    try:
        c.start("w1", emulate_capacity_flops=stage_flops(bundle, 1) * 10.0)  # 100 ms a task
        c.start("w2", peers=peers)
        c.start("s2", arrival_rate_tasks_s=3.0, max_tasks=0)  # until stopped below
        c.wait_for(lambda: c.tasks("s2").get("completed", 0) >= 3, TIMEOUT_S, "s2 to serve")
        c.start("s1", arrival_rate_tasks_s=40.0, max_tasks=60)
        c.wait_for(lambda: c.tasks("s1").get("created") == 60
                   and (c.stats("w1") or {}).get("input_queue", 0) >= 10, TIMEOUT_S,
                   "s1 to have created its tasks, some queued at w1")
        c.kill("s1")
        c.wait_for(lambda: c.counters("w2").get("refused_no_route", 0) > 0, TIMEOUT_S,
                   "w2 to refuse s1's tasks (no route back to s1)")
        since = time.time()  # s2's tasks made from here on meet w2's refusals at w1
        # five of them completed (their final lines written; stats.json's counts lag a status
        # interval, so a count from it took tasks made before ``since``). How many of s2's are
        # refused for overload first depends on how fast w1 works off s1's backlog, which a
        # loaded machine slows: the rule is about the route, so the wait counts completions.
        c.wait_for(lambda: completed(c.made_since("s2", since)) >= 5
                   and c.counters("w1").get("refused_by_w2", 0) >= 10, TIMEOUT_S,
                   "five of s2's tasks made since then completed while w2 refuses s1's")
        w1 = c.counters("w1")
    finally:
        c.stop_all()
    recs = c.made_since("s2", since)
    seen = "s2's tasks since w2 refused: %s; w1 counters %s" % (
        sorted(Counter((r["status"], r["reason"]) for r in recs).items()),
        {k: v for k, v in w1.items() if k.startswith("refused")})
    assert completed(recs) >= 5, seen
    # w1 full of s1's tasks may refuse one for overload: an answer that more capacity helps
    assert all(r["status"] == "completed" or r["reason"] == "overload" for r in recs), seen
    assert w1.get("refused_no_route", 0) == 0, seen
