"""Data-path liveness with real agents: a stage worker frozen for 10 s (SIGSTOP) is seen gone,
and once it resumes (SIGCONT) tasks flow through it again within seconds; nothing is lost."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.integration.agent_cluster import Cluster, build_two_stage_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("tiny")))


def test_tasks_flow_again_soon_after_a_frozen_worker_resumes(bundle, tmp_path):
    """Rule: the only stage-1 worker frozen 10 s, then resumed: the source completes tasks
    again within 5 s of SIGCONT (2 s or less on a quiet machine, see docs/dtoee.md) and no
    task is lost."""
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "w1": 1, "w2": 2}, policy="fixed",
                result_timeout_s=30.0, status_interval_s=0.2)
    try:
        c.start("w1")
        c.start("w2")
        c.start("s1", arrival_rate_tasks_s=10.0, max_tasks=250)
        c.wait_for(lambda: c.tasks("s1").get("completed", 0) >= 20, 90, "tasks flowing")
        pid = c.procs["w1"].pid
        os.kill(pid, signal.SIGSTOP)
        try:
            c.wait_for(lambda: "w1" not in (c.stats("s1") or {}).get("alive", ["w1"]), 30,
                       "the source to see w1 gone")
            time.sleep(10.0)  # frozen 10 s in all
            done = c.tasks("s1").get("completed", 0)
        finally:
            os.kill(pid, signal.SIGCONT)
        resumed = time.monotonic()
        c.wait_for(lambda: c.tasks("s1").get("completed", 0) > done, 30,
                   "tasks completed after w1 resumed")
        back_s = time.monotonic() - resumed
        c.wait_for(lambda: c.finished("s1", 250), 120, "all tasks answered")
    finally:
        c.stop_all()
    print("first completion %.2f s after SIGCONT" % back_s)
    assert back_s <= 5.0
    assert c.tasks("s1")["lost"] == 0
