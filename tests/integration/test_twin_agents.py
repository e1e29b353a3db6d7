"""Two agents started with one node id (a copied config) are reported by their neighbours,
and a restart is not: real agent processes on loopback (agent.node.twins)."""

from __future__ import annotations

import pytest

from agent.testbed.procs import free_ports

from .agent_cluster import Cluster, build_two_stage_bundle

TIMEOUT_S = 60.0
WARNING = "two agents are running as node w1"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("tiny")))


def _log(c, node):
    return "\n".join(c.procs[node].log_lines(2000, 1 << 20))


def _count(c, node):
    return (c.stats(node) or {}).get("counters", {}).get("duplicate_node_id", 0)


def test_a_second_agent_with_a_peers_id_is_reported_and_a_restart_is_not(bundle, tmp_path):
    """w1 restarted (SIGKILL, start): no warning at s1 or w2. Then a copy of w1's config runs
    on other ports (as on a second device): s1 and w2 still hear heartbeats from the first w1
    at its configured address while their data connection from w1 is the copy's, and both
    log the warning and count duplicate_node_id."""
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "w1": 1, "w2": 2}, policy="fixed",
                arrival_rate_tasks_s=2.0)
    try:
        for node in ("w1", "w2", "s1"):
            c.start(node)
        c.wait_for(lambda: c.alive_at("s1", ["w1"]) and c.alive_at("w2", ["w1", "s1"]),
                   TIMEOUT_S, "s1 and w2 to hear w1")
        c.kill("w1")
        c.start("w1")
        c.wait_for(lambda: (c.stats("w1") or {}).get("alive") == ["s1", "w2"]
                   and (c.stats("w1") or {}).get("counters", {}).get("data_link_up", 0) >= 2,
                   TIMEOUT_S, "the restarted w1 to connect to s1 and w2")
        c.wait_for(lambda: c.tasks("s1").get("completed", 0) >= 3, TIMEOUT_S,
                   "tasks through the restarted w1")
        assert WARNING not in _log(c, "s1") + _log(c, "w2")
        assert _count(c, "s1") == _count(c, "w2") == 0

        ctl, data = free_ports(2)
        c.stages["w1copy"], c.ports["w1copy"] = 1, (ctl, data)
        c.start("w1copy", node_id="w1")
        c.wait_for(lambda: _count(c, "s1") >= 1 and _count(c, "w2") >= 1, TIMEOUT_S,
                   "s1 and w2 to notice two agents as w1")
        for node in ("s1", "w2"):
            log = _log(c, node)
            assert log.count(WARNING) == 1, log  # then at most once a minute
    finally:
        c.stop_all()
