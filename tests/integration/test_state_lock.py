"""One agent per state_dir, with real agent processes on loopback.

A second ``run`` of a running source's config, or of another node's config that names the same
state_dir, is refused at once (exit 78, one line naming the state_dir and the running agent's
pid and node id) before it reads anything there: the running source's tasks in flight are not
recorded as lost by it, so every task keeps exactly one final record. ``doctor --config`` of
the running node warns of the lock; a SIGKILLed source leaves its state_dir to its restart.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections import Counter

import pytest

from agent.config.node import dump_config
from agent.errors import EXIT_CONFIG
from agent.ops.doctor import WARN
from agent.ops.doctor_node import check_node
from agent.testbed.ports import free_ports

from .agent_cluster import REPO, Cluster, build_two_stage_bundle, stage_flops

TIMEOUT_S = 120.0
REFUSED_S = 60.0  # a refused start is seconds; a loaded 2-core machine may take many


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("tiny")))


def _run(path: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", "run", "--config", path], cwd=REPO,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=REFUSED_S)


def _error_line(done: subprocess.CompletedProcess) -> str:
    lines = [x for x in done.stderr.splitlines() if "error:" in x]
    assert done.returncode == EXIT_CONFIG and len(lines) == 1, done.stderr[-3000:]
    return lines[0]


def test_a_second_agent_on_a_running_sources_state_dir_is_refused_and_records_nothing(
        bundle, tmp_path):
    """Rule: while a source runs with tasks in flight, a second ``run`` of its own config
    (refused on its ports before, after it had recorded the running source's tasks as lost,
    reason crash) and a config of another node with other ports and the same state_dir both
    exit 78 with the line ``state_dir: DIR is in use by another agent (pid N, node s1): give
    each node its own state_dir``; every task of the running source has one final record and
    none is a crash. ``doctor --config`` of the running node WARNs of the lock; once the
    source is SIGKILLed, its restart takes the state_dir and records its lost tasks once."""
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "w1": 1, "w2": 2}, policy="fixed",
                result_timeout_s=30.0)
    try:
        c.start("w1", emulate_capacity_flops=stage_flops(bundle, 1) * 10.0)  # 100 ms a task
        c.start("w2")
        c.start("s1", arrival_rate_tasks_s=30.0, max_tasks=40)
        c.wait_for(lambda: c.tasks("s1").get("created") == 40
                   and c.tasks("s1").get("pending", 0) >= 5, TIMEOUT_S,
                   "the source to have created every task, some still in flight")
        pid = c.procs["s1"].pid
        cfg = c.agents.configs["s1"]
        want = ("state_dir: %s is in use by another agent (pid %d, node s1): give each node its "
                "own state_dir" % (cfg.state_dir, pid))
        same = _error_line(_run(c.agents.paths["s1"]))
        assert same.endswith(want), same
        cp, dp = free_ports(2)
        other = dataclasses.replace(cfg, node_id="s2", control_bind="tcp://127.0.0.1:%d" % cp,
                                    data_bind="tcp://127.0.0.1:%d" % dp)
        other_path = str(tmp_path / "s2.toml")
        with open(other_path, "w") as f:
            f.write(dump_config(other))
        beside = _error_line(_run(other_path))
        assert beside.endswith(want), beside

        checks, _ = check_node(c.agents.paths["s1"])
        (held,) = [x for x in checks if x.name == "node state lock"]
        assert held.status == WARN and "pid %d, node s1" % pid in held.detail, held

        crash = [r["id"] for r in c.records("s1") if r["reason"] == "crash"]
        assert crash == [], "the refused runs recorded the running source's tasks: %s" % crash
        c.kill("s1")
        c.start("s1", arrival_rate_tasks_s=10.0, max_tasks=5)
        c.wait_for(lambda: c.tasks("s1").get("created") == 5
                   and c.tasks("s1").get("pending") == 0, TIMEOUT_S,
                   "the restarted source to finish its 5 tasks")
    finally:
        c.stop_all()
    recs = c.records("s1")
    twice = [i for i, n in Counter(r["id"] for r in recs).items() if n > 1]
    assert twice == [], "tasks recorded twice: %s" % twice
    assert len(recs) == 40 + 5, Counter((r["status"], r["reason"]) for r in recs)
