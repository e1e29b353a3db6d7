"""Records and state under crashes and full disks, with real agent processes.

- A source killed with SIGKILL mid-run and started again: every task it created has exactly one
  final line in records.jsonl (those it never recorded become ``lost``, reason ``crash``).
- A full disk under a source and under a worker (a small tmpfs, root only): the agent keeps
  serving without exiting, counts what it could not write, and writes again once space returns.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from collections import Counter
from typing import Dict

import pytest

from agent.testbed.ports import free_ports

from .agent_cluster import Cluster, build_two_stage_bundle, completed, stage_flops
from .tmpfs import fill, tmpfs

TIMEOUT_S = 120.0
STATUS = re.compile(r"source s1 alive=.*created=\d+")
# the line of the first write that worked (the failure's line says "when it works again")
RECORDS_BACK = re.compile(r"writing records .* works again")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("tiny")))


def _one_line_each(recs):
    ids = Counter(r["id"] for r in recs)
    return [i for i, n in ids.items() if n > 1]


def _status_counts(cluster: Cluster, node: str = "s1") -> Dict[str, int]:
    """The task counts of the source's last status log line ({} before the first)."""
    for line in reversed(cluster.procs[node].log_lines(400, 1 << 18)):
        if STATUS.search(line):
            return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
    return {}


@pytest.mark.parametrize("rotate", [False, True], ids=["one-file", "rotating"])
def test_sigkilled_source_restarted_has_exactly_one_record_per_created_task(bundle, tmp_path,
                                                                            rotate):
    """Rule: kill -9 of a source holding unanswered tasks and unflushed records, then a restart:
    each task the first run created has exactly one final line (completed, or lost with reason
    crash), and the restarted source serves and records its own tasks as usual; the same when
    records.jsonl is rotated every few tasks (records_max_bytes) before and after the kill."""
    files = dict(records_flush_interval_s=0.3, records_max_bytes=2000, records_keep_files=100
                 ) if rotate else dict(records_flush_interval_s=3.0)
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "w1": 1, "w2": 2}, policy="fixed",
                result_timeout_s=30.0, **files)
    first = 60
    try:
        c.start("w1", emulate_capacity_flops=stage_flops(bundle, 1) * 10.0)  # 100 ms a task
        c.start("w2")
        c.start("s1", arrival_rate_tasks_s=40.0, max_tasks=first)
        c.wait_for(lambda: c.tasks("s1").get("created") == first
                   and c.tasks("s1").get("completed", 0) >= 5
                   and c.tasks("s1").get("pending", 0) >= 5, TIMEOUT_S,
                   "the source to have created all tasks, some answered and some pending")
        c.kill("s1")
        before = c.records("s1")
        restarted_wall = time.time()  # task ids are random: the runs are told apart by time
        c.start("s1", arrival_rate_tasks_s=10.0, max_tasks=20)
        c.wait_for(lambda: c.tasks("s1").get("created") == 20 and c.tasks("s1").get("pending") == 0,
                   TIMEOUT_S, "the restarted source to finish its 20 tasks")
        recovered = c.tasks("s1")["crash_recovered"]
    finally:
        c.stop_all()
    recs = c.records("s1")
    second = [r for r in recs if r["created_wall"] >= restarted_wall]
    crash = [r for r in recs if r["reason"] == "crash"]
    # every figure in each message: a failure on a loaded machine says which step went wrong
    seen = ("%d records (%d of the second run, %d crash, %d recovered), %d on disk at the kill; "
            "statuses %s" % (len(recs), len(second), len(crash), recovered, len(before),
                             sorted(Counter((r["status"], r["reason"]) for r in recs).items())))
    assert not _one_line_each(recs), "tasks recorded twice: %s" % _one_line_each(recs)
    assert len(recs) == first + 20, seen
    assert len(recs) - len(second) == first and len(second) == 20, seen
    assert crash and len(crash) == recovered and all(r["status"] == "lost" for r in crash), seen
    assert len(before) < first, seen  # the kill did leave tasks without a line on disk
    # its tasks are answered as usual: a few may find w1 still full of the first run's tasks
    # (at 10 tasks/s w1 runs at capacity) and be refused for overload, or, while w2 has not yet
    # heard the restarted source and so refuses its tasks (no route back to it), be refused
    # no_route: an answer either way, never a loss
    assert all(r["status"] == "completed" or (r["status"], r["reason"]) in (
        ("rejected", "overload"), ("rejected", "no_route")) for r in second), seen
    assert completed(second) >= len(second) // 2, seen
    rotated = os.path.join(str(tmp_path), "s1", "records.jsonl.2")
    assert os.path.exists(rotated) == rotate, seen


def test_full_disk_under_a_source_keeps_serving_counts_and_resumes(bundle, tmp_path):
    """Rule: with its state directory full, a source keeps creating and completing tasks (it
    does not exit), counts the records it could not write, and writes them all (no torn line,
    one per task) once space returns."""
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "w1": 1, "w2": 2}, policy="fixed")
    with tmpfs(os.path.join(str(tmp_path), "s1"), 256 * 1024) as disk:
        try:
            c.start("w1")
            c.start("w2")
            c.start("s1", arrival_rate_tasks_s=15.0, max_tasks=0)  # until stopped below
            c.wait_for(lambda: c.tasks("s1").get("completed", 0) >= 5, TIMEOUT_S,
                       "the source to serve")
            filler = fill(disk)
            at_fill = c.tasks("s1").get("completed", 0)
            c.wait_for(lambda: _status_counts(c).get("records_write_failed", 0) >= 2
                       and _status_counts(c).get("completed", 0) >= at_fill + 20, TIMEOUT_S,
                       "failed record writes while tasks keep completing")
            assert c.procs["s1"].poll() is None, "the source exited on a full disk"
            full = _status_counts(c)
            assert full["records_unwritten"] > 0
            os.unlink(filler)
            c.wait_for(lambda: RECORDS_BACK.search(open(c.logs["s1"], errors="replace").read()),
                       TIMEOUT_S, "the source to write records again")
        finally:
            c.stop_all()
        assert c.procs["s1"].returncode == 0
        counts = c.tasks("s1")  # the source stopped first: its answers in flight drained
        with open(os.path.join(disk, "records.jsonl"), "rb") as f:
            data = f.read()
        log = open(c.logs["s1"], errors="replace").read()
    assert data.endswith(b"\n")
    recs = [json.loads(line) for line in data.splitlines()]
    assert counts["lost"] == 0 and counts["records_unwritten"] == 0, counts
    assert len(recs) == counts["created"] and not _one_line_each(recs)
    assert log.count("cannot write records") <= 2, "logged more than once a minute"
    assert RECORDS_BACK.search(log)


def _scrape(port: int) -> str:
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        return r.read().decode()


def test_full_disk_under_a_worker_keeps_serving_counts_state_save_failures(bundle, tmp_path):
    """Rule: with its state directory full, a worker keeps serving (the source's tasks still
    complete), counts failed state saves (metrics ``edge_agent_write_failures_total{what=
    "state"}``, ``state_save_failed`` in stats.json), logs at most once a minute and saves
    again once space returns."""
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "w1": 1, "w2": 2}, policy="fixed",
                slot_length_s=0.5, rounds_per_slot=2, round_interval_s=0.05)
    port = free_ports(1)[0]
    with tmpfs(os.path.join(str(tmp_path), "w1"), 256 * 1024) as disk:
        try:
            c.start("w1", metrics_port=port)
            c.start("w2")
            c.start("s1", arrival_rate_tasks_s=10.0, max_tasks=0)  # until stopped below
            c.wait_for(lambda: os.path.exists(os.path.join(disk, "state.json"))
                       and c.tasks("s1").get("completed", 0) >= 5, TIMEOUT_S, "w1 to serve")
            os.unlink(os.path.join(disk, "state.json"))
            filler = fill(disk)
            at_fill = c.tasks("s1").get("completed", 0)
            failures = re.compile(r'edge_agent_write_failures_total\{node="w1",what="state"\} '
                                  r'([0-9.]+)')

            def state_failures() -> float:
                m = failures.search(_scrape(port))
                return float(m.group(1)) if m else 0.0

            c.wait_for(lambda: state_failures() >= 3
                       and c.tasks("s1").get("completed", 0) >= at_fill + 20, TIMEOUT_S,
                       "failed state saves while w1 keeps serving")
            assert c.procs["w1"].poll() is None, "the worker exited on a full disk"
            os.unlink(filler)
            c.wait_for(lambda: os.path.exists(os.path.join(disk, "state.json")), TIMEOUT_S,
                       "w1 to save its state again")
            c.wait_for(lambda: (c.stats("w1") or {}).get("counters", {}).get(
                "state_save_failed", 0) >= 3, TIMEOUT_S, "stats.json to show the failed saves")
        finally:
            c.stop_all()
        log = open(c.logs["w1"], errors="replace").read()
    assert c.procs["w1"].returncode == 0
    assert log.count("cannot write state") <= 2, "logged more than once a minute"
    assert "writing state" in log and "works again" in log
    counts = c.tasks("s1")  # the source stopped first: its answers in flight drained
    assert counts["completed"] == counts["created"] >= 25 and counts["lost"] == 0, counts


def test_poisoned_saved_state_is_dropped_and_the_worker_serves(bundle, tmp_path):
    """Rule: a DTO-EE state.json with Infinity in its routing row is not restored (a warning,
    the file moved aside); the worker routes with fresh state and every task completes."""
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "w1": 1, "w2": 2}, policy="dtoee",
                slot_length_s=1.0, rounds_per_slot=5, round_interval_s=0.05)
    state_dir = os.path.join(str(tmp_path), "w1")
    os.makedirs(state_dir)
    with open(os.path.join(state_dir, "state.json"), "w") as f:
        f.write('{"format_version": 1, "saved_unix_s": 1, "state": {"policy": "dtoee", '
                '"routing": {"w2": Infinity}, "thresholds": {"1": 0.8}}}')
    try:
        c.start("w2")
        c.start("w1")
        c.start("s1", arrival_rate_tasks_s=10.0, max_tasks=40)
        c.wait_for(lambda: c.finished("s1", 40), TIMEOUT_S, "all 40 tasks answered")
    finally:
        c.stop_all()
    log = open(c.logs["w1"], errors="replace").read()
    assert "is unusable" in log and "non-finite number Infinity" in log
    assert "restored policy state" not in log
    assert os.path.exists(os.path.join(state_dir, "state.json.corrupt"))
    assert c.tasks("s1")["completed"] == 40
