"""A task whose deadline passes while a stage has no live worker is re-issued, not lost.

Real agent processes on loopback (source s1, w1 at stage 1, w2 at stage 2, CF routing): w2 is
stopped while tasks flow (the tasks it had, and those w1 sends it meanwhile, stay in its
sockets), then killed, and started again only after those tasks' result deadline. At that
deadline the fleet has no route to stage 2; a restart of the only worker of a stage (a service
restart, an upgrade) looks the same to the source as a stage gone for good, so the source
re-issues the task while it has attempts left (the re-issue waits for the route) instead of
recording it lost; its last attempt's deadline with no route is recorded ``lost`` with reason
``no_route``.
"""

from __future__ import annotations

import collections
import os
import signal
import time

import pytest

from tests.integration.agent_cluster import Cluster, build_two_stage_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("tiny")))


def test_tasks_whose_deadline_falls_in_a_stage_restart_complete_after_it(bundle, tmp_path):
    """Every task made before w2's outage completes once w2 is back (none lost), and the
    source re-issued at least one of them: their first deadline passed while no stage-2 worker
    was alive (with the rule before, each such task was recorded lost, reason no_route)."""
    result_timeout_s = 3.0
    # 8 attempts of 3 s: a task made just before the cut has 24 s for w2's restart (about 4.5 s
    # after the cut, then its start-up: onnxruntime and its engine, seconds on a loaded machine)
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "w1": 1, "w2": 2}, policy="cf",
                result_timeout_s=result_timeout_s, max_attempts=8)
    try:
        c.start("w1")
        c.start("w2")
        c.start("s1", arrival_rate_tasks_s=10.0)
        c.wait_for(lambda: c.tasks("s1").get("completed", 0) >= 10, 60, "10 tasks completed")
        os.kill(c.procs["w2"].pid, signal.SIGSTOP)  # what it holds and gets now stays with it
        time.sleep(0.6)
        cut = time.time()
        c.kill("w2")
        c.wait_for(lambda: c.counters("s1").get("no_route", 0) > 0, 30,
                   "the source to find no route to stage 2")
        # w2 comes back only after every task made before the cut has passed its first deadline
        time.sleep(result_timeout_s + 0.5)
        back = time.time()
        c.start("w2")
        c.wait_for(lambda: any(r["status"] == "completed" for r in c.made_since("s1", back)),
                   60, "a task made after w2's start to complete")
    finally:
        c.stop_all()  # the source drains first: every task it made has its record then
    before = [r for r in c.records("s1") if r["created_wall"] < cut]
    fates = collections.Counter((r["status"], r["reason"]) for r in before)
    assert fates == {("completed", None): len(before)}, fates
    assert c.counters("s1").get("reissued", 0) > 0, c.counters("s1")
    assert max(r["attempts"] for r in before) >= 2
