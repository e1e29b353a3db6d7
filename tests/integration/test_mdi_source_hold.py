"""Under MDI-Exit (held tasks offered head first, Alg. 2), a worker's refusal about one
source's tasks holds back that source's tasks at its sender, not the other sources': the held
task of the cut-off source must not stall every later task of its stage (agents over ZeroMQ)."""

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
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("mdi-source-hold")))


def test_mdi_exit_tasks_held_for_a_cut_off_source_do_not_stall_the_other_sources_tasks(
        bundle, tmp_path):
    """Rule: under mdi-exit, stage-2 worker w2 cut off from source s1 (s1 killed while its
    tasks still queue at stage-1 worker w1) refuses s1's tasks for that source alone; w1 holds
    them, offered head first, and source s2's stage-2 tasks made after are still sent to w2 and
    complete. Held behind s1's head, they filled w1 and s2's tasks were rejected (overload)
    until s1's expired. w2 hears no heartbeat of s2 (its control address there leads nowhere),
    so s2 is no alive source of its own that would keep it from refusing s1's tasks."""
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "s2": 0, "w1": 1, "w2": 2}, policy="mdi-exit",
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
        since = time.time()  # s2's tasks made from here on meet s1's held tasks at w1
        # five of them completed (their final lines written), while w1 still has s1's tasks
        # refused (s1's tasks live 30 s: far longer than five of s2's take). How many of s2's
        # are refused for overload first depends on how fast a loaded machine lets w1 work off
        # s1's backlog: the rule is about the route, so the wait counts completions.
        c.wait_for(lambda: completed(c.made_since("s2", since)) >= 5
                   and c.counters("w1").get("refused_by_w2", 0) >= 10, TIMEOUT_S,
                   "five of s2's tasks made since then completed while w2 refuses s1's")
        w1 = c.counters("w1")
    finally:
        c.stop_all()
    recs = c.made_since("s2", since)
    seen = "s2's tasks since w2 refused: %s; w1 counters %s" % (
        sorted(Counter((r["status"], r["reason"]) for r in recs).items()),
        {k: v for k, v in w1.items() if k.startswith(("refused", "drop", "sent"))})
    assert completed(recs) >= 5, seen
    # w1 full of s1's tasks may refuse one for overload: an answer that more capacity helps
    assert all(r["status"] == "completed" or r["reason"] == "overload" for r in recs), seen
    assert w1.get("refused_no_route", 0) == 0, seen
