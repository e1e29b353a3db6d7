"""A worker stopped with SIGTERM (``systemctl stop``/``restart``, a rolling upgrade) finishes the
tasks it took instead of abandoning them: real agent processes, ZeroMQ over loopback and
onnxruntime engines."""

from __future__ import annotations

import re

import pytest

from tests.integration.agent_cluster import Cluster, build_two_stage_bundle, stage_flops

# Each test offers its stopped worker more tasks than it serves until the test has stopped it,
# so that the worker still holds queued tasks at the stop however late a loaded machine lets
# the test see its queue, stop it or see its source gone; and each sets a result timeout well
# above the worker's full queue (``max_queue_tasks`` = 32 tasks times its service time), so that
# no task of that queue comes near its deadline: a task abandoned at the stop would be re-issued
# after this long, and one dropped at its deadline would count neither as run nor as source gone.
RESULT_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("tiny")))


def _drain_line(c: Cluster, node: str) -> str:
    with open(c.logs[node]) as f:
        lines = [line for line in f if "drained in" in line]
    assert len(lines) == 1, "one drain line expected in %s's log:\n%s" % (node, c.tail(node))
    return lines[0]


def test_a_worker_stopped_mid_run_finishes_its_queue_and_no_task_waits_for_a_reissue(
        bundle, tmp_path):
    """SIGTERM one of two stage-1 workers while it holds queued tasks: it runs them and hands
    their results on before it exits, so every task is answered on its first attempt (none
    waits ``result_timeout_s`` for its source to re-issue it), and its log says it abandoned
    nothing.

    The source makes tasks until the test stops it after the worker's stop, and the worker gets
    more than it serves (about 10 tasks/s of 20, at 4 tasks/s), so its queue only grows until
    the stop, whenever that comes."""
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "w1a": 1, "w1b": 1, "w2": 2}, policy="fixed",
                result_timeout_s=RESULT_TIMEOUT_S, max_attempts=4)
    try:
        c.start("w1a", emulate_capacity_flops=stage_flops(bundle, 1) * 4.0)  # 250 ms a task
        c.start("w1b")
        c.start("w2")
        # both stage-1 workers serve before the first task: one alone would fill and refuse,
        # and the source would reject tasks as overload
        c.wait_for(lambda: c.alive_at("w1a", ["w2"]) and c.alive_at("w1b", ["w2"]), 60,
                   "both stage-1 workers to know w2")
        c.start("s1", arrival_rate_tasks_s=20.0, max_tasks=0)  # 0: until it is stopped
        c.wait_for(lambda: (c.stats("w1a") or {}).get("input_queue", 0) >= 3
                   and c.alive_at("s1", ["w1a", "w1b"]), 60,
                   "w1a to hold queued tasks, with both stage-1 workers known to the source")
        c.agents.stop(["w1a"], timeout_s=60.0)
        c.agents.stop(["s1"], timeout_s=60.0)  # it drains: answers what it has made
    finally:
        c.stop_all()
    assert c.procs["w1a"].returncode == 0 and c.procs["s1"].returncode == 0
    recs = c.records("s1")
    assert recs and len(recs) == c.tasks("s1")["created"], (len(recs), c.tasks("s1"))
    assert all(r["status"] == "completed" for r in recs), \
        [r for r in recs if r["status"] != "completed"]
    assert [r for r in recs if r["attempts"] > 1] == []  # none was re-issued
    line = _drain_line(c, "w1a")
    assert re.search(r"of \d+ queued", line) and "abandoned 0 queued, 0 unACKed" in line, line
    assert int(re.search(r"of (\d+) queued", line).group(1)) >= 1, line


def test_a_worker_stopped_after_its_source_drops_that_sources_queued_tasks(bundle, tmp_path):
    """The testbed stops the sources first, then the workers: a worker stopped after its only
    source has gone does not run the tasks queued for it (nobody takes their results) nor wait
    for ACKs from it; it drops them (``drop_source_gone``) and stops."""
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "w1a": 1, "w2": 2}, policy="fixed",
                result_timeout_s=RESULT_TIMEOUT_S, max_attempts=4)
    try:
        # 500 ms a task: its full queue of 32 takes 16 s to run, far longer than the kill, the
        # wait to see its source gone and the stop can take
        c.start("w1a", emulate_capacity_flops=stage_flops(bundle, 1) * 2.0)
        c.start("w2")
        c.start("s1", arrival_rate_tasks_s=40.0, max_tasks=400)
        c.wait_for(lambda: (c.stats("w1a") or {}).get("input_queue", 0) >= 24, 60,
                   "w1a to hold more queued tasks than its engine takes at a time")
        c.kill("s1")
        c.wait_for(lambda: "s1" not in (c.stats("w1a") or {}).get("alive", ["s1"]), 60,
                   "w1a to see its source gone")
        c.agents.stop(["w1a"], timeout_s=60.0)
    finally:
        c.stop_all()
    assert c.procs["w1a"].returncode == 0
    line = _drain_line(c, "w1a")
    gone = int(re.search(r"source gone (\d+)", line).group(1))
    assert gone >= 1 and "abandoned 0 queued" in line, line
    stats = c.stats("w1a")
    assert stats["counters"].get("drop_source_gone") == gone
