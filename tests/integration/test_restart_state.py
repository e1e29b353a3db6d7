"""Restart safety: a worker killed with SIGKILL and started again resumes with the routing and
thresholds it persisted (atomically, each slot), and the run across the restart loses no task
(its senders re-send what was in flight)."""

import json
import os
import re

from engines.bundle import load_bundle

from .agent_cluster import Cluster, build_two_stage_bundle

TIMEOUT_S = 120.0
RESTORED = re.compile(r"restored policy state from (\S+): routing (\{.*?\}) thresholds (\{.*?\})$")


def _restored_lines(cluster, node):
    with open(cluster.logs[node], errors="replace") as f:
        return [RESTORED.search(line.rstrip("\n")) for line in f if "restored policy state" in line]


def test_sigkilled_worker_resumes_with_persisted_routing_and_thresholds(tmp_path):
    bundle = build_two_stage_bundle(str(tmp_path / "tiny"))
    assert load_bundle(bundle).num_stages >= 2
    nodes = {"s1": 0, "w1a": 1, "w1b": 1, "w2a": 2, "w2b": 2}
    stage2_flops = float(load_bundle(bundle).stage(2).flops)
    cluster = Cluster(str(tmp_path), bundle, nodes, policy="dtoee", slot_length_s=1.0,
                      rounds_per_slot=10, round_interval_s=0.05, arrival_rate_tasks_s=15.0,
                      max_tasks=240, result_timeout_s=4.0, max_attempts=5)
    # w2b is four times slower than w2a: DTO-EE moves w1a's routing mass towards w2a.
    slow = {"w2a": dict(emulate_capacity_flops=stage2_flops / 0.004),
            "w2b": dict(emulate_capacity_flops=stage2_flops / 0.016)}
    state_file = os.path.join(str(tmp_path), "w1a", "state.json")
    try:
        for n in ("w2a", "w2b", "w1a", "w1b", "s1"):
            cluster.start(n, **slow.get(n, {}))

        def persisted_routing():
            try:
                with open(state_file) as f:
                    state = json.load(f)["state"]
            except (OSError, ValueError, KeyError):
                return None
            r = state.get("routing") or {}
            return state if set(r) == {"w2a", "w2b"} and r["w2a"] > r["w2b"] else None

        cluster.wait_for(lambda: persisted_routing() is not None, TIMEOUT_S,
                         "w1a to persist a routing that favours the faster w2a")
        cluster.kill("w1a")  # SIGKILL: no chance to save anything on the way out
        with open(state_file) as f:
            persisted = json.load(f)["state"]
        assert _restored_lines(cluster, "w1a") == []
        cluster.start("w1a")
        cluster.wait_for(lambda: _restored_lines(cluster, "w1a"), TIMEOUT_S,
                         "w1a to restore its saved state")
        m = _restored_lines(cluster, "w1a")[0]
        assert m is not None, "unparsable restore line"
        assert os.path.abspath(m.group(1)) == os.path.abspath(state_file)
        assert json.loads(m.group(2)) == persisted["routing"]
        thresholds = {str(k): v for k, v in json.loads(m.group(3)).items()}
        assert thresholds == persisted["thresholds"]

        def finished():
            s = cluster.stats("s1")
            t = (s or {}).get("tasks", {})
            return t.get("created") == 240 and t.get("pending") == 0

        cluster.wait_for(finished, TIMEOUT_S, "the source to finish its 240 tasks")
        counts = cluster.stats("s1")["tasks"]
        # a task offered while the killed worker's share had nowhere to go may be rejected at
        # once with its reason (back-pressure): an answer, never a loss
        assert counts["lost"] == 0 and counts["completed"] + counts["rejected"] == 240, counts
        assert counts["completed"] >= 200, counts
    finally:
        cluster.stop_all()
