"""A worker with ``engine_batch_max`` runs waiting tasks of its stage in one engine call, and
every task still completes.

Real agent processes on loopback (source s1, w1 at stage 1, w2 at stage 2, CF routing), the
tiny two-stage bundle (its inputs take any batch size). w1 has ``engine_batch_max`` 8 and is
confined to one core, so it runs its engine on the loop's thread after each poll
(``worker.INLINE_MAX_S``); it is stopped (SIGSTOP) for half a second while the source sends, so
on SIGCONT a burst of TASKs waits in its socket and reaches the engine together.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.integration.agent_cluster import Cluster, build_two_stage_bundle, completed


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("tiny")))


def _pin(pid: int, core: int) -> None:
    for tid in os.listdir("/proc/%d/task" % pid):
        os.sched_setaffinity(int(tid), {core})


def test_a_burst_is_run_in_batches_and_every_task_completes(bundle, tmp_path):
    """w1 counts tasks run in one call with others (``engine_batched`` > 0) after a burst, and
    every task the source made completes (none lost, none rejected)."""
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "w1": 1, "w2": 2}, policy="cf",
                result_timeout_s=20.0)
    try:
        c.start("w1", engine_batch_max=8, max_queue_tasks=400)
        c.start("w2", engine_batch_max=8, max_queue_tasks=400)
        c.wait_for(lambda: c.stats("w1") is not None, 60, "w1 to start")
        _pin(c.procs["w1"].pid, min(os.sched_getaffinity(0)))
        time.sleep(1.5)  # w1 reads its affinity again within a second (AFFINITY_CHECK_S)
        # queues long enough for the burst: none of it is refused as overload
        c.start("s1", arrival_rate_tasks_s=100.0, max_tasks=150, max_queue_tasks=400)
        c.wait_for(lambda: c.tasks("s1").get("completed", 0) >= 10, 60, "10 tasks completed")
        os.kill(c.procs["w1"].pid, signal.SIGSTOP)  # what the source sends now waits for it
        time.sleep(0.5)
        os.kill(c.procs["w1"].pid, signal.SIGCONT)
        c.wait_for(lambda: c.tasks("s1").get("created", 0) >= 150, 60, "150 tasks created")
    finally:
        c.stop_all()  # the source drains first: every task it made has its record then
    records = c.records("s1")
    assert len(records) == 150 and completed(records) == 150, c.tasks("s1")
    assert c.counters("w1").get("engine_batched", 0) > 0, c.counters("w1")
